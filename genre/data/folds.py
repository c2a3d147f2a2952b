"""Cross-validation over a prepared dataset: K stratified folds of all its covers, near-copies kept together.

With the static 80/10/10 split, a 126-cover test split gives an accuracy a standard error of about 4 points. K-fold
cross-validation scores every cover once per repeat: fold k's covers are the test part of run k, and the other
covers are split again into training and validation with the static split's fractions. The folds come from the
dataset alone (its split seed, the repeat number and the near-copy groups `prepare` found), never from a run's
seed, so every experiment sees the same folds and their predictions pair cover by cover.

The covers stay where `prepare` packed them: a fold's packs are index lists over the variant's three packs
(`CoverRows`), with no re-decoding and no second copy of the pixels.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genre.data.config import MAX_REPEATS, FoldChoice
from genre.data.near_copies import group_ids
from genre.data.pack import DatasetInfo, Pack, open_pack
from genre.data.split import SPLITS, SplitFractions, stratified_split
from genre.errors import ConfigError, DataError

log = logging.getLogger(__name__)


class CoverRows:
    """Rows of several packs read through one index, like one `(N, H, W, 3)` array: `rows[indices]` gathers them.

    Indexing takes an int, a slice or an int array and returns a new array (the packs stay memory-mapped), so a
    `ChunkedIterator` or a feature extractor reads a fold's covers straight from the packs `prepare` wrote.
    """

    def __init__(self, sources: list[np.ndarray], pack_of: np.ndarray, row_of: np.ndarray) -> None:
        self.sources = sources
        self.pack_of = np.asarray(pack_of, dtype=np.int64)
        self.row_of = np.asarray(row_of, dtype=np.int64)
        self.shape = (len(self.pack_of), *sources[0].shape[1:])
        self.dtype = sources[0].dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int | slice | np.ndarray | list[int]) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return np.asarray(self.sources[self.pack_of[index]][self.row_of[index]])
        chosen = np.arange(len(self))[index] if isinstance(index, slice) else np.asarray(index, dtype=np.int64)
        out = np.empty((len(chosen), *self.shape[1:]), dtype=self.dtype)
        for number, source in enumerate(self.sources):
            here = np.flatnonzero(self.pack_of[chosen] == number)
            if len(here):
                rows = self.row_of[chosen[here]]
                order = np.argsort(rows, kind="stable")  # read each pack front to back
                out[here[order]] = source[rows[order]]
        return out

    def __array__(self, dtype: object = None) -> np.ndarray:
        whole = self[np.arange(len(self))]
        return whole if dtype is None else whole.astype(dtype)


@dataclass(frozen=True)
class AllCovers:
    """Every cover of one variant, in the order of its train, val and test packs: key, label and near-copy group."""

    files: list[str]
    labels: np.ndarray  # int32 (N,)
    groups: np.ndarray  # int64 (N,): shared by a near-copy group's members
    packs: list[Pack]  # the variant's train, val and test packs, in SPLITS order
    genres: list[str]
    seed: int  # the dataset's split seed

    def rows(self, indices: np.ndarray) -> CoverRows:
        sizes = [len(pack) for pack in self.packs]
        starts = np.cumsum([0, *sizes[:-1]])
        pack_of = np.searchsorted(np.cumsum(sizes), indices, side="right")
        return CoverRows([pack.images for pack in self.packs], pack_of, indices - starts[pack_of])


def all_covers(root: Path, variant: str) -> AllCovers:
    """The covers of `variant` at `root`, their labels and near-copy groups (from `dataset.json`)."""
    info = DatasetInfo.read(root)
    if info.near_copy_bits is None:
        log.warning("%s was prepared before near-copies were looked for: its folds may split a cover from its "
                    "twin; `genre prepare` it again to keep them together", root)  # fmt: skip
    packs = [open_pack(root, variant, split) for split in SPLITS]
    files = [name for pack in packs for name in pack.files]
    labels = np.concatenate([pack.labels for pack in packs]).astype(np.int32)
    if len(files) != len(labels):
        raise DataError(f"{root}/dataset.json lists {len(files)} files for {len(labels)} covers; prepare it again")
    position = {name: index for index, name in enumerate(files)}
    groups = [[position[name] for name in group if name in position] for group in info.near_copies]
    return AllCovers(files, labels, group_ids(len(files), [g for g in groups if len(g) > 1]), packs, info.genres,
                     info.seed)  # fmt: skip


def fold_numbers(labels: np.ndarray, groups: np.ndarray, folds: int, repeat: int, seed: int) -> np.ndarray:
    """Each cover's fold, 0..folds-1: stratified by genre, a near-copy group always in one fold
    (`sklearn.model_selection.StratifiedGroupKFold`, shuffled by the dataset's seed and the repeat)."""
    from sklearn.model_selection import StratifiedGroupKFold

    counts = np.bincount(labels)
    smallest = int(counts[counts > 0].min()) if len(counts) else 0
    if folds > smallest:
        raise ConfigError(
            f"'folds' {folds} is more than the {smallest} covers of the dataset's smallest genre: "
            f"use at most {smallest}"
        )
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed * MAX_REPEATS + repeat)
    numbers = np.empty(len(labels), dtype=np.int64)
    for fold, (_, test) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        numbers[test] = fold
    return numbers


