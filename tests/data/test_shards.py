"""Workers' shares of the training batches: disjoint, complete, the very batches one process would train."""

from __future__ import annotations

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon

from genre.data.iterator import Batch, ChunkedIterator
from genre.data.shards import ShardedIterator, worker_slices
from genre.data.transforms import AugmentSpec
from genre.errors import ConfigError
from genre.models.networks import NetworkSpec, build_network
from genre.training.loop import train_one_epoch
from tests.data.test_iterator import numbered_pack


def ids(batch: Batch) -> list[int]:
    """The example ids of a batch (see `numbered_pack`)."""
    found: list[int] = []
    for images, _ in batch.shards:
        pixels = images.asnumpy()
        found += list(pixels[:, 0, 0, 0].astype(int) + 256 * pixels[:, 0, 0, 1].astype(int))
    return found


@pytest.mark.parametrize("contexts", [[mx.cpu(0)], [mx.cpu(0), mx.cpu(1)]])
def test_workers_split_each_batch_one_process_would_train_disjointly_and_completely(contexts) -> None:
    pack = numbered_pack(103)
    single = ChunkedIterator(pack, 10, 35, [mx.cpu()], shuffle=True, seed=3)
    workers = [ShardedIterator(pack, 10, 35, contexts, workers=2, rank=rank, seed=3) for rank in range(2)]
    orders = []
    for epoch in (1, 2):
        whole = [ids(batch) for batch in single.epoch(epoch)]
        shares = [list(worker.epoch(epoch)) for worker in workers]
        assert len(shares[0]) == len(shares[1]) == len(whole) == len(workers[0]) == 11  # the same steps everywhere
        for step, (first, second) in enumerate(zip(*shares, strict=True)):
            assert not set(ids(first)) & set(ids(second))
            assert sorted(ids(first) + ids(second)) == sorted(whole[step])
            assert first.step_examples == second.step_examples == len(whole[step])
            assert abs(first.size - second.size) <= 1
        seen = [i for share in shares for batch in share for i in ids(batch)]
        assert sorted(seen) == list(range(103))  # every example once per epoch, over the workers
        assert sorted(np.concatenate([w.epoch_indices(epoch) for w in workers])) == list(range(103))
        orders.append([ids(batch) for batch in shares[0]])
    assert orders[0] != orders[1]  # reshuffled every epoch


def test_a_last_batch_smaller_than_the_job_leaves_some_workers_an_empty_step() -> None:
    assert worker_slices(21, 10, 3, 2) == [(7, 10), (17, 20), (21, 21)]
    workers = [ShardedIterator(numbered_pack(21), 10, 100, [mx.cpu()], workers=3, rank=r) for r in range(3)]
    shares = [list(worker.epoch(0)) for worker in workers]
    assert [len(share) for share in shares] == [3, 3, 3]
    assert [[batch.size for batch in share] for share in shares] == [[4, 4, 1], [3, 3, 0], [3, 3, 0]]
    assert {batch.step_examples for share in shares for batch in share[2:]} == {1}
    assert sorted(i for share in shares for batch in share for i in ids(batch)) == list(range(21))


def test_a_worker_with_an_empty_share_still_takes_the_step() -> None:
    contexts = [mx.cpu()]
    batches = ShardedIterator(numbered_pack(21), 10, 100, contexts, workers=3, rank=2)
    net = build_network(NetworkSpec(model="mlp", hidden_units=8), 3, contexts, 4)
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})
    stats = train_one_epoch(net, trainer, batches, 0, AugmentSpec(), 0, gluon.loss.SoftmaxCrossEntropyLoss())
    assert stats.images == 6 and trainer.optimizer.num_update == 3


def test_the_global_batch_must_give_every_worker_an_example() -> None:
    with pytest.raises(ConfigError, match="--batch-size 2 is smaller than the 3 workers"):
        ShardedIterator(numbered_pack(10), 2, 10, [mx.cpu()], workers=3, rank=0)
