"""What each stage records in its run, written against the `Tracker` interface."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from genre import __version__
from genre.data.pack import DatasetInfo
from genre.data.prepare import PrepareConfig, PreparedDataset
from genre.figures import confusion_matrix_figure, sample_grid
from genre.models.baselines import BaselineConfig, BaselineResult
from genre.tracking.tracker import Tracker


def config_params(settings: dict[str, Any]) -> dict[str, Any]:
    """The resolved settings as `config.<name>` params.

    `mlflow run` logs its `-P` parameters under their plain names (unset ones as "''"), and MLflow
    forbids changing a param, so the values actually used get a prefix of their own.
    """
    return {f"config.{key}": value for key, value in settings.items()}


def log_prepared(tracker: Tracker, config: PrepareConfig, prepared: PreparedDataset) -> None:
    """Params, counts, the dataset input, the split file, the report and a figure of samples."""
    info = prepared.info
    settings = dataclasses.asdict(config) | {
        "name": info.name,
        "out": str(prepared.root.resolve()),
        "image_size": info.image_size,
    }
    tracker.log_params(
        config_params(settings)
        | {
            "source_kind": config.source_kind,
            "dataset_name": info.name,
            "dataset_digest": info.digest,
            "genres": ",".join(info.genres),
            "genre_count": len(info.genres),
            "genre_version": __version__,
        }
    )
    metrics = {f"{variant}_{split}_count": n for variant, splits in info.counts.items() for split, n in splits.items()}
    metrics.update(problem_count=len(prepared.problems), prepare_seconds=prepared.seconds)
    if prepared.download:
        metrics.update(
            downloaded_count=len(prepared.download.fetched),
            already_present_count=len(prepared.download.already_present),
            download_failed_count=len(prepared.download.failures),
        )
    tracker.log_metrics(metrics)
    total = sum(info.counts["full"].values())
    tracker.log_dataset(
        info.name,
        info.digest,
        prepared.root.resolve().as_uri(),
        "prepare",
        (total, info.image_size, info.image_size, 3),
    )
    tracker.set_tags({"genre.stage": "prepare", "genre.dataset": info.name, "genre.dataset_digest": info.digest})
    tracker.log_artifact(prepared.split_file, "dataset")
    tracker.log_artifact(prepared.report_file, "dataset")
    tracker.log_artifact(Path(prepared.root) / "dataset.json", "dataset")
    tracker.log_figure(sample_grid(prepared.sample_images), "samples.png")


def log_baseline(tracker: Tracker, config: BaselineConfig, result: BaselineResult, info: DatasetInfo) -> None:
    """Params, accuracies per split, a confusion-matrix figure and the per-genre report of a baseline."""
    settings = dataclasses.asdict(config) | {"pixels": result.pixels}
    facts = {"dataset_name": info.name, "dataset_digest": info.digest, "genre_version": __version__}
    tracker.log_params(config_params(settings) | facts)
    tracker.set_tags({"genre.stage": "baseline", "genre.dataset": info.name, "genre.dataset_digest": info.digest})
    size = info.image_size
    tracker.log_dataset(
        info.name,
        info.digest,
        Path(config.data).resolve().as_uri(),
        "training",
        (sum(info.counts[config.variant].values()), size, size, 3),
    )
    metrics = {f"{split}_accuracy": score.accuracy for split, score in result.scores.items()}
    metrics["fit_seconds"] = result.fit_seconds
    tracker.log_metrics(metrics)
    for split in ("val", "test"):
        score = result.scores[split]
        title = f"{config.model} baseline, {split} accuracy {score.accuracy:.1%}"
        tracker.log_figure(confusion_matrix_figure(score.confusion, result.genres, title), f"confusion_{split}.png")
        tracker.log_text(score.report, f"classification_report_{split}.txt")