STATIC_FRACTIONS = SplitFractions()


def fold_parts(
    covers: AllCovers, choice: FoldChoice, fractions: SplitFractions = STATIC_FRACTIONS
) -> dict[str, np.ndarray]:
    """The indices (into `covers`, ascending) of one fold's train, val and test parts. Test is fold `choice.fold`;
    the rest is split into train and val in the static split's proportions, per genre, near-copies together."""
    numbers = fold_numbers(covers.labels, covers.groups, choice.folds, choice.repeat, covers.seed)
    test = np.flatnonzero(numbers == choice.fold)
    rest = np.flatnonzero(numbers != choice.fold)
    kept = fractions.train + fractions.val
    inner = SplitFractions(fractions.train / kept, fractions.val / kept, 0.0)
    names = [covers.files[i] for i in rest]
    genres = [covers.genres[covers.labels[i]] for i in rest]
    by_group: dict[int, list[int]] = {}
    for position, index in enumerate(rest):
        by_group.setdefault(int(covers.groups[index]), []).append(position)
    groups = [members for members in by_group.values() if len(members) > 1]
    salt = f"fold-{choice.repeat}-{choice.fold}"
    assignment = np.array(stratified_split(names, genres, inner, covers.seed, salt, groups))
    return {"train": rest[assignment == "train"], "val": rest[assignment == "val"], "test": test}


def check_parts_fit(root: Path, variant: str, choice: FoldChoice, splits: tuple[str, ...] = SPLITS) -> None:
    """Before a run opens: a one-line error when the run's parts would be empty. On the static split, a `DataError`
    naming each of `splits` whose pack holds no cover (`--dev-size 0` leaves the dev variant empty; a split
    fraction of 0 leaves its split empty); with folds, a `ConfigError` when the dataset cannot be split into
    `choice.folds` folds (more folds than its smallest genre has covers)."""
    if choice.folds:
        fold_parts(all_covers(root, variant), choice)
        return
    counts = DatasetInfo.read(root).counts.get(variant, {})
    empty = [split for split in splits if not counts.get(split)]
    if empty:
        held = ", ".join(f"{split} {counts.get(split, 0)}" for split in SPLITS)
        fix = "use --variant full or prepare again with --dev-size N" if variant == "dev" else "prepare it again"
        raise DataError(
            f"{root}'s {variant} packs hold no {' and no '.join(empty)} covers ({held}); {fix} "
            "(every split needs covers: training chooses its epoch on the validation covers and is scored on the test "
            "covers)"
        )


def split_digest(parts: dict[str, list[str]]) -> str:
    """A short digest of which covers are in each part (by key): two runs with the same digest saw the same split."""
    payload = json.dumps({split: sorted(keys) for split, keys in parts.items()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def open_parts(root: Path, variant: str, choice: FoldChoice) -> dict[str, Pack]:
    """The train, val and test packs a run reads: the static split's, or one fold's as views over them."""
    if not choice.folds:
        return {split: open_pack(root, variant, split) for split in SPLITS}
    covers = all_covers(root, variant)
    packs = {}
    for split, indices in fold_parts(covers, choice).items():
        packs[split] = Pack(
            covers.rows(indices),  # type: ignore[arg-type]  # reads like the array it stands for
            covers.labels[indices],
            covers.genres,
            [covers.files[i] for i in indices],
        )
    return packs
