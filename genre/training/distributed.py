"""Data-parallel training across processes on MXNet's parameter-server kvstore (`--kvstore dist_sync`).

`genre launch` starts a scheduler, servers and workers with the DMLC_* environment; each worker runs
`genre train --kvstore dist_sync` and joins here. Worker `rank` trains its slice of every global batch
(`genre.data.shards`); the servers sum the workers' gradients and every worker applies the same optimiser
update to the same weights, so the parameters stay identical, the learning-rate schedule runs on the workers,
and trainer state saves like a single process's. Gluon's own dist-kvstore path is not used: it broadcasts the
first weights through the key the first gradient then uses, and on the CPU the two raced (a worker pulled the
summed gradient as its weights, or the server aborted on a pull before the init); here every kvstore key holds
one kind of value, and the first weights travel before any gradient. Worker 0 owns the MLflow run,
the checkpoints and the final test pass; the per-epoch numbers every worker needs to agree on (training loss
and accuracy, validation predictions, BatchNorm running statistics) are summed through small kvstore keys of
their own, so all workers see the global values and take the same early-stopping decision.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import signal
from dataclasses import dataclass, field
from typing import Any

import mxnet as mx
import numpy as np
from mxnet import gluon, nd

from genre.data.iterator import ChunkedIterator, shard_sizes
from genre.data.pack import Pack
from genre.data.shards import ShardedIterator
from genre.errors import ConfigError, GenreError
from genre.launch.roles import LAUNCH_ID_VARIABLE
from genre.models.inputs import NetworkInput
from genre.training.loop import EpochStats, Evaluation, evaluate

log = logging.getLogger(__name__)
KINDS = ("dist_sync", "dist_device_sync")
ROLE_VARIABLES = ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT", "DMLC_NUM_SERVER", "DMLC_NUM_WORKER")
KEY_BASE = 1 << 24  # the trainer's kvstore keys are 0..parameters-1; the sums below use keys from here on


class DistributedError(GenreError):
    """The workers of a distributed job disagree (shards, parameters, starting epoch)."""


class Terminated(GenreError):
    """SIGTERM: `genre launch` stops every role when one dies."""


def check_environment(kvstore: str, environ: dict[str, str] | os._Environ = os.environ) -> None:
    """A distributed kvstore needs the launcher's environment, and a launched worker needs a distributed kvstore."""
    if kvstore:
        missing = [name for name in ROLE_VARIABLES if not environ.get(name)]
        if missing:
            raise ConfigError(
                f"--kvstore {kvstore} trains across processes started by `genre launch` (missing "
                f"{', '.join(missing)}); run `genre launch --workers 2 --servers 1 -- genre train --kvstore {kvstore}`"
            )
        if environ["DMLC_ROLE"] != "worker":
            raise ConfigError(f"DMLC_ROLE is {environ['DMLC_ROLE']!r}; `genre train` runs as a worker")
    elif environ.get("DMLC_ROLE") == "worker":
        raise ConfigError(
            "started as a worker of a distributed job (DMLC_ROLE=worker) without --kvstore: add --kvstore dist_sync "
            "to the train command, or every worker would train alone"
        )


def _set_barrier_before_exit(kv: Any, barrier: bool) -> None:
    """Whether this worker's kvstore waits for the others when the process exits (MXNet's default: yes)."""
    mx.base.check_call(mx.base._LIB.MXKVStoreSetBarrierBeforeExit(kv.handle, ctypes.c_int(int(barrier))))  # noqa: SLF001


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated("stopped by SIGTERM (genre launch stops the whole job when one of its roles dies)")


