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

import contextlib
import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from genre.config import check_range, setting
from genre.data.choice import ModelDataChoice
from genre.data.pack import DatasetInfo, Pack, open_pack
from genre.errors import ConfigError
from genre.metrics import (
    ConfusedPair,
    Reliability,
    apply_temperature,
    calibration_error,
    confused_pairs_table,
    fit_temperature,
    mean_top1_confidence,
    most_confused,
    negative_log_likelihood,
    reliability,
)
from genre.models.embedding import METHODS
from genre.stages.common import EXIT_OK, config_params, dataset_facts, dataset_tags, split_confusion
from genre.tracking import runs
from genre.tracking.tracker import Tracker, experiment_name, tracked_run

if TYPE_CHECKING:
    from genre.figures import HeatmapPanel, NeighbourPanel
    from genre.models.explain import Explainer
    from genre.training.loop import Evaluation

FOLDER = "interpret"  # the artifacts' folder in the run
RELIABILITY_BINS = 10
NEIGHBOURS_SHOWN = 5
MAP_THUMBNAILS = 400  # a map of more covers draws points: thumbnails would hide each other
HEATMAP_BATCH = 32  # covers per Grad-CAM pass (a backward pass holds the activations)
CALIBRATED_MODEL = "model_calibrated"
CALIBRATED_ALIAS = "calibrated"
REGISTERED_URI = re.compile(r"models:/([^/@]+)[/@].+")
RUN_URI = re.compile(r"runs:/([^/]+)/.+")


@dataclass(frozen=True)
class InterpretConfig(ModelDataChoice):
    """Which model, on which split of which dataset, and how much of the findings to show."""

    model_uri: str = setting(
        "", "the model: runs:/<run id>/model (logs into that run), models:/<name>@<alias>, or a path"
    )
    split: str = setting("test", "split to interpret", ("train", "val", "test"))
    batch_size: int = setting(256, "images per prediction call")
    top_pairs: int = setting(10, "most confused pairs to show and plot (the CSV lists every confused pair)")
    heatmaps: int = setting(
        4, "covers per genre in the Grad-CAM grids (the most confidently right ones, the worst mistakes); 0: none"
    )
    heatmap_layer: str = setting("", "the layer Grad-CAM reads (default: the network's last spatial map)")
    cover_map: str = setting("tsne", "2-D map of the covers' penultimate-layer embeddings", (*METHODS, "none"))
    neighbours: int = setting(6, f"covers shown with their {NEIGHBOURS_SHOWN} nearest neighbours on the map; 0: none")
    calibrate: bool = setting(
        False, "fit a temperature on the validation split and log the calibrated model beside the model"
    )
    register: str = setting(
        "",
        "with --calibrate: register the calibrated model as a new version of this name (default: the registered "
        "model --model-uri names, if any)",
    )

    def __post_init__(self) -> None:
        check_range(self, "batch_size", 1)
        check_range(self, "top_pairs", 1)
        check_range(self, "heatmaps", 0)
        check_range(self, "neighbours", 0)
        if self.register and not self.calibrate:
            raise ConfigError(f"'register' {self.register} names where the calibrated model goes: add --calibrate")


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
class Readings:
    """What the network reads in the split's covers: Grad-CAM grids (rows of (genre, panels)) of the most confidently
    right covers (heatmap of their genre) and of the worst mistakes (heatmap of the genre wrongly given), the covers'
    2-D map (`points` `(N, 2)`, None when not drawn) and a few covers with their nearest neighbours."""

    layer: str
    genres: list[str]
    labels: np.ndarray  # (N,) the split's true genres, the map's colours
    right: list[tuple[str, list[HeatmapPanel]]]
    mistakes: list[tuple[str, list[HeatmapPanel]]]
    method: str
    points: np.ndarray | None
    thumbnails: np.ndarray | None
    neighbours: list[tuple[np.ndarray, str, list[NeighbourPanel]]]


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


def ranked(evaluation: Evaluation, genres: int, per_genre: int, right: bool) -> list[list[int]]:
    """Per true genre, the indices of at most `per_genre` covers: the right ones by falling confidence (`right`), or
    the wrong ones by falling loss (the least probability given to the true genre first)."""
    predicted, labels = evaluation.predictions, evaluation.labels
    truth = evaluation.probabilities[np.arange(len(labels)), labels] if len(labels) else np.zeros(0)
    rows = []
    for genre in range(genres):
        chosen = np.flatnonzero((labels == genre) & ((predicted == labels) == right))
        order = np.argsort(-truth[chosen] if right else truth[chosen], kind="stable")
        rows.append([int(index) for index in chosen[order][:per_genre]])
    return rows


