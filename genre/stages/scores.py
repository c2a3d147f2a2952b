"""What every stage that scores a model logs alike: the balanced metrics, each split's report (per-genre table,
confusion matrix figure), the per-cover predictions and a fold's covers; and the one way a score is said in words."""

from __future__ import annotations

import re

import numpy as np

from genre.figures import confusion_matrix_figure
from genre.metrics import (
    balanced_accuracy_from_confusion,
    confusion,
    macro_f1_from_confusion,
    per_genre_table,
    recall_from_confusion,
)
from genre.predictions import CoverPredictions, predictions_artifact
from genre.tracking.tracker import Tracker
from genre.training.loop import Evaluation

FOLD_SPLIT_ARTIFACT = "dataset/fold_split.csv"


def genre_keys(genres: list[str]) -> list[str]:
    """Each genre as it can end a metric name: MLflow allows letters, digits and `_ - . / : space`, so anything else
    (and, to keep names easy to search, a space, a slash or a colon) becomes `_`; a genre that would then clash with
    an earlier one gets its label appended (`R&B`, `R_B` -> `R_B`, `R_B_1`)."""
    keys: list[str] = []
    for label, genre in enumerate(genres):
        key = re.sub(r"[^\w.-]", "_", genre)
        keys.append(f"{key}_{label}" if key in keys else key)
    return keys


def balanced_metrics(prefix: str, matrix: np.ndarray, genres: list[str]) -> dict[str, float]:
    """The metrics that weigh every genre alike, from a split's `(genres, genres)` confusion counts:
    `<prefix>_balanced_accuracy`, `<prefix>_macro_f1` and `<prefix>_recall_<genre>` for every genre (NaN for a
    genre with no examples in the split). See `genre.metrics` for the conventions."""
    metrics = {
        f"{prefix}_balanced_accuracy": balanced_accuracy_from_confusion(matrix),
        f"{prefix}_macro_f1": macro_f1_from_confusion(matrix),
    }
    recall = recall_from_confusion(matrix)
    metrics.update({f"{prefix}_recall_{key}": float(r) for key, r in zip(genre_keys(genres), recall, strict=True)})
    return metrics


def log_predictions(tracker: Tracker, split: str, predictions: CoverPredictions) -> None:
    """A split's per-cover predictions: `predictions/<split>.csv` (what `genre compare` and `genre report` read) and
    the same rows as an MLflow table, `predictions/<split>.json`, browsable in the run's Artifacts tab."""
    header, rows = predictions.to_rows()
    tracker.log_text(predictions.to_csv_text(), predictions_artifact(split))
    tracker.log_table({column: [row[k] for row in rows] for k, column in enumerate(header)},
                      predictions_artifact(split, "json"))  # fmt: skip


def evaluation_predictions(evaluation: Evaluation, files: list[str], genres: list[str]) -> CoverPredictions:
    """A network's evaluation of a split (probabilities in the split's order) as per-cover predictions."""
    predicted = evaluation.probabilities.argmax(axis=1) if len(evaluation.labels) else evaluation.labels
    probabilities = evaluation.probabilities.astype(np.float64) if len(evaluation.labels) else None
    return CoverPredictions(list(files), genres, evaluation.labels, predicted, probabilities)


def log_fold_split(tracker: Tracker, files: dict[str, list[str]]) -> None:
    """Which covers a cross-validation fold's run trained, validated and tested on (`cover,part`), so anyone can
    check by key that no test cover was seen in training."""
    rows = "".join(f"{cover},{part}\n" for part, covers in files.items() for cover in covers)
    tracker.log_text("cover,part\n" + rows, FOLD_SPLIT_ARTIFACT)


def split_confusion(evaluation: Evaluation, genres: list[str]) -> np.ndarray:
    return confusion(evaluation.predictions, evaluation.labels, len(genres))


def accuracies(accuracy: float, balanced: float) -> str:
    """A score in words, as every figure title and line of a stage says it."""
    return f"accuracy {accuracy:.1%}, balanced {balanced:.1%}"


def log_split_report(tracker: Tracker, evaluation: Evaluation, genres: list[str], split: str, note: str) -> None:
    """The per-genre precision/recall/F1 table and the confusion-matrix figure of one split."""
    matrix = split_confusion(evaluation, genres)
    tracker.log_text(per_genre_table(matrix, genres), f"{split}_per_genre.csv")
    title = f"{split} {accuracies(evaluation.accuracy, balanced_accuracy_from_confusion(matrix))} ({note})"
    tracker.log_figure(confusion_matrix_figure(matrix, genres, title), f"confusion_{split}.png")
