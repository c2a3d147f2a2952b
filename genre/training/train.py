"""Training a network: data, network, trainer, epochs with checkpoints and early stopping, then the test pass.

Reports through one callback, `on_epoch_end(epoch, metrics)`, called after each epoch's checkpoint is written (and
with epoch 0 for a linear-probe start): the train stage logs there, and a tuning trial also reports to Optuna. It
knows nothing of MLflow. A person watching sees the `TrainingProgress` the stage passes (a bar per epoch, a line per
epoch, the run's ETA). One process and a distributed job run the same loop; the `Cluster` (`SingleProcess` for
one process) does what differs.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mxnet as mx
from mxnet import gluon

from genre.data.folds import open_parts
from genre.data.iterator import ChunkedIterator
from genre.data.pack import DatasetInfo
from genre.models import zoo
from genre.models.held import held_then_trained
from genre.models.inputs import NetworkInput
from genre.models.networks import build_network, input_for, output_prefixes
from genre.training.checkpoint import CheckpointStore, TrainingState
from genre.training.config import TrainConfig
from genre.training.distributed import Cluster, SingleProcess
from genre.training.loop import Evaluation, TrainingDiverged, evaluate, train_one_epoch
from genre.training.losses import training_loss
from genre.training.probe import fit_probe_head
from genre.training.progress import TrainingProgress
from genre.training.schedule import Schedule, ScheduleAdapter, parse_steps

log = logging.getLogger(__name__)
EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class TrainOutcome:
    """What a finished training run produced; `net` holds the best validation epoch's parameters."""

    net: gluon.HybridBlock
    info: DatasetInfo
    network: NetworkInput
    state: TrainingState
    validation: Evaluation
    test: Evaluation
    stopped_early: bool
    files: dict[str, list[str]]  # the covers (keys) of each part, in the evaluations' order


def backbone_parameters(net: gluon.HybridBlock, model: str, classes: int) -> list[gluon.Parameter]:
    """Every trainable parameter but the output layer's: what `freeze_epochs` holds still (BatchNorm's running
    statistics are not parameters a gradient reaches, so they still adapt to the covers)."""
    backbone, _ = zoo.split_parameters(net, output_prefixes(net, model, classes))
    return [param for param in backbone.values() if param.grad_req != "null"]


def hold_backbone(backbone: list[gluon.Parameter], frozen: bool) -> None:
    """Hold the backbone still (no gradient at all, so a frozen epoch costs little more than a forward pass) or
    release it. The trainer skips parameters whose `grad_req` is 'null', so its state carries over unchanged."""
    wanted = "null" if frozen else "write"
    for param in backbone:
        if param.grad_req != wanted:
            param.grad_req = wanted


def better_epoch(validation: Evaluation, state: TrainingState) -> bool:
    """Whether this epoch beats the best so far: a higher validation accuracy, or the same with a lower loss.

    A validation split of a hundred covers ties often; the tie goes to the epoch that is surer of its answers
    (usually a later one, at a lower learning rate), not to whichever reached that accuracy first.
    """
    if validation.accuracy != state.best_val_accuracy:
        return validation.accuracy > state.best_val_accuracy
    best = [row["val_loss"] for row in state.history if row["epoch"] == state.best_epoch]
    return validation.loss < (best[0] if best else float("inf"))


def make_trainer(
    net: gluon.HybridBlock,
    config: TrainConfig,
    updates_per_epoch: int,
    contexts: list[mx.Context],
    cluster: Cluster | SingleProcess,
) -> gluon.Trainer:
    """The Gluon trainer with the schedule inside `optimizer_params` (so its state is saved with the trainer).

    In a distributed job, the gradients are summed over the workers before each worker's update.
    """
    schedule = Schedule(
        kind=config.lr_schedule,
        base_lr=config.learning_rate,
        epochs=config.epochs,
        updates_per_epoch=updates_per_epoch,
        steps=parse_steps(config.lr_steps),
        factor=config.lr_factor,
        warmup_epochs=config.warmup_epochs,
    )
    params: dict[str, object] = {
        "learning_rate": config.learning_rate,
        "wd": config.weight_decay,
        "lr_scheduler": ScheduleAdapter(schedule),
    }
    if config.optimizer in ("sgd", "nag"):
        params["momentum"] = config.momentum
    trainable = {name: p for name, p in net.collect_params().items() if p.grad_req != "null"}
    return cluster.trainer(trainable, config.optimizer, params, len(contexts))


