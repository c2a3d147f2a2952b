"""`genre compare A B`: does model B beat model A on the same covers, and by how much (issue 23)?

A and B are each a run id, or an experiment's name (a suite's, tag `genre.experiment_name`) whose newest version's
runs are pooled: its seeds, and on a cross-validated suite its folds and repeats, every cover scored once per repeat
and seed (`genre.stages.pooling`). The comparison is paired, on the test covers both models scored: the difference
(B minus A) in accuracy and balanced accuracy with a paired stratified bootstrap interval, and McNemar's exact p, in
sentences a reader can quote. When both are cross-validated on the same folds, Nadeau and Bengio's corrected
resampled t-test over the folds follows.

Runs older than per-cover predictions logged only their test metrics. With such runs on either side the command
falls back to an unpaired comparison of those metrics, says so in one line, and claims no difference.
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from genre.command_config import CompareConfig
from genre.errors import EXIT_OK, ConfigError, TrackingError
from genre.intervals import (
    BOOTSTRAP,
    Accuracies,
    Interval,
    PairedComparison,
    comparison_sentences,
    normal_interval,
    percent_level,
    points,
    t_test_sentence,
)
from genre.predictions import CoverPredictions, predictions_artifact
from genre.stages.pooling import FoldComparison, FoldKey, fold_comparison, pooled_comparison
from genre.stages.report_table import SCORED_STAGES, member_run, result_rows
from genre.stages.run_facts import NAME
from genre.tracking import runs
from genre.tracking.tracker import tracked_run

RUN_ID = re.compile(r"[0-9a-f]{32}")  # an MLflow run id; anything else names an experiment
SPLIT = "test"


@dataclass(frozen=True)
class Side:
    """One model as compared: what the user called it, its runs (MLflow run records) and their test predictions
    (None for a run that logged none)."""

    name: str
    runs: tuple[Any, ...]
    predictions: tuple[CoverPredictions | None, ...]
    experiment: str  # the MLflow experiment holding its runs
    left_out: int = 0  # runs of older versions of the experiment, or repeated seeds, not pooled

    @property
    def lacking(self) -> int:
        """How many of its runs logged no predictions."""
        return sum(prediction is None for prediction in self.predictions)

    @property
    def logged(self) -> list[CoverPredictions]:
        return [prediction for prediction in self.predictions if prediction is not None]

    def folds(self) -> dict[FoldKey, list[CoverPredictions]]:
        """The predictions of its cross-validated runs by (repeat, fold); empty for the static split."""
        found: dict[FoldKey, list[CoverPredictions]] = defaultdict(list)
        for run, prediction in zip(self.runs, self.predictions, strict=True):
            if int(run.data.params.get("config.folds") or 0) and prediction is not None:
                params = run.data.params
                found[int(params.get("config.repeat") or 0), int(params.get("config.fold") or 0)].append(prediction)
        return dict(found)

    def describe(self) -> str:
        """'cnn-covers: 15 runs (seeds 0,1,2; 5 folds) in MLflow experiment genre-suite-covers-dev-cv5'."""
        params = [run.data.params for run in self.runs]
        seeds = sorted({run.data.tags.get("genre.seed", run.data.params.get("config.seed", "?")) for run in self.runs})
        shape = f"seed{'s' if len(seeds) > 1 else ''} {','.join(seeds)}"
        folds = max(int(p.get("config.folds") or 0) for p in params)
        if folds:
            repeats = len({p.get("config.repeat") or "0" for p in params})
            shape += f"; {folds} folds" + (f" x {repeats} repeats" if repeats > 1 else "")
        count = f"{len(self.runs)} run{'s' if len(self.runs) > 1 else ''}"
        left = f", {self.left_out} older runs left out" if self.left_out else ""
        return f"{self.name}: {count} ({shape}) in MLflow experiment {self.experiment}{left}"


@dataclass(frozen=True)
class Comparison:
    """What `compare` found: paired when every run of both sides logged predictions, else `unpaired` lines."""

    a: Side
    b: Side
    paired: PairedComparison | None
    folds: FoldComparison | None
    unpaired: list[str]  # the fallback's lines; empty when paired


def side(name: str, experiment: str) -> Side:
    """The runs `name` stands for (a run id, or an experiment name in `experiment` or every active experiment) and
    their logged test predictions."""
    names = runs.experiment_names()
    ids = [part.strip() for part in name.split(",")]
    if all(RUN_ID.fullmatch(run_id) for run_id in ids):  # one run, or runs to pool (the folds of a hand-run split)
        found, left_out = [runs.run_record(run_id) for run_id in ids], 0
    elif ":" in name:  # MLFLOW-EXPERIMENT:NAME, when the two sides live in different MLflow experiments
        where, _, named = name.rpartition(":")
        found, left_out = named_runs(named, where, names)
    else:
        found, left_out = named_runs(name, experiment, names)
    predictions = tuple(runs.logged_predictions(run.info.run_id, SPLIT) for run in found)
    where = names.get(found[0].info.experiment_id, found[0].info.experiment_id)
    return Side(name, tuple(found), predictions, where, left_out)


def named_runs(name: str, experiment: str, names: dict[str, str]) -> tuple[list[Any], int]:
    """The finished train, trial and baseline runs of experiment `name` (tag `genre.experiment_name`), its newest
    version only (as `genre report` shows it), and how many older ones were left out."""
    ids = [runs.experiment_id(experiment)] if experiment else None
    query = f"tags.`{NAME}` = '{runs.quote(name)}' and attributes.status = 'FINISHED'"
    found = [run for run in runs.search(ids, query) if run.data.tags.get("genre.stage") in SCORED_STAGES]
    where = f"MLflow experiment {experiment}" if experiment else "any active MLflow experiment"
    if not found:
        raise TrackingError(
            f"no finished train or baseline run of experiment '{name}' in {where} at {runs.shown_store()}; name a run "
            "id, or the experiment the runs are in with --experiment"
        )
    holding = sorted({names.get(run.info.experiment_id, run.info.experiment_id) for run in found})
    if len(holding) > 1:
        raise ConfigError(
            f"experiment '{name}' has runs in {len(holding)} MLflow experiments ({', '.join(holding)}); pick one with "
            "--experiment"
        )
    rows, left_out = result_rows([member for member in map(member_run, found) if member is not None])
    if len(rows) != 1:
        variants = sorted({f"{row.first.dataset}/{row.first.variant}" for row in rows}) or ["none with test metrics"]
        raise ConfigError(
            f"experiment '{name}' in MLflow experiment {holding[0]} has runs on {len(rows)} data variants "
            f"({', '.join(variants)}); compare run ids instead"
        )
    kept = {run.run_id for run in rows[0].runs}
    return [run for run in found if run.info.run_id in kept], left_out


def compare_models(config: CompareConfig) -> Comparison:
    """Read both sides' runs and compare them: paired on their pooled predictions, or unpaired on their metrics."""
    a, b = side(config.a, config.experiment), side(config.b, config.experiment)
    if a.lacking or b.lacking:
        return Comparison(a, b, None, None, unpaired_lines(a, b))
    paired = pooled_comparison(a.logged, b.logged, BOOTSTRAP, with_sides=True)
    return Comparison(a, b, paired, fold_comparison(a.folds(), b.folds()), [])


