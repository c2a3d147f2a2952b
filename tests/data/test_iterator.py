"""The chunked iterator: every example once per epoch, on every device, in a seeded order."""

from __future__ import annotations

import mxnet as mx
import numpy as np
import pytest

from genre.data.iterator import ChunkedIterator, shard_sizes
from genre.data.pack import Pack


def numbered_pack(count: int, size: int = 4) -> Pack:
    """Image i is filled with i % 256 and i // 256 (channels 0 and 1), its label is i % 3."""
    images = np.zeros((count, size, size, 3), dtype=np.uint8)
    images[..., 0] = (np.arange(count) % 256)[:, None, None]
    images[..., 1] = (np.arange(count) // 256)[:, None, None]
    return Pack(images, (np.arange(count) % 3).astype(np.int32), ["a", "b", "c"], [])


def seen(iterator: ChunkedIterator, epoch: int) -> tuple[list[int], list[int], list[int]]:
    """Example ids in visiting order, their labels, and the batch sizes."""
    ids, labels, sizes = [], [], []
    for batch in iterator.epoch(epoch):
        sizes.append(batch.size)
        for images, label in batch.shards:
            pixels = images.asnumpy()
            ids += list(pixels[:, 0, 0, 0].astype(int) + 256 * pixels[:, 0, 0, 1].astype(int))
            labels += list(label.asnumpy().astype(int))
    return ids, labels, sizes


@pytest.mark.parametrize("contexts", [[mx.cpu(0)], [mx.cpu(0), mx.cpu(1)]])
def test_evaluation_order_sees_every_example_once_with_a_partial_last_batch(contexts) -> None:
    iterator = ChunkedIterator(numbered_pack(103), batch_size=10, chunk_size=35, contexts=contexts)
    ids, labels, sizes = seen(iterator, epoch=0)
    assert ids == list(range(103))
    assert labels == [i % 3 for i in range(103)]
    assert sizes == [10] * 10 + [3] and len(iterator) == 11
    assert iterator.chunk_size == 30 and iterator.chunk_count == 4


def test_shuffled_epochs_see_every_example_once_in_a_new_seeded_order() -> None:
    pack = numbered_pack(300)
    iterator = ChunkedIterator(pack, batch_size=16, chunk_size=64, contexts=[mx.cpu()], shuffle=True, seed=5)
    first, labels, _ = seen(iterator, 0)
    second, _, _ = seen(iterator, 1)
    assert sorted(first) == list(range(300)) and sorted(second) == list(range(300))
    assert labels == [i % 3 for i in first]  # labels travel with their images
    assert first != second and first != list(range(300))
    again = ChunkedIterator(pack, batch_size=16, chunk_size=64, contexts=[mx.cpu()], shuffle=True, seed=5)
    assert seen(again, 0)[0] == first  # same seed and epoch, same order: a resumed run repeats it
    other = ChunkedIterator(pack, batch_size=16, chunk_size=64, contexts=[mx.cpu()], shuffle=True, seed=6)
    assert seen(other, 0)[0] != first


def test_shuffling_mixes_within_chunks_and_across_chunk_order() -> None:
    iterator = ChunkedIterator(numbered_pack(256), batch_size=8, chunk_size=64, contexts=[mx.cpu()], shuffle=True)
    ids, _, _ = seen(iterator, 0)
    chunk_of = [i // 64 for i in ids]
    visits = [chunk_of[k] for k in range(0, 256, 64)]
    assert all(len(set(chunk_of[k : k + 64])) == 1 for k in range(0, 256, 64))  # a chunk at a time
    assert ids[:64] != sorted(ids[:64])  # within a chunk, examples are shuffled
    orders = [[i // 64 for i in seen(iterator, epoch)[0]][::64] for epoch in range(1, 6)]
    assert len({tuple(order) for order in [visits, *orders]}) > 1  # and the chunks' order changes between epochs


def test_a_batch_is_split_evenly_over_devices_and_each_shard_lives_on_its_device() -> None:
    contexts = [mx.cpu(0), mx.cpu(1)]
    iterator = ChunkedIterator(numbered_pack(21), batch_size=8, chunk_size=16, contexts=contexts)
    batches = list(iterator.epoch(0))
    assert [[len(labels) for _, labels in batch.shards] for batch in batches] == [[4, 4], [4, 4], [3, 2]]
    for batch in batches:
        assert [images.context for images, _ in batch.shards] == contexts
        assert batch.shards[0][0].dtype == np.uint8


def test_a_batch_smaller_than_the_device_count_uses_only_some_devices() -> None:
    iterator = ChunkedIterator(numbered_pack(5), batch_size=4, chunk_size=4, contexts=[mx.cpu(0), mx.cpu(1)])
    *_, last = iterator.epoch(0)
    assert last.size == 1 and len(last.shards) == 1


def test_without_prefetch_the_batches_are_the_same() -> None:
    pack = numbered_pack(100)
    make = lambda prefetch: ChunkedIterator(  # noqa: E731
        pack, batch_size=7, chunk_size=21, contexts=[mx.cpu()], shuffle=True, seed=1, prefetch=prefetch
    )
    assert seen(make(True), 3) == seen(make(False), 3)


def test_shard_sizes() -> None:
    assert shard_sizes(10, 3) == [4, 3, 3]
    assert shard_sizes(1, 2) == [1, 0]
