"""`genre tune` as users run it: nested MLflow runs, resumable storage, several workers, dead workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from genre.cli import main
from genre.data.prepare import PrepareConfig, prepare
from genre.tuning.study import TuneConfig
from tests.conftest import PROJECT_ROOT, refused


@pytest.fixture
def small_space(tracking_store: str, tmp_path: Path) -> Path:
    """Digits at 16 px and a space of tiny conv nets: a trial takes about a second."""
    data = prepare(PrepareConfig(out=str(tmp_path / "digits16"), image_size=16), progress=False).root
    space = tmp_path / "tiny.yaml"
    space.write_text(
        f"settings: {{data: {data}, epochs: 3, batch_size: 64, dense_units: '32', warmup_epochs: 0}}\n"
        "parameters:\n"
        "  learning_rate: {float: [0.005, 0.05], log: true}\n"
        "  conv_layers: {int: [1, 2]}\n"
        "  conv_filters: {int: [4, 16], log: true, repeat: conv_layers}\n"
    )
    return space


def tune_runs(uri: str):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("genre-digits")
    runs = client.search_runs([experiment.experiment_id], max_results=500)
    parents = [r for r in runs if r.data.tags.get("genre.stage") == "tune"]
    trials = [r for r in runs if r.data.tags.get("genre.stage") == "trial"]
    return client, parents, trials


def test_a_study_logs_a_parent_run_with_nested_trial_runs_and_continues_by_name(
    small_space: Path, tracking_store: str, capsys
) -> None:
    args = ["tune", "-q", "--space", str(small_space), "--study", "tiny", "--n-trials", "3", "--pruner", "none"]
    assert main(args) == 0
    client, (parent,), trials = tune_runs(tracking_store)
    assert parent.data.tags["optuna.study"] == "tiny" and parent.info.status == "FINISHED"
    assert len(trials) == 3
    for trial in trials:
        assert trial.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert trial.data.tags["trial_state"] == "COMPLETE" and trial.info.status == "FINISHED"
        params = trial.data.params
        # what trained (every resolved setting) and what the sampler chose agree
        assert params["config.learning_rate"] == params["trial.learning_rate"]
        assert params["config.conv_filters"] == params["trial.conv_filters"]
        assert len(params["config.conv_filters"].split(",")) == int(params["trial.conv_layers"])
        assert [m.step for m in client.get_metric_history(trial.info.run_id, "val_accuracy")] == [1, 2, 3]
    best = max(trials, key=lambda r: r.data.metrics["best_val_accuracy"])
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(best.data.metrics["best_val_accuracy"])
    assert parent.data.tags["best_model_uri"] == f"runs:/{best.info.run_id}/model"
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "study")}
    assert {"study/optimization_history.png", "study/intermediate_values.png", "study/tiny.yaml"} <= figures
    assert "study/parallel_coordinate.png" in figures

    assert main([*args, "--n-trials", "2"]) == 0  # the same study name continues: 3 + 2 trials
    assert "study tiny at sqlite:///optuna.db: 3 trial(s) so far" in capsys.readouterr().out
    study = optuna.load_study(study_name="tiny", storage="sqlite:///optuna.db")
    assert len(study.trials) == 5 and len({t.number for t in study.trials}) == 5


def test_lagging_trials_are_pruned_and_recorded_as_pruned(small_space: Path, tracking_store: str) -> None:
    args = ["tune", "-q", "--space", str(small_space), "--study", "pruning", "--n-trials", "8", "--sampler", "random"]
    assert main(args) == 0
    _, _, trials = tune_runs(tracking_store)
    study = optuna.load_study(study_name="pruning", storage="sqlite:///optuna.db")
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "the median pruner stopped no trial"
    states = {r.data.tags["trial_number"]: r.data.tags["trial_state"] for r in trials}
    assert all(states[str(t.number)] == "PRUNED" for t in pruned)
    assert all(r.info.status == "FINISHED" for r in trials)


def test_the_best_model_is_registered_with_an_alias_and_predicts(small_space: Path, tracking_store: str, capsys):
    args = ["tune", "-q", "--space", str(small_space), "--n-trials", "2", "--register", "genre-classifier"]
    assert main(args) == 0
    version = MlflowClient(tracking_store).get_model_version_by_alias("genre-classifier", "champion")
    assert str(version.version) == "1"
    image = next(Path("digits16").parent.glob("digits16/images/3/*.png"))
    assert main(["predict", "-m", "models:/genre-classifier@champion", str(image)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(f"{image}: ")


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"n_trials": 0}, "n_trials"),
        ({"timeout": 0.0}, "timeout"),
        ({"seed": -1}, "seed"),
        ({"heartbeat_seconds": 0}, "heartbeat_seconds"),
        ({"grace_seconds": 0}, "grace_seconds"),
        ({"heartbeat_seconds": 10, "grace_seconds": 10}, "grace_seconds"),  # live trials would be failed
        ({"max_retries": -1}, "max_retries"),
    ],
)
def test_a_study_setting_out_of_range_is_a_one_line_error_naming_it(settings: dict, named: str) -> None:
    refused(TuneConfig, settings, named)


def test_a_negative_trial_count_is_refused_before_any_study_or_run_opens(tracking_store: str, capsys) -> None:
    assert main(["tune", "--n-trials", "-1"]) == 2
    assert capsys.readouterr().err == "genre tune: error: 'n_trials' must be at least 1, got -1\n"
    assert not Path("optuna.db").exists() and not Path("mlflow.db").exists() and not Path("data").exists()


def test_an_unreachable_storage_fails_fast_and_never_shows_the_password(small_space: Path, capsys) -> None:
    storage = "postgresql://genre:s3cret@127.0.0.1:9/optuna"
    started = time.monotonic()
    assert main(["tune", "--space", str(small_space), "--storage", storage]) == 2
    error = capsys.readouterr().err
    assert time.monotonic() - started < 15
    assert "postgresql://genre:***@127.0.0.1:9/optuna cannot be reached" in error and "s3cret" not in error


# --- PostgreSQL: a study shared by several workers (the real server on 127.0.0.1:5432) -------------------


@pytest.fixture
def postgres_db(postgres_database: str) -> str:
    """The URL carries a password (trust auth ignores it) so the tests can check it is masked."""
    return f"postgresql://postgres:pg-s3cret@127.0.0.1:5432/{postgres_database}"


def worker(space: Path, storage: str, cwd: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    command = [sys.executable, "-m", "genre.cli", "tune", "-q", "--space", str(space), "--storage", storage]
    return subprocess.Popen(
        [*command, "--study", "shared", *extra], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip


def test_two_workers_share_one_postgres_study(small_space: Path, postgres_db: str, tracking_store, tmp_path) -> None:
    MlflowClient(tracking_store).search_experiments()  # the tracking store exists before both workers start
    workers = [worker(small_space, postgres_db, tmp_path, "--n-trials", "2", "--pruner", "none") for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    study = optuna.load_study(study_name="shared", storage=postgres_db)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4 and len({t.number for t in complete}) == 4
    client, parents, trials = tune_runs(tracking_store)
    assert len(parents) == 2 and len(trials) == 4
    for parent in parents:
        assert parent.data.params["config.storage"].startswith("postgresql://postgres:***@127.0.0.1")
        assert "pg-s3cret" not in str(parent.data.params) and "pg-s3cret" not in "".join(outputs)


def test_a_killed_worker_s_trial_fails_by_heartbeat_and_is_retried(
    small_space: Path, postgres_db: str, tracking_store, tmp_path
) -> None:
    slow = ["--pruner", "none", "--heartbeat-seconds", "1", "--grace-seconds", "3"]
    victim = worker(small_space, postgres_db, tmp_path, "--n-trials", "1", *slow)
    deadline = time.monotonic() + 120
    while True:  # wait until its trial is running
        study = optuna.load_study(study_name="shared", storage=postgres_db) if _has_study(postgres_db) else None
        if study and any(t.state == optuna.trial.TrialState.RUNNING for t in study.trials):
            break
        assert victim.poll() is None and time.monotonic() < deadline, victim.stdout.read()
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    time.sleep(4)  # past the grace period

    survivor = worker(small_space, postgres_db, tmp_path, "--n-trials", "2", *slow)
    output = survivor.communicate(timeout=600)[0]
    assert survivor.returncode == 0, output
    trials = optuna.load_study(study_name="shared", storage=postgres_db).trials
    assert trials[0].state == optuna.trial.TrialState.FAIL  # the dead worker's trial, failed by heartbeat
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == trials[0].number]
    assert retried and trials[0].params.items() <= retried[0].params.items() and retried[0].state.is_finished()
    assert len(trials) == 3  # the failed one, its retry, and one new trial


def _has_study(storage: str) -> bool:
    try:
        return "shared" in [s.study_name for s in optuna.get_all_study_summaries(storage)]
    except Exception:  # noqa: BLE001 - tables not created yet
        return False


def test_sqlite_resume_after_sigkill_keeps_earlier_trials(small_space: Path, tracking_store, tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    first = worker(small_space, storage, tmp_path, "--n-trials", "2", "--pruner", "none")
    assert first.wait(timeout=600) == 0, first.stdout.read()
    victim = worker(small_space, storage, tmp_path, "--n-trials", "3", "--pruner", "none")
    deadline = time.monotonic() + 120
    while len(optuna.load_study(study_name="shared", storage=storage).trials) < 3:
        assert victim.poll() is None and time.monotonic() < deadline, victim.stdout.read()
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    again = worker(small_space, storage, tmp_path, "--n-trials", "1", "--pruner", "none")
    assert again.wait(timeout=600) == 0, again.stdout.read()
    trials = optuna.load_study(study_name="shared", storage=storage).trials
    states = [t.state for t in trials]
    assert states[:2] == [optuna.trial.TrialState.COMPLETE] * 2  # earlier trials intact
    assert states.count(optuna.trial.TrialState.COMPLETE) >= 3