def heatmap_rows(
    explainer: Explainer, pack: Pack, evaluation: Evaluation, genres: list[str], rows: list[list[int]]
) -> list[tuple[str, list[HeatmapPanel]]]:
    """The grid rows of the covers `rows[genre]`, each cover's heatmap for the genre the model gave it, captioned
    "given p" for a right cover and "given p (true p)" for a mistake."""
    flat = [index for row in rows for index in row]
    given = evaluation.predictions[flat] if flat else np.zeros(0, dtype=np.int64)
    maps, views = [], []
    for start in range(0, len(flat), HEATMAP_BATCH):
        images = np.ascontiguousarray(pack.images[flat[start : start + HEATMAP_BATCH]])
        maps.append(explainer.heatmaps(images, given[start : start + HEATMAP_BATCH]))
        views.append(explainer.view(images))
    panels = dict(zip(flat, zip(np.concatenate(views), np.concatenate(maps), strict=True), strict=True)) if flat else {}
    grid = []
    for genre, row in enumerate(rows):
        shown = []
        for index in row:
            top, truth = int(evaluation.predictions[index]), int(evaluation.labels[index])
            caption = f"{genres[top]} {evaluation.probabilities[index, top]:.0%}"
            if top != truth:
                caption += f" ({genres[truth]} {evaluation.probabilities[index, truth]:.0%})"
            shown.append((*panels[index], caption))
        grid.append((genres[genre], shown))
    return grid


def read_covers(
    explainer: Explainer, pack: Pack, evaluation: Evaluation, genres: list[str], config: InterpretConfig
) -> Readings:
    """The heatmap grids, the map and the neighbours of the split (pure but for the network's forward passes)."""
    from genre.models.embedding import nearest_neighbours, project

    right = ranked(evaluation, len(genres), config.heatmaps, right=True) if config.heatmaps else []
    mistakes = ranked(evaluation, len(genres), config.heatmaps, right=False) if config.heatmaps else []
    drawn = config.cover_map != "none" and len(pack) >= 3
    points = thumbnails = None
    neighbours: list[tuple[np.ndarray, str, list[NeighbourPanel]]] = []
    if drawn or (config.neighbours and len(pack) > 1):
        features = np.concatenate(
            [
                explainer.embed(np.ascontiguousarray(pack.images[start : start + config.batch_size]))[0]
                for start in range(0, len(pack), config.batch_size)
            ]
        )
        if drawn:
            points = project(features, config.cover_map)
            if len(pack) <= MAP_THUMBNAILS:
                thumbnails = np.asarray(pack.images[:])
        if config.neighbours and len(pack) > 1:
            queries = _spread(ranked(evaluation, len(genres), len(pack), right=True), config.neighbours)
            found, similarity = nearest_neighbours(features, queries, NEIGHBOURS_SHOWN)
            labels = pack.labels
            for query, near, close in zip(queries, found, similarity, strict=True):
                panels = [
                    (pack.images[i], f"{genres[labels[i]]} {value:.2f}") for i, value in zip(near, close, strict=True)
                ]
                neighbours.append((pack.images[query], f"{genres[labels[query]]}", panels))
    return Readings(
        layer=explainer.layers.maps,
        genres=list(genres),
        labels=np.asarray(pack.labels),
        right=heatmap_rows(explainer, pack, evaluation, genres, right) if right else [],
        mistakes=heatmap_rows(explainer, pack, evaluation, genres, mistakes) if mistakes else [],
        method=config.cover_map,
        points=points,
        thumbnails=thumbnails,
        neighbours=neighbours,
    )


def _spread(rows: list[list[int]], count: int) -> list[int]:
    """`count` indices taken from the rows in turn (one per genre, then the next of each), as far as they go."""
    chosen: list[int] = []
    for rank in range(max((len(row) for row in rows), default=0)):
        chosen += [row[rank] for row in rows if rank < len(row)]
    return chosen[:count]


def calibrate(validation: Evaluation, split: Evaluation) -> Calibration:
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


