"""The static, stratified train/validation/test split and the development subset.

An item's place in the order depends only on the seed and its own name (a hash), never on what else is
in the folder or the order files were listed in. So the same inputs always give the same split, and a
few extra or missing files move only the items near each genre's boundaries.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from genre.errors import ConfigError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitFractions:
    """Shares of each genre that go to train, validation and test (the original work's 80/10/10)."""

    train: float = 0.8
    val: float = 0.1
    test: float = 0.1

    def __post_init__(self) -> None:
        shares = (self.train, self.val, self.test)
        if any(share < 0 for share in shares) or abs(sum(shares) - 1.0) > 1e-6:
            raise ConfigError(f"split fractions must be >= 0 and sum to 1, got {shares}")


def hash_rank(name: str, seed: int, salt: str = "") -> str:
    """A stable pseudo-random sort key for `name`."""
    return hashlib.sha256(f"{seed}:{salt}:{name}".encode()).hexdigest()


def _group_by_genre(names: Sequence[str], genres: Sequence[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for index, genre in enumerate(genres):
        groups[genre].append(index)
    return groups


def _counts(total: int, fractions: SplitFractions) -> tuple[int, int, int]:
    val = round(total * fractions.val)
    test = round(total * fractions.test)
    return total - val - test, val, test


def keep_together(
    assignment: list[str],
    names: Sequence[str],
    genres: Sequence[str],
    groups: Sequence[Sequence[int]],
    fractions: SplitFractions,
    seed: int,
    salt: str,
) -> list[str]:
    """Move every member of each group (indices into `names`) to the split of its member that ranks first, so no
    group straddles two splits; then give each genre back its split sizes by moving covers that belong to no group
    (the last-ranked first) from splits that grew to those that shrank. Which covers move depends only on the seed
    and the names, so the same inputs always give the same split."""
    together = list(assignment)
    grouped: set[int] = set()
    for group in groups:
        lead = min(group, key=lambda i: hash_rank(names[i], seed, salt))
        for index in group:
            together[index] = assignment[lead]
        grouped.update(group)
    for members in _group_by_genre(names, genres).values():
        wanted = dict(zip(SPLITS, _counts(len(members), fractions), strict=True))
        movable = {split: [i for i in members if together[i] == split and i not in grouped] for split in SPLITS}
        for split in SPLITS:
            movable[split].sort(key=lambda i: hash_rank(names[i], seed, salt), reverse=True)
        have = {split: sum(together[i] == split for i in members) for split in SPLITS}
        for short in SPLITS:
            for extra in SPLITS:
                while have[short] < wanted[short] and have[extra] > wanted[extra] and movable[extra]:
                    index = movable[extra].pop(0)
                    together[index] = short
                    have[short], have[extra] = have[short] + 1, have[extra] - 1
    return together


def stratified_split(
    names: Sequence[str],
    genres: Sequence[str],
    fractions: SplitFractions,
    seed: int,
    salt: str = "split",
    groups: Sequence[Sequence[int]] = (),
) -> list[str]:
    """Assign each item 'train', 'val' or 'test', per genre in the given fractions (rounded); the members of each
    group in `groups` (near-copies: indices into `names`) all go to the same split."""
    if len(names) != len(genres):
        raise ValueError("names and genres differ in length")
    assignment = [""] * len(names)
    for members in _group_by_genre(names, genres).values():
        ordered = sorted(members, key=lambda i: hash_rank(names[i], seed, salt))
        n_train, n_val, _ = _counts(len(ordered), fractions)
        for position, index in enumerate(ordered):
            if position < n_train:
                assignment[index] = "train"
            elif position < n_train + n_val:
                assignment[index] = "val"
            else:
                assignment[index] = "test"
    return keep_together(assignment, names, genres, groups, fractions, seed, salt) if groups else assignment


def _quotas(sizes: dict[str, int], total: int) -> dict[str, int]:
    """Split `total` over genres in proportion to `sizes` (largest remainder), never over a genre's size."""
    available = sum(sizes.values())
    exact = {genre: total * size / available for genre, size in sizes.items()}
    quotas = {genre: int(share) for genre, share in exact.items()}
    leftover = total - sum(quotas.values())
    for genre in sorted(exact, key=lambda g: (quotas[g] - exact[g], g))[:leftover]:
        quotas[genre] += 1
    return {genre: min(quotas[genre], sizes[genre]) for genre in sizes}


def development_subset(
    names: Sequence[str],
    genres: Sequence[str],
    assignment: Sequence[str],
    size: int,
    fractions: SplitFractions,
    seed: int,
    groups: Sequence[Sequence[int]] = (),
) -> list[str]:
    """Draw `size` items from the training part (stratified by genre) and split them again, each near-copy group of
    `groups` (indices into `names`) kept on one side of the new split.

    Returns 'train'/'val'/'test' for the chosen items and '' for the rest. When the training part holds
    fewer than `size` items, all of them are taken.
    """
    train = [i for i, split in enumerate(assignment) if split == "train"]
    size = min(size, len(train))
    chosen_by_genre = _group_by_genre([names[i] for i in train], [genres[i] for i in train])
    quotas = _quotas({genre: len(members) for genre, members in chosen_by_genre.items()}, size) if size else {}
    chosen: list[int] = []
    for genre, members in chosen_by_genre.items():
        ordered = sorted((train[m] for m in members), key=lambda i: hash_rank(names[i], seed, "dev"))
        chosen.extend(ordered[: quotas.get(genre, 0)])
    chosen.sort()
    position = {index: number for number, index in enumerate(chosen)}
    inner_groups = [[position[i] for i in group if i in position] for group in groups]
    inner = stratified_split(
        [names[i] for i in chosen],
        [genres[i] for i in chosen],
        fractions,
        seed,
        "dev-split",
        [group for group in inner_groups if len(group) > 1],
    )
    dev = [""] * len(names)
    for index, split in zip(chosen, inner, strict=True):
        dev[index] = split
    return dev
