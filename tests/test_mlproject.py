"""`mlflow run . -e prepare --env-manager local` for each source, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import PROJECT_ROOT, jpeg_bytes, write_cover_folder
from tests.coverserver import CoverServer, ok
from tests.processes import command_line, environment, process_tree


def mlflow_run_command(entry_point: str, params: dict[str, str], tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """`mlflow run` of this project's `entry_point` with `-P` params, and its environment (a store in tmp_path)."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "PGPASSWORD"):
        env.pop(name, None)
    command = [str(bin_dir / "mlflow"), "run", str(PROJECT_ROOT), "-e", entry_point, "--env-manager", "local"]
    command += ["--experiment-name", "mlproject-test"]
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    return command, env


def mlflow_run(entry_point: str, params: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    command, env = mlflow_run_command(entry_point, params, tmp_path)
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def finished_run(tmp_path: Path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("mlproject-test").experiment_id], max_results=1)
    return client, run


@pytest.mark.parametrize("source", ["bundled", "folder", "manifest"])
@pytest.mark.slow
def test_prepare_entry_point_for_each_source(source: str, tmp_path: Path, cover_server: CoverServer) -> None:
    params = {"out": str(tmp_path / "prepared"), "image_size": "16"}
    if source == "folder":
        params["folder"] = str(write_cover_folder(tmp_path / "mine", genres=2, per_genre=10))
    elif source == "manifest":
        entries = [cover_server.add(n + 1, f"g{n % 2}/{n}.jpg", ok(jpeg_bytes((30, 30), seed=n))) for n in range(20)]
        manifest = tmp_path / "links.tsv"
        manifest.write_text("".join(f"{e.url}\t{e.relpath}\n" for e in entries))
        params.update(manifest=str(manifest), download_dir=str(tmp_path / "downloads"))

    result = mlflow_run("prepare", params, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    client, run = finished_run(tmp_path)
    assert run.info.status == "FINISHED"
    expected_kind = {"bundled": "digits", "folder": "folder", "manifest": "manifest"}[source]
    assert run.data.params["source_kind"] == expected_kind
    assert run.data.params["config.image_size"] == "16"
    assert run.inputs.dataset_inputs, "the dataset is logged as a run input"
    assert "samples.png" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert (tmp_path / "prepared" / "dataset.json").exists()


@pytest.mark.slow
def test_baseline_entry_point(tmp_path: Path) -> None:
    assert mlflow_run("prepare", {"out": str(tmp_path / "digits")}, tmp_path).returncode == 0
    result = mlflow_run("baseline", {"data": str(tmp_path / "digits"), "model": "svm", "pixels": "16"}, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mlproject-test")
    (run,) = client.search_runs([experiment.experiment_id], "params.`config.model` = 'svm'")
    assert run.data.params["config.pixels"] == "16" and run.data.metrics["test_accuracy"] > 0.85


@pytest.mark.slow
def test_train_and_evaluate_entry_points(tmp_path: Path) -> None:
    from genre.data.config import PrepareConfig
    from genre.data.prepare import prepare

    data = prepare(PrepareConfig(out=str(tmp_path / "digits16"), image_size=16), progress=False).root
    params = {"data": str(data), "epochs": "2", "conv_filters": "8,16", "dense_units": "32"}
    settings = {"checkpoint_dir": str(tmp_path / "checkpoints"), "interpret": "true"}
    result = mlflow_run("train", params | settings, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client, run = finished_run(tmp_path)  # the one run: train, then interpret into it
    assert run.info.status == "FINISHED" and run.data.params["config.epochs"] == "2"
    assert run.data.tags["genre.stage"] == "train" and "test_ece" in run.data.metrics
    shown = {a.path for a in client.list_artifacts(run.info.run_id, "interpret")}
    assert {"interpret/heatmaps_right_test.png", "interpret/cover_map_test.png"} <= shown
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1, 2]
    assert run.data.metrics["test_accuracy"] > 0.5

    result = mlflow_run("evaluate", {"model_uri": f"runs:/{run.info.run_id}/model", "data": str(data)}, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (evaluation,) = client.search_runs([run.info.experiment_id], "tags.`genre.stage` = 'evaluate'")
    assert evaluation.data.metrics["test_accuracy"] == run.data.metrics["test_accuracy"]


@pytest.mark.slow
def test_tune_entry_point_leaves_parent_and_child_runs(tmp_path: Path) -> None:
    params = {"space": str(tiny_space(tmp_path)), "n_trials": "2", "storage": f"sqlite:///{tmp_path / 'optuna.db'}"}
    result = mlflow_run("tune", params | {"checkpoint_dir": str(tmp_path / "checkpoints")}, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("mlproject-test").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("genre.stage") == "tune"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and parent.info.status == "FINISHED"
    assert "best_val_accuracy" in parent.data.metrics


def tiny_space(tmp_path: Path) -> Path:
    """Two-epoch conv nets on the digits at 16 px: a trial takes seconds."""
    from genre.data.config import PrepareConfig
    from genre.data.prepare import prepare

    data = prepare(PrepareConfig(out=str(tmp_path / "digits16"), image_size=16), progress=False).root
    space = tmp_path / "space.yaml"
    space.write_text(
        f"settings: {{data: {data}, epochs: 2, conv_filters: '8', dense_units: ''}}\n"
        "parameters:\n  learning_rate: {float: [0.005, 0.05], log: true}\n"
    )
    return space


def study_tables(database: str) -> list[str]:
    import psycopg

    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{database}") as connection:
        rows = connection.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        return [row[0] for row in rows]


@pytest.mark.slow
def test_tune_entry_point_refuses_a_password_in_storage_in_one_line(postgres_database: str, tmp_path: Path) -> None:
    """mlflow run has logged and printed -P storage before the project runs; the entry point stops before any work
    and says how to clean up and what to pass instead."""
    storage = f"postgresql://postgres:mlp-s3cret@127.0.0.1:5432/{postgres_database}"
    result = mlflow_run("tune", {"storage": storage, "n_trials": "1"}, tmp_path)
    assert result.returncode != 0
    client, run = finished_run(tmp_path)
    run_id = run.info.run_id
    assert [line for line in result.stderr.splitlines() if line.startswith("genre tune:")] == [
        f"genre tune: error: mlflow run recorded the database password as param 'storage' of run {run_id} and "
        f"printed it; delete that run (`mlflow runs delete --run-id {run_id}`, then `mlflow gc --run-ids {run_id}`), "
        "change the password, and rerun with it in PGPASSWORD (or ~/.pgpass) and "
        f"-P storage=postgresql://postgres@127.0.0.1:5432/{postgres_database}"
    ]
    assert "Traceback" not in result.stderr and run.info.status == "FAILED"
    assert not [name for name in run.data.params if name.startswith("config.")]  # genre logged nothing
    assert study_tables(postgres_database) == []  # and opened no study


@pytest.mark.slow
def test_tune_entry_point_takes_the_storage_password_from_pgpassword(postgres_database: str, tmp_path: Path) -> None:
    """The documented way: -P storage without the password, PGPASSWORD in the environment. The password is in no
    param or tag, no output, and no process's arguments, yet reaches the process that connects."""
    storage = f"postgresql://postgres@127.0.0.1:5432/{postgres_database}"
    params = {"space": str(tiny_space(tmp_path)), "n_trials": "2", "storage": storage}
    command, env = mlflow_run_command("tune", params | {"checkpoint_dir": str(tmp_path / "checkpoints")}, tmp_path)
    env["PGPASSWORD"] = "mlp-s3cret"
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out.open("w"), stderr=err.open("w"))
    arguments, tune_environments = set(), []
    deadline = time.monotonic() + 600
    while process.poll() is None:  # every process of the run, as `ps` shows it, until it ends
        assert time.monotonic() < deadline, "mlflow run took more than 600 s"
        for pid in process_tree(process.pid):
            arguments.add(command_line(pid))
            if "genre.cli tune" in command_line(pid):
                tune_environments.append(environment(pid))
        time.sleep(0.1)
    assert process.returncode == 0, err.read_text()[-3000:]
    assert any("genre.cli tune" in line for line in arguments), arguments  # the sampling saw the child
    assert not [line for line in arguments if "mlp-s3cret" in line]
    assert any(seen.get("PGPASSWORD") == "mlp-s3cret" for seen in tune_environments)
    assert "mlp-s3cret" not in out.read_text() + err.read_text()

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("mlproject-test").experiment_id])
    assert len(runs) == 3  # the study's run and two trials
    for run in runs:
        assert "mlp-s3cret" not in str(run.data.params) + str(run.data.tags)
    (parent,) = [r for r in runs if r.data.tags.get("genre.stage") == "tune"]
    assert parent.data.params["storage"] == parent.data.params["config.storage"] == storage
    assert len(optuna.load_study(study_name="space", storage=storage).trials) == 2


@pytest.mark.slow
def test_suite_and_report_entry_points(tmp_path: Path) -> None:
    result = mlflow_run("suite", {"experiments": "rf-digits", "seeds": "0,1"}, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = mlflow_run("report", {"experiment": "mlproject-test", "output": str(tmp_path / "results.md")}, tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("mlproject-test").experiment_id])
    (suite,) = [r for r in runs if r.data.tags.get("genre.stage") == "suite"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == suite.info.run_id]
    assert sorted(r.info.run_name for r in children) == ["rf-digits-seed0", "rf-digits-seed1"]
    assert all(r.info.status == "FINISHED" for r in [suite, *children])
    page = (tmp_path / "results.md").read_text()
    assert "## digits/full" in page and "| 1 | rf-digits | rf on 32x32 RGB pixels | 0,1 |" in page


@pytest.mark.slow
def test_interpret_entry_point_logs_into_the_models_run(tracking_store: str, tmp_path: Path) -> None:
    from genre.cli import main
    from genre.data.config import PrepareConfig
    from genre.data.prepare import prepare

    data = prepare(PrepareConfig(out=str(tmp_path / "digits16"), image_size=16), progress=False).root
    small = ["--epochs", "1", "--conv-filters", "8", "--dense-units", "32", "--mlflow-experiment", "mlproject-test"]
    assert main(["train", "-q", "--data", str(data), *small]) == 0  # the same store as `mlflow run` below
    client, trained = finished_run(tmp_path)

    params = {"model_uri": f"runs:/{trained.info.run_id}/model", "data": str(data), "top_pairs": "3"}
    result = mlflow_run("interpret", params, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    after = client.get_run(trained.info.run_id)
    assert after.info.status == "FINISHED" and "test_ece" in after.data.metrics
    assert after.data.params == trained.data.params
    assert "interpret/reliability_test.png" in {a.path for a in client.list_artifacts(after.info.run_id, "interpret")}
    (project,) = client.search_runs([after.info.experiment_id], "tags.`genre.stage` = 'interpret'")
    assert project.data.tags["genre.interpreted_run"] == trained.info.run_id and project.info.status == "FINISHED"
