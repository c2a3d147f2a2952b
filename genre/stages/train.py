"""The train stage: a network trained (or a killed run continued) in a run of its own, which then holds every
setting, the per-epoch curves, the test report and the model (`genre.cover_model`).

`run` is the one way a network is trained under tracking: `genre train`, each network of a suite and each trial of
a study call it. In a distributed job (`--kvstore dist_*`) worker 0 owns the run and the checkpoints; the other
workers train beside it and log nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from genre import devices
from genre.command_config import BaselineConfig, InterpretConfig
from genre.config import build
from genre.cover_model import log_cover_model
from genre.data.folds import all_covers, check_parts_fit, fold_parts, split_digest
from genre.data.images import png_bytes
from genre.data.pack import DatasetInfo, open_pack
from genre.disk import check_writable
from genre.errors import EXIT_OK, ConfigError, StoreUnreachable
from genre.figures import learning_curves
from genre.stages import interpret
from genre.stages.model_data import check_quantizable, quantization_covers
from genre.stages.run_facts import (
    Staged,
    config_params,
    config_tags,
    dataset_facts,
    dataset_tags,
    library_versions,
    log_packs,
    omp_threads,
)
from genre.stages.scores import (
    balanced_metrics,
    evaluation_predictions,
    log_fold_split,
    log_predictions,
    log_split_report,
    split_confusion,
)
from genre.stages.startup import ensure_dataset, sigterm_as_interrupt
from genre.tracking import runs
from genre.tracking.jobs import LAUNCH_TAG
from genre.tracking.stale import check_not_alive
from genre.tracking.tracker import Tracker, experiment_name, tracked_run
from genre.training.checkpoint import DEFAULT_CHECKPOINT_DIR, CheckpointStore
from genre.training.config import TrainConfig
from genre.training.distributed import Cluster, SingleProcess, join_cluster
from genre.training.progress import TrainingProgress
from genre.training.train import TrainOutcome, train

EpochCallback = Callable[[int, dict[str, float]], None]
RunCallback = Callable[[Tracker], None]
# What `--resume RUN` takes from the command rather than the checkpoint: where the checkpoint is and how many
# processes continue it (always), and the devices (when given). Every other setting is the checkpoint's: a run's
# settings are its params, logged once.
RESUME_SETTINGS = ("resume", "checkpoint_dir", "kvstore", "interpret")
RESUME_DEVICES = ("gpus", "cpu_contexts")


def run(
    config: TrainConfig,
    experiment: str | None = None,
    tags: Mapping[str, str] | None = None,
    progress: bool = False,
    *,
    nested: bool = False,
    run_name: str | None = None,
    example: bytes | None = None,
    on_started: RunCallback | None = None,
    on_epoch_end: EpochCallback | None = None,
    finished_on: tuple[type[BaseException], ...] = (),
) -> Staged[TrainConfig, TrainOutcome] | None:
    """Train (or, with `config.resume`, continue) a network in its own run, then log its test report and model.

    `progress` shows a bar per epoch on a terminal and prints a line per epoch with the run's ETA (a nested run's
    lines start with its `run_name`). `on_started(tracker)` runs once the run is open and its settings logged (a
    trial logs what the sampler chose);
    `on_epoch_end(epoch, metrics)` after each epoch is checkpointed and logged (a trial reports to its pruner,
    which may stop it by raising one of `finished_on`: the run then ends FINISHED). Returns None on a distributed
    worker other than 0.
    """

    resume = config.resume
    contexts = devices.contexts(config.gpus, config.cpu_contexts)  # a missing GPU fails before any work
    check_quantizable(config)
    cluster = _join(config, progress)
    if not cluster.is_chief:
        shared = CheckpointStore(Path(config.checkpoint_dir) / resume) if resume else None
        train(config, contexts, shared, cluster=cluster)
        cluster.finish()
        print(f"worker {cluster.rank} of {cluster.workers}: done")
        return None
    info = DatasetInfo.read(Path(config.data))
    check_crop_fits(config, info)  # before the run opens
    if resume:  # before the run opens again
        saved = CheckpointStore(Path(config.checkpoint_dir) / resume).read_state()
        check_same_data(resume, saved.dataset_digest, info, config.data)
    tags = {"genre.stage": "train", **(tags or {})} | ({"genre.resumed_from": resume} if resume else {})
    tags |= {LAUNCH_TAG: cluster.launch_id} if cluster.launch_id else {}
    if resume:
        tags |= check_not_alive(resume)
    name = None if nested else experiment_name(experiment, f"genre-{info.name}")
    opened = tracked_run(
        name, run_name or f"train-{config.model}", tags, run_id=resume, nested=nested, finished_on=finished_on,
        system_metrics=config.system_metrics,
    )  # fmt: skip
    with opened as tracker:
        checkpoints = CheckpointStore(Path(config.checkpoint_dir) / (resume or tracker.run_id))
        if not checkpoints.exists():
            log_training_start(tracker, config, info, devices.describe(contexts), cluster.params())
        elif resume:
            log_unlogged_epochs(tracker, resume, checkpoints.read_state().history)
        if on_started is not None:
            on_started(tracker)

        def epoch_end(epoch: int, metrics: dict[str, float]) -> None:
            tracker.log_metrics(metrics, step=epoch)
            if on_epoch_end is not None and epoch > 0:  # epoch 0: the linear probe's start, no training yet
                on_epoch_end(epoch, metrics)

        watching = TrainingProgress.for_terminal(f"{run_name}: " if nested and run_name else "") if progress else None
        try:
            outcome = train(config, contexts, checkpoints, epoch_end, cluster=cluster, progress=watching)
        except finished_on:  # a pruned trial: its run ends FINISHED, so its checkpoint shrinks as a finished run's
            checkpoints.keep_best_and_last()
            raise
        finally:  # a diverged loss or Ctrl-C inside an epoch: its bar leaves the terminal before the error is said
            if watching is not None:
                watching.close()
        assert outcome is not None  # worker 0 and single processes always get the outcome
        example = example if example is not None else example_input(config)
        log_training_outcome(tracker, outcome, example, quantization_covers(config))
        if config.folds:
            log_fold_split(tracker, outcome.files)
        checkpoints.keep_best_and_last()  # the model is logged: nothing is left to resume
    cluster.finish()
    return Staged(tracker.run_id, tracker.store, info, config, outcome)


def _join(config: TrainConfig, progress: bool) -> Cluster | SingleProcess:
    """Join the job (blocks until every worker and server of it is up; this process alone without --kvstore); worker
    0, which writes the checkpoints, checks now that it can, and has the dataset (preparing the bundled one) before
    the others go on."""
    cluster = join_cluster(config.kvstore)
    if cluster.is_chief:  # the one that writes the checkpoints learns now, not after an epoch
        check_writable(Path(config.checkpoint_dir), "checkpoint folder", "--checkpoint-dir")
        ensure_dataset(config.data, progress)
        check_parts_fit(Path(config.data), config.variant, config)  # before the run opens
    if cluster.workers > 1:
        owns = "logs the MLflow run and writes the checkpoints" if cluster.is_chief else "worker 0 logs the run"
        print(
            f"joined the {cluster.kind} job as worker {cluster.rank} of {cluster.workers} (pid {os.getpid()}; {owns})"
        )
    cluster.barrier()  # the others wait for the dataset worker 0 may be preparing
    return cluster


def log_training_start(
    tracker: Tracker, config: TrainConfig, info: DatasetInfo, contexts: str, job: dict[str, object] | None = None
) -> None:
    """Every resolved setting, the dataset (digest, split counts), the devices (and the distributed `job`'s shape)
    and library versions."""
    counts = info.counts[config.variant]
    if config.folds:  # one fold of a cross-validation: its own part sizes
        counts = {
            split: len(part)
            for split, part in fold_parts(all_covers(Path(config.data), config.variant), config).items()
        }
    tracker.log_params(
        config_params(dataclasses.asdict(config))
        | dataset_facts(info)
        | {
            "dataset_split": ",".join(f"{split}={n}" for split, n in counts.items()),
            "image_size": info.image_size,
            "genres": ",".join(info.genres),
            "contexts": contexts,
            "omp_num_threads": omp_threads(),
        }
        | (job or {})
        | library_versions()
    )
    tracker.set_tags(dataset_tags(info))  # the stage tag came with the run: "train", or "trial" in a study
    log_packs(tracker, info, config.data, config.variant, "training")


def log_training_outcome(
    tracker: Tracker, outcome: TrainOutcome, example: bytes, calibration: np.ndarray | None = None
) -> None:
    """Test metrics, the best epoch's validation metrics, the per-genre table, the confusion matrix, learning curves
    and the model (with an INT8 copy calibrated on `calibration`, training covers, when given: `--quantize`).

    The best epoch's validation metrics are `best_val_*`: `val_*` are the per-epoch curves.
    """

    test, genres = outcome.test, outcome.info.genres
    tracker.log_metrics(
        {
            "test_accuracy": test.accuracy,
            "test_top3_accuracy": test.top3_accuracy,
            "test_loss": test.loss,
            "best_val_accuracy": outcome.validation.accuracy,
            "best_epoch": outcome.state.best_epoch,
        }
        | balanced_metrics("test", split_confusion(test, genres), genres)
        | balanced_metrics("best_val", split_confusion(outcome.validation, genres), genres)
    )
    log_split_report(tracker, test, genres, "test", f"best epoch {outcome.state.best_epoch}")
    tracker.log_params({"split_digest": split_digest(outcome.files)})
    for split, evaluation in (("val", outcome.validation), ("test", test)):
        log_predictions(tracker, split, evaluation_predictions(evaluation, outcome.files[split], genres))
    tracker.log_figure(learning_curves(outcome.state.history), "learning_curves.png")
    tracker.log_model(
        functools.partial(
            log_cover_model, outcome.net, genres, outcome.info.image_size, example, name="model",
            network=outcome.network, calibration=calibration,
        )
    )  # fmt: skip


def log_unlogged_epochs(tracker: Tracker, run_id: str, history: list[dict[str, float]]) -> None:
    """Log the epochs a killed run checkpointed but never logged (the store stopped answering in between: training
    writes the checkpoint first), so a resumed run's curves hold every epoch once."""
    logged = {step for step, _ in runs.metric_history(run_id, "epoch_seconds")}  # a metric only epochs log
    for row in history:
        if int(row["epoch"]) not in logged:
            tracker.log_metrics({key: value for key, value in row.items() if key != "epoch"}, step=int(row["epoch"]))


def example_input(config: TrainConfig | BaselineConfig) -> bytes:
    """One real cover of the test split, PNG-encoded: the logged model's input example."""
    return png_bytes(open_pack(Path(config.data), config.variant, "test").images[0])


def resume_config(config: TrainConfig, given: set[str] | None = None) -> tuple[TrainConfig, int]:
    """The settings a killed run (`config.resume`) was started with, and the epochs it completed, from its last
    checkpoint; `config`'s values of `RESUME_SETTINGS` apply on top. Any other setting `given` on the command line
    (or a named config) is refused, naming it: the run continues as it started."""

    given = given or set()
    other = sorted(given - set(RESUME_SETTINGS) - set(RESUME_DEVICES))
    if other:
        allowed = ", ".join(_flag(name) for name in (*RESUME_SETTINGS[1:], *RESUME_DEVICES))
        raise ConfigError(
            f"--resume {config.resume} continues the run with the settings it started with; drop "
            f"{', '.join(map(_flag, other))} (only {allowed} may change on resume)"
        )
    saved = CheckpointStore(Path(config.checkpoint_dir) / config.resume).read_state()
    if saved.finished:
        raise ConfigError(
            f"--resume {config.resume}: that run finished training (epoch {saved.epoch}) and logged its model, "
            f"runs:/{config.resume}/model; there is nothing to resume"
        )
    applied = [*RESUME_SETTINGS, *(name for name in RESUME_DEVICES if name in given)]
    settings = saved.config | {name: getattr(config, name) for name in applied}
    return build(TrainConfig, ("checkpoint of run " + config.resume, settings)), saved.epoch


def check_crop_fits(config: TrainConfig, info: DatasetInfo) -> None:
    """A `ConfigError` naming `crop_size` when it asks for more than the packed images hold (it used to open a run,
    then fail blaming the model)."""
    if config.crop_size > info.image_size:
        raise ConfigError(
            f"'crop_size' {config.crop_size} is larger than the {info.image_size}-px images of {config.data}; use at "
            f"most {info.image_size} (0: the network's own side where the images allow)"
        )


def check_same_data(run_id: str, digest: str, info: DatasetInfo, data: str) -> None:
    """A `ConfigError` unless `data` (read as `info`) holds the packs the run trained on (its checkpoint's
    `dataset_digest`; a checkpoint written before it recorded one is taken on trust). Another split of the same
    covers would let the resumed epochs train on the first epochs' test covers."""
    if digest and info.digest != digest:
        raise ConfigError(
            f"--resume {run_id}: the run trained on dataset {digest}, but {data} now holds {info.digest} (prepared "
            "again since); prepare it as it was (the same source, --seed and fractions) or start a new run without "
            "--resume"
        )


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def command(
    config: TrainConfig,
    experiment: str | None,
    config_file: Path | None,
    progress: bool,
    given: set[str] | None = None,
) -> int:
    """`genre train`: train, evaluate on the test split, log everything and the model; or `--resume RUN_ID`.

    `given` names the settings the command line set (a `--resume` refuses most of them)."""
    if config.resume:
        if config_file is not None:
            raise ConfigError(
                f"--resume {config.resume} continues the run with the settings it started with; drop the named "
                f"config {config_file}"
            )
        resume = config.resume
        config, completed = resume_config(config, given)
        print(f"resuming run {resume} after epoch {completed} of {config.epochs}")
    try:
        with sigterm_as_interrupt():
            staged = run(config, experiment, config_tags(config_file), progress)
    except StoreUnreachable as error:
        raise StoreUnreachable(_with_resume_hint(error, config), error.run_id) from None
    if staged is None:  # a distributed worker other than 0: worker 0 reports the job
        return EXIT_OK
    outcome = staged.result
    print(
        f"{config.model} on {staged.info.name}/{config.variant}: test accuracy {outcome.test.accuracy:.2%} "
        f"(top-3 {outcome.test.top3_accuracy:.2%}), best validation {outcome.validation.accuracy:.2%} "
        f"at epoch {outcome.state.best_epoch}"
    )
    print(f"MLflow run {staged.run_id} at {staged.store}; model: runs:/{staged.run_id}/model")
    if config.interpret:
        settings = InterpretConfig(data=config.data, variant=config.variant, model_uri=f"runs:/{staged.run_id}/model")
        return interpret.command(settings, experiment, progress)
    return EXIT_OK


def _with_resume_hint(error: StoreUnreachable, config: TrainConfig) -> str:
    """The store's failure, and how to continue once it answers: the finished epochs are checkpointed."""

    message = str(error)
    if not error.run_id or not CheckpointStore(Path(config.checkpoint_dir) / error.run_id).exists():
        return message
    folder = "" if config.checkpoint_dir == DEFAULT_CHECKPOINT_DIR else f" --checkpoint-dir {config.checkpoint_dir}"
    return (
        message.split("; ")[0] + f"; every finished epoch is checkpointed: once the store answers again, "
        f"`genre train --resume {error.run_id}{folder}` continues the run"
    )
