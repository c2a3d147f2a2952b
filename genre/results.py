"""A suite's results table from its runs: one row per experiment and dataset variant, mean +- std over seeds.

Pure: run records in, rows out. Rows are ordered best first by mean validation accuracy, the number the original
work compared its models by.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass

from genre.tracking.runs import MemberRun


@dataclass(frozen=True)
class ResultRow:
    """An experiment on one dataset variant, over its seeds (one run per seed)."""

    runs: tuple[MemberRun, ...]

    @property
    def first(self) -> MemberRun:
        return self.runs[0]

    @property
    def seeds(self) -> list[int]:
        return [run.seed for run in self.runs]

    @property
    def val(self) -> list[float]:
        return [run.val_accuracy for run in self.runs]

    @property
    def test(self) -> list[float]:
        return [run.test_accuracy for run in self.runs]

    @property
    def best_run(self) -> MemberRun:
        return max(self.runs, key=lambda run: (run.val_accuracy, run.test_accuracy))


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (nan for a single value: one seed says nothing about spread)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def result_rows(members: list[MemberRun]) -> tuple[list[ResultRow], int]:
    """Rows best first, and how many runs were left out as older versions of an experiment.

    When an experiment's settings or data changed between runs, only the newest version is shown; within it,
    the newest run of each seed.
    """
    groups: dict[tuple[str, str, str], dict[tuple[str, str], list[MemberRun]]] = defaultdict(lambda: defaultdict(list))
    for run in members:
        groups[run.name, run.dataset, run.variant][run.settings_digest, run.data_digest].append(run)
    rows, left_out = [], 0
    for versions in groups.values():
        newest = max(versions.values(), key=lambda runs: max(run.start_time for run in runs))
        left_out += sum(len(runs) for runs in versions.values()) - len(newest)
        by_seed: dict[int, MemberRun] = {}
        for run in sorted(newest, key=lambda run: run.start_time):
            left_out += run.seed in by_seed
            by_seed[run.seed] = run
        rows.append(ResultRow(tuple(by_seed[seed] for seed in sorted(by_seed))))
    rows.sort(key=lambda row: (-mean_std(row.val)[0], -mean_std(row.test)[0], row.first.name))
    return rows, left_out


def percent(values: list[float]) -> str:
    """`'97.22 ± 0.56'` (percent, mean ± std over seeds), or `'97.22'` for one seed."""
    mean, std = mean_std(values)
    return f"{100 * mean:.2f}" if math.isnan(std) else f"{100 * mean:.2f} ± {100 * std:.2f}"


def by_data(rows: list[ResultRow]) -> list[tuple[str, list[ResultRow]]]:
    """`[('digits/full', rows), ('digits/dev', rows), ...]`: one table per dataset variant, since accuracies on
    different validation splits do not rank against each other. Full before dev; rows keep their order."""
    tables: dict[tuple[str, bool, str], list[ResultRow]] = defaultdict(list)
    for row in rows:
        tables[row.first.dataset, row.first.variant != "full", row.first.variant].append(row)
    return [(f"{dataset}/{variant}", tables[dataset, dev, variant]) for dataset, dev, variant in sorted(tables)]


TABLE_HEADER = ("#", "experiment", "model", "seeds", "val accuracy %", "test accuracy %", "s per run")


def table_cells(rows: list[ResultRow]) -> list[list[str]]:
    """A results table as text cells, one list per row, in `TABLE_HEADER` order."""
    return [
        [
            str(rank),
            row.first.name,
            row.first.model,
            ",".join(map(str, row.seeds)),
            percent(row.val),
            percent(row.test),
            f"{statistics.fmean(run.seconds for run in row.runs):.0f}",
        ]
        for rank, row in enumerate(rows, 1)
    ]