def _mean_metric(found: Side, metric: str) -> float | None:
    """The mean over a side's runs of a logged metric; None unless every run logged it."""
    values = [run.data.metrics.get(metric) for run in found.runs]
    return statistics.fmean(values) if values and all(value is not None for value in values) else None


def tested_covers(found: Side) -> int | None:
    """The test covers every run of a static-split side scored, from its `dataset_split` param (train runs log
    it: 'train=800,val=100,test=126'); None when the runs do not all say it alike, or are cross-validated."""
    counts = set()
    for run in found.runs:
        params = run.data.params
        if int(params.get("config.folds") or 0):
            return None
        split = dict(part.split("=", 1) for part in params.get("dataset_split", "").split(",") if "=" in part)
        counts.add(split.get("test", ""))
    count = counts.pop() if len(counts) == 1 else ""
    return int(count) if count.isdigit() and int(count) > 0 else None


def unpaired_lines(a: Side, b: Side) -> list[str]:
    """The fallback: what it fell back to (one line), each side's mean logged test metrics (accuracy with a
    normal-approximation interval when the test count is known) and their plain differences."""
    lacking = [
        f"{found.lacking} of {len(found.runs)} runs of {label} ({found.name})"
        for label, found in (("A", a), ("B", b))
        if found.lacking
    ]
    lines = [
        f"fell back to an unpaired comparison of the logged test metrics: {' and '.join(lacking)} logged no "
        f"{predictions_artifact(SPLIT)}, so no cover can be paired and no difference is tested"
    ]
    means = {}
    for label, found in (("A", a), ("B", b)):
        accuracy, balanced = _mean_metric(found, "test_accuracy"), _mean_metric(found, "test_balanced_accuracy")
        if accuracy is None:
            raise TrackingError(
                f"{label} ({found.name}): a run logged neither {predictions_artifact(SPLIT)} nor test_accuracy, so "
                "there is nothing to compare; name runs that scored the test split"
            )
        means[label] = (accuracy, balanced)
        count = tested_covers(found)
        if count:
            interval = normal_interval(accuracy, count)
            about = (
                f"{percent_level(interval.level)} normal-approximation interval {points(interval.low)} to "
                f"{points(interval.high)}, {count:,} test covers"
            )
        else:
            about = "no interval: the runs do not say how many test covers they scored"
        shown_balanced = f"{points(balanced)}%" if balanced is not None else "not logged"
        lines.append(
            f"{label} = {found.name}: test accuracy {points(accuracy)}% ({about}), balanced accuracy "
            f"{shown_balanced}, mean over {len(found.runs)} run{'s' if len(found.runs) > 1 else ''}"
        )
    difference = f"B - A: {100 * (means['B'][0] - means['A'][0]):+.1f} points of accuracy"
    if means["A"][1] is not None and means["B"][1] is not None:
        difference += f", {100 * (means['B'][1] - means['A'][1]):+.1f} points of balanced accuracy"
    lines.append(difference + " (unpaired: no interval of the difference)")
    return lines


