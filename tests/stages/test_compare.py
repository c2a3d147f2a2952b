"""`genre compare A B` as a user runs it on a suite's runs: paired on the covers both scored, fold by fold on a
cross-validated suite, and unpaired (saying so) for runs older than per-cover predictions."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from genre.cli import main
from genre.command_config import CompareConfig
from genre.errors import ConfigError
from tests.conftest import refused, use_store
from tests.scored_runs import COVERS, folds_of, predictions, scored_run

SUITE = "genre-suite-covers-dev"
CV = "genre-suite-covers-dev-cv3"


def a_right(index: int) -> bool:
    return index % 2 == 0  # 30 of the 60 covers


def b_right(index: int) -> bool:
    return a_right(index) or index % 4 == 1  # A's and 15 more: 45 of 60


def compare(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, list[str], str]:
    """The exit code, the lines printed and what genre wrote to stderr (not MLflow's lines of making the store)."""
    code = main(["compare", "-q", *arguments])
    out, err = capsys.readouterr()
    return code, out.splitlines(), "".join(line for line in err.splitlines(True) if line.startswith("genre "))


def static_suite() -> dict[str, list[str]]:
    """cnn and rf, two seeds each, with predictions; cnn's seeds disagree on covers 0 and 1 (one right each)."""
    made: dict[str, list[str]] = {"cnn": [], "rf": []}
    for seed in (0, 1):
        cnn = [a_right(i) != (i == seed) for i in range(len(COVERS))]  # seed 0 misses cover 0, seed 1 gets cover 1
        made["cnn"].append(scored_run(SUITE, "cnn", seed, predictions(COVERS, cnn, shuffle=seed)))
        rf = [b_right(i) for i in range(len(COVERS))]
        made["rf"].append(scored_run(SUITE, "rf", seed, predictions(COVERS, rf), stage="baseline"))
    return made


def cross_validated_suite(folds: int = 3) -> None:
    """cnn and rf on a 3-fold split, two seeds each: every cover is in one fold's test split per seed."""
    for seed in (0, 1):
        for fold, test in enumerate(folds_of(COVERS, folds)):
            index = [COVERS.index(cover) for cover in test]
            for name, right in (("cnn", a_right), ("rf", b_right)):
                found = predictions(test, [right(i) for i in index])
                scored_run(CV, name, seed, found, folds=folds, fold=fold, settings="cv")


@pytest.fixture(scope="module")
def suites(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, list[str]]]:
    """A store holding the static suite (cnn, rf), a copy of cnn's first seed (cnn-copy), two older runs without
    predictions (old-cnn) and the cross-validated suite, made once for this file; and the static suite's run ids."""
    folder = tmp_path_factory.mktemp("compare")
    with pytest.MonkeyPatch.context() as patch:
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        use_store(patch, uri, folder)
        made = static_suite()
        made["cnn-copy"] = [scored_run(SUITE, "cnn-copy", 0, predictions(COVERS, [a_right(i) for i in range(60)]))]
        for seed, accuracy in ((0, 0.40), (1, 0.42)):  # older runs: metrics and the split's counts, no predictions
            split = {"dataset_split": "train=40,val=10,test=60"}
            scored_run(SUITE, "old-cnn", seed, None, accuracy=accuracy, params=split)
        cross_validated_suite()
    return uri, made


