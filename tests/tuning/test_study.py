"""`genre tune` as users run it: nested MLflow runs, resumable storage, several workers, dead workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from genre.cli import main
from genre.data.config import PrepareConfig
from genre.data.prepare import prepare
from genre.tuning.study import InvocationSampler, TuneConfig, make_sampler
from tests.conftest import PROJECT_ROOT, refused
from tests.processes import command_line, environment, wait_for


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


@pytest.mark.slow
def test_a_study_logs_a_parent_run_with_nested_trial_runs_and_continues_by_name(
    small_space: Path, tracking_store: str, capsys
) -> None:
    args = ["tune", "-q", "--space", str(small_space), "--study", "tiny", "--n-trials", "3", "--pruner", "none"]
    assert main(args) == 0
    client, (parent,), trials = tune_runs(tracking_store)
    assert parent.data.tags["optuna.study"] == "tiny" and parent.info.status == "FINISHED"
    assert parent.data.params["sampler_seed"] == "0"  # a new study's first worker samples with --seed itself
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


@pytest.mark.slow
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


@pytest.mark.slow
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
    assert time.monotonic() - started < 30  # the promise (30 s); a refused port answers at once, the rest is imports
    assert "postgresql://genre:***@127.0.0.1:9/optuna cannot be reached" in error and "s3cret" not in error


# --- PostgreSQL: a study shared by several workers (the real server on 127.0.0.1:5432) -------------------


@pytest.fixture
def postgres_db(postgres_database: str) -> str:
    """The URL carries a password (trust auth ignores it) so the tests can check it is masked."""
    return f"postgresql://postgres:pg-s3cret@127.0.0.1:5432/{postgres_database}"


def worker(space: Path, storage: str, cwd: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **(env or {})}
    command = [sys.executable, "-m", "genre.cli", "tune", "-q", "--space", str(space), "--storage", storage]
    return subprocess.Popen(
        [*command, "--study", "shared", *extra], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip


@pytest.mark.slow
def test_two_workers_share_one_postgres_study(small_space: Path, postgres_db: str, tracking_store, tmp_path) -> None:
    MlflowClient(tracking_store).search_experiments()  # the tracking store exists before both workers start
    workers = [worker(small_space, postgres_db, tmp_path, "--n-trials", "2", "--pruner", "none") for _ in range(2)]
    for process in workers:  # each restarts itself (same pid) with the password in PGPASSWORD, not in its arguments

        def restarted(process: subprocess.Popen = process) -> bool:
            assert process.poll() is None, process.stdout.read()
            return environment(process.pid).get("PGPASSWORD") == "pg-s3cret"

        wait_for(restarted, "the worker to restart with its password in PGPASSWORD")
        assert "--storage postgresql://postgres@127.0.0.1:5432/" in command_line(process.pid)
        assert "pg-s3cret" not in command_line(process.pid)
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    study = optuna.load_study(study_name="shared", storage=postgres_db)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4 and len({t.number for t in complete}) == 4
    client, parents, trials = tune_runs(tracking_store)
    assert len(parents) == 2 and len(trials) == 4
    for run in parents + trials:
        assert "pg-s3cret" not in str(run.data.params) + str(run.data.tags)
    for parent in parents:
        assert parent.data.params["config.storage"] == postgres_db.replace(":pg-s3cret@", "@")
    for output in outputs:  # one line of warning each, and the password nowhere
        assert "pg-s3cret" not in output
        assert len([line for line in output.splitlines() if "warning: a database password" in line]) == 1


@pytest.mark.slow
def test_a_killed_worker_s_trial_fails_by_heartbeat_and_is_retried(
    small_space: Path, postgres_db: str, study_storage: optuna.storages.RDBStorage, tracking_store, tmp_path
) -> None:
    slow = ["--pruner", "none", "--heartbeat-seconds", "1", "--grace-seconds", "3"]
    victim = worker(small_space, postgres_db, tmp_path, "--n-trials", "1", *slow)
    deadline = time.monotonic() + 120
    while (
        True
    ):  # wait until its trial runs and has beaten once (a trial killed before its first heartbeat stays RUNNING)
        study = optuna.load_study(study_name="shared", storage=study_storage) if _has_study(study_storage) else None
        if (
            study
            and any(t.state == optuna.trial.TrialState.RUNNING for t in study.trials)
            and _heartbeats(study_storage)
        ):
            break
        assert victim.poll() is None and time.monotonic() < deadline, victim.stdout.read()
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    time.sleep(4)  # past the grace period

    survivor = worker(small_space, postgres_db, tmp_path, "--n-trials", "2", *slow)
    output = survivor.communicate(timeout=600)[0]
    assert survivor.returncode == 0, output
    trials = optuna.load_study(study_name="shared", storage=study_storage).trials
    assert trials[0].state == optuna.trial.TrialState.FAIL  # the dead worker's trial, failed by heartbeat
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == trials[0].number]
    assert retried and trials[0].params.items() <= retried[0].params.items() and retried[0].state.is_finished()
    assert len(trials) == 3  # the failed one, its retry, and one new trial


def _heartbeats(storage: optuna.storages.RDBStorage) -> int:
    """Heartbeats Optuna has recorded in `storage` (its trial_heartbeats table)."""
    import sqlalchemy

    with storage.engine.connect() as connection:
        return connection.execute(sqlalchemy.text("SELECT count(*) FROM trial_heartbeats")).scalar_one()


@pytest.fixture
def study_storage(postgres_db: str) -> Iterator[optuna.storages.RDBStorage]:
    """One storage (one engine) for everything a test reads from the study while workers run, its tables made
    before they start. A storage per poll kept its connections until garbage collection: 51 at once in the test
    above, and with other tests' that exceeded PostgreSQL's 100."""
    storage = optuna.storages.RDBStorage(postgres_db)
    yield storage
    storage.engine.dispose()


def _has_study(storage: optuna.storages.RDBStorage) -> bool:
    return "shared" in [s.study_name for s in optuna.get_all_study_summaries(storage)]


@pytest.mark.slow
def test_sqlite_resume_after_sigkill_keeps_earlier_trials(small_space: Path, tracking_store, tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    first = worker(small_space, storage, tmp_path, "--n-trials", "2", "--pruner", "none")
    assert first.wait(timeout=600) == 0, first.stdout.read()
    long_trials = tmp_path / "long.yaml"  # the victim's trials train 40 epochs: still training when the kill lands
    long_trials.write_text(small_space.read_text().replace("epochs: 3,", "epochs: 40,"))
    victim = worker(long_trials, storage, tmp_path, "--n-trials", "3", "--pruner", "none")
    deadline = time.monotonic() + 120
    while not any(run.info.status == "RUNNING" for run in tune_runs(tracking_store)[2]):  # its first trial trains
        assert victim.poll() is None and time.monotonic() < deadline, victim.stdout.read()
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    _, parents, trial_runs = tune_runs(tracking_store)
    running = [run for run in parents + trial_runs if run.info.status == "RUNNING"]
    stale = {run.info.run_id: run.data.tags["genre.stage"] for run in running}
    assert sorted(stale.values()) == ["trial", "tune"]  # what the kill left RUNNING: the parent and its trial
    again = worker(small_space, storage, tmp_path, "--n-trials", "1", "--pruner", "none")
    assert again.wait(timeout=600) == 0, again.stdout.read()
    _, parents, trial_runs = tune_runs(tracking_store)  # the killed worker's runs are ended, saying why
    assert [run for run in parents + trial_runs if run.info.status == "RUNNING"] == []
    killed = {run.info.run_id: run for run in parents + trial_runs if run.info.status == "KILLED"}
    assert killed.keys() == stale.keys()
    for run in killed.values():
        assert run.data.tags["genre.ended_by"].startswith("genre tune continuing study shared: process ")
    trials = optuna.load_study(study_name="shared", storage=storage).trials
    states = [t.state for t in trials]
    assert states[:2] == [optuna.trial.TrialState.COMPLETE] * 2  # earlier trials intact
    assert states.count(optuna.trial.TrialState.COMPLETE) >= 3
    settings = chosen_settings(trials)  # each invocation sampled settings of its own, same --seed or not
    assert len(settings) >= 3 and len(set(settings)) == len(settings), settings


# --- Workers that do not repeat each other, and the connections they hold -----------------------------------


def chosen_settings(trials: list[optuna.trial.FrozenTrial]) -> list[tuple]:
    """What the sampler chose for each trial that got any settings, leaving out the retries of a dead worker's
    trial (they repeat it on purpose)."""
    return [tuple(sorted(t.params.items())) for t in trials if t.params and "failed_trial" not in t.system_attrs]


@pytest.mark.parametrize("kind", ["tpe", "random", "cmaes"])
def test_invocations_adding_to_one_study_never_repeat_its_settings(kind: str) -> None:
    """Three invocations with the same --seed add to one study, as three workers or three reruns do: no trial
    repeats another's settings, and the invocation that started the study sampled what its seed always did."""

    def objective(trial: optuna.trial.Trial) -> float:
        return trial.suggest_float("learning_rate", 0.005, 0.05, log=True) * trial.suggest_int("conv_layers", 1, 2)

    storage = optuna.storages.InMemoryStorage()
    seeds = []
    for _ in range(3):
        sampler = InvocationSampler(kind, 7)
        study = optuna.create_study(study_name="s", storage=storage, sampler=sampler, load_if_exists=True)
        study.optimize(objective, n_trials=3)
        seeds.append(sampler.effective_seed)
    settings = chosen_settings(study.trials)
    assert len(settings) == 9 and len(set(settings)) == 9, settings
    assert seeds[0] == 7 and len(set(seeds)) == 3
    alone = optuna.create_study(sampler=make_sampler(kind, 7))
    alone.optimize(objective, n_trials=3)
    assert [t.params for t in study.trials[:3]] == [t.params for t in alone.trials]


