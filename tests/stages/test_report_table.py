"""The results table: one row per experiment and variant, newest version only, best first, mean ± std, with
balanced accuracy beside accuracy."""

from __future__ import annotations

import pytest

from genre.intervals import Interval, PairedComparison
from genre.stages.report_table import (
    TABLE_HEADER,
    MemberRun,
    RowIntervals,
    by_data,
    percent,
    result_rows,
    table_cells,
)

MEANS = ("val accuracy %", "val balanced accuracy %", "test accuracy %", "test balanced accuracy %")


def run(
    name: str,
    seed: int,
    val: float,
    test: float,
    start: int,
    settings: str = "s1",
    variant: str = "full",
    balanced: tuple[float, float] | None = None,
    fold: int | None = None,
):
    """A finished run; `balanced` is its (validation, test) balanced accuracy, None for a run that predates it;
    `fold`: the run is that fold of a 3-fold cross-validated split."""
    return MemberRun(
        run_id=f"{name}-{seed}-{start}",
        suite="digits",
        name=name,
        kind="train",
        seed=seed,
        settings_digest=settings,
        data_digest="d1",
        dataset="digits",
        variant=variant,
        model="convnet",
        classes=10,
        val_accuracy=val,
        test_accuracy=test,
        seconds=10.0,
        start_time=start,
        val_balanced_accuracy=balanced[0] if balanced else None,
        test_balanced_accuracy=balanced[1] if balanced else None,
        folds=3 if fold is not None else 0,
        fold=fold or 0,
    )


def test_rows_are_best_first_by_mean_validation_accuracy() -> None:
    members = [run("mlp", 0, 0.90, 0.91, 1), run("mlp", 1, 0.92, 0.90, 2), run("cnn", 0, 0.97, 0.96, 3)]

    rows, left_out = result_rows(members)

    assert [row.first.name for row in rows] == ["cnn", "mlp"] and left_out == 0
    assert rows[1].seeds == [0, 1] and rows[1].best_run.seed == 1
    cells = table_cells(rows)
    assert cells[1][:5] == ["2", "mlp", "convnet", "0,1", "91.00 ± 1.41"]
    assert cells[0][4] == "97.00"  # one seed: a mean, no spread


def test_only_the_newest_version_of_a_changed_experiment_is_shown() -> None:
    old = [run("cnn", 0, 0.99, 0.99, 1, settings="old"), run("cnn", 1, 0.99, 0.99, 2, settings="old")]
    new = [run("cnn", 0, 0.90, 0.90, 3, settings="new")]

    rows, left_out = result_rows(old + new)

    assert [row.runs for row in rows] == [tuple(new)] and left_out == 2


def test_variants_are_rows_of_their_own_and_a_repeated_seed_keeps_its_newest_run() -> None:
    members = [run("cnn", 0, 0.9, 0.9, 1), run("cnn", 0, 0.8, 0.8, 5), run("cnn", 0, 0.7, 0.7, 2, variant="dev")]

    rows, left_out = result_rows(members)

    assert [(row.first.variant, row.val) for row in rows] == [("full", [0.8]), ("dev", [0.7])] and left_out == 1


def test_each_dataset_variant_is_a_table_of_its_own_full_first() -> None:
    members = [run("dev-net", 0, 1.0, 1.0, 1, variant="dev"), run("full-net", 0, 0.9, 0.9, 2)]

    tables = by_data(result_rows(members)[0])

    assert [(data, [row.first.name for row in rows]) for data, rows in tables] == [
        ("digits/full", ["full-net"]),
        ("digits/dev", ["dev-net"]),
    ]


def test_percent_is_mean_and_sample_std() -> None:
    assert percent([0.5, 0.7]) == "60.00 ± 14.14"
    assert percent([0.123456]) == "12.35"


