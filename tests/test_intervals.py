"""The statistics behind every interval and comparison a page shows: checked against scipy called directly, against
scikit-learn, and against hand computations with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import balanced_accuracy_score

from genre.errors import ConfigError, DataError
from genre.intervals import (
    BOOTSTRAP,
    Bootstrap,
    Interval,
    accuracy_intervals,
    comparison_sentence,
    comparison_sentences,
    corrected_resampled_t_test,
    majority_votes,
    mcnemar_exact_p,
    normal_interval,
    p_value,
    paired_comparison,
    t_test_sentence,
)

QUICK = Bootstrap(resamples=2000, seed=7)


def covers(seed: int = 0, per_genre: tuple[int, ...] = (40, 25, 10), right: tuple[float, ...] = (0.6, 0.4, 0.2)):
    """Correctness (bool) and true genres of unbalanced covers, each genre right at its own rate."""
    rng = np.random.default_rng(seed)
    genres = np.repeat([f"genre{g}" for g in range(len(per_genre))], per_genre)
    correct = np.concatenate([rng.random(n) < rate for n, rate in zip(per_genre, right, strict=True)])
    order = rng.permutation(len(genres))  # the covers in no particular order: the function must stratify itself
    return correct[order], genres[order]


def test_the_interval_is_scipys_bootstrap_with_one_sample_per_genre() -> None:
    correct, genres = covers()
    samples = [correct[genres == genre].astype(float) for genre in sorted(set(genres))]

    def reference(statistic):
        found = stats.bootstrap(
            samples, statistic, n_resamples=QUICK.resamples, vectorized=True, method="percentile",
            rng=np.random.default_rng(QUICK.seed), batch=500,
        )  # fmt: skip
        return found.confidence_interval

    def accuracy(*genre_samples, axis=-1):
        return sum(s.sum(axis=axis) for s in genre_samples) / len(correct)

    def balanced(*genre_samples, axis=-1):
        return sum(s.mean(axis=axis) for s in genre_samples) / len(genre_samples)

    found = accuracy_intervals(correct, genres, QUICK)

    assert (found.accuracy.low, found.accuracy.high) == pytest.approx(tuple(reference(accuracy)), abs=1e-12)
    assert (found.balanced_accuracy.low, found.balanced_accuracy.high) == pytest.approx(
        tuple(reference(balanced)), abs=1e-12
    )
    assert found.covers == 75 and found.genres == 3


def test_the_estimates_are_accuracy_and_scikit_learns_balanced_accuracy() -> None:
    correct, genres = covers(seed=3)
    wrong = np.where(genres == "genre0", "genre1", "genre0")  # another of the genres
    predicted = np.where(correct, genres, wrong)

    found = accuracy_intervals(correct, genres, QUICK)

    assert found.accuracy.estimate == pytest.approx(correct.mean())
    assert found.balanced_accuracy.estimate == pytest.approx(balanced_accuracy_score(genres, predicted))
    assert found.accuracy.low < found.accuracy.estimate < found.accuracy.high


def test_resampling_within_each_genre_leaves_a_genre_all_right_without_spread() -> None:
    # balanced accuracy = (1 + recall of genre b) / 2: only genre b's 100 covers vary, so its 95% interval is about
    # 1.96 * sqrt(0.25 / 100) / 2 = 0.049 to either side; resampling all covers together would vary genre a too
    genres = np.array(["a"] * 50 + ["b"] * 100)
    correct = np.array([True] * 50 + [True, False] * 50)

    found = accuracy_intervals(correct, genres, QUICK).balanced_accuracy

    assert found.estimate == 0.75
    assert found.high - found.low == pytest.approx(2 * 0.049, abs=0.012)


def test_a_genre_of_one_cover_enters_every_resample_as_itself() -> None:
    genres = np.array(["a"] * 20 + ["b"])
    correct = np.array([True, False, False, True, True] * 4 + [True], dtype=float)
    alone = stats.bootstrap(
        [correct[:20]], lambda s, axis=-1: s.mean(axis=axis), n_resamples=QUICK.resamples, vectorized=True,
        method="percentile", rng=np.random.default_rng(QUICK.seed), batch=500,
    ).confidence_interval  # fmt: skip

    found = accuracy_intervals(correct, genres, QUICK).balanced_accuracy

    assert found.estimate == pytest.approx((0.6 + 1) / 2)
    assert (found.low, found.high) == pytest.approx(((alone.low + 1) / 2, (alone.high + 1) / 2))


def test_degenerate_covers_give_a_point_or_a_one_line_error() -> None:
    everything = accuracy_intervals(np.ones(30, dtype=bool), np.repeat(["a", "b", "c"], 10), QUICK)
    assert (everything.accuracy.low, everything.accuracy.estimate, everything.accuracy.high) == (1.0, 1.0, 1.0)
    nothing = accuracy_intervals(np.zeros(30, dtype=bool), np.repeat(["a", "b", "c"], 10), QUICK)
    assert (nothing.balanced_accuracy.low, nothing.balanced_accuracy.high) == (0.0, 0.0)

    one_genre = accuracy_intervals(*covers(per_genre=(60,), right=(0.5,)), QUICK)
    assert one_genre.accuracy == one_genre.balanced_accuracy and one_genre.genres == 1

    one_cover_each = accuracy_intervals(np.array([1.0, 0.0, 1.0]), np.array(["a", "b", "c"]), QUICK)
    assert one_cover_each.accuracy.low == one_cover_each.accuracy.high == pytest.approx(2 / 3)

    with pytest.raises(DataError, match="^no covers to compute an interval from"):
        accuracy_intervals(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="one correctness and one true genre per cover"):
        accuracy_intervals(np.ones(3), np.array(["a", "b"]))
    with pytest.raises(ValueError, match="from 0 to 1"):
        accuracy_intervals(np.array([2.0, 1.0]), np.array(["a", "a"]))


def test_a_cover_scored_by_several_seeds_counts_once_with_its_share_right() -> None:
    genres = np.repeat(["a", "b"], 30)
    shares = np.tile([1.0, 0.5, 0.0], 20)  # two seeds: both right, one right, both wrong

    found = accuracy_intervals(shares, genres, QUICK)

    assert found.covers == 60 and found.accuracy.estimate == pytest.approx(0.5)
    assert found.accuracy.low < 0.5 < found.accuracy.high


def test_the_same_covers_give_the_same_interval_and_the_seed_is_what_fixes_it() -> None:
    correct, genres = covers(seed=5)

    first, again = accuracy_intervals(correct, genres, QUICK), accuracy_intervals(correct, genres, QUICK)
    other = accuracy_intervals(correct, genres, Bootstrap(resamples=2000, seed=8))

    assert first == again
    # (balanced accuracy: accuracy's bounds sit on a lattice of k/75 and may coincide)
    assert (other.balanced_accuracy.low, other.balanced_accuracy.high) != (
        first.balanced_accuracy.low,
        first.balanced_accuracy.high,
    )


def test_the_project_bootstrap_is_at_least_2000_resamples_and_says_how_it_was_made() -> None:
    assert BOOTSTRAP.resamples >= 2000 and BOOTSTRAP.level == 0.95
    assert BOOTSTRAP.describe() == (
        "95% interval: stratified bootstrap over covers (percentile method, resampled within each true genre), "
        "4,000 resamples, seed 23"
    )
    with pytest.raises(ConfigError, match="^'resamples' must be at least 1"):
        Bootstrap(resamples=0)
    with pytest.raises(ConfigError, match="^'level' must be in"):
        Bootstrap(level=1.0)


def test_mcnemars_p_is_the_exact_binomial_of_the_discordant_covers() -> None:
    # 2 covers only A gets right, 9 only B: p = 2 * P(X <= 2), X ~ Binomial(11, 1/2) = 2 * (1 + 11 + 55) / 2**11
    assert mcnemar_exact_p(2, 9) == pytest.approx(134 / 2048)
    assert mcnemar_exact_p(2, 9) == pytest.approx(stats.binomtest(9, 11, 0.5).pvalue)
    assert mcnemar_exact_p(9, 2) == mcnemar_exact_p(2, 9)
    assert mcnemar_exact_p(0, 0) == 1.0  # nothing tells the models apart
    with pytest.raises(ValueError):
        mcnemar_exact_p(-1, 3)


def test_a_paired_comparison_counts_each_covers_majority_vote_once() -> None:
    #                 both right | only A x2 | only B x9 | both wrong | A split evenly (2 seeds), B right
    a = np.array([1.0] * 10 + [1.0] * 2 + [0.0] * 9 + [0.0] * 5 + [0.5] * 4)
    b = np.array([1.0] * 10 + [0.0] * 2 + [1.0] * 9 + [0.0] * 5 + [1.0] * 4)
    genres = np.tile(["a", "b"], 15)

    found = paired_comparison(a, b, genres, QUICK, with_sides=True)

    assert (found.a_only_right, found.b_only_right) == (2, 9)
    assert found.mcnemar_p == pytest.approx(134 / 2048)
    assert found.covers == 30
    assert found.accuracy.estimate == pytest.approx(b.mean() - a.mean())
    assert found.a is not None and found.a.accuracy.estimate == pytest.approx(a.mean())
    assert list(majority_votes(np.array([1.0, 2 / 3, 0.5, 1 / 3, 0.0]))) == [1, 1, -1, 0, 0]


def test_the_paired_interval_resamples_each_covers_two_outcomes_together() -> None:
    a, genres = covers(seed=1)
    b = a.copy()
    b[:12] = True  # B is A but right on a dozen more covers (or the same where A was right already)
    gained = (b.astype(float) - a)[:12].sum() / len(a)

    found = paired_comparison(a, b, genres, QUICK)
    apart_a, apart_b = accuracy_intervals(a, genres, QUICK), accuracy_intervals(b, genres, QUICK)

    assert found.accuracy.estimate == pytest.approx(gained)
    assert 0 < found.accuracy.low <= found.accuracy.estimate <= found.accuracy.high <= gained * 2
    # pairing removes what the covers share: narrower than either model's own interval, though it is of a difference
    assert found.accuracy.high - found.accuracy.low < apart_a.accuracy.high - apart_a.accuracy.low
    assert apart_b.accuracy.estimate - apart_a.accuracy.estimate == pytest.approx(gained)


def test_a_model_against_itself_shows_no_difference() -> None:
    correct, genres = covers()

    found = paired_comparison(correct, correct, genres, QUICK)

    assert found.accuracy == Interval(0.0, 0.0, 0.0) and found.mcnemar_p == 1.0
    assert comparison_sentences(found, "cnn", "cnn again")[0] == (
        "no difference shown: cnn again - cnn = +0.0 points of accuracy, 95% interval 0.0 to 0.0, McNemar p = 1.00, "
        "75 covers"
    )


def test_the_corrected_resampled_t_test_matches_the_hand_computation() -> None:
    differences = [0.02, 0.04, 0.01, 0.03, 0.05]  # mean 0.03, sample variance 0.00025
    # Nadeau & Bengio: 0.00025 * (1/5 + 100/400) = 0.0001125, t = 0.03 / sqrt(0.0001125) = 2 * sqrt(2)
    found = corrected_resampled_t_test(differences, test_size=100, train_size=400)

    assert found.t == pytest.approx(2 * math.sqrt(2))
    assert found.p == pytest.approx(2 * stats.t.sf(2 * math.sqrt(2), df=4))
    assert found.p == pytest.approx(0.0474, abs=1e-4)
    half = stats.t.ppf(0.975, df=4) * math.sqrt(0.0001125)
    assert (found.difference.low, found.difference.high) == pytest.approx((0.03 - half, 0.03 + half))
    assert found.folds == 5
    assert found.p > stats.ttest_1samp(differences, 0.0).pvalue  # the correction widens the plain t-test


def test_the_corrected_t_test_refuses_one_fold_and_says_what_no_spread_means() -> None:
    with pytest.raises(DataError, match="two or more fold differences, got 1"):
        corrected_resampled_t_test([0.1], 100, 400)
    same = corrected_resampled_t_test([0.02, 0.02, 0.02], 100, 400)
    assert same.p == 0.0 and same.t == math.inf
    none = corrected_resampled_t_test([0.0, 0.0], 100, 400)
    assert none.p == 1.0 and none.t == 0.0


def test_the_sentence_says_beats_loses_or_no_difference_by_the_interval() -> None:
    evidence = "McNemar p = 0.004, 2,424 covers"

    assert comparison_sentence(Interval(0.031, 0.012, 0.050), "accuracy", evidence) == (
        "B beats A by 3.1 points of accuracy, 95% interval 1.2 to 5.0, McNemar p = 0.004, 2,424 covers"
    )
    assert comparison_sentence(Interval(-0.02, -0.039, -0.001), "balanced accuracy", evidence, "cnn", "rf") == (
        "rf loses to cnn by 2.0 points of balanced accuracy, 95% interval 0.1 to 3.9, McNemar p = 0.004, 2,424 covers"
    )
    assert comparison_sentence(Interval(0.011, -0.012, 0.034), "accuracy", evidence) == (
        "no difference shown: B - A = +1.1 points of accuracy, 95% interval -1.2 to 3.4, McNemar p = 0.004, "
        "2,424 covers"
    )
    assert comparison_sentence(Interval(0.02, 0.0, 0.04), "accuracy", evidence).startswith("no difference shown")


def test_p_values_read_with_the_digits_a_reader_needs() -> None:
    assert [p_value(p) for p in (0.31, 0.0421, 0.004, 0.0004, 1.0)] == [
        "= 0.31", "= 0.042", "= 0.004", "< 0.001", "= 1.00"
    ]  # fmt: skip


def test_the_fold_by_fold_sentence_names_its_test() -> None:
    found = corrected_resampled_t_test([0.02, 0.04, 0.01, 0.03, 0.05], 100, 400)

    assert t_test_sentence(found, "accuracy", "cnn", "rf") == (
        "rf beats cnn by 3.0 points of accuracy fold by fold, 95% interval 0.1 to 5.9, corrected resampled t-test "
        "p = 0.047, 5 folds"
    )


def test_the_normal_approximation_interval_is_the_wald_interval_clipped_to_shares() -> None:
    found = normal_interval(0.5, 100)
    assert (found.low, found.high) == pytest.approx((0.5 - 1.959964 * 0.05, 0.5 + 1.959964 * 0.05))
    assert normal_interval(0.99, 20).high == 1.0
    with pytest.raises(ValueError):
        normal_interval(0.5, 0)
