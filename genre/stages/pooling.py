"""Several runs' per-cover predictions as one model's outcome on each cover: what `genre report` and `genre compare`
compute intervals and paired comparisons from. Pure: `CoverPredictions` in, numbers out.

An experiment's runs are its seeds on the static split, or on a cross-validated split its K folds x R repeats x
seeds, whose test folds pooled score every cover once per repeat and seed (out of fold). Pooled, a cover's
correctness is the share of the runs that scored it and got it right, so each cover counts once however many runs
scored it. Covers are matched between runs by their key (`cover`, the path in the dataset), never by position.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from genre.errors import DataError
from genre.intervals import (
    BOOTSTRAP,
    Bootstrap,
    CorrectedTTest,
    PairedComparison,
    corrected_resampled_t_test,
    paired_comparison,
)
from genre.predictions import CoverPredictions

FoldKey = tuple[int, int]  # (repeat, fold) of a cross-validated run


@dataclass(frozen=True)
class PooledCovers:
    """One model's outcome on each cover its runs scored, covers in sorted key order."""

    covers: tuple[str, ...]
    genres: np.ndarray  # (N,) str: each cover's true genre
    correct: np.ndarray  # (N,) float64: the share of the runs that scored the cover and got it right
    scorings: np.ndarray  # (N,) int64: how many runs scored the cover
    runs: int

    def __len__(self) -> int:
        return len(self.covers)

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if len(self) else float("nan")

    @property
    def balanced_accuracy(self) -> float:
        """The mean over the true genres present of the genre's mean correctness (its recall)."""
        if not len(self):
            return float("nan")
        _, index = np.unique(self.genres, return_inverse=True)
        return float(np.mean(np.bincount(index, weights=self.correct) / np.bincount(index)))

    def only(self, covers: Sequence[str]) -> PooledCovers:
        """The same outcomes on `covers` (a subset of this set's, in sorted order)."""
        position = {cover: index for index, cover in enumerate(self.covers)}
        where = np.array([position[cover] for cover in covers], dtype=np.int64)
        return PooledCovers(tuple(covers), self.genres[where], self.correct[where], self.scorings[where], self.runs)


def pool(predictions: Sequence[CoverPredictions]) -> PooledCovers:
    """The runs' predictions as one outcome per cover. A cover whose true genre differs between two runs means they
    were not scored on the same prepared covers: a `DataError` naming it."""
    right: dict[str, int] = {}
    scored: dict[str, int] = {}
    genre: dict[str, str] = {}
    for run in predictions:
        for cover, true, ok in zip(run.covers, run.true, run.correct, strict=True):
            name = run.genres[int(true)]
            if genre.setdefault(cover, name) != name:
                raise DataError(
                    f"cover {cover} is '{genre[cover]}' in one run and '{name}' in another: the runs were not scored "
                    "on the same prepared covers, so they cannot be pooled"
                )
            right[cover] = right.get(cover, 0) + bool(ok)
            scored[cover] = scored.get(cover, 0) + 1
    covers = tuple(sorted(genre))
    count = np.array([scored[cover] for cover in covers], dtype=np.int64)
    return PooledCovers(
        covers,
        np.array([genre[cover] for cover in covers], dtype=object),
        np.array([right[cover] for cover in covers], dtype=np.float64) / np.maximum(count, 1),
        count,
        len(predictions),
    )


def on_shared_covers(a: PooledCovers, b: PooledCovers) -> tuple[PooledCovers, PooledCovers]:
    """Both models restricted to the covers both scored, in the same order; a `DataError` if they scored none alike
    (a true genre that differs between them too)."""
    shared = sorted(set(a.covers) & set(b.covers))
    if not shared:
        raise DataError(
            f"the two models scored no cover alike ({len(a):,} and {len(b):,} covers): were they tested on the same "
            "prepared covers?"
        )
    a, b = a.only(shared), b.only(shared)
    differ = np.flatnonzero(a.genres != b.genres)
    if len(differ):
        cover = a.covers[differ[0]]
        raise DataError(
            f"cover {cover} is '{a.genres[differ[0]]}' for one model and '{b.genres[differ[0]]}' for the other: they "
            "were not scored on the same prepared covers"
        )
    return a, b


def pooled_comparison(
    a: Sequence[CoverPredictions],
    b: Sequence[CoverPredictions],
    bootstrap: Bootstrap = BOOTSTRAP,
    with_sides: bool = False,
) -> PairedComparison:
    """Model B (its runs' predictions pooled) minus model A on the covers both scored (see
    `genre.intervals.paired_comparison`); `with_sides` adds each model's own intervals on those covers."""
    shared_a, shared_b = on_shared_covers(pool(a), pool(b))
    return paired_comparison(shared_a.correct, shared_b.correct, shared_a.genres, bootstrap, with_sides)


@dataclass(frozen=True)
class FoldComparison:
    """B minus A fold by fold of a cross-validated split both were run on, with the corrected t-test of each metric."""

    accuracy: CorrectedTTest
    balanced_accuracy: CorrectedTTest
    test_size: float  # a fold's test covers, on average
    train_size: float  # the rest of the repeat's covers: the fold's training and validation covers


def fold_comparison(
    a: Mapping[FoldKey, Sequence[CoverPredictions]], b: Mapping[FoldKey, Sequence[CoverPredictions]]
) -> FoldComparison | None:
    """The corrected resampled t-tests (Nadeau and Bengio) over the folds both models were run on, their seeds of a
    fold pooled; None when fewer than two folds pair up or a fold's test covers differ between the models (their
    splits differ, so the folds are not paired).

    n_train is taken as the repeat's covers less the fold's test covers: it includes the covers kept for validation,
    which makes the correction slightly smaller than with the training covers alone.
    """
    keys = sorted(set(a) & set(b))
    if len(keys) < 2:
        return None
    differences: dict[str, list[float]] = {"accuracy": [], "balanced_accuracy": []}
    test_sizes, train_sizes = [], []
    repeat_covers: dict[int, set[str]] = defaultdict(set)  # every cover of a repeat: its folds' test covers
    for side in (a, b):
        for (repeat, _), runs in side.items():
            for run in runs:
                repeat_covers[repeat].update(run.covers)
    for key in keys:
        fold_a, fold_b = pool(a[key]), pool(b[key])
        if fold_a.covers != fold_b.covers:
            return None
        for metric in differences:
            differences[metric].append(getattr(fold_b, metric) - getattr(fold_a, metric))
        test_sizes.append(len(fold_a))
        train_sizes.append(len(repeat_covers[key[0]]) - len(fold_a))
    test_size, train_size = float(np.mean(test_sizes)), float(np.mean(train_sizes))
    if train_size <= 0:
        return None
    tests = {
        metric: corrected_resampled_t_test(values, test_size, train_size) for metric, values in differences.items()
    }
    return FoldComparison(tests["accuracy"], tests["balanced_accuracy"], test_size, train_size)