@dataclass
class Cluster:
    """This worker's place in the job and the kvstore it shares with the others."""

    kv: Any
    kind: str
    rank: int
    workers: int
    servers: int
    launch_id: str = ""
    _keys: dict[str, int] = field(default_factory=dict)

    @property
    def is_chief(self) -> bool:
        """Worker 0 owns the MLflow run, the checkpoints and the final evaluation."""
        return self.rank == 0

    def key(self, name: str, shape: tuple[int, ...], ctx: mx.Context | None = None) -> int:
        """The kvstore key for `name`, made (on every worker: a barrier) the first time it is asked for."""
        if name not in self._keys:
            self._keys[name] = KEY_BASE + len(self._keys)
            self.kv.init(self._keys[name], nd.zeros(shape, ctx=ctx or mx.cpu()))
        return self._keys[name]

    def sum(self, name: str, values: np.ndarray) -> np.ndarray:
        """`values` summed elementwise over all workers (float32). Every worker calls it, in the same order."""
        flat = nd.array(np.asarray(values, dtype=np.float32).ravel())
        total = nd.zeros(flat.shape)
        self.kv.pushpull(self.key(name, flat.shape), flat, out=total)
        return total.asnumpy().reshape(np.shape(values))

    def gather(self, name: str, row: np.ndarray) -> np.ndarray:
        """Every worker's `row`, stacked by rank: `(workers, len(row))`."""
        rows = np.zeros((self.workers, len(row)), dtype=np.float32)
        rows[self.rank] = row
        return self.sum(name, rows)

    def barrier(self) -> None:
        self.kv._barrier()  # noqa: SLF001 - MXNet's own name for the workers' barrier

    def finish(self) -> None:
        """Training went well: at exit, wait for the other workers and let worker 0 stop the servers (MXNet's way)."""
        _set_barrier_before_exit(self.kv, True)

    def params(self) -> dict[str, object]:
        return {
            "distributed.kvstore": self.kind,
            "distributed.workers": self.workers,
            "distributed.servers": self.servers,
        }

    # What training does differently in a job: each of these has a single-process twin in `SingleProcess`.

    def training_batches(
        self, pack: Pack, batch_size: int, chunk_size: int, contexts: list[mx.Context], seed: int
    ) -> ShardedIterator:
        """This worker's share of each global batch of `batch_size` (the LR means what it means for one process)."""
        return ShardedIterator(pack, batch_size, chunk_size, contexts, self.workers, self.rank, seed=seed)

    def trainer(self, params: Any, optimizer: str, optimizer_params: dict, devices: int) -> gluon.Trainer:
        return WorkerTrainer(self, params, optimizer, optimizer_params, devices)

    def check_agree(self, what: str, value: int, hint: str) -> None:
        check_agree(self, what, value, hint)

    def broadcast_parameters(self, net: gluon.Block) -> None:
        broadcast_parameters(self, net)

    def finish_epoch(self, net: gluon.Block, batches: ShardedIterator, stats: EpochStats, epoch: int) -> EpochStats:
        return finish_epoch(self, net, batches, stats, epoch)

    def evaluate(
        self, net: gluon.Block, pack: Pack, batches: ChunkedIterator, loss_fn: gluon.loss.Loss,
        network: NetworkInput | None = None,
    ) -> Evaluation:  # fmt: skip
        """The whole split's evaluation on every worker, each predicting a slice (`batches` tells the sizes)."""
        return evaluate_shared(self, net, pack, batches.batch_size, batches.chunk_size, batches.contexts, loss_fn,
                               network)  # fmt: skip


@dataclass(frozen=True)
class SingleProcess:
    """Training in this process alone: rank 0 of 1, which owns the run and the checkpoints; sums and barriers have
    no one to wait for."""

    kind: str = ""
    rank: int = 0
    workers: int = 1
    servers: int = 0
    launch_id: str = ""
    is_chief: bool = True

    def sum(self, name: str, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float32)

    def barrier(self) -> None:
        pass

    def finish(self) -> None:
        pass

    def params(self) -> dict[str, object]:
        return {}

    def training_batches(
        self, pack: Pack, batch_size: int, chunk_size: int, contexts: list[mx.Context], seed: int
    ) -> ChunkedIterator:
        return ChunkedIterator(pack, batch_size, chunk_size, contexts, shuffle=True, seed=seed)

    def trainer(self, params: Any, optimizer: str, optimizer_params: dict, devices: int) -> gluon.Trainer:
        return gluon.Trainer(params, optimizer, optimizer_params, kvstore="device" if devices > 1 else "local")

    def check_agree(self, what: str, value: int, hint: str) -> None:
        pass

    def broadcast_parameters(self, net: gluon.Block) -> None:
        pass

    def finish_epoch(self, net: gluon.Block, batches: ChunkedIterator, stats: EpochStats, epoch: int) -> EpochStats:
        return stats

    def evaluate(
        self, net: gluon.Block, pack: Pack, batches: ChunkedIterator, loss_fn: gluon.loss.Loss,
        network: NetworkInput | None = None,
    ) -> Evaluation:  # fmt: skip
        return evaluate(net, batches, loss_fn, network)