@pytest.fixture
def store(suites: tuple[str, dict[str, list[str]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    use_store(monkeypatch, suites[0], tmp_path)
    return suites[0]


def test_compare_pools_each_models_seeds_and_gives_the_paired_sentences(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines, _ = compare(capsys, "cnn", "rf", "--experiment", SUITE, "--log-run")

    assert code == 0
    assert lines[0] == f"A = cnn: 2 runs (seeds 0,1) in MLflow experiment {SUITE}"
    accuracy, balanced = lines[2], lines[3]
    assert accuracy.startswith("rf beats cnn by 25.0 points of accuracy, 95% interval ")
    assert accuracy.endswith(", McNemar p < 0.001, 60 covers")
    assert balanced.startswith("rf beats cnn by 25.0 points of balanced accuracy, 95% interval ")
    assert balanced.endswith(", 60 covers") and "McNemar" not in balanced  # McNemar's test is of accuracy
    assert lines[4].startswith("on these covers (95% intervals): A 50.0% (") and "; B 75.0% (" in lines[4]
    method = next(line for line in lines if line.startswith("method: "))
    assert "stratified bootstrap over covers (percentile method, resampled within each true genre), 4,000 " in method
    # covers 0 and 1: cnn's seeds split evenly, so they count for neither side; 14 covers only rf gets right
    assert "0 covers only A gets right, 14 only B" in method

    client = MlflowClient(store)
    (logged,) = client.search_runs(
        [client.get_experiment_by_name(SUITE).experiment_id], "tags.`genre.stage` = 'compare'"
    )
    assert logged.data.params["a"] == "cnn" and logged.data.params["paired"] == "True"
    assert logged.data.metrics["accuracy_difference"] == pytest.approx(0.25)
    assert logged.data.metrics["accuracy_difference_low"] > 0 and logged.data.metrics["b_only_right"] == 14
    assert logged.data.metrics["mcnemar_p"] == pytest.approx(2 * 0.5**14)
    assert lines[-1].startswith("MLflow run ")


def test_a_run_id_is_one_side_and_a_model_no_better_shows_no_difference(
    suites: tuple[str, dict[str, list[str]]], store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    made = suites[1]
    (same,) = made["cnn-copy"]  # right where cnn is, and on cover 0, which cnn's seed 0 misses

    code, lines, _ = compare(capsys, made["cnn"][0], same)

    assert code == 0 and lines[0].startswith(f"A = {made['cnn'][0]}: 1 run (seed 0)")
    assert lines[2].startswith(f"no difference shown: {same} - {made['cnn'][0]} = +1.7 points of accuracy, 95% ")
    assert lines[2].endswith("McNemar p = 1.00, 60 covers")


def test_runs_without_predictions_fall_back_to_an_unpaired_comparison_and_say_so(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines, _ = compare(capsys, "old-cnn", "rf", "--experiment", SUITE)

    assert code == 0
    assert lines[2] == (
        "fell back to an unpaired comparison of the logged test metrics: 2 of 2 runs of A (old-cnn) logged no "
        "predictions/test.csv, so no cover can be paired and no difference is tested"
    )
    assert lines[3].startswith("A = old-cnn: test accuracy 41.0% (95% normal-approximation interval 28.6 to 53.4, ")
    assert lines[3].endswith("60 test covers), balanced accuracy 41.0%, mean over 2 runs")
    assert lines[4].startswith("B = rf: test accuracy 75.0% (no interval: the runs do not say how many test covers")
    assert lines[5] == (
        "B - A: +34.0 points of accuracy, +34.0 points of balanced accuracy (unpaired: no interval of the difference)"
    )
    assert not any("beats" in line or "McNemar" in line for line in lines)


def test_a_cross_validated_suite_pools_its_folds_and_adds_the_corrected_t_test(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # cnn and rf also have runs in the static suite's experiment: --experiment picks
    code, lines, err = compare(capsys, "cnn", "rf")
    assert code == 2 and lines == []
    assert err == (
        f"genre compare: error: experiment 'cnn' has runs in 2 MLflow experiments ({SUITE}, {CV}); pick one with "
        "--experiment\n"
    )

    code, lines, _ = compare(capsys, "cnn", "rf", "--experiment", CV)

    assert code == 0
    assert lines[0] == f"A = cnn: 6 runs (seeds 0,1; 3 folds) in MLflow experiment {CV}"
    assert lines[2].startswith("rf beats cnn by 25.0 points of accuracy") and lines[2].endswith(", 60 covers")
    fold_lines = [line for line in lines if "fold by fold" in line and not line.startswith("method")]
    assert len(fold_lines) == 2
    assert fold_lines[0].startswith("rf beats cnn by 25.0 points of accuracy fold by fold, 95% interval ")
    assert fold_lines[0].endswith(", 3 folds")
    assert "Nadeau and Bengio's corrected resampled t-test, n_test/n_train 20/40" in lines[-1]


def test_a_name_no_run_has_is_a_one_line_error(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = compare(capsys, "rf", "vgg", "--experiment", SUITE)

    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"genre compare: error: no finished train or baseline run of experiment 'vgg' in MLflow "
                          f"experiment {SUITE} at sqlite:")  # fmt: skip


def test_both_models_must_be_named() -> None:
    refused(CompareConfig, {"a": "cnn", "b": " "}, "b")
    with pytest.raises(ConfigError):
        CompareConfig()


def test_a_side_may_be_run_ids_pooled_or_a_name_in_another_mlflow_experiment(
    suites: tuple[str, dict[str, list[str]]], store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    made = suites[1]
    code, lines, _ = compare(capsys, ",".join(made["cnn"]), f"{CV}:rf")

    assert code == 0, lines
    assert lines[0].startswith(f"A = {','.join(made['cnn'])}: 2 runs (seeds 0,1)")
    assert lines[1].startswith(f"B = {CV}:rf: 6 runs (seeds 0,1; 3 folds) in MLflow experiment {CV}")
    assert lines[2].startswith(f"{CV}:rf beats ") and lines[2].endswith("60 covers")