def epoch_metrics(stats, validation: Evaluation, learning_rate: float) -> dict[str, float]:
    """One epoch's curve points; balanced accuracy beside accuracy shows when the small genres lag behind."""
    return {
        "train_loss": stats.loss,
        "train_accuracy": stats.accuracy,
        "val_loss": validation.loss,
        "val_accuracy": validation.accuracy,
        "val_balanced_accuracy": validation.balanced_accuracy,
        "learning_rate": learning_rate,
        "images_per_second": stats.images_per_second,
        "epoch_seconds": stats.seconds,
    }


def _starting_state(
    config: TrainConfig,
    info: DatasetInfo,
    net: gluon.Block,
    trainer: gluon.Trainer,
    checkpoints: CheckpointStore | None,
    cluster: Cluster | SingleProcess,
) -> TrainingState:
    """A new run's empty state, or a resumed run's from its checkpoint (the parameters and trainer restored too); every
    worker of a job must start from the same epoch."""
    state = TrainingState(config=dataclasses.asdict(config), dataset_digest=info.digest)
    if checkpoints is not None and checkpoints.exists():
        state = checkpoints.read_state()
    hint = "resume with every worker reading the same checkpoint (a --checkpoint-dir they share)"
    cluster.check_agree("the completed epochs", state.epoch, hint)
    if checkpoints is not None and state.epoch:
        checkpoints.restore(net, trainer, state)
        log.info("resuming after epoch %d from %s", state.epoch, checkpoints.folder)
    return state


def _record_epoch(
    state: TrainingState, epoch: int, epochs: int, metrics: dict[str, float], validation: Evaluation
) -> bool:
    """The finished epoch into `state` (its metrics into the history; the best epoch if it is better); whether it
    is."""
    improved = better_epoch(validation, state)
    state.epoch = epoch
    state.history.append({"epoch": epoch, **metrics})
    if improved:
        state.best_epoch, state.best_val_accuracy = epoch, validation.accuracy
    log.debug(
        "epoch %d/%d: train loss %.4f accuracy %.4f | val loss %.4f accuracy %.4f | %.0f img/s",
        epoch, epochs, metrics["train_loss"], metrics["train_accuracy"], validation.loss, validation.accuracy,
        metrics["images_per_second"],
    )  # fmt: skip
    return improved


def _with_last_checkpoint(error: TrainingDiverged, state: TrainingState, checkpoints: CheckpointStore | None) -> str:
    """A diverged loss's message, and where the last good epoch is kept (if one was)."""
    if not (state.epoch and checkpoints):
        return str(error)
    return f"{error}; the last good checkpoint (epoch {state.epoch}) is kept in {checkpoints.folder}"


def _start_from_probe(
    config: TrainConfig,
    net: gluon.HybridBlock,
    train_batches: ChunkedIterator,
    val_batches: ChunkedIterator,
    network: NetworkInput,
    classes: int,
    report: EpochCallback,
) -> None:
    """Set the output layer to the linear probe of the training covers; its validation scores are epoch 0 of the
    curves: where fine-tuning starts."""
    fit_probe_head(net, train_batches, network, classes, config.seed, config.probe_c, config.probe_class_weight)
    probed = evaluate(net, val_batches, gluon.loss.SoftmaxCrossEntropyLoss(), network)
    report(0, {"val_loss": probed.loss, "val_accuracy": probed.accuracy,
               "val_balanced_accuracy": probed.balanced_accuracy})  # fmt: skip
    log.info("linear probe head: val accuracy %.4f, balanced %.4f", probed.accuracy, probed.balanced_accuracy)