def _accuracies(label: str, found: Accuracies | None) -> str:
    if found is None:
        return ""
    return (
        f"{label} {points(found.accuracy.estimate)}% ({points(found.accuracy.low)} to {points(found.accuracy.high)}), "
        f"balanced {points(found.balanced_accuracy.estimate)}% ({points(found.balanced_accuracy.low)} to "
        f"{points(found.balanced_accuracy.high)})"
    )


def report_lines(comparison: Comparison) -> list[str]:
    """What `genre compare` prints: which runs each side is, then the sentences, each side's own numbers, the
    fold-by-fold test when there is one, and the method."""
    a, b = comparison.a, comparison.b
    lines = [f"A = {a.describe()}", f"B = {b.describe()}"]
    if comparison.paired is None:
        return lines + comparison.unpaired
    paired = comparison.paired
    lines += comparison_sentences(paired, a.name, b.name)
    level = percent_level(paired.accuracy.level)
    lines.append(f"on these covers ({level} intervals): {_accuracies('A', paired.a)}; {_accuracies('B', paired.b)}")
    if comparison.folds is not None:
        folds = comparison.folds
        lines += [t_test_sentence(folds.accuracy, "accuracy", a.name, b.name)]
        lines += [t_test_sentence(folds.balanced_accuracy, "balanced accuracy", a.name, b.name)]
    method = (
        f"method: {BOOTSTRAP.describe()}, paired (a resampled cover brings both models' outcomes along), of each "
        "model's runs pooled (a cover's correctness is the share of its runs that got it right); McNemar's exact "
        f"test on each model's per-cover majority vote (an even split counts for neither; {paired.a_only_right} "
        f"covers only A gets right, {paired.b_only_right} only B)"
    )
    if comparison.folds is not None:
        method += (
            "; fold by fold: Nadeau and Bengio's corrected resampled t-test, n_test/n_train "
            f"{comparison.folds.test_size:.0f}/{comparison.folds.train_size:.0f}"
        )
    lines.append(method)
    return lines


def _difference_metrics(prefix: str, difference: Interval) -> dict[str, float]:
    return {prefix: difference.estimate, f"{prefix}_low": difference.low, f"{prefix}_high": difference.high}


def comparison_metrics(comparison: Comparison) -> dict[str, float]:
    """What a `compare` run logs: the differences (B - A) with their bounds, McNemar's counts and p, each side's
    numbers; for the fallback, each side's mean logged test metrics."""
    if comparison.paired is None:
        metrics = {}
        for label, found in (("a", comparison.a), ("b", comparison.b)):
            for metric in ("test_accuracy", "test_balanced_accuracy"):
                mean = _mean_metric(found, metric)
                if mean is not None:
                    metrics[f"{label}_{metric}"] = mean
        return metrics
    paired = comparison.paired
    metrics = {
        "covers": float(paired.covers),
        "mcnemar_p": paired.mcnemar_p,
        "a_only_right": float(paired.a_only_right),
        "b_only_right": float(paired.b_only_right),
        **_difference_metrics("accuracy_difference", paired.accuracy),
        **_difference_metrics("balanced_accuracy_difference", paired.balanced_accuracy),
    }
    for label, own in (("a", paired.a), ("b", paired.b)):
        if own is not None:
            metrics |= {
                f"{label}_accuracy": own.accuracy.estimate,
                f"{label}_balanced_accuracy": own.balanced_accuracy.estimate,
            }
    if comparison.folds is not None:
        metrics |= _difference_metrics("fold_accuracy_difference", comparison.folds.accuracy.difference)
        metrics |= _difference_metrics(
            "fold_balanced_accuracy_difference", comparison.folds.balanced_accuracy.difference
        )
        metrics |= {
            "fold_accuracy_p": comparison.folds.accuracy.p,
            "fold_balanced_accuracy_p": comparison.folds.balanced_accuracy.p,
        }
    return metrics


def command(config: CompareConfig) -> int:
    """`genre compare A B`: print the comparison; with `--log-run` also log it as a `compare` run."""
    comparison = compare_models(config)
    lines = report_lines(comparison)
    for line in lines:
        print(line)
    if config.log_run:
        experiment = config.experiment or comparison.a.experiment
        with tracked_run(experiment, f"compare {config.a} vs {config.b}", {"genre.stage": "compare"}) as tracker:
            tracker.log_params(
                {
                    "a": config.a,
                    "b": config.b,
                    "experiment": config.experiment,
                    "a_runs": len(comparison.a.runs),
                    "b_runs": len(comparison.b.runs),
                    "paired": comparison.paired is not None,
                    "method": BOOTSTRAP.describe(),
                }
            )
            tracker.log_metrics(comparison_metrics(comparison))
            tracker.log_text("\n".join(lines) + "\n", "comparison.txt")
        print(f"MLflow run {tracker.run_id} at {tracker.store} holds the comparison")
    return EXIT_OK