def run(config: InterpretConfig, experiment: str | None = None, progress: bool = False) -> Interpreted:
    """Predict the split with the model, read its covers, then log the interpretation (see the module's docstring for
    where).

    The model is loaded, the split predicted and read (and the validation split, with `calibrate`) before any run
    opens, so a failure there leaves every run as it was.
    """
    from genre.stages.evaluate import model_and_split
    from genre.stages.model_data import with_model_data
    from genre.training.evaluate import evaluate_model

    config, _ = with_model_data(config)
    model, pack, info = model_and_split(config, progress)
    evaluation = evaluate_model(model, pack, config.batch_size)
    interpretation = interpret(evaluation, info.genres, config.split)
    readings = None
    if config.heatmaps or config.cover_map != "none" or config.neighbours:
        explainer = model.unwrap_python_model().explainer(config.heatmap_layer or None)
        readings = read_covers(explainer, pack, evaluation, info.genres, config)
    calibration = example = None
    if config.calibrate:
        validation = open_pack(Path(config.data), config.variant, "val")
        if not len(validation):
            raise ConfigError(f"--calibrate fits on the validation split, and {config.data} has no validation covers")
        calibration = calibrate(evaluate_model(model, validation, config.batch_size), evaluation)
        example = _png(validation.images[0])
    register = config.register or _registered_name(config.model_uri)

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
        store, (uri, registered) = _log_into_model_run(run_id, config, log)
        return Interpreted(run_id, store, True, "", interpretation, readings, calibration, uri, registered)
    tags = {"genre.stage": "interpret", "genre.model_uri": config.model_uri}
    name = experiment_name(experiment, f"genre-{info.name}")
    with tracked_run(name, f"interpret-{config.split}", tags) as tracker:
        log_settings(tracker, config, info)
        uri, registered = log(tracker)
    return Interpreted(
        tracker.run_id, tracker.store, False, reason, interpretation, readings, calibration, uri, registered
    )


def _png(pixels: np.ndarray) -> bytes:
    """One cover's pixels as PNG bytes: the calibrated model's input example."""
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.fromarray(np.asarray(pixels), "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _registered_name(model_uri: str) -> str:
    found = REGISTERED_URI.fullmatch(model_uri)
    return found.group(1) if found else ""


def _log_calibrated(tracker: Tracker, model: Any, temperature: float, example: bytes, register: str) -> tuple[str, str]:
    """Log the calibrated model beside the model (and register it as a new version of `register`, its alias
    `calibrated`); returns its URI and "NAME version N" (or "")."""
    from genre.cover_model import log_calibrated_model
    from genre.tracking.registry import register_model

    tracker.log_model(lambda: log_calibrated_model(model, temperature, example, name=CALIBRATED_MODEL))
    uri = f"runs:/{tracker.run_id}/{CALIBRATED_MODEL}"
    if not register:
        return uri, ""
    version = register_model(uri, register, CALIBRATED_ALIAS, refused=f"cannot register {uri} as {register}")
    return uri, f"{register} version {version}"


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


def _log_into_model_run(
    run_id: str, config: InterpretConfig, log: Callable[[Tracker], tuple[str, str]]
) -> tuple[str, tuple[str, str]]:
    """Reopen the FINISHED run `run_id`, log the interpretation, and leave the run FINISHED with its old end time
    (its duration), even when logging fails or is interrupted (`tracked_run` would end it FAILED or KILLED, now).
    `log` does the logging; returns the store and what `log` returned.

    Under `mlflow run` the entry point's own run is left to MLflow and tagged with where the findings went."""
    ended = runs.client().get_run(run_id).info.end_time
    project_run = os.environ.pop("MLFLOW_RUN_ID", None)  # else `tracked_run` would join the entry point's run
    logged = False
    try:
        with tracked_run(None, None, {}, run_id=run_id) as tracker:
            logged_model = log(tracker)
        logged = True
    finally:  # after a failure, a best try: the error that stopped the command is the one to report
        with contextlib.nullcontext() if logged else contextlib.suppress(Exception):
            runs.client().set_terminated(run_id, "FINISHED", end_time=ended)
    if project_run and project_run != run_id:  # `mlflow run -e train -P interpret=true` is one run: tagged as train
        tags = {"genre.stage": "interpret", "genre.model_uri": config.model_uri, "genre.interpreted_run": run_id}
        runs.set_tags(project_run, tags | {"mlflow.runName": f"interpret-{config.split}"})  # genre's name, not MLflow's
    return tracker.store, logged_model


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


def log_readings(tracker: Tracker, readings: Readings, split: str, note: str) -> None:
    """Under `interpret/`: `heatmaps_right_<split>.png` and `heatmaps_mistakes_<split>.png` (Grad-CAM grids),
    `cover_map_<split>.png` with its points in `cover_map_<split>.csv`, and `neighbours_<split>.png`; the figures
    that have nothing to show are left out."""
    from genre.figures import embedding_map, heatmap_grid, neighbours_figure

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
    from genre.figures import reliability_diagram

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
    from genre.stages.model_data import with_model_data

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
