"""A logged model and the data it is scored on (`genre evaluate`, `genre interpret`): by default the dataset it was
trained on, read back from the run that logged it; the model loaded and the split opened (`model_and_split`); its
predictions of the split as an evaluation (`score_cover_model`).

All of it happens before any run opens, so a dataset that is not here stops the command in one line, with the
`genre prepare` command that makes it, and leaves the tracking store as it was.
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import Any, TypeVar

import mxnet as mx
import numpy as np

from genre.command_config import EvaluateConfig, InterpretConfig, require_model_uri
from genre.config import EXPERIMENTS_DIR, build, read_config_file
from genre.cover_model import CoverClassifier, load_cover_model, reach_model_store
from genre.data.config import DEFAULT_DATASET, FoldChoice, PrepareConfig
from genre.data.folds import check_parts_fit, open_parts
from genre.data.pack import DATASET_FILE, DatasetInfo, Pack, open_pack
from genre.errors import ConfigError, DataError
from genre.models.quantized import calibration_covers, quantization_refusal
from genre.models.spec import QuantizeChoice
from genre.predictions import PROBABILITY_PREFIX
from genre.stages.startup import ensure_dataset
from genre.tracking import runs
from genre.tracking.registry import source_run
from genre.training.loop import Evaluation

Config = TypeVar("Config", EvaluateConfig, InterpretConfig)
DEFAULT_VARIANT = "full"
# The settings of `genre prepare` that decide what a pack holds; the others decide how fast it is made.
PACK_SETTINGS = (
    "manifest",
    "folder",
    "name",
    "image_size",
    "seed",
    "dev_size",
    "train_fraction",
    "val_fraction",
    "test_fraction",
    "max_download_mb",
)


def with_model_data(config: Config) -> tuple[Config, str]:
    """`config` with its unset `data` and `variant` taken from the run that logged the model, and the line that says
    which data were taken ("" when `data` was given: an unset variant is then the full dataset, as in every stage).

    A model that names no run (a local folder, a version registered from a path) gets the bundled digits, and the
    line says so. A dataset that is not here is a `DataError` naming it and the `genre prepare` command that makes it.
    """
    if config.data:
        return dataclasses.replace(config, variant=config.variant or DEFAULT_VARIANT), ""
    require_model_uri(config.model_uri)
    run_id = source_run(config.model_uri)
    params = runs.run_params(run_id) if run_id else {}
    data = params.get("config.data", "")
    if not data:
        why = f"run {run_id} logs no dataset" if run_id else f"{config.model_uri} names no run"
        chosen = dataclasses.replace(config, data=DEFAULT_DATASET, variant=config.variant or DEFAULT_VARIANT)
        return chosen, f"data: {DEFAULT_DATASET} (the default: {why}; --data picks another)"
    variant = config.variant or params.get("config.variant") or DEFAULT_VARIANT
    since = prepared_since(data, params) + trained_on_a_fold(params)
    return dataclasses.replace(config, data=data, variant=variant), (
        f"data: {data}, variant {variant} (the model's run {run_id}){since}"
    )


def trained_on_a_fold(params: dict[str, str]) -> str:
    """A warning when the run trained on one fold of a cross-validation: the static split it is scored on then holds
    covers it trained on ('' otherwise)."""
    folds = params.get("config.folds", "0")
    if not folds.isdigit() or int(folds) == 0:
        return ""
    fold = params.get("config.fold", "?")
    return (
        f"; careful: the model trained on fold {fold} of a {folds}-fold cross-validation, so the static split's "
        "covers include its training covers (its own test covers' predictions are its run's predictions/test.csv)"
    )


def prepared_since(data: str, params: dict[str, str]) -> str:
    """'' when folder `data` holds the dataset of a run's `params` (or is the bundled default, which is prepared on
    first use); a note when it was prepared again since, with other contents; a `DataError` when it is not here."""
    root = Path(data)
    if not (root / DATASET_FILE).exists():
        if data == DEFAULT_DATASET:
            return ""
        name, digest = params.get("dataset_name", "?"), params.get("dataset_digest", "?")
        command, exact = prepare_command(data, params)
        how = f"`{command}`" if exact else f"`{command}` and the split settings it was made with (not in this store)"
        raise DataError(
            f"the model was trained on the dataset {name} (digest {digest}) in {data}, which is not here: make it with "
            f"{how}, or give --data"
        )
    seen, now = params.get("dataset_digest"), DatasetInfo.read(root).digest
    return f"; prepared again since: digest {now}, the model saw {seen}" if seen and seen != now else ""


def prepare_command(data: str, params: dict[str, str]) -> tuple[str, bool]:
    """The `genre prepare` command that makes in folder `data` the dataset a run's `params` name, and whether it is
    exact: rebuilt from the finished prepare run of the same digest in this store, else from the dataset's name and
    image size alone."""
    digest = params.get("dataset_digest", "")
    query = (
        f"params.dataset_digest = '{runs.quote(digest)}' and tags.`genre.stage` = 'prepare' "
        "and attributes.status = 'FINISHED'"
    )
    found = runs.search(None, query, newest_first=True, max_results=1) if digest else []
    if not found:
        name, size = params.get("dataset_name", "digits"), params.get("image_size")
        source = [] if name == "digits" else ["--folder", "IMAGES", "--name", shlex.quote(name)]
        sized = ["--image-size", size] if size else []
        return " ".join(["genre", "prepare", *source, *sized, "--out", shlex.quote(data)]), False
    logged = {key: found[0].data.params.get(f"config.{key}") for key in PACK_SETTINGS}
    try:
        made = build(PrepareConfig, ("the prepare run", {k: v for k, v in logged.items() if v}))
    except ConfigError:  # a prepare run of another genre version
        return f"genre prepare --out {shlex.quote(data)}", False
    flags = _named_config(found[0].data.tags.get("genre.config_file", ""), made)
    if flags is None:
        usual = _pack_settings(PrepareConfig(manifest=made.manifest, folder=made.folder))  # its name and image size
        usual |= {"manifest": None, "folder": None}
        flags = [
            f"--{key.replace('_', '-')} {shlex.quote(_shown(value))}"
            for key, value in _pack_settings(made).items()
            if value is not None and value != usual[key]
        ]
    if Path(data) != made.out_dir:
        flags.append(f"--out {shlex.quote(data)}")
    return " ".join(["genre prepare", *flags]), True


def _named_config(path: str, made: PrepareConfig) -> list[str] | None:
    """`["--dataset NAME"]` when the dataset's config file (a prepare run's `genre.config_file` tag) is here and
    still makes the same pack; else None."""
    if not path or not Path(path).is_file():
        return None
    try:
        named = build(PrepareConfig, (path, read_config_file(Path(path))))
    except ConfigError:
        return None
    if _pack_settings(named) != _pack_settings(made):
        return None
    home = EXPERIMENTS_DIR / "datasets"
    return [f"--dataset {Path(path).stem if Path(path).parent == home else shlex.quote(path)}"]


def _pack_settings(config: PrepareConfig) -> dict[str, Any]:
    """What decides a pack's contents, with the name and image size a prepare without them would take."""
    values = {key: getattr(config, key) for key in PACK_SETTINGS}
    return values | {"name": config.dataset_name, "image_size": config.size}


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def model_and_split(config: EvaluateConfig | InterpretConfig, progress: bool) -> tuple[Any, Pack, DatasetInfo]:
    """The logged model `config.model_uri` (its store checked first) and the split it is to be scored on; `config`
    has its data chosen (`with_model_data`)."""
    require_model_uri(config.model_uri)
    reach_model_store(config.model_uri)  # before any work: loading the model would retry for minutes
    ensure_dataset(config.data, progress)
    check_parts_fit(Path(config.data), config.variant, FoldChoice(), (config.split,))
    pack = open_pack(Path(config.data), config.variant, config.split)
    info = DatasetInfo.read(Path(config.data))
    return load_cover_model(config.model_uri), pack, info


