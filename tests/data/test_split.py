"""The static split: stratified, deterministic, and the development subset drawn from training only."""

from __future__ import annotations

from collections import Counter

import pytest

from genre.data.split import SplitFractions, development_subset, stratified_split
from genre.errors import ConfigError

GENRES = ["ambient", "dubstep", "folk", "hiphop_rap", "jazz", "metal", "pop", "punk", "rock", "soul"]


def covers(per_genre: int = 1000) -> tuple[list[str], list[str]]:
    names = [f"{genre}/a{n}.jpg" for genre in GENRES for n in range(per_genre)]
    return names, [name.split("/")[0] for name in names]


def test_the_original_protocol_80_10_10_per_genre_and_a_1000_cover_dev_subset() -> None:
    names, genres = covers()
    fractions = SplitFractions()
    split = stratified_split(names, genres, fractions, seed=2015)
    per_genre = Counter(zip(genres, split, strict=True))
    for genre in GENRES:
        assert (per_genre[genre, "train"], per_genre[genre, "val"], per_genre[genre, "test"]) == (800, 100, 100)

    dev = development_subset(names, genres, split, 1000, fractions, seed=2015)
    chosen = [i for i, d in enumerate(dev) if d]
    assert len(chosen) == 1000
    assert all(split[i] == "train" for i in chosen)
    dev_per_genre = Counter((genres[i], dev[i]) for i in chosen)
    for genre in GENRES:
        assert (dev_per_genre[genre, "train"], dev_per_genre[genre, "val"], dev_per_genre[genre, "test"]) == (
            80,
            10,
            10,
        )


def test_the_split_does_not_depend_on_listing_order() -> None:
    names, genres = covers(50)
    split = dict(zip(names, stratified_split(names, genres, SplitFractions(), seed=7), strict=True))
    reversed_names, reversed_genres = names[::-1], genres[::-1]
    again = dict(
        zip(reversed_names, stratified_split(reversed_names, reversed_genres, SplitFractions(), seed=7), strict=True)
    )
    assert split == again


def test_another_seed_gives_another_split_and_the_same_seed_the_same() -> None:
    names, genres = covers(100)
    first = stratified_split(names, genres, SplitFractions(), seed=1)
    assert first == stratified_split(names, genres, SplitFractions(), seed=1)
    assert first != stratified_split(names, genres, SplitFractions(), seed=2)


def test_one_missing_cover_moves_few_others() -> None:
    names, genres = covers(100)
    split = dict(zip(names, stratified_split(names, genres, SplitFractions(), seed=3), strict=True))
    fewer = dict(zip(names[1:], stratified_split(names[1:], genres[1:], SplitFractions(), seed=3), strict=True))
    moved = sum(split[name] != fewer[name] for name in fewer)
    assert moved <= 2


def test_uneven_genres_keep_their_shares_and_a_small_train_part_gives_a_smaller_dev_subset() -> None:
    names = [f"big/{n}" for n in range(300)] + [f"small/{n}" for n in range(30)]
    genres = [name.split("/")[0] for name in names]
    split = stratified_split(names, genres, SplitFractions(), seed=0)
    counts = Counter(zip(genres, split, strict=True))
    assert (counts["small", "train"], counts["small", "val"], counts["small", "test"]) == (24, 3, 3)
    dev = development_subset(names, genres, split, 1000, SplitFractions(), seed=0)
    assert sum(1 for d in dev if d) == 264  # all of the training part
    dev = development_subset(names, genres, split, 110, SplitFractions(), seed=0)
    chosen = Counter(genres[i] for i, d in enumerate(dev) if d)
    assert chosen == {"big": 100, "small": 10}


@pytest.mark.parametrize("fractions", [(0.8, 0.1, 0.2), (1.2, -0.1, -0.1)])
def test_fractions_that_do_not_sum_to_one_are_refused(fractions: tuple[float, float, float]) -> None:
    with pytest.raises(ConfigError, match="sum to 1"):
        SplitFractions(*fractions)
