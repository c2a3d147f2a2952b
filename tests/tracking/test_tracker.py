"""The run around a stage: a run `mlflow run` made takes genre's name for it; a run's artifacts on a disk that cannot
take them are one line naming the file, and what the run logged is kept."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from genre.cli import main
from genre.disk import local_folder
from genre.errors import DiskError
from genre.tracking.tracker import tracked_run


def test_an_artifact_on_a_full_disk_is_one_line_and_the_run_keeps_what_it_logged(tracking_store: str, small_disk):
    disk = small_disk(1100)
    MlflowClient(tracking_store).create_experiment("full-disk", artifact_location=str(disk / "artifacts"))
    weights = Path("weights.bin")
    weights.write_bytes(bytes(2 * 2**20))  # more than the disk holds
    with pytest.raises(DiskError) as caught, tracked_run("full-disk", "train", {}) as tracker:
        tracker.log_metrics({"val_accuracy": 0.9}, step=1)
        tracker.log_artifact(weights)
    run_id = tracker.run_id
    assert str(caught.value) == (
        f"no space left on device writing {disk / 'artifacts' / run_id / 'artifacts'}; what run "
        f"{run_id} logged before is kept: free some space and rerun (`genre train --resume {run_id}` continues a "
        "training run from its last checkpoint)"
    )
    run = MlflowClient(tracking_store).get_run(run_id)
    assert run.info.status == "FAILED" and run.data.metrics["val_accuracy"] == 0.9


def test_a_read_only_artifact_folder_fails_before_any_work(tracking_store: str, read_only_folder: Path, capsys):
    client = MlflowClient(tracking_store)
    client.create_experiment("read-only-artifacts", artifact_location=str(read_only_folder / "artifacts"))
    assert main(["prepare", "-q", "--mlflow-experiment", "read-only-artifacts", "--out", "digits"]) == 2
    (run,) = client.search_runs([client.get_experiment_by_name("read-only-artifacts").experiment_id])
    output = capsys.readouterr().err
    error = output.splitlines()[-1]  # MLflow's own INFO lines, from making the store, come first
    assert "Traceback" not in output and error.startswith(
        f"genre prepare: error: artifact folder of run {run.info.run_id} {local_folder(run.info.artifact_uri)} is "
        "not writable ("
    )
    assert error.endswith("a new experiment (--mlflow-experiment) or store (MLFLOW_TRACKING_URI)")
    assert run.info.status == "FAILED"
    assert not Path("digits").exists()


@pytest.mark.slow
def test_a_run_mlflow_run_made_takes_the_name_the_command_gives_its_own_run(tracking_store: str, tmp_path: Path):
    """`mlflow run . -e prepare` makes its run with a random name ("placid-swan-781") before genre starts; genre
    renames it `prepare`, as `genre prepare` names the run it opens itself."""
    from tests.test_mlproject import finished_run, mlflow_run  # the same store: tmp_path / mlflow.db

    result = mlflow_run("prepare", {"out": str(tmp_path / "digits16"), "image_size": "16"}, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client, project_run = finished_run(tmp_path)
    assert project_run.data.params["out"] == str(tmp_path / "digits16")  # the run `mlflow run` made, joined
    assert (
        main(["prepare", "-q", "--out", "digits16-direct", "--image-size", "16", "--mlflow-experiment", "direct"]) == 0
    )
    (direct,) = client.search_runs([client.get_experiment_by_name("direct").experiment_id])
    assert direct.info.run_name == "prepare"
    assert project_run.info.run_name == direct.info.run_name == project_run.data.tags["mlflow.runName"]


@pytest.mark.slow
def test_a_sqlite_store_filling_mid_run_is_one_or_two_lines_and_says_when_the_run_stays_running(
    tmp_path: Path, small_disk
) -> None:
    """Issue 25, case 8: 226 lines with two MLflow tracebacks, and a run left RUNNING that the docs called FAILED. The
    run ends FAILED when that last write still fits (SQLite gave back the failed insert's pages), else it stays
    RUNNING and a warning says so."""
    import errno
    import json
    import os
    import shutil
    import subprocess
    import sys
    import time

    from genre.data.config import PrepareConfig
    from genre.data.prepare import prepare
    from tests.conftest import PROJECT_ROOT

    data = prepare(PrepareConfig(out=str(tmp_path / "digits16"), image_size=16), progress=False).root
    disk = small_disk(3000)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{disk / 'mlflow.db'}", "PYTHONPATH": str(PROJECT_ROOT)}
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(name, None)
    command = [sys.executable, "-m", "genre.cli", "train", "-q", "--data", str(data), "--epochs", "200",
               "--conv-filters", "8", "--dense-units", ""]  # fmt: skip
    training = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while not any(json.loads(p.read_text())["epoch"] >= 1 for p in (tmp_path / "checkpoints").glob("*/state.json")):
        assert training.poll() is None and time.monotonic() < deadline, training.stdout.read()
        time.sleep(0.05)
    with (disk / "filler").open("wb") as filler:  # leave the store a few pages: the next epoch's metrics fill it
        for _ in range(100):  # the store grows while we measure: measure again until the filler fits
            try:
                os.posix_fallocate(filler.fileno(), 0, shutil.disk_usage(disk).free - 8 * 1024)
                break
            except OSError as error:
                assert error.errno == errno.ENOSPC, error

    output = training.communicate(timeout=600)[0]

    assert training.returncode == 2, output
    assert "Traceback" not in output and len(output.splitlines()) <= 3, output
    (run_id,) = [p.name for p in (tmp_path / "checkpoints").iterdir()]
    assert f"genre train: error: no space left on device writing the SQLite database sqlite:///{disk}" in output
    (disk / "filler").unlink()
    status = MlflowClient(env["MLFLOW_TRACKING_URI"]).get_run(run_id).info.status
    stays = f"MLflow run {run_id} stays RUNNING: its store's disk is full" in output
    assert (status, stays) in {("RUNNING", True), ("FAILED", False)}, (status, output)  # FAILED when the end fitted