def test_balanced_accuracy_sits_beside_accuracy_and_ranks_the_rows() -> None:
    # The forest predicts the large genre: higher accuracy, lower balanced accuracy than the net.
    members = [
        run("rf", 0, 0.60, 0.58, 1, balanced=(0.30, 0.31)),
        run("cnn", 0, 0.55, 0.54, 2, balanced=(0.50, 0.48)),
        run("cnn", 1, 0.57, 0.56, 3, balanced=(0.52, 0.50)),
    ]

    rows, _ = result_rows(members)

    assert [row.first.name for row in rows] == ["cnn", "rf"]
    assert TABLE_HEADER[4:11] == (
        "val accuracy %",
        "val balanced accuracy %",
        "test accuracy %",
        "test accuracy 95% interval",
        "test balanced accuracy %",
        "test balanced accuracy 95% interval",
        "balanced accuracy vs best, points (95% interval; McNemar p of accuracy)",
    )
    means = [TABLE_HEADER.index(name) for name in MEANS]
    cells = table_cells(rows)
    assert [cells[0][i] for i in means] == ["56.00 ± 1.41", "51.00 ± 1.41", "55.00 ± 1.41", "49.00 ± 1.41"]
    assert [cells[1][i] for i in means] == ["60.00", "30.00", "58.00", "31.00"]
    assert rows[0].best_run.seed == 1


def test_runs_that_predate_balanced_accuracy_show_a_dash_and_their_table_ranks_by_accuracy() -> None:
    members = [
        run("old-rf", 0, 0.60, 0.58, 1),
        run("cnn", 0, 0.55, 0.54, 2, balanced=(0.50, 0.48)),
        run("cnn", 1, 0.57, 0.56, 3),  # a seed run before the metric existed: no mean over half the seeds
    ]

    rows, _ = result_rows(members)

    assert [row.first.name for row in rows] == ["old-rf", "cnn"]
    cells = table_cells(rows)
    balanced = [TABLE_HEADER.index("val balanced accuracy %"), TABLE_HEADER.index("test balanced accuracy %")]
    assert [[cell[i] for i in balanced] for cell in cells] == [["-", "-"], ["-", "-"]]


def test_a_cross_validated_row_holds_every_fold_of_each_seed_and_a_seeds_number_is_its_folds_mean() -> None:
    members = [
        run("cnn", seed, 0.5 + seed / 10 + fold / 100, 0.4 + fold / 100, 10 * seed + fold, fold=fold)
        for seed in (0, 1)
        for fold in range(3)
    ]
    members.append(run("cnn", 0, 0.9, 0.9, 1, fold=2))  # an older run of seed 0's fold 2: left out

    rows, left_out = result_rows(members)

    (row,) = rows
    assert left_out == 1 and len(row.runs) == 6 and row.seeds == [0, 1] and row.folds == 3
    assert row.val == pytest.approx([0.51, 0.61]) and row.test == pytest.approx([0.41, 0.41])


def column(cells: list[list[str]], name: str) -> list[str]:
    return [row[TABLE_HEADER.index(name)] for row in cells]


def test_each_row_shows_its_pooled_test_intervals_and_its_paired_difference_from_the_best_row() -> None:
    rows, _ = result_rows([run("cnn", 0, 0.6, 0.5, 1), run("rf", 0, 0.5, 0.4, 2), run("old", 0, 0.4, 0.3, 3)])
    versus = PairedComparison(Interval(-0.1, -0.2, 0.0), Interval(-0.031, -0.05, -0.012), 126, 20, 7, 0.004)
    found = [
        RowIntervals(Interval(0.5, 0.412, 0.587), Interval(0.48, 0.391, 0.57), 126),
        RowIntervals(Interval(0.4, 0.31, 0.49), Interval(0.449, 0.36, 0.538), 126, versus_best=versus),
        RowIntervals(missing="no predictions logged"),
    ]

    cells = table_cells(rows, found)

    assert column(cells, "test accuracy 95% interval") == [
        "41.2 to 58.7",
        "31.0 to 49.0",
        "n/a (no predictions logged)",
    ]
    assert column(cells, "test balanced accuracy 95% interval")[1] == "36.0 to 53.8"
    assert column(cells, "balanced accuracy vs best, points (95% interval; McNemar p of accuracy)") == [
        "best",
        "-3.1 (-5.0 to -1.2; p = 0.004)",
        "n/a (no predictions logged)",
    ]
    assert column(cells, "test accuracy %") == ["50.00", "40.00", "30.00"]  # the seeds' means stay beside
    assert column(table_cells(rows), "test accuracy 95% interval") == ["n/a (no predictions logged)"] * 3


