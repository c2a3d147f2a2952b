"""The predict stage: a logged cover model over files and folders of covers, a batch at a time, each file's genre
printed or written to a CSV (`path, genre, p_<genre>...`); a file that is not a usable image is listed, not fatal.

Covers are decoded in worker processes (`genre.data.cover_files.decoded_covers`) while the network scores the batch
before, so on covers the network is what sets the pace (docs/benchmarks.md, benchmarks/predict.py).

A plain `genre predict` opens no MLflow run: predicting a few covers should leave nothing behind in the tracking
store. With `--log-run` (what the MLproject entry point `predict` passes) the same work runs inside a run that holds
the CSV as the artifact `predictions.csv`, the unreadable files as `unreadable.csv`, and the counts and rate.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from PIL import Image
from tqdm import tqdm

from genre.command_config import PREDICTIONS_EXPERIMENT, PredictConfig
from genre.cover_model import CoverClassifier, load_cover_model, reach_model_store
from genre.data.cover_files import CoverFiles, decoded_covers, find_cover_files
from genre.data.images import InvalidImage, decode_image
from genre.disk import check_output_file, check_writable
from genre.errors import EXIT_INCOMPLETE, EXIT_OK, ConfigError, DataError
from genre.figures import heatmap_overlay
from genre.models.explain import Explainer
from genre.predictions import PROBABILITY_PREFIX
from genre.runtime import usable_cores
from genre.stages.model_data import calibration_data, quantize_model
from genre.stages.run_facts import config_params
from genre.tracking.tracker import Tracker, experiment_name, tracked_run

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.csv"
UNREADABLE_FILE = "unreadable.csv"
PATH_COLUMN = "path"


@dataclass(frozen=True)
class Predicted:
    """One file: the model's probabilities for it, in the model's genre order, or why it could not be used."""

    path: Path
    probabilities: np.ndarray | None  # (genres,) float64
    problem: str | None = None


@dataclass(frozen=True)
class PredictOutcome:
    """What a prediction over files did: how many covers it scored, which files it could not use, and how fast."""

    predicted: int
    unreadable: list[tuple[str, str]]  # (file, what is wrong with it), in input order
    skipped: int  # files in the folders not named as images, left out
    seconds: float  # from the first file to the last, the model loaded
    output: Path | None  # the CSV written, if any
    run_id: str = ""
    store: str = ""

    @property
    def covers_per_second(self) -> float:
        return self.predicted / self.seconds if self.seconds > 0 else 0.0


def explain_one(model: Any, explainer: Explainer, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """What the network sees of the cover file at `path`, uint8 `(S, S, 3)`, and its Grad-CAM heatmap `(S, S)` in
    [0, 1] for the genre the model ranks first (`explainer` from the model's `CoverClassifier.explainer()`)."""
    classifier = model.unwrap_python_model()
    try:
        pixels = decode_image(path.read_bytes(), classifier.image_size)[None]
    except (OSError, InvalidImage) as error:
        raise CoverUnreadable(str(error)) from None
    _, logits = explainer.embed(pixels)
    return explainer.view(pixels)[0], explainer.heatmaps(pixels, logits.argmax(axis=1))[0]


class CoverUnreadable(Exception):
    """A cover the model could not read (a missing file, not an image)."""


def predicted_covers(
    classifier: CoverClassifier, paths: Sequence[Path], batch_size: int, workers: int
) -> Iterator[Predicted]:
    """Each file's `Predicted`, in order: files decoded by `workers` processes (0: one per usable core) while the
    network scores the `batch_size` readable covers before them."""

    workers = workers or usable_cores()
    waiting: list[tuple[Path, np.ndarray | None, str | None]] = []
    readable = 0
    with contextlib.closing(decoded_covers(paths, classifier.image_size, workers)) as covers:
        for path, pixels, problem in covers:
            waiting.append((path, pixels, problem))
            readable += pixels is not None
            if readable == batch_size:
                yield from _scored(classifier, waiting)
                waiting, readable = [], 0
    yield from _scored(classifier, waiting)


def _scored(
    classifier: CoverClassifier, waiting: list[tuple[Path, np.ndarray | None, str | None]]
) -> Iterator[Predicted]:
    readable = [pixels for _, pixels, _ in waiting if pixels is not None]
    table = classifier.probabilities(np.stack(readable)).astype(np.float64) if readable else np.zeros((0, 0))
    rows = iter(table)
    for path, pixels, problem in waiting:
        yield Predicted(path, next(rows)) if pixels is not None else Predicted(path, None, problem)


def ranked_line(path: Path, probabilities: np.ndarray, genres: list[str], top: int) -> str:
    """`cover.jpg: jazz 61.0%, folk 30.2%, metal 8.8%`: the `top` genres, most likely first."""
    order = np.argsort(-probabilities, kind="stable")[:top]
    return f"{path}: " + ", ".join(f"{genres[label]} {probabilities[label]:.1%}" for label in order)


def write_heatmap(view: np.ndarray, heatmap: np.ndarray, path: Path) -> Path:
    """The cover as the network sees it beside its heatmap overlay, at least 256 px high, as a PNG at `path`."""

    side = view.shape[0]
    both = np.concatenate(
        [view, np.full((side, max(1, side // 16), 3), 255, np.uint8), heatmap_overlay(view, heatmap)], 1
    )
    scale = max(1, -(-256 // side))
    picture = Image.fromarray(both).resize((both.shape[1] * scale, side * scale), Image.Resampling.BILINEAR)
    picture.save(path)
    return path


def load_classifier(model_uri: str) -> tuple[Any, CoverClassifier]:
    """The logged model (its store checked first) and the `CoverClassifier` inside it."""

    if not model_uri:
        raise ConfigError("which model? give --model-uri runs:/<run id>/model or models:/<name>@<alias>")
    reach_model_store(model_uri)
    model = load_cover_model(model_uri)
    try:
        classifier = model.unwrap_python_model()
    except Exception:  # noqa: BLE001 - MLflow's error for a flavour without a PythonModel
        classifier = None
    if not isinstance(classifier, CoverClassifier):
        raise ConfigError(f"{model_uri} is not a cover model (one that `genre train` logs); give the model of a run")
    return model, classifier


def check_and_load(config: PredictConfig, inputs: Sequence[Path]) -> tuple[Any, CoverClassifier, CoverFiles]:
    """Everything that can stop a prediction before it starts (no inputs, no covers in them, an output folder that
    cannot be written, a model that is not a cover model), checked before any run opens; the model, loaded."""

    if not inputs:
        raise ConfigError("which covers? give image files or folders of them")
    if config.output:
        check_output_file(Path(config.output), "predictions", "--output")
    if config.explain:
        check_writable(Path(config.explain_dir), "the heatmaps' folder", "--explain-dir")
    files = find_cover_files(inputs)
    if not files.paths:
        names = ", ".join(str(given) for given in inputs)
        raise DataError(f"no cover images in {names} (a folder's covers are found by their names: .jpg, .png, ...)")
    model, classifier = load_classifier(config.model_uri)
    if config.quantize:
        data, variant = calibration_data(config.model_uri, config.calibration_data)
        log.info(quantize_model(classifier, data, variant, config.calibration_covers))
    return model, classifier, files


def predict_files(
    model: Any,
    classifier: CoverClassifier,
    files: CoverFiles,
    config: PredictConfig,
    csv_path: Path | None,
    progress: bool = False,
    show: Callable[[str], None] | None = None,
) -> PredictOutcome:
    """Predict `files` with the loaded `model` (no MLflow run): each readable cover's row goes to the CSV at
    `csv_path` (written whole or not at all), or, with no CSV, its `top` genres to `show` (default: printed above
    the progress bar); each file that cannot be used goes to `show`, named with what is wrong with it."""

    say = show or tqdm.write
    genres = classifier.genres
    explain_dir = Path(config.explain_dir) if config.explain else None
    explainer = classifier.explainer() if explain_dir is not None else None
    if explain_dir is not None:
        explain_dir.mkdir(parents=True, exist_ok=True)
    unreadable: list[tuple[str, str]] = []
    predicted = 0
    started = time.perf_counter()
    with (
        tqdm(total=len(files.paths), unit="cover", desc="predict", disable=not progress) as bar,
        whole_file(csv_path) as handle,
    ):
        table = csv.writer(handle) if handle is not None else None
        if table is not None:
            table.writerow([PATH_COLUMN, "genre", *(f"{PROBABILITY_PREFIX}{genre}" for genre in genres)])
        for cover in predicted_covers(classifier, files.paths, config.batch_size, config.workers):
            bar.update(1)
            if cover.probabilities is None:
                problem = cover.problem or f"{cover.path} cannot be used"
                unreadable.append((str(cover.path), problem))
                say(problem)
                continue
            predicted += 1
            top = genres[int(cover.probabilities.argmax())]
            if table is not None:
                table.writerow([str(cover.path), top, *(f"{p:.6g}" for p in cover.probabilities)])
            else:
                say(ranked_line(cover.path, cover.probabilities, genres, config.top))
            if explainer is not None and explain_dir is not None:
                view, heatmap = explain_one(model, explainer, cover.path)
                written = write_heatmap(view, heatmap, explain_dir / f"{cover.path.name}.heatmap.png")
                say(f"  where the evidence for {top} lies: {written}")
        seconds = time.perf_counter() - started
    return PredictOutcome(predicted, unreadable, files.skipped, seconds, csv_path)


@contextlib.contextmanager
def whole_file(path: Path | None) -> Iterator[TextIO | None]:
    """A text file written as `<path>.partial` and renamed to `path` when the block ends well (removed when it
    does not), so a CSV is whole or absent; None for no file."""
    if path is None:
        yield None
        return
    partial = path.with_name(path.name + ".partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with partial.open("w", newline="") as handle:
            yield handle
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def run(
    config: PredictConfig,
    inputs: Sequence[Path],
    experiment: str | None = None,
    progress: bool = False,
    show: Callable[[str], None] | None = None,
) -> PredictOutcome:
    """Predict the covers in `inputs` (files and folders, `find_cover_files`); with `config.log_run`, inside an
    MLflow run (under `mlflow run`, the run it made) that logs the CSV as `predictions.csv`, the unreadable files as
    `unreadable.csv`, the settings and the counts. The model is loaded before the run opens."""
    model, classifier, files = check_and_load(config, inputs)
    output = Path(config.output) if config.output else None
    if not config.log_run:
        return predict_files(model, classifier, files, config, output, progress, show)

    tags = {"genre.stage": "predict", "genre.model_uri": config.model_uri}
    with (
        tracked_run(experiment_name(experiment, PREDICTIONS_EXPERIMENT), "predict", tags) as tracker,
        tempfile.TemporaryDirectory(prefix="genre-predict-") as folder,
    ):
        logged = Path(folder) / PREDICTIONS_FILE
        outcome = predict_files(model, classifier, files, config, logged, progress, show)
        log_prediction(tracker, config, inputs, outcome, logged)
        if output is not None:
            shutil.copyfile(logged, output)
    return dataclasses.replace(outcome, output=output or outcome.output, run_id=tracker.run_id, store=tracker.store)


def log_prediction(
    tracker: Tracker, config: PredictConfig, inputs: Sequence[Path], outcome: PredictOutcome, table: Path
) -> None:
    """The settings, what was asked (`inputs`), the counts and rate, the CSV and the list of unreadable files."""

    tracker.log_params(config_params(dataclasses.asdict(config)) | {"inputs": ", ".join(str(p) for p in inputs)})
    tracker.log_metrics(
        {
            "covers_predicted": outcome.predicted,
            "files_unreadable": len(outcome.unreadable),
            "files_skipped": outcome.skipped,
            "covers_per_second": outcome.covers_per_second,
        }
    )
    tracker.log_artifact(table)
    if outcome.unreadable:
        lines = [f"{PATH_COLUMN},problem"]
        lines += [",".join(_csv_cell(cell) for cell in row) for row in outcome.unreadable]
        tracker.log_text("\n".join(lines) + "\n", UNREADABLE_FILE)


def _csv_cell(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def summary(outcome: PredictOutcome) -> list[str]:
    """What `genre predict` says at the end: where the CSV went and how fast (nothing when it printed each cover),
    the files it could not use and the files it left out."""
    lines = []
    if outcome.output is not None:
        lines.append(
            f"{_count(outcome.predicted, 'cover')} predicted into {outcome.output} in {outcome.seconds:.1f} s "
            f"({outcome.covers_per_second:.1f} covers/s)"
        )
    if outcome.unreadable and outcome.output is not None:
        lines.append(f"{_count(len(outcome.unreadable), 'file')} could not be used (listed above)")
    if outcome.skipped:
        lines.append(
            f"{_count(outcome.skipped, 'file')} in the folders left out: not named as images (.jpg, .png, ...)"
        )
    if outcome.run_id:
        lines.append(f"MLflow run {outcome.run_id} at {outcome.store}: {PREDICTIONS_FILE} logged")
    return lines


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}" + ("" if number == 1 else "s")


def command(config: PredictConfig, inputs: Sequence[Path], experiment: str | None, progress: bool = False) -> int:
    """`genre predict`: the genres of covers, printed or as a CSV; exit 1 when a file could not be used."""

    outcome = run(config, inputs, experiment, progress)
    for line in summary(outcome):
        print(line)
    return EXIT_INCOMPLETE if outcome.unreadable else EXIT_OK