def probabilities_of(predictions: Any, genres: list[str]) -> np.ndarray:
    """The `p_<genre>` columns of a model's output, in the dataset's genre order."""
    columns = [f"{PROBABILITY_PREFIX}{genre}" for genre in genres]
    missing = [column for column in columns if column not in predictions.columns]
    if missing:
        known = [c.removeprefix(PROBABILITY_PREFIX) for c in predictions.columns if c.startswith(PROBABILITY_PREFIX)]
        raise DataError(
            f"the model predicts genres {known}, the dataset has {genres}; "
            "evaluate it on the dataset it was trained for"
        )
    return predictions[columns].to_numpy(dtype=np.float64)


def score_cover_model(model: Any, pack: Pack, batch_size: int) -> Evaluation:
    """Predict every image of `pack` with a pyfunc cover `model`; loss is the mean negative log-likelihood.

    Pixels go straight to the cover model's `predict` (the pyfunc wrapper's schema takes encoded images only).
    """
    classifier = model.unwrap_python_model()
    parts = []
    for start in range(0, len(pack), batch_size):
        pixels = np.ascontiguousarray(pack.images[start : start + batch_size])
        parts.append(probabilities_of(classifier.predict(None, pixels), pack.genres))
    probabilities = np.concatenate(parts) if parts else np.zeros((0, len(pack.genres)))
    labels = pack.labels.astype(np.int64)
    picked = probabilities[np.arange(len(labels)), labels] if len(labels) else np.zeros(0)
    loss = float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0)))) if len(labels) else float("nan")
    return Evaluation(loss, probabilities, labels)


