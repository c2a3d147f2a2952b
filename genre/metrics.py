"""Classification metrics over predicted probabilities or labels: pure numpy, no MXNet, no MLflow.

Real cover sets are unbalanced (one genre can be a fifth of the covers, another a twentieth), and there accuracy
rewards predicting the large genres. Balanced accuracy, macro-F1 and per-genre recall weigh every genre alike; they
follow scikit-learn's conventions for genres missing from a split, so their numbers compare with its.

Calibration asks whether a model's confidence can be taken at its word: of the covers it gives 80%, are 80% right?
`reliability` bins the top-1 confidences and `expected_calibration_error` sums the gaps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(probabilities, axis=1) == labels)) if len(labels) else float("nan")


def top_k_accuracy(probabilities: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of examples whose label is among the `k` most probable genres."""
    if not len(labels):
        return float("nan")
    k = min(k, probabilities.shape[1])
    top = np.argpartition(-probabilities, k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def confusion(predicted: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    """`(classes, classes)` counts: rows are true labels, columns predictions."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def per_genre_table(matrix: np.ndarray, genres: list[str]) -> str:
    """Precision, recall, F1 and support per genre as CSV (the table artifact of a run)."""
    true_positive = np.diag(matrix).astype(float)
    predicted = matrix.sum(axis=0).astype(float)
    support = matrix.sum(axis=1).astype(float)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, support, out=np.zeros_like(true_positive), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    lines = ["genre,precision,recall,f1,support"]
    lines += [
        f"{genre},{p:.4f},{r:.4f},{f:.4f},{int(s)}"
        for genre, p, r, f, s in zip(genres, precision, recall, f1, support, strict=True)
    ]
    return "\n".join(lines) + "\n"


def recall_from_confusion(matrix: np.ndarray) -> np.ndarray:
    """`(classes,)` recall of each genre: the share of its covers predicted as it.

    NaN for a genre with no covers in the split (there is nothing to recall), as scikit-learn's
    `recall_score(average=None, zero_division=np.nan)`; never 0, which would read as a genre the model misses.
    """
    support = matrix.sum(axis=1).astype(float)
    recall = np.full(len(matrix), np.nan)
    np.divide(np.diag(matrix), support, out=recall, where=support > 0)
    return recall


def balanced_accuracy_from_confusion(matrix: np.ndarray) -> float:
    """Mean recall over the genres that have covers in the split (scikit-learn's `balanced_accuracy_score`,
    which leaves out a genre absent from the labels even when it is predicted); NaN for an empty split."""
    recall = recall_from_confusion(matrix)
    present = ~np.isnan(recall)
    return float(np.mean(recall[present])) if present.any() else float("nan")


def macro_f1_from_confusion(matrix: np.ndarray) -> float:
    """Mean F1 over the genres present in the labels or the predictions (scikit-learn's
    `f1_score(labels, predicted, average="macro")`): a genre absent from the split and never predicted is left out,
    a genre never predicted counts 0, as does one predicted but absent. NaN for an empty split."""
    true_positive = np.diag(matrix).astype(float)
    predicted, support = matrix.sum(axis=0), matrix.sum(axis=1)
    seen = (predicted + support) > 0
    if not seen.any():
        return float("nan")
    # F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (predicted + support): the same as from precision and recall,
    # and 0 (not undefined) when one of them is.
    f1 = 2 * true_positive[seen] / (predicted[seen] + support[seen])
    return float(np.mean(f1))


def per_genre_recall(predicted: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    """`(classes,)` recall of each genre from predicted and true labels `(N,)`; see `recall_from_confusion`."""
    return recall_from_confusion(confusion(predicted, labels, classes))


def balanced_accuracy(predicted: np.ndarray, labels: np.ndarray, classes: int) -> float:
    """Mean per-genre recall; see `balanced_accuracy_from_confusion`."""
    return balanced_accuracy_from_confusion(confusion(predicted, labels, classes))


def macro_f1(predicted: np.ndarray, labels: np.ndarray, classes: int) -> float:
    """Unweighted mean of the per-genre F1; see `macro_f1_from_confusion`."""
    return macro_f1_from_confusion(confusion(predicted, labels, classes))


class ConfusedPair(NamedTuple):
    """One off-diagonal cell of a confusion matrix: `count` covers of genre `true` predicted as `predicted`, which
    are `share` (0..1) of the split's covers of `true`."""

    true: str
    predicted: str
    count: int
    share: float


def most_confused(matrix: np.ndarray, genres: list[str], top: int | None = None) -> list[ConfusedPair]:
    """The `top` (None: all) off-diagonal cells with a count above 0, the largest count first; equal counts keep the
    matrix's row-major order (by true genre, then predicted genre). `matrix` is `(genres, genres)` counts, rows true
    genres (as `confusion` makes it)."""
    matrix = np.asarray(matrix)
    support = matrix.sum(axis=1)
    cells = [
        (int(matrix[true, predicted]), true, predicted)
        for true in range(len(matrix))
        for predicted in range(len(matrix))
        if true != predicted and matrix[true, predicted] > 0
    ]
    cells.sort(key=lambda cell: -cell[0])  # a stable sort: ties stay in row-major order
    return [
        ConfusedPair(genres[true], genres[predicted], count, count / support[true])
        for count, true, predicted in cells[:top]
    ]


def confused_pairs_table(pairs: list[ConfusedPair]) -> str:
    """The pairs as CSV: `true,predicted,count,share` (share of the true genre's covers, 0..1)."""
    lines = ["true,predicted,count,share"]
    lines += [f"{pair.true},{pair.predicted},{pair.count},{pair.share:.4f}" for pair in pairs]
    return "\n".join(lines) + "\n"


class Reliability(NamedTuple):
    """The top-1 confidences of a split sorted into equal-width bins; each array is `(bins,)`.

    Bin `b` holds the confidences in `(edges[b], edges[b + 1]]` (the first bin also takes 0). `confidence` is the
    mean top-1 probability of the bin's covers, `accuracy` the share of them whose top-1 genre is right (both NaN
    for an empty bin), `count` how many covers fell in it.
    """

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> Reliability:
    """Per-bin mean confidence, accuracy and count of the top-1 predictions; `probabilities` is `(N, genres)`,
    `labels` `(N,)`. A model is calibrated when each bin's accuracy equals its confidence."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    edges = np.arange(bins + 1) / bins  # i / bins is the float nearest each edge, so 0.3 falls in (0.2, 0.3]
    confidence = np.max(probabilities, axis=1) if len(labels) else np.zeros(0)
    correct = (np.argmax(probabilities, axis=1) == labels) if len(labels) else np.zeros(0, dtype=bool)
    which = np.searchsorted(edges[1:-1], confidence, side="left")
    count = np.bincount(which, minlength=bins)
    filled = count > 0
    mean_confidence = np.full(bins, np.nan)
    mean_accuracy = np.full(bins, np.nan)
    mean_confidence[filled] = np.bincount(which, weights=confidence, minlength=bins)[filled] / count[filled]
    mean_accuracy[filled] = np.bincount(which, weights=correct.astype(float), minlength=bins)[filled] / count[filled]
    return Reliability(edges, mean_confidence, mean_accuracy, count)


def calibration_error(bins: Reliability) -> float:
    """The expected calibration error of binned confidences: sum over bins of (count / N) |accuracy - confidence|;
    NaN when no cover was binned."""
    total = int(bins.count.sum())
    if total == 0:
        return float("nan")
    filled = bins.count > 0
    gaps = np.abs(bins.accuracy[filled] - bins.confidence[filled])
    return float(np.sum(bins.count[filled] / total * gaps))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """ECE (Naeini et al. 2015; Guo et al. 2017): how far, weighted by how many covers, the top-1 confidence is
    from the top-1 accuracy over `bins` equal-width bins. 0 is perfectly calibrated; at most 1. See `reliability`."""
    return calibration_error(reliability(probabilities, labels, bins))


def mean_top1_confidence(probabilities: np.ndarray) -> float:
    """The mean of each cover's highest genre probability (NaN for no covers): compare it with accuracy."""
    return float(np.mean(np.max(probabilities, axis=1))) if len(probabilities) else float("nan")


TEMPERATURES = (0.05, 20.0)  # the range `fit_temperature` searches: from 20x sharper to 20x softer logits
# The smallest normal float32: a float32 softmax gives exactly 0 only for a logit about 87 or more below the top one,
# so clipping there keeps log p near the logit gap that made the 0 (and finite).
PROBABILITY_FLOOR = float(np.finfo(np.float32).tiny)


def _log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """`(N, genres)` float64 log of the probabilities, clipped at `PROBABILITY_FLOOR` so a 0 is finite."""
    return np.log(np.clip(np.asarray(probabilities, dtype=np.float64), PROBABILITY_FLOOR, 1.0))


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean -log p(true genre) over the covers (nats; probabilities clipped at `PROBABILITY_FLOOR`); NaN for none.
    Lower is better; unlike ECE it needs no bins and rewards confidence only where it is right."""
    if not len(labels):
        return float("nan")
    log_probabilities = _log_probabilities(probabilities)
    return float(-np.mean(log_probabilities[np.arange(len(labels)), labels]))


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """`(N, genres)` float64 probabilities `softmax(log(probabilities) / temperature)`: the same as
    `softmax(logits / temperature)` of the logits that gave `probabilities` (softmax ignores a shift per row).
    Above 1 softens, below 1 sharpens; every row still sums to 1 and keeps its top-1 genre."""
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"the temperature must be a positive number, got {temperature}")
    return _softmax(_log_probabilities(probabilities) / temperature)


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T in `TEMPERATURES` whose `apply_temperature(probabilities, T)` has the lowest
    `negative_log_likelihood` on `labels` (Guo et al. 2017): T > 1 for an overconfident model, < 1 for an
    underconfident one. Fit it on the validation split and apply it to the test split and to serving.

    `probabilities` is `(N, genres)`, `labels` `(N,)` integers. The likelihood has one minimum over log T (it is
    convex in 1/T), so a bounded 1-D search finds it; the same predictions always give the same T.
    """
    from scipy.optimize import minimize_scalar  # scipy comes with scikit-learn; imported here as only this needs it

    probabilities, labels = np.asarray(probabilities), np.asarray(labels)
    if probabilities.ndim != 2 or len(probabilities) != len(labels) or not len(labels):
        raise ValueError(
            f"need (N, genres) probabilities and N labels with N > 0, got {probabilities.shape} and {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= probabilities.shape[1]:
        raise ValueError(f"labels must be integers in [0, {probabilities.shape[1]}), got {labels.dtype} labels")
    if not np.isfinite(probabilities).all():
        raise ValueError("the probabilities hold NaN or infinite values; the model's output is broken")
    log_probabilities = _log_probabilities(probabilities)
    rows = np.arange(len(labels))

    def loss(log_temperature: float) -> float:
        scaled = log_probabilities / np.exp(log_temperature)
        top = scaled.max(axis=1)
        log_normaliser = top + np.log(np.exp(scaled - top[:, None]).sum(axis=1))
        return float(np.mean(log_normaliser - scaled[rows, labels]))

    lowest, highest = np.log(TEMPERATURES)
    found = minimize_scalar(loss, bounds=(lowest, highest), method="bounded", options={"xatol": 1e-5})
    return float(np.exp(found.x))


RELIABILITY_BINS = 10  # bins of the top-1 confidence in a reliability diagram and its calibration error


class Scored(Protocol):
    """A model's predictions of a split (`genre.training.loop.Evaluation` is one): `probabilities` `(N, genres)`, the
    true `labels` `(N,)`, the top-1 `predictions` `(N,)` and the share right."""

    probabilities: np.ndarray
    labels: np.ndarray

    @property
    def predictions(self) -> np.ndarray: ...

    @property
    def accuracy(self) -> float: ...


@dataclass(frozen=True)
class Interpretation:
    """What one split says about a model: its confusion counts `(genres, genres)` (rows true genres), every confused
    pair (most frequent first), its binned top-1 confidences and their calibration error."""

    split: str
    genres: list[str]
    images: int
    accuracy: float
    matrix: np.ndarray
    pairs: list[ConfusedPair]
    bins: Reliability
    ece: float
    top1_confidence: float


@dataclass(frozen=True)
class Calibration:
    """Temperature scaling fitted on the validation split: the temperature, and the ECE and negative log-likelihood
    before and after on validation and on the interpreted split (`bins`: its reliability after)."""

    temperature: float
    val_ece: float
    val_ece_calibrated: float
    val_nll: float
    val_nll_calibrated: float
    split_ece_calibrated: float
    bins: Reliability


def interpret_split(evaluation: Scored, genres: list[str], split: str) -> Interpretation:
    """The confusions and calibration of a split's predictions: pure, no tracking."""
    matrix = confusion(evaluation.predictions, evaluation.labels, len(genres))
    bins = reliability(evaluation.probabilities, evaluation.labels, RELIABILITY_BINS)
    return Interpretation(
        split=split,
        genres=list(genres),
        images=len(evaluation.labels),
        accuracy=evaluation.accuracy,
        matrix=matrix,
        pairs=most_confused(matrix, genres),
        bins=bins,
        ece=calibration_error(bins),
        top1_confidence=mean_top1_confidence(evaluation.probabilities),
    )


def calibrate(validation: Scored, split: Scored) -> Calibration:
    """Temperature scaling (Guo et al. 2017) fitted on `validation`, measured there and on the interpreted split."""
    temperature = fit_temperature(validation.probabilities, validation.labels)
    val_calibrated = apply_temperature(validation.probabilities, temperature)
    bins = reliability(apply_temperature(split.probabilities, temperature), split.labels, RELIABILITY_BINS)
    return Calibration(
        temperature=temperature,
        val_ece=calibration_error(reliability(validation.probabilities, validation.labels, RELIABILITY_BINS)),
        val_ece_calibrated=calibration_error(reliability(val_calibrated, validation.labels, RELIABILITY_BINS)),
        val_nll=negative_log_likelihood(validation.probabilities, validation.labels),
        val_nll_calibrated=negative_log_likelihood(val_calibrated, validation.labels),
        split_ece_calibrated=calibration_error(bins),
        bins=bins,
    )