@pytest.fixture
def postgres_tracking_store(
    postgres_server: str, tracking_store: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """MLflow's store in a PostgreSQL database of its own (its tables and Optuna's clash in one), its tables made
    before any worker starts, and MLflow's pool variables unset, as on a user's machine."""
    import psycopg

    name = f"genre_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(f"{postgres_server}/postgres", autocommit=True)
    admin.execute(f"CREATE DATABASE {name}")
    uri = f"{postgres_server}/{name}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for variable in ("POOL_SIZE", "MAX_OVERFLOW", "POOLCLASS"):
        monkeypatch.delenv(f"MLFLOW_SQLALCHEMYSTORE_{variable}", raising=False)
    MlflowClient(uri).search_experiments()
    yield uri
    admin.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
    admin.execute(f"DROP DATABASE {name}")
    admin.close()


@pytest.mark.slow
def test_three_workers_on_postgres_sample_distinct_settings_and_hold_at_most_three_connections(
    small_space: Path, postgres_server: str, postgres_db: str, postgres_tracking_store: str, tmp_path: Path
) -> None:
    """Three workers with the same --seed on one study, Optuna's and MLflow's stores both on PostgreSQL: no trial
    repeats another's settings, each parent run records the seed its sampler drew with, and no worker ever holds
    more than 3 connections (study, MLflow store, a trial's heartbeat), so 20 workers fit in PostgreSQL's 100."""
    import psycopg

    databases = [url.rsplit("/", 1)[1] for url in (postgres_db, postgres_tracking_store)]
    options = ["--n-trials", "2", "--pruner", "none", "--heartbeat-seconds", "1", "--grace-seconds", "30"]
    workers = [
        worker(small_space, postgres_db, tmp_path, *options, env={"PGAPPNAME": f"genre-worker-{n}"})  # libpq's
        for n in range(3)
    ]
    peaks: dict[str, int] = {}
    deadline = time.monotonic() + 1200  # three workers share the cores: generous
    with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as admin:
        while any(w.poll() is None for w in workers):  # sample pg_stat_activity for as long as the workers run
            assert time.monotonic() < deadline, "the workers did not finish within 1200 s"
            rows = admin.execute(
                "SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = ANY(%s) GROUP BY 1",
                (databases,),
            )
            for name, count in rows:
                peaks[name] = max(peaks.get(name, 0), count)
            time.sleep(0.05)
    failed = {n: w.stdout.read() for n, w in enumerate(workers) if w.returncode != 0}
    assert failed == {}, "\n".join(f"worker {n} exited {workers[n].returncode}:\n{out}" for n, out in failed.items())
    worker_peaks = {name: count for name, count in peaks.items() if name.startswith("genre-worker-")}
    assert len(worker_peaks) == 3 and max(worker_peaks.values()) <= 3, worker_peaks

    storage = optuna.storages.RDBStorage(postgres_db)
    trials = optuna.load_study(study_name="shared", storage=storage).trials
    storage.engine.dispose()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 6
    settings = chosen_settings(trials)
    assert len(set(settings)) == 6, settings
    _, parents, _ = tune_runs(postgres_tracking_store)
    seeds = sorted(int(parent.data.params["sampler_seed"]) for parent in parents)
    assert len(set(seeds)) == 3 and seeds[0] == 0  # the worker that ran trial 0 kept --seed 0


def test_a_read_only_checkpoint_folder_is_refused_before_any_trial_or_run(small_space: Path, read_only_folder, capsys):
    folder = read_only_folder / "checkpoints"
    assert main(["tune", "-q", "--space", str(small_space), "--checkpoint-dir", str(folder)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"genre tune: error: checkpoint folder {folder} is not writable (")
    assert error.endswith("make it writable or choose another with --checkpoint-dir\n") and error.count("\n") == 1
    assert not Path("mlflow.db").exists()
