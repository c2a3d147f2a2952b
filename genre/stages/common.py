"""What several stages share: exit codes, Ctrl-C for SIGTERM, the bundled dataset on first use, and the metrics
every stage that scores a model logs alike."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from genre import __version__
from genre.data.pack import DATASET_FILE, DatasetInfo
from genre.data.prepare import DEFAULT_DATASET, PrepareConfig, prepare_if_missing
from genre.metrics import (
    balanced_accuracy_from_confusion,
    confusion,
    macro_f1_from_confusion,
    per_genre_table,
    recall_from_confusion,
)
from genre.predictions import CoverPredictions, predictions_artifact
from genre.tracking.tracker import Tracker

if TYPE_CHECKING:
    from genre.training.loop import Evaluation

EXIT_OK, EXIT_INCOMPLETE = 0, 1
# Tags a suite puts on each of its runs (`genre.dataset_digest` comes from the stage itself); a report reads them.
SUITE, NAME, CONFIG_DIGEST, SETTINGS_DIGEST, DATA_DIGEST, SEED = (
    "genre.suite",
    "genre.experiment_name",
    "genre.config_digest",
    "genre.settings_digest",
    "genre.dataset_digest",
    "genre.seed",
)


@dataclass
class Staged:
    """A stage's run and what it produced."""

    run_id: str
    store: str  # the tracking store holding the run, password masked
    info: DatasetInfo
    config: Any
    result: Any  # BaselineResult or TrainOutcome


def config_tags(config_file: Path | None) -> dict[str, str]:
    return {"genre.config_file": str(config_file)} if config_file else {}


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (`kill PID`) stops the command the way Ctrl-C does: `KeyboardInterrupt` in the
    main thread, so worker processes are stopped, the run ends KILLED and finished work is kept."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def ensure_dataset(data: str, progress: bool) -> None:
    """The bundled default is prepared on first use (saying so); any other missing dataset is the user's to
    prepare."""
    root = Path(data)
    if (root / DATASET_FILE).exists() or data != DEFAULT_DATASET:
        return
    print(f"{root} is not prepared yet: preparing the bundled digits first")
    prepare_if_missing(PrepareConfig(out=data), progress=progress)  # unless another process did meanwhile


def config_params(settings: dict[str, Any]) -> dict[str, Any]:
    """The resolved settings as `config.<name>` params.

    `mlflow run` logs its `-P` parameters under their plain names (unset ones as "''"), and MLflow
    forbids changing a param, so the values actually used get a prefix of their own.
    """
    return {f"config.{key}": value for key, value in settings.items()}


def dataset_facts(info: DatasetInfo) -> dict[str, Any]:
    """The params that say which data a run saw."""
    return {"dataset_name": info.name, "dataset_digest": info.digest}


def dataset_tags(info: DatasetInfo) -> dict[str, str]:
    return {"genre.dataset": info.name, "genre.dataset_digest": info.digest}


def log_packs(tracker: Tracker, info: DatasetInfo, data: str, variant: str, context: str) -> None:
    """The packed dataset as the run's MLflow dataset input (name, digest, source, tensor shape)."""
    size = info.image_size
    total = sum(info.counts[variant].values())
    tracker.log_dataset(info.name, info.digest, Path(data).resolve().as_uri(), context, (total, size, size, 3))


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


FOLD_SPLIT_ARTIFACT = "dataset/fold_split.csv"


def log_fold_split(tracker: Tracker, files: dict[str, list[str]]) -> None:
    """Which covers a cross-validation fold's run trained, validated and tested on (`cover,part`), so anyone can
    check by key that no test cover was seen in training."""
    rows = "".join(f"{cover},{part}\n" for part, covers in files.items() for cover in covers)
    tracker.log_text("cover,part\n" + rows, FOLD_SPLIT_ARTIFACT)


def split_confusion(evaluation: Evaluation, genres: list[str]) -> np.ndarray:
    return confusion(evaluation.predictions, evaluation.labels, len(genres))


def accuracies(accuracy: float, balanced: float) -> str:
    return f"accuracy {accuracy:.1%}, balanced {balanced:.1%}"


def log_split_report(tracker: Tracker, evaluation: Evaluation, genres: list[str], split: str, note: str) -> None:
    """The per-genre precision/recall/F1 table and the confusion-matrix figure of one split."""
    from genre.figures import confusion_matrix_figure  # matplotlib: imported when a figure is made

    matrix = split_confusion(evaluation, genres)
    tracker.log_text(per_genre_table(matrix, genres), f"{split}_per_genre.csv")
    title = f"{split} {accuracies(evaluation.accuracy, balanced_accuracy_from_confusion(matrix))} ({note})"
    tracker.log_figure(confusion_matrix_figure(matrix, genres, title), f"confusion_{split}.png")


def library_versions() -> dict[str, str]:
    import mxnet
    import numpy

    from genre.models.zoo import import_gluoncv

    gluoncv = import_gluoncv()
    return {
        "version.genre": __version__,
        "version.mxnet": mxnet.__version__,
        "version.gluoncv": gluoncv.__version__,
        "version.mlflow": _installed("mlflow"),
        "version.numpy": numpy.__version__,
    }


def _installed(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def omp_threads() -> str:
    return os.environ.get("OMP_NUM_THREADS", "")
