"""The original work's floor: a random forest and a linear SVM on raw pixels (scikit-learn)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from genre.config import setting
from genre.data.pack import Pack, open_pack
from genre.data.prepare import DEFAULT_DATASET

FEATURE_CHUNK = 512


@dataclass(frozen=True)
class BaselineConfig:
    """A pixel baseline: which dataset, which classifier, what the pixels are shrunk to."""

    data: str = setting(DEFAULT_DATASET, "prepared dataset folder (from `genre prepare`)")
    variant: str = setting("full", "which packs: the full dataset or the development subset", ("full", "dev"))
    model: str = setting("rf", "classifier: random forest or linear SVM", ("rf", "svm"))
    pixels: int | None = setting(None, "side of the pixel features (default: the pack's size, at most 50)")
    grayscale: bool = setting(False, "use one gray channel instead of RGB")
    trees: int = setting(200, "random forest: number of trees")
    max_depth: int | None = setting(None, "random forest: depth limit (default: none)")
    svm_alpha: float = setting(1e-3, "linear SVM: L2 regularisation strength (SGD, hinge loss)")
    svm_epochs: int = setting(50, "linear SVM: passes over the training set")
    seed: int = setting(0, "seed of the classifier")
    workers: int = setting(0, "parallel jobs for the forest; 0 = every usable core")


def pixel_features(images: np.ndarray, side: int, grayscale: bool) -> np.ndarray:
    """`(N, H, W, 3)` uint8 -> `(N, side*side*channels)` float32 in [0, 1], shrunk with area averaging.

    Works a chunk at a time, so `images` may be a memory map larger than memory.
    """
    channels = 1 if grayscale else 3
    features = np.empty((len(images), side * side * channels), dtype=np.float32)
    for start in range(0, len(images), FEATURE_CHUNK):
        for offset, pixels in enumerate(images[start : start + FEATURE_CHUNK]):
            image = Image.fromarray(np.asarray(pixels))
            if grayscale:
                image = image.convert("L")
            if image.size != (side, side):
                image = image.resize((side, side), Image.Resampling.BOX)
            features[start + offset] = np.asarray(image, dtype=np.float32).reshape(-1) / 255.0
    return features


def make_classifier(config: BaselineConfig, workers: int):
    if config.model == "rf":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(
            n_estimators=config.trees, max_depth=config.max_depth, n_jobs=workers, random_state=config.seed
        )
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # A linear SVM trained by SGD: liblinear's LinearSVC needs minutes and still fails to converge on
    # thousands of raw-pixel features.
    svm = SGDClassifier(
        loss="hinge", alpha=config.svm_alpha, max_iter=config.svm_epochs, tol=None, random_state=config.seed
    )
    return make_pipeline(StandardScaler(), svm)


@dataclass
class SplitScore:
    accuracy: float
    confusion: np.ndarray
    report: str


@dataclass
class BaselineResult:
    genres: list[str]
    pixels: int
    scores: dict[str, SplitScore]
    fit_seconds: float


def score(classifier, features: np.ndarray, pack: Pack) -> SplitScore:
    from sklearn.metrics import classification_report, confusion_matrix

    labels = list(range(len(pack.genres)))
    predicted = classifier.predict(features)
    return SplitScore(
        accuracy=float(np.mean(predicted == pack.labels)) if len(pack) else float("nan"),
        confusion=confusion_matrix(pack.labels, predicted, labels=labels),
        report=classification_report(
            pack.labels, predicted, labels=labels, target_names=pack.genres, digits=3, zero_division=0
        ),
    )


def run_baseline(config: BaselineConfig, workers: int) -> BaselineResult:
    """Fit on the training pack; score train, validation and test."""
    root = Path(config.data)
    packs = {split: open_pack(root, config.variant, split) for split in ("train", "val", "test")}
    side = config.pixels or min(packs["train"].images.shape[1], 50)
    features = {split: pixel_features(pack.images, side, config.grayscale) for split, pack in packs.items()}
    classifier = make_classifier(config, workers)
    started = time.perf_counter()
    classifier.fit(features["train"], packs["train"].labels)
    fit_seconds = time.perf_counter() - started
    scores = {split: score(classifier, features[split], pack) for split, pack in packs.items()}
    return BaselineResult(packs["train"].genres, side, scores, fit_seconds)
