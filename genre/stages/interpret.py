"""The interpret stage: where a logged model goes wrong and whether its confidence can be believed, for any network
the project trains (issue 15, first part): the genres it confuses most and its calibration on one split.

The findings join the model's own run when the model URI names one (`runs:/RUN_ID/...`), under `interpret/`
beside the training report, with the metrics `<split>_ece` and `<split>_top1_confidence`. That run keeps its status
(FINISHED), its end time (the duration `genre report` shows), its params and its `genre.stage` tag; only its owner
tags (`genre.host`, `genre.pid`) come to name the interpreting process, as `tracked_run` tags every run it opens.
Any other model (`models:/NAME@ALIAS`, a local folder) gets a new run named `interpret-<split>` in the dataset's
experiment (or `--mlflow-experiment`), holding the same artifacts and metrics plus the settings as params. So does a
`runs:/` model whose run is not FINISHED or was trained on other data than `--data`/`--variant` (its `<split>_*`
metrics are about its own data); `command` says which and why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from genre.config import check_range, setting
from genre.data.choice import DatasetChoice
from genre.data.pack import DatasetInfo
from genre.metrics import (
    ConfusedPair,
    Reliability,
    calibration_error,
    confused_pairs_table,
    mean_top1_confidence,
    most_confused,
    reliability,
)
from genre.stages.common import EXIT_OK, config_params, dataset_facts, dataset_tags, split_confusion
from genre.tracking import runs
from genre.tracking.tracker import Tracker, experiment_name, tracked_run

if TYPE_CHECKING:
    from genre.training.loop import Evaluation

FOLDER = "interpret"  # the artifacts' folder in the run
RELIABILITY_BINS = 10
RUN_URI = re.compile(r"runs:/([^/]+)/.+")


@dataclass(frozen=True)
class InterpretConfig(DatasetChoice):
    """Which model, on which split of which dataset, and how much of the findings to show."""

    model_uri: str = setting(
        "", "the model: runs:/<run id>/model (logs into that run), models:/<name>@<alias>, or a path"
    )
    split: str = setting("test", "split to interpret", ("train", "val", "test"))
    batch_size: int = setting(256, "images per prediction call")
    top_pairs: int = setting(10, "most confused pairs to show and plot (the CSV lists every confused pair)")

    def __post_init__(self) -> None:
        check_range(self, "batch_size", 1)
        check_range(self, "top_pairs", 1)


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
class Interpreted:
    """A finished `run`: where it logged, why there (`reason`: empty when in the model's own run), and what."""

    run_id: str
    store: str
    model_run: bool  # True: logged into the model's own run
    reason: str
    interpretation: Interpretation


def interpret(evaluation: Evaluation, genres: list[str], split: str) -> Interpretation:
    """The confusions and calibration of a split's predictions: pure, no tracking."""
    matrix = split_confusion(evaluation, genres)
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


def run(config: InterpretConfig, experiment: str | None = None, progress: bool = False) -> Interpreted:
    """Predict the split with the model, then log the interpretation (see the module's docstring for where).

    The model is loaded and the split predicted before any run opens, so a failure there leaves every run as it was.
    """
    from genre.stages.evaluate import model_and_split
    from genre.training.evaluate import evaluate_model

    model, pack, info = model_and_split(config, progress)
    interpretation = interpret(evaluate_model(model, pack, config.batch_size), info.genres, config.split)
    run_id, reason = _model_run(config, info)
    if run_id is not None:
        store = _log_into_model_run(run_id, config, interpretation)
        return Interpreted(run_id, store, True, "", interpretation)
    tags = {"genre.stage": "interpret", "genre.model_uri": config.model_uri}
    name = experiment_name(experiment, f"genre-{info.name}")
    with tracked_run(name, f"interpret-{config.split}", tags) as tracker:
        log_settings(tracker, config, info)
        log_interpretation(tracker, interpretation, config.top_pairs, config.model_uri)
    return Interpreted(tracker.run_id, tracker.store, False, reason, interpretation)


def _model_run(config: InterpretConfig, info: DatasetInfo) -> tuple[str | None, str]:
    """The model's own run, if the interpretation may join it; else None and why not ('' for a URI naming no run)."""
    found = RUN_URI.fullmatch(config.model_uri)
    if found is None:
        return None, ""
    run_id = found.group(1)
    model_run = runs.client().get_run(run_id)
    status, params = model_run.info.status, model_run.data.params
    if status != "FINISHED":
        return None, f"run {run_id} is {status}, and interpret leaves a run's status as it is"
    digest, variant = params.get("dataset_digest"), params.get("config.variant")
    if (digest and digest != info.digest) or (variant and variant != config.variant):
        trained_on = f"{params.get('dataset_name', '?')}/{variant or '?'} (digest {digest})"
        return None, (
            f"run {run_id} was trained on {trained_on}, not {info.name}/{config.variant} (digest {info.digest}), "
            f"and its {config.split}_* metrics are about its own data"
        )
    return run_id, ""


def _log_into_model_run(run_id: str, config: InterpretConfig, interpretation: Interpretation) -> str:
    """Reopen the FINISHED run `run_id`, log the interpretation, and leave the run FINISHED with its old end time
    (its duration), even when logging fails or is interrupted (`tracked_run` would end it FAILED or KILLED, now).
    Returns the store.

    Under `mlflow run` the entry point's own run is left to MLflow and tagged with where the findings went."""
    ended = runs.client().get_run(run_id).info.end_time
    project_run = os.environ.pop("MLFLOW_RUN_ID", None)  # else `tracked_run` would join the entry point's run
    logged = False
    try:
        with tracked_run(None, None, {}, run_id=run_id) as tracker:
            log_interpretation(tracker, interpretation, config.top_pairs, config.model_uri)
        logged = True
    finally:  # after a failure, a best try: the error that stopped the command is the one to report
        with contextlib.nullcontext() if logged else contextlib.suppress(Exception):
            runs.client().set_terminated(run_id, "FINISHED", end_time=ended)
    if project_run:
        tags = {"genre.stage": "interpret", "genre.model_uri": config.model_uri, "genre.interpreted_run": run_id}
        runs.set_tags(project_run, tags)
    return tracker.store


def log_settings(tracker: Tracker, config: InterpretConfig, info: DatasetInfo) -> None:
    """A new run's params and tags: the settings and the data it saw (never logged into a model's run, whose params
    MLflow would refuse to change)."""
    tracker.log_params(config_params(dataclasses.asdict(config)) | dataset_facts(info))
    tracker.set_tags(dataset_tags(info))


def log_interpretation(tracker: Tracker, interpretation: Interpretation, top_pairs: int, note: str) -> None:
    """Under `interpret/`: `confused_pairs_<split>.csv` (every confused pair), `confused_pairs_<split>.png` (the
    `top_pairs` most frequent), `confusion_normalised_<split>.png` and `reliability_<split>.png`; the metrics
    `<split>_ece` and `<split>_top1_confidence` (the mean top-1 probability). `note` (the model URI) goes in the
    figures' titles."""
    from genre.figures import confused_pairs_figure, confusion_matrix_figure, reliability_diagram

    split, genres = interpretation.split, interpretation.genres
    tracker.log_metrics(
        {f"{split}_ece": interpretation.ece, f"{split}_top1_confidence": interpretation.top1_confidence}
    )
    tracker.log_text(confused_pairs_table(interpretation.pairs), f"{FOLDER}/confused_pairs_{split}.csv")
    title = f"{split}: most confused genres\n{note}"
    tracker.log_figure(
        confused_pairs_figure(interpretation.pairs[:top_pairs], title), f"{FOLDER}/confused_pairs_{split}.png"
    )
    title = f"{split}: accuracy {interpretation.accuracy:.1%}, share of each true genre\n{note}"
    figure = confusion_matrix_figure(interpretation.matrix, genres, title, normalised=True)
    tracker.log_figure(figure, f"{FOLDER}/confusion_normalised_{split}.png")
    title = f"{split}: reliability of the top-1 confidence\n{note}"
    tracker.log_figure(
        reliability_diagram(interpretation.bins, interpretation.ece, title), f"{FOLDER}/reliability_{split}.png"
    )


def describe(interpretation: Interpretation, top_pairs: int) -> list[str]:
    """The findings as lines for the terminal."""
    split, pairs = interpretation.split, interpretation.pairs
    lines = [
        f"{split}: accuracy {interpretation.accuracy:.1%}, mean top-1 confidence {interpretation.top1_confidence:.1%}, "
        f"ECE {interpretation.ece:.3f} over {interpretation.images} images"
    ]
    if not pairs:
        lines.append("no image was confused")
    else:
        lines.append(f"most confused (true -> predicted), {min(top_pairs, len(pairs))} of {len(pairs)} pairs:")
        lines += [
            f"  {pair.true} -> {pair.predicted}: {pair.count} ({pair.share:.1%} of {pair.true})"
            for pair in pairs[:top_pairs]
        ]
    return lines


def command(config: InterpretConfig, experiment: str | None, progress: bool = False) -> int:
    """`genre interpret`: the most confused genres and the calibration of a logged model on a split, logged under
    `interpret/` in the model's run (or a new run)."""
    done = run(config, experiment, progress)
    for line in describe(done.interpretation, config.top_pairs):
        print(line)
    if done.model_run:
        where = "the model's run, under interpret/"
    else:
        where = f"a new run ({done.reason})" if done.reason else "a new run"
    print(f"MLflow run {done.run_id} at {done.store}: {where}")
    return EXIT_OK
