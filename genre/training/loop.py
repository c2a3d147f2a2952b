"""One epoch of training and one pass of evaluation, with explicit arguments.

`train`, `tune` and `suite` all call these two functions; nothing here knows about MLflow or files.
The step is the idiomatic Gluon one: shards already on their devices, forward under `autograd.record()`,
backward per shard, `trainer.step(batch size)` sums the gradients over devices.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon, nd

from genre.data.iterator import ChunkedIterator
from genre.data.transforms import AugmentSpec, draw_mixup, training_input
from genre.errors import GenreError
from genre.metrics import accuracy, balanced_accuracy, macro_f1, per_genre_recall, top_k_accuracy
from genre.models.inputs import NetworkInput, network_input

SYNC_EVERY = 20  # batches between host syncs: often enough to stop a diverged run early, rare enough to stay async
# After each batch: batches done this epoch, images trained, the mean loss at the last host sync (None before it).
BatchCallback = Callable[[int, int, float | None], None]


class TrainingDiverged(GenreError):
    """The loss became NaN or infinite."""


@dataclass
class EpochStats:
    loss: float
    accuracy: float
    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Evaluation:
    """Mean loss and the softmax probabilities `(N, genres)` of every example, in pack order."""

    loss: float
    probabilities: np.ndarray
    labels: np.ndarray

    @property
    def accuracy(self) -> float:
        return accuracy(self.probabilities, self.labels)

    @property
    def top3_accuracy(self) -> float:
        return top_k_accuracy(self.probabilities, self.labels, 3)

    @property
    def predictions(self) -> np.ndarray:
        """`(N,)` the most probable genre of each example (empty for an empty split, whose probabilities are
        `(0, 0)`)."""
        if not len(self.probabilities):
            return np.zeros(0, dtype=np.int64)
        return np.argmax(self.probabilities, axis=1)

    @property
    def balanced_accuracy(self) -> float:
        """Mean per-genre recall over the genres present (what accuracy hides on unbalanced genres)."""
        return balanced_accuracy(self.predictions, self.labels, self.probabilities.shape[1])

    @property
    def macro_f1(self) -> float:
        return macro_f1(self.predictions, self.labels, self.probabilities.shape[1])

    @property
    def per_genre_recall(self) -> np.ndarray:
        """`(genres,)` recall of each genre, NaN for a genre with no examples here."""
        return per_genre_recall(self.predictions, self.labels, self.probabilities.shape[1])


def _zero_unused_gradients(net: gluon.Block, used: set[mx.Context]) -> None:
    """A device that got no examples this step must add nothing to the summed gradient (and still take the step:
    the trainer refuses gradients no backward pass wrote, and a distributed step needs every worker)."""
    for param in net.collect_params().values():
        if param.grad_req != "null":
            for data, grad in zip(param.list_data(), param.list_grad(), strict=True):
                if grad.context not in used:
                    grad[:] = 0
                    data._fresh_grad = True  # noqa: SLF001 - the zero gradient is this step's


def _check_finite(loss_sum: float, epoch: int, batch: int) -> None:
    if not math.isfinite(loss_sum):
        raise TrainingDiverged(
            f"epoch {epoch}: the training loss became {loss_sum} by batch {batch}; lower --learning-rate "
            "(or add --warmup-epochs) and start again"
        )


def _forward(
    net: gluon.Block,
    images: nd.NDArray,
    labels: nd.NDArray,
    augment: AugmentSpec,
    rng: np.random.Generator,
    network: NetworkInput | None,
    loss_fn: gluon.loss.Loss,
) -> tuple[nd.NDArray, nd.NDArray]:
    """Outputs and per-example losses of one shard; with mixup, of blended covers against both labels."""
    inputs = training_input(images, augment, rng, network)
    if not augment.mixup_alpha:
        outputs = net(inputs)
        return outputs, loss_fn(outputs, labels)
    weight, partner = draw_mixup(len(labels), augment.mixup_alpha, rng)
    partner = nd.array(partner, ctx=inputs.context)
    outputs = net(weight * inputs + (1.0 - weight) * inputs.take(partner))
    return outputs, weight * loss_fn(outputs, labels) + (1.0 - weight) * loss_fn(outputs, labels.take(partner))


def train_one_epoch(
    net: gluon.Block,
    trainer: gluon.Trainer,
    batches: ChunkedIterator,
    epoch: int,
    augment: AugmentSpec,
    seed: int,
    loss_fn: gluon.loss.Loss,
    network: NetworkInput | None = None,
    on_batch: BatchCallback | None = None,
) -> EpochStats:
    """Train one pass over `batches` (shuffled by epoch); raise `TrainingDiverged` on a non-finite loss.

    `network` is the input the net takes (side and normalisation); None takes the images as they are packed.
    `on_batch` (a progress bar) hears of every batch without forcing a host sync: the loss it gets is the last synced.
    """
    mx.random.seed(seed * 100_003 + epoch)  # dropout: a resumed epoch draws what the original would have
    augment_rng = np.random.default_rng([seed, epoch, 1])
    started = time.perf_counter()
    device_count = len(batches.contexts)
    loss_parts: list[nd.NDArray] = []
    correct_parts: list[nd.NDArray] = []
    loss_sum, correct, images, synced = 0.0, 0.0, 0, 0
    for index, batch in enumerate(batches.epoch(epoch)):
        with autograd.record():
            scored = [_forward(net, x, y, augment, augment_rng, network, loss_fn) for x, y in batch.shards]
            outputs, losses = [out for out, _ in scored], [loss for _, loss in scored]
        for loss in losses:
            loss.backward()
        if len(batch.shards) < device_count:
            _zero_unused_gradients(net, {x.context for x, _ in batch.shards})
        trainer.step(batch.step_examples)
        for out, loss, (_, y) in zip(outputs, losses, batch.shards, strict=True):
            loss_parts.append(loss.sum())
            correct_parts.append((out.argmax(axis=1) == y).sum())
        images += batch.size
        if (index + 1) % SYNC_EVERY == 0:
            loss_sum += sum(part.asscalar() for part in loss_parts)
            correct += sum(part.asscalar() for part in correct_parts)
            loss_parts, correct_parts = [], []
            _check_finite(loss_sum, epoch, index + 1)
            synced = images
        if on_batch is not None:
            on_batch(index + 1, images, loss_sum / synced if synced else None)
    loss_sum += sum(part.asscalar() for part in loss_parts)
    correct += sum(part.asscalar() for part in correct_parts)
    _check_finite(loss_sum, epoch, len(batches))
    return EpochStats(loss_sum / max(images, 1), correct / max(images, 1), images, time.perf_counter() - started)


def evaluate(
    net: gluon.Block, batches: ChunkedIterator, loss_fn: gluon.loss.Loss, network: NetworkInput | None = None
) -> Evaluation:
    """Loss and probabilities over `batches` in order (every example once, no augmentation, the centre crop)."""
    probabilities: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    loss_sum = 0.0
    for batch in batches.epoch(0):
        for x, y in batch.shards:
            out = net(network_input(x, network))
            loss_sum += loss_fn(out, y).sum().asscalar()
            probabilities.append(nd.softmax(out, axis=1).asnumpy())
            labels.append(y.asnumpy().astype(np.int64))
    count = sum(len(part) for part in labels)
    if not count:
        return Evaluation(float("nan"), np.zeros((0, 0)), np.zeros(0, dtype=np.int64))
    return Evaluation(loss_sum / count, np.concatenate(probabilities), np.concatenate(labels))