def training_calibration(data: str, variant: str, choice: FoldChoice, count: int) -> np.ndarray:
    """`count` training covers of the part `choice` names (the static split, or a fold's training part) of the
    prepared dataset `data`, evenly spaced: what an INT8 copy of a network is calibrated on (`--quantize`)."""
    return calibration_covers(open_parts(Path(data), variant, choice)["train"].images, count)


def check_quantizable(config: Any) -> None:
    """Before any work: `--quantize` on a machine where INT8 cannot run is a `ConfigError` (found at the end, it would
    cost the trained model its logging)."""
    reason = quantization_refusal(mx.cpu()) if config.quantize else None
    if reason:
        raise ConfigError(f"--quantize cannot run here: {reason}; leave it off")


def quantization_covers(config: Any) -> np.ndarray | None:
    """The covers that calibrate the INT8 copy in the model a training or baseline run logs (`config.quantize`, on
    its own training part), else None."""
    if not config.quantize:
        return None
    return training_calibration(config.data, config.variant, config, config.calibration_covers)


def quantize_model(classifier: CoverClassifier, data: str, variant: str, count: int) -> str:
    """Switch a loaded cover model to an INT8 copy of its network, calibrated on `count` training covers of `data`'s
    static split (a model that holds one already keeps it); returns the line that says so. A machine where INT8
    cannot run is a `ConfigError`."""
    if classifier.precision == "int8":
        return f"INT8: the model's own copy (calibrated on {classifier.quantized.get('covers', '?')} covers)"
    check_quantizable(QuantizeChoice(quantize=True))  # before the calibration covers are read
    ensure_dataset(data, False)
    pixels = training_calibration(data, variant, FoldChoice(), count)
    classifier.quantize(pixels)
    return f"INT8: calibrated on {len(pixels)} training covers of {data} ({variant})"


def calibration_data(model_uri: str, given: str) -> tuple[str, str]:
    """The prepared dataset (folder, variant) whose training covers calibrate `--quantize` of a model: `given`, else
    the one the model was trained on (`with_model_data`); a model that names no run needs `given`."""
    if given:
        return given, DEFAULT_VARIANT
    run_id = source_run(model_uri)
    if not (run_id and runs.run_params(run_id).get("config.data")):
        raise ConfigError(
            f"--quantize calibrates on training covers, and {model_uri} names no run that logged its dataset: "
            "give --calibration-data DIR (a prepared dataset)"
        )
    chosen, _ = with_model_data(EvaluateConfig(model_uri=model_uri))
    return chosen.data, chosen.variant
