"""The stages that train or fit a model, each inside one tracked run: shared by their own commands and the suite.

A stage returns what it made and prints nothing; its caller decides what to say.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genre.config import build
from genre.data.pack import DATASET_FILE, DatasetInfo
from genre.data.prepare import DEFAULT_DATASET, PrepareConfig, prepare
from genre.disk import check_writable
from genre.models.baselines import BaselineConfig, BaselineResult, run_baseline
from genre.runtime import usable_cores
from genre.tracking.reports import log_baseline, log_training_outcome, log_training_start
from genre.tracking.tracker import Tracker, experiment_name, tracked_run

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


def resume_config(run_id: str, checkpoint_dir: str, kvstore: str = "local") -> tuple[TrainConfig, int]:
    """The settings a killed run was started with and the epochs it completed, from its last checkpoint.

    How many processes train (`kvstore`) is the resuming command's choice, not the checkpoint's.
    """
    from genre.training.checkpoint import CheckpointStore
    from genre.training.config import TrainConfig

    saved = CheckpointStore(Path(checkpoint_dir) / run_id).read_state()
    settings = saved.config | {"resume": run_id, "kvstore": kvstore}
    return build(TrainConfig, ("checkpoint of run " + run_id, settings)), saved.epoch


def train_stage(
    config: TrainConfig,
    experiment: str | None,
    tags: Mapping[str, str],
    progress: bool,
    example: bytes | None = None,
    nested: bool = False,
    run_name: str | None = None,
) -> Staged | None:
    """Train (or, with `config.resume`, continue) a network in its own run, then log its test report and model.

    In a distributed job (`config.kvstore` dist_*), worker 0 owns the run and the checkpoints; the other workers
    train beside it, log nothing and return None.
    """
    from genre import devices
    from genre.training.checkpoint import CheckpointStore
    from genre.training.distributed import join_cluster
    from genre.training.train import train

    resume = config.resume
    contexts = devices.contexts(config.gpus, config.cpu_contexts)  # a missing GPU fails before any work
    cluster = join_cluster(config.kvstore)  # None for one process; else waits until every worker and server is up
    if cluster is None or cluster.is_chief:  # the one that writes the checkpoints learns now, not after an epoch
        check_writable(Path(config.checkpoint_dir), "checkpoint folder", "--checkpoint-dir")
        ensure_dataset(config.data, progress)
    if cluster is not None:
        owns = "logs the MLflow run and writes the checkpoints" if cluster.is_chief else "worker 0 logs the run"
        print(
            f"joined the {cluster.kind} job as worker {cluster.rank} of {cluster.workers} (pid {os.getpid()}; {owns})"
        )
        cluster.barrier()  # the others wait for the dataset worker 0 may be preparing
        if not cluster.is_chief:
            from genre.tracking.tracker import NullTracker

            shared = CheckpointStore(Path(config.checkpoint_dir) / resume) if resume else None
            train(config, contexts, NullTracker(), shared, cluster=cluster)
            cluster.finish()
            print(f"worker {cluster.rank} of {cluster.workers}: done")
            return None
    info = DatasetInfo.read(Path(config.data))
    tags = {"genre.stage": "train", **tags} | ({"genre.resumed_from": resume} if resume else {})
    tags |= cluster.tags() if cluster else {}
    if resume:
        from genre.tracking.stale import check_not_alive

        tags |= check_not_alive(resume)
    name = None if nested else experiment_name(experiment, f"genre-{info.name}")
    with tracked_run(name, run_name or f"train-{config.model}", tags, run_id=resume, nested=nested) as tracker:
        checkpoints = CheckpointStore(Path(config.checkpoint_dir) / (resume or tracker.run_id))
        if not checkpoints.exists():
            log_training_start(tracker, config, info, devices.describe(contexts))
            if cluster is not None:
                tracker.log_params(cluster.params())
        elif resume:
            log_unlogged_epochs(tracker, resume, checkpoints.read_state().history)
        outcome: TrainOutcome | None = train(config, contexts, tracker, checkpoints, cluster=cluster)
        assert outcome is not None  # worker 0 and single processes always get the outcome
        log_training_outcome(tracker, outcome, example if example is not None else example_image(config))
    if cluster is not None:
        cluster.finish()
    return Staged(tracker.run_id, info, config, outcome)


def log_unlogged_epochs(tracker: Tracker, run_id: str, history: list[dict[str, float]]) -> None:
    """Log the epochs a killed run checkpointed but never logged (the store stopped answering in between: training
    writes the checkpoint first), so a resumed run's curves hold every epoch once."""
    from genre.tracking.runs import metric_history

    logged = {step for step, _ in metric_history(run_id, "epoch_seconds")}  # a metric only epochs log
    for row in history:
        if int(row["epoch"]) not in logged:
            tracker.log_metrics({key: value for key, value in row.items() if key != "epoch"}, step=int(row["epoch"]))


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