def test_a_cross_validated_row_shows_its_folds_and_its_seeds_pooled_out_of_fold_test_numbers() -> None:
    members = [
        run("cnn", seed, 0.5, 0.4 + fold / 10, 10 * seed + fold, fold=fold) for seed in (0, 1) for fold in (0, 1, 2)
    ]
    rows, _ = result_rows(members)
    pooled = RowIntervals(
        Interval(0.52, 0.45, 0.6), Interval(0.5, 0.43, 0.58), 60, per_seed_accuracy=[0.51, 0.53],
        per_seed_balanced_accuracy=[0.49, 0.51],
    )  # fmt: skip

    cells = table_cells(rows, [pooled])

    assert column(cells, "seeds") == ["0,1 (3 folds)"]
    assert column(cells, "test accuracy %") == ["52.00 ± 1.41"]  # not the folds' mean metric, 50.00
    assert column(cells, "test balanced accuracy %") == ["50.00 ± 1.41"]
    assert column(table_cells(rows), "test accuracy %") == ["50.00 ± 0.00"]  # without predictions: the folds' mean


def logged(stage: str, params: dict[str, str], tags: dict[str, str] | None = None, start: int = 1, run_id: str = ""):
    """An MLflow run record as the store returns it: a finished run of `stage` outside a suite."""
    from types import SimpleNamespace

    metrics = {"best_val_accuracy": 0.9, "val_accuracy": 0.9, "test_accuracy": 0.8}
    data = SimpleNamespace(tags={"genre.stage": stage, "genre.dataset_digest": "d1", **(tags or {})}, metrics=metrics,
                           params={"dataset_name": "digits", "config.variant": "full", **params})  # fmt: skip
    info = SimpleNamespace(run_id=run_id or f"{start:032x}", start_time=start, end_time=start + 5000)
    return SimpleNamespace(data=data, info=info)


def test_runs_outside_a_suite_are_named_by_what_made_them_and_share_a_row_only_with_other_seeds() -> None:
    from genre.stages.report_table import member_run

    convnet = {"config.model": "convnet", "config.conv_filters": "8", "config.learning_rate": "0.02"}
    members = [
        member_run(logged("train", convnet | {"config.seed": "0", "config.checkpoint_dir": "a"}, start=1)),
        member_run(logged("train", convnet | {"config.seed": "1", "config.checkpoint_dir": "b"}, start=2)),
        member_run(logged("train", convnet | {"config.learning_rate": "0.1"}, start=3, run_id="abcdef12" + "0" * 24)),
        member_run(logged("baseline", {"config.model": "rf"}, start=4)),
        member_run(logged("train", {"config.model": "mlp"}, {"genre.config_file": "experiments/mlp-digits.yaml"})),
        member_run(logged("trial", {"config.model": "convnet"}, {"optuna.study": "lr-search", "trial_number": "3"})),
    ]
    assert member_run(logged("evaluate", {"config.model": "convnet"})) is None  # not a model's own scores
    assert member_run(logged("prepare", {})) is None

    rows, left_out = result_rows(members)

    names = sorted(row.first.name for row in rows)
    assert names == [
        "baseline-rf", "lr-search trial 3", "mlp-digits", "train-convnet (run 00000000)", "train-convnet (run abcdef12)"
    ]  # fmt: skip
    assert left_out == 0
    seeds = {row.first.name: row.seeds for row in rows}
    assert seeds["train-convnet (run 00000000)"] == [0, 1]  # the same settings but the seed (and where it ran)
    assert seeds["train-convnet (run abcdef12)"] == [0]