def train(
    config: TrainConfig,
    contexts: list[mx.Context],
    checkpoints: CheckpointStore | None,
    on_epoch_end: EpochCallback | None = None,
    cluster: Cluster | SingleProcess | None = None,
    progress: TrainingProgress | None = None,
) -> TrainOutcome | None:
    """Train (or continue training from `checkpoints`) and evaluate the best epoch on the test split.

    In a distributed job (`cluster`), only worker 0 writes checkpoints, evaluates the test split and shows
    `progress`; the other workers return None (their `checkpoints` is None, or the shared folder of the run they
    resume).
    """
    cluster = cluster or SingleProcess()
    report = on_epoch_end or (lambda epoch, metrics: None)
    info = DatasetInfo.read(Path(config.data))
    packs = open_parts(Path(config.data), config.variant, config)  # the static split's packs, or one fold's
    train_batches = cluster.training_batches(
        packs["train"], config.batch_size, config.chunk_size, contexts, config.seed
    )
    owner = cluster.is_chief
    progress = progress if owner else None
    val_batches, test_batches = (
        ChunkedIterator(packs[split], config.batch_size, config.chunk_size, contexts) for split in ("val", "test")
    )
    mx.random.seed(config.seed)
    network = input_for(config.model, config.crop_size, info.image_size)
    net = build_network(config, len(info.genres), contexts, network.size)
    trainer = make_trainer(net, config, len(train_batches), contexts, cluster)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    train_loss = training_loss(config.label_smoothing)
    backbone = backbone_parameters(net, config.model, len(info.genres)) if config.freeze_epochs else []
    log.info("network input: %dx%d crops of the %d-px pack", network.size, network.size, info.image_size)

    state = _starting_state(config, info, net, trainer, checkpoints, cluster)
    if not state.epoch and config.probe_head and owner:  # the other workers get it with the chief's parameters below
        probe_batches = ChunkedIterator(packs["train"], config.batch_size, config.chunk_size, contexts)
        _start_from_probe(config, net, probe_batches, val_batches, network, len(info.genres), report)
    cluster.broadcast_parameters(net)
    scores = held_then_trained(net, config.frozen_layers, contexts)  # `net`, or its held layers fused, then the rest

    stopped_early = False
    for epoch in range(state.epoch + 1, config.epochs + 1):
        hold_backbone(backbone, epoch <= config.freeze_epochs)
        if progress is not None:
            progress.epoch_started(epoch, config.epochs, len(train_batches))
        on_batch = progress.batch_done if progress is not None else None
        try:
            stats = train_one_epoch(
                scores, trainer, train_batches, epoch, config, config.seed, train_loss, network, on_batch
            )
        except TrainingDiverged as error:
            raise TrainingDiverged(_with_last_checkpoint(error, state, checkpoints)) from None
        stats = cluster.finish_epoch(net, train_batches, stats, epoch)
        validation = cluster.evaluate(scores, packs["val"], val_batches, loss_fn, network)
        metrics = epoch_metrics(stats, validation, trainer.learning_rate)
        improved = _record_epoch(state, epoch, config.epochs, metrics, validation)
        if owner and checkpoints is not None:
            checkpoints.save(net, trainer, state, improved)
        if progress is not None:
            progress.epoch_ended(epoch, config.epochs, metrics)
        report(epoch, metrics)  # after the checkpoint: a tracking store that stops answering costs no epoch
        if config.patience and epoch - state.best_epoch >= config.patience:
            log.info("early stop: no better validation accuracy for %d epochs", config.patience)
            stopped_early = True
            break

    if not owner or checkpoints is None:
        return None
    checkpoints.restore_best(net, contexts)
    validation = evaluate(scores, val_batches, loss_fn, network)
    test = evaluate(scores, test_batches, loss_fn, network)
    files = {split: list(pack.files) for split, pack in packs.items()}
    return TrainOutcome(net, info, network, state, validation, test, stopped_early, files)
