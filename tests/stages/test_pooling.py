"""Pooling a model's runs: each cover once, with the share of its runs right, matched by its key between runs."""

from __future__ import annotations

import numpy as np
import pytest

from genre.errors import DataError
from genre.predictions import CoverPredictions
from genre.stages.pooling import fold_comparison, on_shared_covers, pool, pooled_comparison
from tests.scored_runs import COVERS, folds_of, predictions


def test_a_cover_scored_by_several_runs_is_one_cover_with_the_share_of_them_right() -> None:
    first = predictions(COVERS[:4], [True, True, False, False])
    second = predictions(COVERS[:4], [True, False, True, False], shuffle=3)  # its rows in another order
    third = predictions(COVERS[2:6], [True, True, True, True])

    pooled = pool([first, second, third])

    assert pooled.covers == tuple(sorted(COVERS[:6])) and pooled.runs == 3
    shares = dict(zip(pooled.covers, pooled.correct, strict=True))
    assert [shares[cover] for cover in COVERS[:6]] == pytest.approx([1.0, 0.5, 2 / 3, 1 / 3, 1.0, 1.0])
    assert list(pooled.scorings) == [2, 2, 3, 3, 1, 1]
    assert set(pooled.genres) == {"folk"}


def test_balanced_accuracy_of_pooled_covers_is_the_mean_of_the_genres_shares() -> None:
    covers = ["folk/1.jpg", "folk/2.jpg", "jazz/1.jpg", "jazz/2.jpg", "jazz/3.jpg", "jazz/4.jpg"]
    pooled = pool([predictions(covers, [True, True, True, False, False, False])])

    assert pooled.accuracy == pytest.approx(0.5)
    assert pooled.balanced_accuracy == pytest.approx((1.0 + 0.25) / 2)


def test_runs_that_disagree_on_a_covers_genre_are_not_pooled() -> None:
    right = predictions(["folk/1.jpg"], [True])
    relabelled = CoverPredictions(["folk/1.jpg"], ["folk", "jazz", "rock"], np.array([1]), np.array([1]))

    with pytest.raises(DataError, match="^cover folk/1.jpg is 'folk' in one run and 'jazz' in another"):
        pool([right, relabelled])


def test_two_models_are_compared_on_the_covers_both_scored_only() -> None:
    a = pool([predictions(COVERS[:40], [True] * 40)])
    b = pool([predictions(COVERS[20:], [False] * 40)])

    shared_a, shared_b = on_shared_covers(a, b)

    assert shared_a.covers == shared_b.covers == tuple(sorted(COVERS[20:40]))
    assert shared_a.correct.tolist() == [1.0] * 20 and shared_b.correct.tolist() == [0.0] * 20
    with pytest.raises(DataError, match="scored no cover alike"):
        on_shared_covers(pool([predictions(COVERS[:10], [True] * 10)]), pool([predictions(COVERS[50:], [True] * 10)]))

    versus = pooled_comparison([predictions(COVERS[:40], [True] * 40)], [predictions(COVERS[20:], [False] * 40)])
    assert versus.covers == 20 and versus.accuracy.estimate == -1.0 and versus.a_only_right == 20


def folds(right: list[bool], count: int = 3, seeds: int = 2) -> dict[tuple[int, int], list[CoverPredictions]]:
    """A model's predictions by (repeat, fold) of a `count`-fold split of the covers, `seeds` runs a fold."""
    found = {}
    for fold, test in enumerate(folds_of(COVERS, count)):
        index = [COVERS.index(cover) for cover in test]
        found[0, fold] = [predictions(test, [right[i] for i in index]) for _ in range(seeds)]
    return found


def test_folds_pair_up_by_repeat_and_fold_and_the_training_size_is_the_rest_of_the_covers() -> None:
    a = folds([i % 2 == 0 for i in range(60)])
    b = folds([i % 2 == 0 or i % 3 == 0 for i in range(60)])

    found = fold_comparison(a, b)

    assert found is not None and (found.test_size, found.train_size) == (20, 40)
    assert found.accuracy.folds == 3
    per_fold = [pool(b[key]).accuracy - pool(a[key]).accuracy for key in sorted(a)]
    assert found.accuracy.difference.estimate == pytest.approx(np.mean(per_fold))


def test_folds_that_hold_other_covers_or_too_few_folds_give_no_fold_comparison() -> None:
    a = folds([True] * 60)
    shifted = {(0, fold): runs for (_, fold), runs in folds([True] * 60, count=4).items() if fold < 3}

    assert fold_comparison(a, shifted) is None  # another split: fold 0 holds other covers
    assert fold_comparison({(0, 0): a[0, 0]}, {(0, 0): a[0, 0]}) is None
