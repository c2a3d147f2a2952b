"""How sure a result is: 95% intervals of accuracy and balanced accuracy, and paired comparisons of two models
scored on the same covers (issue 23). Pure numpy and scipy; no MLflow.

A cover set's test split is small (126 real covers), so a few points of accuracy are within chance. Every interval
here is a **stratified percentile bootstrap over covers** (`scipy.stats.bootstrap`, one sample per true genre, so
each genre is resampled within itself and keeps its size, as it does in every split), `Bootstrap.resamples`
resamples from a fixed seed, so the same predictions give the same page. The percentile method, not BCa: a genre
every model gets right (or wrong) makes BCa's acceleration undefined, while the percentile interval is then the
single value, as it should be.

A cover's correctness may be fractional: pooled over a model's seeds (or repeats of cross-validation), it is the
share of the runs that scored the cover and got it right. Each cover is then one observation, whatever the number of
runs, so more seeds narrow the interval only as far as they change the covers' outcomes.

scipy is imported by the functions that compute (as `genre.metrics.fit_temperature` does): the results' types and
sentences are used by commands whose `--help` must stay fast.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from genre.config import check_range
from genre.errors import DataError

BATCH = 500  # resamples computed at once: bounds the memory of a large pooled set (2,424 covers x 500 x 8 bytes)


@dataclass(frozen=True)
class Bootstrap:
    """How an interval is resampled. The defaults are the project's: every page says them (`describe`)."""

    resamples: int = 4000
    seed: int = 23  # issue 23; any fixed number makes pages reproducible
    level: float = 0.95

    def __post_init__(self) -> None:
        check_range(self, "resamples", 1)
        check_range(self, "level", 0.0, 1.0, low_open=True, high_open=True)

    def describe(self) -> str:
        """What a page says beside its intervals."""
        return (
            f"{percent_level(self.level)} interval: stratified bootstrap over covers (percentile method, resampled "
            f"within each true genre), {self.resamples:,} resamples, seed {self.seed}"
        )


BOOTSTRAP = Bootstrap()


def percent_level(level: float) -> str:
    """0.95 -> '95%'."""
    return f"{100 * level:g}%"


@dataclass(frozen=True)
class Interval:
    """A number (a share, 0..1, or a difference of shares) with its interval at `level`."""

    estimate: float
    low: float
    high: float
    level: float = BOOTSTRAP.level

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class Accuracies:
    """Accuracy and balanced accuracy (mean of the per-genre recalls) of per-cover correctness, with intervals."""

    accuracy: Interval
    balanced_accuracy: Interval
    covers: int
    genres: int  # true genres among the covers: balanced accuracy's denominator


