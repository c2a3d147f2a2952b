"""The interpret stage: where a logged model goes wrong and whether its confidence can be believed, for any network
the project trains (issue 15, first part): the genres it confuses most and its calibration on one split.

The findings join the model's own run when the model URI names one (`runs:/RUN_ID/...`), under `interpret/`
beside the training report, with the metrics `<split>_ece` and `<split>_top1_confidence`. That run keeps its status
(FINISHED), its end time (the duration `genre report` shows), its params and its `genre.stage` tag; only its owner
tags (`genre.host`, `genre.pid`) come to name the interpreting process, as `tracked_run` tags every run it opens.
Any other model (`models:/NAME@ALIAS`, a local folder) gets a new run named `interpret-<split>` in the dataset's
experiment (or `--mlflow-experiment`), holding the same artifacts and metrics plus the settings as params. So does a
`runs:/` model whose run is not FINISHED or was trained on other data than `--data`/`--variant` (its `<split>_*`
metrics are about its own data); `command` says which and why. Without `--data`, the data are the model's own
(`genre.stages.model_data`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genre.command_config import InterpretConfig
from genre.cover_model import log_calibrated_model
from genre.data.images import png_bytes
from genre.data.pack import DatasetInfo, open_pack
from genre.errors import EXIT_OK, ConfigError
from genre.figures import (
    confused_pairs_figure,
    confusion_matrix_figure,
    embedding_map,
    heatmap_grid,
    neighbours_figure,
    reliability_diagram,
)
from genre.metrics import Calibration, Interpretation, calibrate, confused_pairs_table, interpret_split
from genre.models.embedding import NEIGHBOURS_SHOWN
from genre.models.explain import Readings, read_covers
from genre.stages.model_data import model_and_split, score_cover_model, with_model_data
from genre.stages.run_facts import config_params, dataset_facts, dataset_tags
from genre.tracking import runs
from genre.tracking.registry import register_model, registered_name, run_of
from genre.tracking.tracker import Tracker, experiment_name, reopened_run, tracked_run

FOLDER = "interpret"  # the artifacts' folder in the run
CALIBRATED_MODEL = "model_calibrated"
CALIBRATED_ALIAS = "calibrated"


@dataclass(frozen=True)
class Interpreted:
    """A finished `run`: where it logged, why there (`reason`: empty when in the model's own run), and what."""

    run_id: str
    store: str
    model_run: bool  # True: logged into the model's own run
    reason: str
    interpretation: Interpretation
    readings: Readings | None = None
    calibration: Calibration | None = None
    calibrated_uri: str = ""
    registered: str = ""  # "NAME version N" when the calibrated model was registered


def run(config: InterpretConfig, experiment: str | None = None, progress: bool = False) -> Interpreted:
    """Predict the split with the model, read its covers, then log the interpretation (see the module's docstring for
    where).

    The model is loaded, the split predicted and read (and the validation split, with `calibrate`) before any run
    opens, so a failure there leaves every run as it was.
    """
    config, _ = with_model_data(config)
    model, pack, info = model_and_split(config, progress)
    evaluation = score_cover_model(model, pack, config.batch_size)
    interpretation = interpret_split(evaluation, info.genres, config.split)
    readings = None
    if config.heatmaps or config.cover_map != "none" or config.neighbours:
        explainer = model.unwrap_python_model().explainer(config.heatmap_layer or None)
        readings = read_covers(explainer, pack, evaluation, info.genres, config)
    calibration = example = None
    if config.calibrate:
        validation = open_pack(Path(config.data), config.variant, "val")
        if not len(validation):
            raise ConfigError(f"--calibrate fits on the validation split, and {config.data} has no validation covers")
        calibration = calibrate(score_cover_model(model, validation, config.batch_size), evaluation)
        example = png_bytes(validation.images[0])
    register = config.register or registered_name(config.model_uri)

    def log(tracker: Tracker) -> tuple[str, str]:
        log_interpretation(tracker, interpretation, config.top_pairs, config.model_uri)
        if readings is not None:
            log_readings(tracker, readings, interpretation.split, config.model_uri)
        if calibration is None:
            return "", ""
        log_calibration(tracker, calibration, interpretation.split, config.model_uri)
        return _log_calibrated(tracker, model, calibration.temperature, example, register)

    run_id, reason = _model_run(config, info)
    if run_id is not None:
        tags = {"genre.stage": "interpret", "genre.model_uri": config.model_uri, "genre.interpreted_run": run_id}
        tags |= {"mlflow.runName": f"interpret-{config.split}"}  # genre's name for `mlflow run`'s own run
        with reopened_run(run_id, tags) as tracker:
            uri, registered = log(tracker)
        return Interpreted(run_id, tracker.store, True, "", interpretation, readings, calibration, uri, registered)
    tags = {"genre.stage": "interpret", "genre.model_uri": config.model_uri}
    name = experiment_name(experiment, f"genre-{info.name}")
    with tracked_run(name, f"interpret-{config.split}", tags) as tracker:
        log_settings(tracker, config, info)
        uri, registered = log(tracker)
    return Interpreted(
        tracker.run_id, tracker.store, False, reason, interpretation, readings, calibration, uri, registered
    )


def _log_calibrated(tracker: Tracker, model: Any, temperature: float, example: bytes, register: str) -> tuple[str, str]:
    """Log the calibrated model beside the model (and register it as a new version of `register`, its alias
    `calibrated`); returns its URI and "NAME version N" (or "")."""
    tracker.log_model(lambda: log_calibrated_model(model, temperature, example, name=CALIBRATED_MODEL))
    uri = f"runs:/{tracker.run_id}/{CALIBRATED_MODEL}"
    if not register:
        return uri, ""
    version = register_model(uri, register, CALIBRATED_ALIAS, refused=f"cannot register {uri} as {register}")
    return uri, f"{register} version {version}"


def _model_run(config: InterpretConfig, info: DatasetInfo) -> tuple[str | None, str]:
    """The model's own run, if the interpretation may join it; else None and why not ('' for a URI naming no run)."""
    run_id = run_of(config.model_uri)
    if run_id is None:
        return None, ""
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


def log_readings(tracker: Tracker, readings: Readings, split: str, note: str) -> None:
    """Under `interpret/`: `heatmaps_right_<split>.png` and `heatmaps_mistakes_<split>.png` (Grad-CAM grids),
    `cover_map_<split>.png` with its points in `cover_map_<split>.csv`, and `neighbours_<split>.png`; the figures
    that have nothing to show are left out."""
    layer = readings.layer
    if readings.right:
        title = f"{split}: the most confidently right covers per genre\nGrad-CAM of their genre on {layer}\n{note}"
        tracker.log_figure(heatmap_grid(readings.right, title), f"{FOLDER}/heatmaps_right_{split}.png")
    if any(panels for _, panels in readings.mistakes):
        title = (
            f"{split}: the worst mistakes per true genre, 'given p (true p)'\n"
            f"Grad-CAM of the genre given, on {layer}\n{note}"
        )
        tracker.log_figure(heatmap_grid(readings.mistakes, title), f"{FOLDER}/heatmaps_mistakes_{split}.png")
    if readings.points is not None:
        labels = np.asarray(readings.labels)
        title = f"{split}: the covers' penultimate-layer embeddings, {readings.method.upper()}\n{note}"
        figure = embedding_map(readings.points, labels, readings.genres, title, readings.thumbnails)
        tracker.log_figure(figure, f"{FOLDER}/cover_map_{split}.png")
        lines = ["cover,genre,x,y"]
        lines += [
            f"{index},{readings.genres[label]},{x:.5f},{y:.5f}"
            for index, (label, (x, y)) in enumerate(zip(labels, readings.points, strict=True))
        ]
        tracker.log_text("\n".join(lines) + "\n", f"{FOLDER}/cover_map_{split}.csv")
    if readings.neighbours:
        title = f"{split}: covers and their {NEIGHBOURS_SHOWN} nearest neighbours (cosine similarity)\n{note}"
        tracker.log_figure(neighbours_figure(readings.neighbours, title), f"{FOLDER}/neighbours_{split}.png")


def log_calibration(tracker: Tracker, calibration: Calibration, split: str, note: str) -> None:
    """The metrics `temperature`, `val_ece_calibrated`, `val_nll`, `val_nll_calibrated` and
    `<split>_ece_calibrated`, and `interpret/reliability_<split>_calibrated.png`."""
    tracker.log_metrics(
        {
            "temperature": calibration.temperature,
            "val_ece": calibration.val_ece,
            "val_ece_calibrated": calibration.val_ece_calibrated,
            "val_nll": calibration.val_nll,
            "val_nll_calibrated": calibration.val_nll_calibrated,
            f"{split}_ece_calibrated": calibration.split_ece_calibrated,
        }
    )
    title = f"{split}: reliability after temperature scaling (T = {calibration.temperature:.3f}, fitted on val)\n{note}"
    figure = reliability_diagram(calibration.bins, calibration.split_ece_calibrated, title)
    tracker.log_figure(figure, f"{FOLDER}/reliability_{split}_calibrated.png")


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
    config, taken = with_model_data(config)
    if taken:
        print(taken)
    done = run(config, experiment, progress)
    for line in describe(done.interpretation, config.top_pairs):
        print(line)
    if done.readings is not None:
        print(f"heatmaps: Grad-CAM on layer {done.readings.layer}")
    if done.calibration is not None:
        calibration = done.calibration
        line = (
            f"calibration: temperature {calibration.temperature:.3f} fitted on val; val ECE {calibration.val_ece:.3f} "
            f"-> {calibration.val_ece_calibrated:.3f}"
        )
        if config.split != "val":
            line += f", {config.split} ECE {done.interpretation.ece:.3f} -> {calibration.split_ece_calibrated:.3f}"
        print(line)
        registered = f", registered as {done.registered} (alias {CALIBRATED_ALIAS})" if done.registered else ""
        print(f"calibrated model: {done.calibrated_uri}{registered}")
    if done.model_run:
        where = "the model's run, under interpret/"
    else:
        where = f"a new run ({done.reason})" if done.reason else "a new run"
    print(f"MLflow run {done.run_id} at {done.store}: {where}")
    return EXIT_OK
