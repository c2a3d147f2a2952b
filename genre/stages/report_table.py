"""The results table of an experiment's runs: one row per experiment and dataset variant, mean +- std over seeds.
A suite's runs are named by their experiment and show its newest version; any other train, trial or baseline run
of an MLflow experiment (`genre-digits`, say) is named by its named experiment, study trial or stage and model, and
runs with the same settings but their seed share a row.

Pure: run records in, rows out. Rows are ordered best first by mean validation balanced accuracy (mean per-genre
recall: covers are unbalanced, and plain accuracy rewards predicting the large genres); a table holding runs that
predate that metric is ordered by validation accuracy, the number the original work compared its models by.

A cross-validated experiment's row holds its K folds x R repeats x seeds runs; a seed's number is then the mean over
its folds and repeats, and its test numbers, when the runs logged their predictions, the pooled out-of-fold ones.
Beside each mean ± std over seeds stands the 95% interval of the row's pooled per-cover predictions
(`RowIntervals`, computed by the report), and the row's paired difference from the table's best row.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genre.intervals import BOOTSTRAP, Interval, PairedComparison, p_value, percent_level, points
from genre.stages.catalogue import NOT_IDENTITY, RUN_OF_VERSION
from genre.stages.run_facts import DATA_DIGEST, NAME, SEED, SETTINGS_DIGEST, SUITE

NETWORK_STAGES = ("train", "trial")  # a study's trial is a train run
SCORED_STAGES = (*NETWORK_STAGES, "baseline")  # the stages whose runs the table shows


@dataclass(frozen=True)
class MemberRun:
    """A finished run of a suite, as a report reads it."""

    run_id: str
    suite: str
    name: str
    kind: str  # train, trial or baseline
    seed: int
    settings_digest: str
    data_digest: str
    dataset: str
    variant: str
    model: str
    classes: int  # 0 when the run does not say
    val_accuracy: float
    test_accuracy: float
    seconds: float
    start_time: int
    val_balanced_accuracy: float | None = None  # None: the run predates balanced accuracy
    test_balanced_accuracy: float | None = None
    folds: int = 0  # K of a cross-validated split; 0 for the static split
    fold: int = 0  # which of the K folds is this run's test split
    repeat: int = 0  # which repeat of the K-fold split


def member_run(run: Any) -> MemberRun | None:
    """A finished train, trial or baseline MLflow run as the table reads it; None for a run of another stage or without
    the metrics a row needs."""
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    kind = tags.get("genre.stage", "")
    if kind not in SCORED_STAGES:
        return None
    best = "best_val" if kind in NETWORK_STAGES else "val"  # a network's val_* are curves; best_val_* its kept epoch
    val = metrics.get(f"{best}_accuracy")
    if val is None or "test_accuracy" not in metrics:
        return None
    model = describe_model(kind, params)
    return MemberRun(
        run_id=run.info.run_id,
        suite=tags.get(SUITE, ""),
        name=tags.get(NAME) or run_label(kind, tags, params),
        kind=kind,
        seed=int(tags.get(SEED, params.get("config.seed", 0))),
        settings_digest=tags.get(SETTINGS_DIGEST) or settings_digest(params),
        data_digest=tags.get(DATA_DIGEST, ""),
        dataset=params.get("dataset_name", "?"),
        variant=params.get("config.variant", "full"),
        model=model,
        classes=len(params["genres"].split(",")) if params.get("genres") else 0,
        val_accuracy=val,
        test_accuracy=metrics["test_accuracy"],
        seconds=((run.info.end_time or run.info.start_time) - run.info.start_time) / 1000,
        start_time=run.info.start_time,
        val_balanced_accuracy=metrics.get(f"{best}_balanced_accuracy"),
        test_balanced_accuracy=metrics.get("test_balanced_accuracy"),
        folds=int(params.get("config.folds") or 0),
        fold=int(params.get("config.fold") or 0),
        repeat=int(params.get("config.repeat") or 0),
    )


def run_label(kind: str, tags: dict[str, str], params: dict[str, str]) -> str:
    """What a run outside a suite is called in the table: its named experiment (`--experiment NAME`), its study and
    trial number, or its stage and model ('train-convnet', 'baseline-rf')."""
    if tags.get("genre.config_file"):
        return Path(tags["genre.config_file"]).stem
    if kind == "trial":
        return f"{tags.get('optuna.study', 'study')} trial {tags.get('trial_number', '?')}"
    return f"{kind}-{params.get('config.model', '?')}"


def settings_digest(params: dict[str, str]) -> str:
    """A digest of the settings a run outside a suite learned with (its `config.*` params less the seed, the fold and
    repeat, and those that change where or how fast it runs, as a suite's digest leaves them out): runs that differ
    only by seed or fold share it."""

    left_out = {f"config.{name}" for name in (*NOT_IDENTITY, *RUN_OF_VERSION)}
    settings = {key: value for key, value in params.items() if key.startswith("config.") and key not in left_out}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def describe_model(kind: str, params: dict[str, str]) -> str:
    """'rf on 50x50 gray pixels', 'convnet 32,64,128 x2', 'mlp 512', 'resnet18_v1b pretrained'."""
    model = params.get("config.model", "?")
    if kind == "baseline":
        return f"{model} on {params.get('feature_set', 'pixels')}"
    if model == "convnet":
        per_block = params.get("config.convs_per_block", "1")
        return f"convnet {params.get('config.conv_filters', '')}" + (f" x{per_block}" if per_block != "1" else "")
    if model == "mlp":
        return f"mlp {params.get('config.hidden_units', '')}"
    pretrained = params.get("config.pretrained") == "True" or params.get("config.pretrained_params") not in ("", None)
    return f"{model} pretrained" if pretrained else model


@dataclass(frozen=True)
class ResultRow:
    """An experiment on one dataset variant, over its seeds (one run per seed, or per seed, fold and repeat of a
    cross-validated split)."""

    runs: tuple[MemberRun, ...]

    @property
    def first(self) -> MemberRun:
        return self.runs[0]

    @property
    def seeds(self) -> list[int]:
        return sorted({run.seed for run in self.runs})

    @property
    def folds(self) -> int:
        """K of a cross-validated row; 0 for the static split."""
        return max(run.folds for run in self.runs)

    @property
    def repeats(self) -> int:
        return len({run.repeat for run in self.runs})

    def per_seed(self, value: str) -> list[float] | None:
        """Each seed's `value` (a `MemberRun` field), the mean over its folds and repeats; None unless every run
        logged it: a mean over some of the seeds would not compare with the others."""
        if any(getattr(run, value) is None for run in self.runs):
            return None
        return [statistics.fmean(getattr(run, value) for run in self.runs if run.seed == seed) for seed in self.seeds]

    @property
    def val(self) -> list[float]:
        return self.per_seed("val_accuracy") or []

    @property
    def test(self) -> list[float]:
        return self.per_seed("test_accuracy") or []

    @property
    def val_balanced(self) -> list[float] | None:
        """Validation balanced accuracy per seed; None unless every seed's run logged it."""
        return self.per_seed("val_balanced_accuracy")

    @property
    def test_balanced(self) -> list[float] | None:
        return self.per_seed("test_balanced_accuracy")

    @property
    def has_balanced(self) -> bool:
        return self.val_balanced is not None and self.test_balanced is not None

    @property
    def best_run(self) -> MemberRun:
        if self.has_balanced:
            return max(self.runs, key=lambda run: (run.val_balanced_accuracy, run.test_balanced_accuracy))
        return max(self.runs, key=lambda run: (run.val_accuracy, run.test_accuracy))


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (nan for a single value: one seed says nothing about spread)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def result_rows(members: list[MemberRun]) -> tuple[list[ResultRow], int]:
    """Rows best first, and how many runs were left out as older versions of an experiment.

    When a suite's experiment changed settings or data between runs, only the newest version is shown; within it,
    the newest run of each seed (of each seed, repeat and fold, cross-validated). Runs outside a suite get a row per
    settings and data (named apart by their newest run when names repeat).
    """
    groups: dict[tuple[str, ...], dict[tuple[str, str], list[MemberRun]]] = defaultdict(lambda: defaultdict(list))
    for run in members:
        version = (run.settings_digest, run.data_digest)
        groups[(run.name, run.dataset, run.variant) + (() if run.suite else version)][version].append(run)
    rows, left_out = [], 0
    for versions in groups.values():
        newest = max(versions.values(), key=lambda runs: max(run.start_time for run in runs))
        left_out += sum(len(runs) for runs in versions.values()) - len(newest)
        by_seed: dict[tuple[int, int, int], MemberRun] = {}
        for run in sorted(newest, key=lambda run: run.start_time):
            key = (run.seed, run.repeat, run.fold)
            left_out += key in by_seed
            by_seed[key] = run
        rows.append(ResultRow(tuple(by_seed[key] for key in sorted(by_seed))))
    return _ranked(_named_apart(rows)), left_out


def _named_apart(rows: list[ResultRow]) -> list[ResultRow]:
    """Rows whose name repeats in one table (runs outside a suite with other settings) named apart by their newest
    run: 'train-convnet (run 1a2b3c4d)'."""
    names = Counter((row.first.name, row.first.dataset, row.first.variant) for row in rows)
    apart = []
    for row in rows:
        if names[row.first.name, row.first.dataset, row.first.variant] > 1:
            newest = max(row.runs, key=lambda run: run.start_time).run_id[:8]
            row = ResultRow(tuple(dataclasses.replace(run, name=f"{run.name} (run {newest})") for run in row.runs))
        apart.append(row)
    return apart


def _ranked(rows: list[ResultRow]) -> list[ResultRow]:
    """Best first: by balanced accuracy (validation, then test) in a table whose every row has it, else by
    accuracy; rows of one table rank only against each other (see `by_data`)."""
    balanced: dict[tuple[str, str], bool] = defaultdict(lambda: True)
    for row in rows:
        balanced[row.first.dataset, row.first.variant] &= row.has_balanced

    def key(row: ResultRow) -> tuple[float, float, str]:
        if balanced[row.first.dataset, row.first.variant]:
            val, test = row.val_balanced or [], row.test_balanced or []
        else:
            val, test = row.val, row.test
        return -mean_std(val)[0], -mean_std(test)[0], row.first.name

    return sorted(rows, key=key)


def percent(values: list[float] | None) -> str:
    """`'97.22 ± 0.56'` (percent, mean ± std over seeds), `'97.22'` for one seed, `'-'` for a metric not logged."""
    if values is None:
        return "-"
    mean, std = mean_std(values)
    return f"{100 * mean:.2f}" if math.isnan(std) else f"{100 * mean:.2f} ± {100 * std:.2f}"


def by_data(rows: list[ResultRow]) -> list[tuple[str, list[ResultRow]]]:
    """`[('digits/full', rows), ('digits/dev', rows), ...]`: one table per dataset variant, since accuracies on
    different validation splits do not rank against each other. Full before dev; rows keep their order."""
    tables: dict[tuple[str, bool, str], list[ResultRow]] = defaultdict(list)
    for row in rows:
        tables[row.first.dataset, row.first.variant != "full", row.first.variant].append(row)
    return [(f"{dataset}/{variant}", tables[dataset, dev, variant]) for dataset, dev, variant in sorted(tables)]


@dataclass(frozen=True)
class RowIntervals:
    """A row's test numbers from its runs' pooled per-cover predictions (`genre.stages.pooling`), or why there are
    none (`missing`: "no predictions logged").

    `versus_best` is the row minus its table's best (first) row on the covers both scored; None for the best row
    itself, or with `versus_best_missing` saying why it could not be paired. `per_seed_*` are each seed's pooled
    numbers, the test columns of a cross-validated row (out of fold)."""

    accuracy: Interval | None = None
    balanced_accuracy: Interval | None = None
    covers: int = 0
    missing: str = ""
    per_seed_accuracy: list[float] | None = None
    per_seed_balanced_accuracy: list[float] | None = None
    versus_best: PairedComparison | None = None
    versus_best_missing: str = ""


NO_PREDICTIONS = "no predictions logged"
INTERVAL = f"{percent_level(BOOTSTRAP.level)} interval"  # the report's intervals are BOOTSTRAP's
TABLE_HEADER = (
    "#",
    "experiment",
    "model",
    "seeds",
    "val accuracy %",
    "val balanced accuracy %",
    "test accuracy %",
    f"test accuracy {INTERVAL}",
    "test balanced accuracy %",
    f"test balanced accuracy {INTERVAL}",
    f"balanced accuracy vs best, points ({INTERVAL}; McNemar p of accuracy)",
    "s per run",
)


def interval_cell(interval: Interval | None, missing: str) -> str:
    """'33.1 to 49.6' (percent); 'n/a (no predictions logged)' for a row without one."""
    if interval is None:
        return f"n/a ({missing or NO_PREDICTIONS})"
    return f"{points(interval.low)} to {points(interval.high)}"


def versus_best_cell(row: RowIntervals | None, best: bool) -> str:
    """'-3.1 (-5.0 to -1.2; p = 0.004)' for a paired row, 'best' for the table's first row, else 'n/a (why)'."""
    if best:
        return "best"
    if row is None or row.versus_best is None:
        why = (row.versus_best_missing or row.missing) if row else ""
        return f"n/a ({why or NO_PREDICTIONS})"
    difference = row.versus_best.balanced_accuracy
    return (
        f"{100 * difference.estimate:+.1f} ({points(difference.low)} to {points(difference.high)}; "
        f"p {p_value(row.versus_best.mcnemar_p)})"
    )


def seeds_cell(row: ResultRow) -> str:
    """'0,1,2', or for a cross-validated row '0,1,2 (5 folds x 2 repeats)'."""
    seeds = ",".join(map(str, row.seeds))
    if not row.folds:
        return seeds
    return f"{seeds} ({row.folds} folds" + (f" x {row.repeats} repeats)" if row.repeats > 1 else ")")


def shown_test(row: ResultRow, found: RowIntervals | None) -> tuple[list[float], list[float] | None]:
    """A row's test accuracy and balanced accuracy per seed as the table shows them: the logged metrics, but for a
    cross-validated row with predictions each seed's pooled out-of-fold numbers (every cover once per repeat)."""
    if row.folds and found and found.per_seed_accuracy is not None:
        return found.per_seed_accuracy, found.per_seed_balanced_accuracy
    return row.test, row.test_balanced


def table_cells(rows: list[ResultRow], intervals: list[RowIntervals | None] | None = None) -> list[list[str]]:
    """A results table as text cells, one list per row, in `TABLE_HEADER` order; `intervals` holds each row's
    (None: not computed, the interval cells say n/a). The first row is the table's best."""
    cells = []
    for rank, (row, found) in enumerate(zip(rows, intervals or [None] * len(rows), strict=True), 1):
        test, test_balanced = shown_test(row, found)
        missing = found.missing if found else NO_PREDICTIONS
        cells.append(
            [
                str(rank),
                row.first.name,
                row.first.model,
                seeds_cell(row),
                percent(row.val),
                percent(row.val_balanced),
                percent(test),
                interval_cell(found.accuracy if found else None, missing),
                percent(test_balanced),
                interval_cell(found.balanced_accuracy if found else None, missing),
                versus_best_cell(found, rank == 1),
                f"{statistics.fmean(run.seconds for run in row.runs):.0f}",
            ]
        )
    return cells
