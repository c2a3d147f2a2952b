"""The original work's floor: a random forest and a linear SVM (scikit-learn) on raw pixels, or on the features
of a pretrained network (its "CaffeNet features + random forest"); and the linear probe of transfer learning, a
logistic regression on those features."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from genre.metrics import balanced_accuracy_from_confusion, macro_f1_from_confusion, recall_from_confusion
from genre.models.spec import BaselineSpec
from genre.models.style import gram_pairs

FEATURE_CHUNK = 512
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
