"""The evaluate stage: a logged model (any `genre.cover_model`, by runs:/ or models:/ URI, or a local path) scored on
a split of a prepared dataset (by default the one it was trained on), in a run that holds the same metrics and report
as the end of training."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from genre.command_config import EvaluateConfig
from genre.data.pack import DatasetInfo
from genre.errors import EXIT_OK
from genre.stages.model_data import model_and_split, quantize_model, score_cover_model, with_model_data
from genre.stages.run_facts import config_params, dataset_facts, dataset_tags
from genre.stages.scores import (
    balanced_metrics,
    evaluation_predictions,
    log_predictions,
    log_split_report,
    split_confusion,
)
from genre.tracking.tracker import Tracker, experiment_name, tracked_run
from genre.training.loop import Evaluation

log = logging.getLogger(__name__)


def run(config: EvaluateConfig, experiment: str | None = None, progress: bool = False) -> tuple[str, str, Evaluation]:
    """Load the model, score it on the split (by default the model's data: `with_model_data`), then log that in a run
    of its own; returns the run id, its store, the evaluation. A model that predicts other genres than the dataset's
    stops the command before the run opens."""
    config, _ = with_model_data(config)
    model, pack, info = model_and_split(config, progress)
    if config.quantize:
        log.info(quantize_model(model.unwrap_python_model(), config.data, config.variant, config.calibration_covers))
    evaluation = score_cover_model(model, pack, config.batch_size)
    tags = {
        "genre.stage": "evaluate",
        "genre.model_uri": config.model_uri,
        "genre.precision": model.unwrap_python_model().precision,
    }
    with tracked_run(experiment_name(experiment, f"genre-{info.name}"), f"evaluate-{config.split}", tags) as tracker:
        log_evaluation(tracker, config, info, evaluation, pack.files)
    return tracker.run_id, tracker.store, evaluation


def log_evaluation(
    tracker: Tracker, config: EvaluateConfig, info: DatasetInfo, evaluation: Evaluation, files: list[str]
) -> None:
    """The same metrics, report and per-cover predictions (`files`: the split's covers) as the end of training, for
    any split."""
    split = config.split
    tracker.log_params(config_params(dataclasses.asdict(config)) | dataset_facts(info))
    tracker.set_tags(dataset_tags(info))
    tracker.log_metrics(
        {
            f"{split}_accuracy": evaluation.accuracy,
            f"{split}_top3_accuracy": evaluation.top3_accuracy,
            f"{split}_loss": evaluation.loss,
        }
        | balanced_metrics(split, split_confusion(evaluation, info.genres), info.genres)
    )
    log_split_report(tracker, evaluation, info.genres, split, config.model_uri)
    log_predictions(tracker, split, evaluation_predictions(evaluation, files, info.genres))


def command(config: EvaluateConfig, experiment: str | None, progress: bool = False) -> int:
    """`genre evaluate`: re-evaluate a logged model on a split and log the same report as training does."""
    config, taken = with_model_data(config)
    if taken:
        print(taken)
    run_id, store, evaluation = run(config, experiment, progress)
    info = DatasetInfo.read(Path(config.data))
    print(
        f"{config.model_uri} on {info.name}/{config.variant}/{config.split}: accuracy {evaluation.accuracy:.2%} "
        f"(top-3 {evaluation.top3_accuracy:.2%}) over {len(evaluation.labels)} images"
    )
    print(f"MLflow run {run_id} at {store}")
    return EXIT_OK