def join_cluster(kvstore: str) -> Cluster | SingleProcess:
    """Join the job (blocks until every worker and server is up); `SingleProcess` for a single-process run.

    Until `Cluster.finish`, a failing worker exits at once instead of waiting at MXNet's exit barrier for workers
    that wait for it; SIGTERM becomes `Terminated`, so worker 0's run ends FAILED when the launcher stops the job.
    """
    check_environment(kvstore)
    if not kvstore:
        return SingleProcess()
    kv = mx.kv.create(kvstore)
    _set_barrier_before_exit(kv, False)
    signal.signal(signal.SIGTERM, _terminate)
    servers = int(os.environ["DMLC_NUM_SERVER"])
    return Cluster(kv, kvstore, kv.rank, kv.num_workers, servers, os.environ.get(LAUNCH_ID_VARIABLE, ""))


class WorkerTrainer(gluon.Trainer):
    """A Gluon trainer whose step sums the gradients over this worker's devices, then over all workers (on the
    servers), then updates locally: `step(global batch)` means what it means in one process."""

    def __init__(self, cluster: Cluster, params: Any, optimizer: str, optimizer_params: dict, devices: int) -> None:
        kvstore = "device" if devices > 1 else "local"
        super().__init__(params, optimizer, optimizer_params, kvstore=kvstore, update_on_kvstore=False)
        self.cluster = cluster

    def step(self, batch_size: int, ignore_stale_grad: bool = False) -> None:
        self.allreduce_grads()
        for index, param in enumerate(self._params):
            if param.grad_req != "null":
                grads = param.list_grad()
                key = self.cluster.key(f"gradient {index}", grads[0].shape, grads[0].context)
                self.cluster.kv.pushpull(key, grads[0], out=grads, priority=-index)
        self.update(batch_size, ignore_stale_grad)


def broadcast_parameters(cluster: Cluster, net: gluon.Block) -> None:
    """Every worker starts from worker 0's parameters (its initialisation, or the checkpoint it resumed)."""
    params = sorted(net.collect_params().items())
    chief = [param.data().asnumpy() if cluster.is_chief else np.zeros(param.shape) for _, param in params]
    total = cluster.sum("initial parameters", np.concatenate([values.ravel() for values in chief]))
    offset = 0
    for (_, param), values in zip(params, chief, strict=True):
        param.set_data(nd.array(total[offset : offset + values.size].reshape(values.shape)))
        offset += values.size


def check_agree(cluster: Cluster, what: str, value: int, hint: str) -> None:
    """Stop with a clear message, not a deadlock, when the workers start from different places."""
    values = cluster.gather(what, np.array([value])).ravel().astype(int)
    if len(set(values)) > 1:
        raise DistributedError(f"the workers disagree on {what}: {dict(enumerate(values.tolist()))}; {hint}")


def check_shards(cluster: Cluster, batches: ShardedIterator, epoch: int) -> None:
    """Every training example was trained exactly once in `epoch`, by exactly one worker."""
    counts = np.bincount(batches.epoch_indices(epoch), minlength=len(batches.pack)).astype(np.float32)
    total = cluster.sum("shard counts", counts)
    if not np.all(total == 1):
        missing, repeated = int(np.sum(total == 0)), int(np.sum(total > 1))
        raise DistributedError(
            f"epoch {epoch}: the workers' shards are wrong ({missing} examples trained by nobody, {repeated} more "
            "than once); every worker must run the same command on the same dataset"
        )
    log.info("epoch %d: %d training examples, each trained once over %d workers", epoch, len(total), cluster.workers)


