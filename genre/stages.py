"""The stages that train or fit a model, each inside one tracked run: shared by their own commands and the suite.

A stage returns what it made and prints nothing; its caller decides what to say.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genre.config import build
from genre.data.pack import DATASET_FILE, DatasetInfo
from genre.data.prepare import DEFAULT_DATASET, PrepareConfig, prepare
from genre.models.baselines import BaselineConfig, BaselineResult, run_baseline
from genre.runtime import usable_cores
from genre.tracking.reports import log_baseline, log_training_outcome, log_training_start
from genre.tracking.tracker import experiment_name, tracked_run

if TYPE_CHECKING:  # training modules import mxnet, which prepare and baseline do not need
    from genre.training.config import TrainConfig
    from genre.training.train import TrainOutcome


@dataclass
class Staged:
    """A stage's run and what it produced."""

    run_id: str
    info: DatasetInfo
    config: Any
    result: Any  # BaselineResult or TrainOutcome


def ensure_dataset(data: str, progress: bool) -> None:
    """The bundled default is prepared on first use; any other missing dataset is the user's to prepare."""
    root = Path(data)
    if (root / DATASET_FILE).exists() or data != DEFAULT_DATASET:
        return
    print(f"{root} is not prepared yet: preparing the bundled digits first")
    prepare(PrepareConfig(out=data), progress=progress)


def baseline_stage(
    config: BaselineConfig,
    experiment: str | None,
    tags: Mapping[str, str],
    nested: bool = False,
    run_name: str | None = None,
) -> Staged:
    """Fit and score a scikit-learn baseline in its own run."""
    info = DatasetInfo.read(Path(config.data))
    workers = config.workers or usable_cores()
    name = None if nested else experiment_name(experiment, f"genre-{info.name}")
    tags = {"genre.stage": "baseline", **tags}
    with tracked_run(name, run_name or f"baseline-{config.model}", tags, nested=nested) as tracker:
        result: BaselineResult = run_baseline(config, workers)
        log_baseline(tracker, config, result, info)
    return Staged(tracker.run_id, info, config, result)


def resume_config(run_id: str, checkpoint_dir: str) -> tuple[TrainConfig, int]:
    """The settings a killed run was started with and the epochs it completed, from its last checkpoint."""
    from genre.training.checkpoint import CheckpointStore
    from genre.training.config import TrainConfig

    saved = CheckpointStore(Path(checkpoint_dir) / run_id).read_state()
    return build(TrainConfig, ("checkpoint of run " + run_id, saved.config | {"resume": run_id})), saved.epoch


def train_stage(
    config: TrainConfig,
    experiment: str | None,
    tags: Mapping[str, str],
    progress: bool,
    example: bytes | None = None,
    nested: bool = False,
    run_name: str | None = None,
) -> Staged:
    """Train (or, with `config.resume`, continue) a network in its own run, then log its test report and model."""
    from genre import devices
    from genre.training.checkpoint import CheckpointStore
    from genre.training.train import train

    resume = config.resume
    contexts = devices.contexts(config.gpus, config.cpu_contexts)  # a missing GPU fails before any work
    ensure_dataset(config.data, progress)
    info = DatasetInfo.read(Path(config.data))
    tags = {"genre.stage": "train", **tags} | ({"genre.resumed_from": resume} if resume else {})
    name = None if nested else experiment_name(experiment, f"genre-{info.name}")
    with tracked_run(name, run_name or f"train-{config.model}", tags, run_id=resume, nested=nested) as tracker:
        checkpoints = CheckpointStore(Path(config.checkpoint_dir) / (resume or tracker.run_id))
        if not checkpoints.exists():
            log_training_start(tracker, config, info, devices.describe(contexts))
        outcome: TrainOutcome = train(config, contexts, tracker, checkpoints)
        log_training_outcome(tracker, outcome, example if example is not None else example_image(config))
    return Staged(tracker.run_id, info, config, outcome)


def example_image(config: TrainConfig) -> bytes:
    """One real image of the test split, PNG-encoded: the model's input example."""
    import io

    import numpy as np
    from PIL import Image

    from genre.data.pack import open_pack

    pack = open_pack(Path(config.data), config.variant, "test")
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pack.images[0])).save(buffer, format="PNG")
    return buffer.getvalue()
