"""The chunked iterator: a pack reaches the devices a bounded chunk at a time, never whole.

The original work's answer to small GPU memory, kept because it also bounds host memory: each chunk is
read from the memory-mapped pack, shuffled, split by device and copied to each device as uint8 (a quarter
of float32's bytes); batches are then sliced on the device, where conversion and augmentation happen.
While one chunk trains, a background thread reads and copies the next, so the device does not wait.
Two chunks are on the device at most (the one in use and the next); while the next is loading, the host
also holds one more chunk briefly (the gathered pixels on their way to the device). benchmarks/iterator_memory.py
measures it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import mxnet as mx
import numpy as np
from mxnet import nd

from genre.data.pack import Pack
from genre.runtime import release_large_blocks


@dataclass
class Batch:
    """One batch, already on the devices: per used context, uint8 images `(n, H, W, 3)` and float labels `(n,)`.

    `step_size` is the examples of the whole optimiser step when other workers train the rest of it
    (`genre.data.shards`); the gradient is normalised by it. A worker's share may be empty (`size` 0).
    """

    shards: list[tuple[nd.NDArray, nd.NDArray]]
    size: int
    step_size: int | None = None

    @property
    def step_examples(self) -> int:
        return self.size if self.step_size is None else self.step_size


@dataclass
class _Chunk:
    """A chunk copied to the devices, with where each batch's shard sits in each device's part."""

    images: list[nd.NDArray | None]
    labels: list[nd.NDArray | None]
    batches: list[list[tuple[int, int]]]  # per batch, per context: (start, stop) in that context's part


def shard_sizes(batch: int, devices: int) -> list[int]:
    """Split `batch` examples over `devices` as evenly as possible (first devices take the remainder)."""
    base, extra = divmod(batch, devices)
    return [base + (1 if i < extra else 0) for i in range(devices)]


def batch_runs(count: int, batch_size: int) -> list[int]:
    """The sizes of the batches `count` examples make: full ones, then the partial rest."""
    full, rest = divmod(count, batch_size)
    return [batch_size] * full + ([rest] if rest else [])


def chunk_orders(count: int, chunk_size: int, shuffle: bool, seed: int, epoch: int) -> list[np.ndarray]:
    """The example indices of each chunk of `count` examples, in the order an epoch visits them.

    Shuffled, the order of chunks and of examples within each chunk come from `(seed, epoch)` alone.
    """
    ranges = [np.arange(start, min(start + chunk_size, count)) for start in range(0, count, chunk_size)]
    if not shuffle:
        return ranges
    rng = np.random.default_rng([seed, epoch])
    return [rng.permutation(ranges[k]) for k in rng.permutation(len(ranges))]


ChunkPlan = tuple[np.ndarray, list[tuple[int, int]]]  # indices to load; per batch, (examples here, in the step)


class ChunkedIterator:
    """Batches of a `Pack` on `contexts`, read `chunk_size` images at a time.

    `chunk_size` is rounded down to a multiple of `batch_size` (at least one batch), so only the pack's
    last chunk can end in a partial batch: evaluation sees every example exactly once.
    With `shuffle`, every epoch draws a new order of chunks and of examples within each chunk, from
    `seed` and the epoch number alone (a resumed run sees the same order).
    """

    def __init__(
        self,
        pack: Pack,
        batch_size: int,
        chunk_size: int,
        contexts: list[mx.Context],
        shuffle: bool = False,
        seed: int = 0,
        prefetch: bool = True,
    ) -> None:
        if batch_size < 1 or chunk_size < 1:
            raise ValueError("batch_size and chunk_size must be >= 1")
        self.pack = pack
        self.batch_size = batch_size
        self.chunk_size = max(batch_size, chunk_size // batch_size * batch_size)
        self.contexts = contexts
        self.shuffle = shuffle
        self.seed = seed
        self.prefetch = prefetch
        release_large_blocks()  # freed chunks go back to the system, so memory stays flat at any dataset size

    def __len__(self) -> int:
        """Batches per epoch."""
        return math.ceil(len(self.pack) / self.batch_size)

    @property
    def chunk_count(self) -> int:
        return math.ceil(len(self.pack) / self.chunk_size)

    def chunk_order(self, epoch: int) -> list[np.ndarray]:
        """The example indices of each chunk, in the order the epoch visits them."""
        return chunk_orders(len(self.pack), self.chunk_size, self.shuffle, self.seed, epoch)

    def plan(self, epoch: int) -> list[ChunkPlan]:
        """Per chunk: the indices this process loads and, per batch, its examples here and in the whole step."""
        return [(chunk, [(n, n) for n in batch_runs(len(chunk), self.batch_size)]) for chunk in self.chunk_order(epoch)]

    def _load(self, indices: np.ndarray, steps: list[tuple[int, int]]) -> _Chunk:
        """Read one chunk from the pack and copy each device's share to it (runs in the background thread).

        Each device's share is gathered straight from the memory map (one host copy, in shuffled order) and
        copied to the device; the host copy is dropped as soon as the device has it.
        """
        labels = self.pack.labels[indices].astype(np.float32)
        parts: list[list[int]] = [[] for _ in self.contexts]
        layout: list[list[tuple[int, int]]] = []
        filled = [0] * len(self.contexts)
        start = 0
        for examples, _ in steps:
            sizes = shard_sizes(examples, len(self.contexts))
            offset, spans = start, []
            for device, size in enumerate(sizes):
                parts[device].extend(range(offset, offset + size))
                spans.append((filled[device], filled[device] + size))
                filled[device] += size
                offset += size
            layout.append(spans)
            start = offset
        device_images: list[nd.NDArray | None] = []
        device_labels: list[nd.NDArray | None] = []
        for rows, ctx in zip(parts, self.contexts, strict=True):
            if not rows:  # fewer examples than devices: this device sits the chunk out
                device_images.append(None)
                device_labels.append(None)
                continue
            share = indices[rows]
            # from_numpy shares the gathered buffer instead of copying it: MXNet copies large arrays with an
            # OpenMP loop in the calling thread, and a second OpenMP team in this thread slowed every training
            # step by 20% on 2 cores (benchmarks/train_throughput.py).
            host = nd.from_numpy(np.ascontiguousarray(self.pack.images[share]), zero_copy=True)
            device_images.append(host if host.context == ctx else host.as_in_context(ctx))
            device_labels.append(nd.array(labels[rows], ctx=ctx))
            device_images[-1].wait_to_read()  # the copy is done before the chunk is handed over
            device_labels[-1].wait_to_read()
        return _Chunk(device_images, device_labels, layout)

    def epoch(self, epoch: int = 0) -> Iterator[Batch]:
        """All batches of one epoch."""
        order = self.plan(epoch)
        if not order:
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="chunk") as reader:
            pending: Future[_Chunk] | None = reader.submit(self._load, *order[0]) if self.prefetch else None
            for position, (indices, steps) in enumerate(order):
                chunk = pending.result() if pending is not None else self._load(indices, steps)
                pending = None
                if self.prefetch and position + 1 < len(order):
                    pending = reader.submit(self._load, *order[position + 1])
                for spans, (_, step) in zip(chunk.batches, steps, strict=True):
                    shards = [
                        (chunk.images[d][start:stop], chunk.labels[d][start:stop])
                        for d, (start, stop) in enumerate(spans)
                        if stop > start
                    ]
                    yield Batch(shards, sum(stop - start for start, stop in spans), step)
                del chunk
