"""Classification metrics over predicted probabilities or labels: pure numpy, no MXNet, no MLflow.

Real cover sets are unbalanced (one genre can be a fifth of the covers, another a twentieth), and there accuracy
rewards predicting the large genres. Balanced accuracy, macro-F1 and per-genre recall weigh every genre alike; they
follow scikit-learn's conventions for genres missing from a split, so their numbers compare with its.
"""

from __future__ import annotations

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
