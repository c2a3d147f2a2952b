"""Near-copies: the same artwork more than once in a collection (reissues of an album, volumes of a series).

A near-copy in training makes its twin in test easy, so a split that separates them flatters every model. `prepare`
hashes each decoded cover (a 16x16 average hash: the grey thumbnail's pixels above its mean) and joins covers whose
hashes differ in at most `max_bits` of 256 bits into groups; the static split and the cross-validation folds keep
each group on one side. The hash survives re-encoding, small crops and colour shifts, not a new design.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

HASH_SIDE = 16
HASH_BYTES = HASH_SIDE * HASH_SIDE // 8
DEFAULT_MAX_BITS = 8
ROWS_AT_ONCE = 2048  # the distance matrix is built this many covers at a time (2048 x N float32)


def average_hash(pixels: np.ndarray) -> bytes:
    """The 16x16 average hash of one `(H, W, 3)` uint8 image: 32 bytes, a bit per thumbnail pixel above the mean."""
    grey = Image.fromarray(np.ascontiguousarray(pixels)).convert("L").resize((HASH_SIDE, HASH_SIDE), Image.BOX)
    values = np.asarray(grey, dtype=np.float32)
    return np.packbits(values > values.mean()).tobytes()


def hash_bits(hashes: list[bytes]) -> np.ndarray:
    """`(N, 256)` float32 0/1 of `N` hashes."""
    packed = np.frombuffer(b"".join(hashes), dtype=np.uint8).reshape(len(hashes), HASH_BYTES)
    return np.unpackbits(packed, axis=1).astype(np.float32)


def near_copy_groups(hashes: list[bytes], max_bits: int) -> list[list[int]]:
    """Groups (index lists, ascending, each of two or more) of the covers whose hashes are within `max_bits` of each
    other, joined transitively; sorted by their first index. `max_bits` < 0 finds none."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    count = len(hashes)
    if max_bits < 0 or count < 2:
        return []
    bits = hash_bits(hashes)
    rows, cols = [], []
    for start in range(0, count, ROWS_AT_ONCE):
        block = bits[start : start + ROWS_AT_ONCE]
        # Hamming distance as two products: bits set here and not there, plus the reverse.
        distance = block @ (1.0 - bits).T + (1.0 - block) @ bits.T
        near_rows, near_cols = np.nonzero(distance <= max_bits + 0.5)
        keep = near_rows + start < near_cols
        rows.append(near_rows[keep] + start)
        cols.append(near_cols[keep])
    edges = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(edges[0]), dtype=np.int8), edges), shape=(count, count))
    _, component = connected_components(graph, directed=False)
    members: dict[int, list[int]] = {}
    for index, label in enumerate(component.tolist()):
        members.setdefault(label, []).append(index)
    return sorted((group for group in members.values() if len(group) > 1), key=lambda group: group[0])


def group_ids(count: int, groups: list[list[int]]) -> np.ndarray:
    """A group number per cover, int64 `(count,)`: a near-copy group's members share one, every other cover has its
    own (what `sklearn.model_selection.StratifiedGroupKFold` takes as `groups`)."""
    ids = np.arange(count, dtype=np.int64)
    for group in groups:
        ids[group] = group[0]
    return ids