def _checked(correct: np.ndarray, genres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correctness as float64 in [0, 1] and the true genres as indices 0..G-1 (sorted by genre)."""
    correct = np.asarray(correct, dtype=np.float64)
    genres = np.asarray(genres)
    if correct.ndim != 1 or correct.shape != genres.shape:
        raise ValueError(f"need one correctness and one true genre per cover, got {correct.shape} and {genres.shape}")
    if not len(correct):
        raise DataError("no covers to compute an interval from: the predictions hold no scored cover")
    if not np.all((correct >= 0) & (correct <= 1)):
        raise ValueError("a cover's correctness is a share of runs, from 0 to 1")
    return correct, np.unique(genres, return_inverse=True)[1].reshape(-1)


def _stratified_interval(
    values: np.ndarray, genre_index: np.ndarray, bootstrap: Bootstrap
) -> tuple[Interval, Interval]:
    """The accuracy and the balanced accuracy of `values` per cover, each with its interval.

    Accuracy is the cover-weighted mean, balanced accuracy the mean of the genres' means; both are linear in the
    values, so for paired differences `values` is B's correctness minus A's. A genre of one cover is left out of the
    resampling and enters every resample as itself: resampling one cover with replacement always gives it back
    (`scipy.stats.bootstrap` wants two observations a sample).
    """
    groups = [values[genre_index == genre] for genre in range(int(genre_index.max()) + 1)]
    fixed = [float(group[0]) for group in groups if len(group) == 1]
    resampled = [group for group in groups if len(group) > 1]
    sizes = np.array([1] * len(fixed) + [len(group) for group in resampled])

    def statistic(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        means = [sample.mean(axis=axis) for sample in samples]
        shape = np.shape(means[0]) if means else ()
        genre_means = np.stack([np.full(shape, mean) for mean in fixed] + means)  # (genres, ...): fixed ones first
        return np.stack([np.tensordot(sizes, genre_means, axes=1) / len(values), genre_means.mean(axis=0)])

    estimate = statistic(*resampled)
    if not resampled:  # every genre has one cover: nothing varies
        low = high = estimate
    else:
        from scipy import stats

        found = stats.bootstrap(
            resampled,
            statistic,
            n_resamples=bootstrap.resamples,
            batch=BATCH,
            vectorized=True,
            confidence_level=bootstrap.level,
            method="percentile",
            rng=np.random.default_rng(bootstrap.seed),
        )
        low, high = found.confidence_interval
    accuracy, balanced = (
        Interval(float(e), float(lo), float(hi), bootstrap.level) for e, lo, hi in zip(estimate, low, high, strict=True)
    )
    return accuracy, balanced


def accuracy_intervals(correct: np.ndarray, genres: np.ndarray, bootstrap: Bootstrap = BOOTSTRAP) -> Accuracies:
    """The intervals of accuracy and balanced accuracy of covers scored `correct` (`(N,)`: bool, or the share of
    a model's runs right on each cover), stratified by their true `genres` (`(N,)`, any labels).

    Balanced accuracy is over the genres present among the covers, as scikit-learn's `balanced_accuracy_score`.
    No covers is a `DataError`.
    """
    correct, genre_index = _checked(correct, genres)
    accuracy, balanced = _stratified_interval(correct, genre_index, bootstrap)
    return Accuracies(accuracy, balanced, covers=len(correct), genres=int(genre_index.max()) + 1)


def majority_votes(correct: np.ndarray) -> np.ndarray:
    """Each cover's vote of its runs, `(N,)` int8: 1 when more than half of the runs that scored it were right, 0
    when fewer than half, -1 for an even split (2 seeds, one right), which counts for neither side."""
    correct = np.asarray(correct, dtype=np.float64)
    return np.where(correct > 0.5, 1, np.where(correct < 0.5, 0, -1)).astype(np.int8)


def mcnemar_exact_p(a_only_right: int, b_only_right: int) -> float:
    """McNemar's exact test (two-sided) from the discordant covers: `a_only_right` (b in the textbook table: A right,
    B wrong) and `b_only_right` (c). Under no difference each discordant cover is a fair coin:
    p = `binomtest(c, b + c, 0.5)`. No discordant cover at all gives p = 1: nothing tells the models apart."""
    if a_only_right < 0 or b_only_right < 0:
        raise ValueError(f"discordant counts cannot be negative, got {a_only_right} and {b_only_right}")
    if a_only_right + b_only_right == 0:
        return 1.0
    from scipy import stats

    return float(stats.binomtest(b_only_right, a_only_right + b_only_right, 0.5).pvalue)


@dataclass(frozen=True)
class PairedComparison:
    """Model B against model A on the covers both scored: differences are B minus A.

    McNemar's test is on each model's per-cover majority vote (`majority_votes`), so each cover counts once however
    many runs scored it; it asks whether the two models' right/wrong outcomes differ, the same question for both
    metrics, so one p-value serves both sentences.
    """

    accuracy: Interval
    balanced_accuracy: Interval
    covers: int
    a_only_right: int  # covers A's vote gets right and B's wrong (McNemar's b)
    b_only_right: int  # covers B's vote gets right and A's wrong (McNemar's c)
    mcnemar_p: float
    a: Accuracies | None = None  # each side's own numbers on these covers, when asked for
    b: Accuracies | None = None


def paired_comparison(
    a_correct: np.ndarray,
    b_correct: np.ndarray,
    genres: np.ndarray,
    bootstrap: Bootstrap = BOOTSTRAP,
    with_sides: bool = False,
) -> PairedComparison:
    """B minus A in accuracy and balanced accuracy on the same covers (`(N,)` each, in the same order, correctness
    bool or fractional), with a paired stratified bootstrap interval (a resampled cover brings both models' outcomes
    along) and McNemar's exact p. `with_sides` also gives each model's own intervals."""
    a_correct, genre_index = _checked(a_correct, genres)
    b_correct, _ = _checked(b_correct, genres)
    accuracy, balanced = _stratified_interval(b_correct - a_correct, genre_index, bootstrap)
    a_votes, b_votes = majority_votes(a_correct), majority_votes(b_correct)
    a_only, b_only = int(np.sum((a_votes == 1) & (b_votes == 0))), int(np.sum((a_votes == 0) & (b_votes == 1)))
    return PairedComparison(
        accuracy,
        balanced,
        covers=len(a_correct),
        a_only_right=a_only,
        b_only_right=b_only,
        mcnemar_p=mcnemar_exact_p(a_only, b_only),
        a=accuracy_intervals(a_correct, genres, bootstrap) if with_sides else None,
        b=accuracy_intervals(b_correct, genres, bootstrap) if with_sides else None,
    )


@dataclass(frozen=True)
class CorrectedTTest:
    """Nadeau and Bengio's corrected resampled t-test of the mean of per-fold differences (B minus A)."""

    difference: Interval  # the mean difference with its t interval
    t: float
    p: float
    folds: int  # differences averaged (folds x repeats)


def corrected_resampled_t_test(
    differences: Sequence[float], test_size: float, train_size: float, level: float = BOOTSTRAP.level
) -> CorrectedTTest:
    """Whether B beats A over the folds (and repeats) of cross-validation, from each fold's difference B - A.

    Folds share training covers, so their differences are correlated and the plain t-test's variance is too small.
    Nadeau & Bengio (2003) scale the sample variance by (1/k + n_test/n_train) instead of 1/k: with k differences,
    t = mean / sqrt(var * (1/k + n_test/n_train)), k - 1 degrees of freedom, two-sided. `test_size` and `train_size`
    are a fold's covers in each. Differences that are all equal have no spread: p is 1 when they are 0, else 0.
    """
    values = np.asarray(differences, dtype=np.float64)
    if values.ndim != 1 or len(values) < 2:
        raise DataError(f"the corrected t-test needs two or more fold differences, got {values.size}")
    if test_size <= 0 or train_size <= 0:
        raise ValueError(f"a fold's test and training sizes must be positive, got {test_size} and {train_size}")
    folds = len(values)
    mean = float(values.mean())
    scale = math.sqrt(float(values.var(ddof=1)) * (1 / folds + test_size / train_size))
    if scale == 0:
        t = math.copysign(math.inf, mean) if mean else 0.0
        return CorrectedTTest(Interval(mean, mean, mean, level), t, 0.0 if mean else 1.0, folds)
    from scipy import stats

    t = mean / scale
    half = float(stats.t.ppf(0.5 + level / 2, folds - 1)) * scale
    p = float(2 * stats.t.sf(abs(t), folds - 1))
    return CorrectedTTest(Interval(mean, mean - half, mean + half, level), t, p, folds)


def normal_interval(share: float, count: int, level: float = BOOTSTRAP.level) -> Interval:
    """The normal-approximation (Wald) interval of a share (an accuracy) measured on `count` covers, clipped to
    0..1: what is left when a run logged its accuracy but not its per-cover predictions."""
    if count <= 0:
        raise ValueError(f"need a positive number of covers, got {count}")
    from scipy import stats

    half = float(stats.norm.ppf(0.5 + level / 2)) * math.sqrt(share * (1 - share) / count)
    return Interval(share, max(0.0, share - half), min(1.0, share + half), level)


def p_value(p: float) -> str:
    """'0.31', '0.042', '0.004', '< 0.001': as many digits as a reader needs."""
    if p < 0.001:
        return "< 0.001"
    return f"= {p:.3f}" if p < 0.1 else f"= {p:.2f}"


def points(share: float) -> str:
    """A share as points of percentage, one decimal: 0.031 -> '3.1'."""
    return f"{100 * share:.1f}"


def comparison_sentence(difference: Interval, metric: str, evidence: str, a: str = "A", b: str = "B") -> str:
    """One sentence a reader can quote: 'B beats A by 3.1 points of accuracy, 95% interval 1.2 to 5.0, McNemar
    p = 0.004, 2,424 covers' (`evidence` is what follows the interval). 'beats' and 'loses to' only when the
    interval of B - A excludes 0, and then the interval is of the margin; otherwise 'no difference shown: B - A =
    +1.1 points of accuracy, 95% interval -1.2 to 3.4, ...'."""
    level = f"{percent_level(difference.level)} interval"
    if difference.low > 0:
        margin = f"{b} beats {a} by {points(difference.estimate)} points of {metric}"
        shown = f"{level} {points(difference.low)} to {points(difference.high)}"
    elif difference.high < 0:
        margin = f"{b} loses to {a} by {points(-difference.estimate)} points of {metric}"
        shown = f"{level} {points(-difference.high)} to {points(-difference.low)}"
    else:
        margin = f"no difference shown: {b} - {a} = {100 * difference.estimate:+.1f} points of {metric}"
        shown = f"{level} {points(difference.low)} to {points(difference.high)}"
    return f"{margin}, {shown}, {evidence}"


def comparison_sentences(comparison: PairedComparison, a: str = "A", b: str = "B") -> list[str]:
    """The accuracy and the balanced accuracy sentences of a paired comparison. McNemar's test counts the covers one
    model gets right and the other wrong, so its p goes with accuracy only."""
    covers = f"{comparison.covers:,} covers"
    mcnemar = f"McNemar p {p_value(comparison.mcnemar_p)}, {covers}"
    return [
        comparison_sentence(comparison.accuracy, "accuracy", mcnemar, a, b),
        comparison_sentence(comparison.balanced_accuracy, "balanced accuracy", covers, a, b),
    ]


def t_test_sentence(test: CorrectedTTest, metric: str, a: str = "A", b: str = "B") -> str:
    """'B beats A by 2.9 points of accuracy fold by fold, 95% interval 0.4 to 5.4, corrected resampled t-test
    p = 0.030, 15 folds'."""
    evidence = f"corrected resampled t-test p {p_value(test.p)}, {test.folds} folds"
    return comparison_sentence(test.difference, f"{metric} fold by fold", evidence, a, b)
