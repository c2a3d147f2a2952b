"""Each worker's share of every training batch: a distributed job trains on the batches one process would.

Every epoch, all workers draw the same order of the training split from `(seed, epoch)` (the order one process
would use), cut it into global batches of `--batch-size`, and worker `rank` of `workers` takes its slice of each
batch (`shard_sizes`: as even as possible, the first workers take the remainder). So every example is trained
exactly once per epoch across the workers, every worker takes the same number of steps (a `dist_sync` step
waits for every worker), and the gradient summed over the workers is the one a single process would compute for
that batch. A last batch with fewer examples than workers leaves some workers an empty share: they still take
the step, adding a zero gradient.
"""

from __future__ import annotations

import mxnet as mx
import numpy as np

from genre.data.iterator import ChunkedIterator, ChunkPlan, batch_runs, chunk_orders, shard_sizes
from genre.data.pack import Pack
from genre.errors import ConfigError


def worker_slices(count: int, batch_size: int, workers: int, rank: int) -> list[tuple[int, int]]:
    """Worker `rank`'s `(start, stop)` within each global batch of `count` consecutive examples (may be empty)."""
    slices, offset = [], 0
    for size in batch_runs(count, batch_size):
        sizes = shard_sizes(size, workers)
        start = offset + sum(sizes[:rank])
        slices.append((start, start + sizes[rank]))
        offset += size
    return slices


class ShardedIterator(ChunkedIterator):
    """Worker `rank`'s share of each shuffled training batch; `batch_size` and `chunk_size` are global.

    `len()` is the steps per epoch, the same on every worker. Each chunk of the global order is read by every
    worker, each loading only its slices, so a worker holds about 1/`workers` of a chunk.
    """

    def __init__(
        self,
        pack: Pack,
        batch_size: int,
        chunk_size: int,
        contexts: list[mx.Context],
        workers: int,
        rank: int,
        seed: int = 0,
        prefetch: bool = True,
    ) -> None:
        if not 0 <= rank < workers:
            raise ValueError(f"rank {rank} is not one of {workers} workers")
        if batch_size < workers:
            raise ConfigError(
                f"--batch-size {batch_size} is smaller than the {workers} workers: the batch size is global "
                "(over all workers), so give each worker at least one example per step"
            )
        super().__init__(pack, batch_size, chunk_size, contexts, shuffle=True, seed=seed, prefetch=prefetch)
        self.workers = workers
        self.rank = rank

    def plan(self, epoch: int) -> list[ChunkPlan]:
        plans = []
        for chunk in chunk_orders(len(self.pack), self.chunk_size, True, self.seed, epoch):
            slices = worker_slices(len(chunk), self.batch_size, self.workers, self.rank)
            mine = np.concatenate([chunk[start:stop] for start, stop in slices])
            steps = [
                (stop - start, size)
                for (start, stop), size in zip(slices, batch_runs(len(chunk), self.batch_size), strict=True)
            ]
            plans.append((mine, steps))
        return plans

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """Every example index this worker trains on in `epoch`."""
        return np.concatenate([indices for indices, _ in self.plan(epoch)] or [np.zeros(0, dtype=np.int64)])
