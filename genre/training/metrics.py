"""Classification metrics over predicted probabilities: pure numpy, no MXNet, no MLflow."""

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
