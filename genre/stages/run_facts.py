"""What a stage's run records about itself: the resolved settings as params, the data it saw (params, tags and the
MLflow dataset input), the library versions and threads, the named config file, and the tags a suite puts on its
runs; and `Staged`, what a stage's `run` hands back to the stage that called it (suite, tune)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Generic, TypeVar

import mxnet
import numpy

from genre import __version__
from genre.data.pack import DatasetInfo
from genre.models.zoo import import_gluoncv
from genre.tracking.tracker import Tracker

# Tags a suite puts on each of its runs (`genre.dataset_digest` comes from the stage itself); a report reads them.
SUITE, NAME, CONFIG_DIGEST, SETTINGS_DIGEST, DATA_DIGEST, SEED = (
    "genre.suite",
    "genre.experiment_name",
    "genre.config_digest",
    "genre.settings_digest",
    "genre.dataset_digest",
    "genre.seed",
)

ConfigT = TypeVar("ConfigT")
ResultT = TypeVar("ResultT")


@dataclass
class Staged(Generic[ConfigT, ResultT]):
    """A stage's run and what it produced: `Staged[TrainConfig, TrainOutcome]` from `stages.train.run`,
    `Staged[BaselineConfig, BaselineResult]` from `stages.baseline.run`."""

    run_id: str
    store: str  # the tracking store holding the run, password masked
    info: DatasetInfo
    config: ConfigT
    result: ResultT


def config_tags(config_file: Path | None) -> dict[str, str]:
    return {"genre.config_file": str(config_file)} if config_file else {}


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


def library_versions() -> dict[str, str]:
    gluoncv = import_gluoncv()
    return {
        "version.genre": __version__,
        "version.mxnet": mxnet.__version__,
        "version.gluoncv": gluoncv.__version__,
        "version.mlflow": version("mlflow"),
        "version.numpy": numpy.__version__,
    }


def omp_threads() -> str:
    return os.environ.get("OMP_NUM_THREADS", "")