def global_stats(cluster: Cluster, stats: EpochStats) -> EpochStats:
    """The epoch's training loss and accuracy over all workers' examples; images/s of the whole job."""
    loss, correct, images = cluster.sum(
        "epoch stats", np.array([stats.loss * stats.images, stats.accuracy * stats.images, stats.images])
    )
    return EpochStats(float(loss / max(images, 1)), float(correct / max(images, 1)), int(images), stats.seconds)


def average_running_statistics(cluster: Cluster, net: gluon.Block) -> None:
    """BatchNorm's running mean and variance are not gradients: each worker's follow its own shard, so average
    them over workers (and devices) once an epoch, the way saving a multi-device network averages its devices."""
    running = [param for param in net.collect_params().values() if param.grad_req == "null"]
    if not running:
        return
    local = [np.mean([data.asnumpy() for data in param.list_data()], axis=0) for param in running]
    total = cluster.sum("running statistics", np.concatenate([values.ravel() for values in local]))
    offset = 0
    for param, values in zip(running, local, strict=True):
        param.set_data(nd.array(total[offset : offset + values.size].reshape(values.shape) / cluster.workers))
        offset += values.size


def parameter_digest(net: gluon.Block) -> str:
    """sha256 of every parameter's bytes, in name order (equal digests: bitwise-equal networks)."""
    digest = hashlib.sha256()
    for name, param in sorted(net.collect_params().items()):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(param.list_data()[0].asnumpy()).tobytes())
    return digest.hexdigest()


def check_in_sync(cluster: Cluster, net: gluon.Block, epoch: int) -> str:
    """Stop the job if any worker's parameters differ from worker 0's; return the common digest."""
    digest = parameter_digest(net)
    rows = cluster.gather("parameter digests", np.frombuffer(bytes.fromhex(digest)[:16], dtype=np.uint8))
    differ = [rank for rank in range(cluster.workers) if not np.array_equal(rows[rank], rows[0])]
    if differ:
        raise DistributedError(f"epoch {epoch}: the parameters of worker(s) {differ} differ from worker 0's")
    log.info("epoch %d: parameters identical on all %d workers (sha256 %s)", epoch, cluster.workers, digest[:16])
    return digest


def finish_epoch(
    cluster: Cluster, net: gluon.Block, batches: ShardedIterator, stats: EpochStats, epoch: int
) -> EpochStats:
    """After each epoch: check the shards, average BatchNorm statistics, check the parameters, sum the stats."""
    check_shards(cluster, batches, epoch)
    average_running_statistics(cluster, net)
    check_in_sync(cluster, net, epoch)
    return global_stats(cluster, stats)


def evaluate_shared(
    cluster: Cluster,
    net: gluon.Block,
    pack: Pack,
    batch_size: int,
    chunk_size: int,
    contexts: list[mx.Context],
    loss_fn: gluon.loss.Loss,
    network: NetworkInput | None = None,
) -> Evaluation:
    """Each worker predicts a contiguous slice of `pack`; the probabilities of all slices are gathered, so every
    worker holds the evaluation of the whole split, in pack order (what one process's `evaluate` returns)."""
    sizes = shard_sizes(len(pack), cluster.workers)
    start = sum(sizes[: cluster.rank])
    stop = start + sizes[cluster.rank]
    genres = len(pack.genres)
    probabilities = np.zeros((len(pack), genres), dtype=np.float32)
    loss_sum = 0.0
    if stop > start:
        part = Pack(pack.images[start:stop], pack.labels[start:stop], pack.genres, pack.files[start:stop])
        local = evaluate(net, ChunkedIterator(part, batch_size, chunk_size, contexts), loss_fn, network)
        probabilities[start:stop] = local.probabilities
        loss_sum = local.loss * (stop - start)
    total = cluster.sum(f"evaluation of {len(pack)} examples", np.append(probabilities.ravel(), loss_sum))
    labels = pack.labels.astype(np.int64)
    loss = float(total[-1] / len(pack)) if len(pack) else float("nan")
    return Evaluation(loss, total[:-1].reshape(len(pack), genres).astype(np.float64), labels)
