"""A run's artifacts on a disk that cannot take them: one line naming the file, and what the run logged is kept."""

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
