"""A tracking server that dies while `genre train` logs to it: the command stops within seconds with one line, the
finished epochs are checkpointed, and once a server answers again `--resume` loses nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from genre.data.config import PrepareConfig
from genre.data.prepare import prepare
from genre.tracking import stale
from genre.tracking.store import HTTP_LIMITS
from tests.conftest import PROJECT_ROOT
from tests.tracking.test_tracking_server import free_port, wait_until_healthy

EPOCHS = 5


def genre(*args: str, cwd: Path, uri: str) -> subprocess.Popen:
    env = {key: value for key, value in os.environ.items() if key not in HTTP_LIMITS}  # genre's own defaults
    env |= {"PYTHONPATH": str(PROJECT_ROOT), "MLFLOW_TRACKING_URI": uri}
    return subprocess.Popen(
        [sys.executable, "-m", "genre.cli", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def start_server(backend: str, folder: Path) -> tuple[subprocess.Popen, str]:
    """`genre server` on a free loopback port, in a process group of its own; the process and its URL."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "genre.cli", "server", "--port", str(port), "--backend-store-uri", backend,
         "--artifacts-destination", str(folder / "artifacts")],
        cwd=folder, env=env, stdout=(folder / f"server-{port}.log").open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_until_healthy(url, process)
    return process, url


def kill_server(server: subprocess.Popen, signum: int) -> None:
    """Signal `genre server` and the `mlflow server` it runs in a session of its own, with that server's workers."""
    tasks = Path(f"/proc/{server.pid}/task").glob("*")
    for child in [int(pid) for task in tasks for pid in (task / "children").read_text().split()]:
        os.killpg(child, signum)
    os.killpg(server.pid, signum)
    server.wait(timeout=60)


@pytest.mark.slow
def test_a_server_that_dies_mid_training_stops_train_in_seconds_and_resume_loses_no_epoch(tmp_path: Path) -> None:
    data = prepare(PrepareConfig(out=str(tmp_path / "digits16"), image_size=16), progress=False).root
    backend = f"sqlite:///{tmp_path / 'server.db'}"
    server, url = start_server(backend, tmp_path)
    small = ["-q", "--batch-size", "32", "--conv-filters", "8,16", "--dense-units", "32", "--data", str(data)]
    training = genre("train", *small, "--epochs", str(EPOCHS), "--mlflow-experiment", "lost", cwd=tmp_path, uri=url)
    try:
        deadline = time.monotonic() + 180
        states = tmp_path / "checkpoints"
        while not any(json.loads(p.read_text())["epoch"] >= 1 for p in states.glob("*/state.json")):
            assert training.poll() is None and time.monotonic() < deadline, training.communicate()
            time.sleep(0.02)
        assert training.poll() is None, "training finished before the server could be stopped"
    finally:
        kill_server(server, signal.SIGKILL)  # the server and its workers die at once: connections are refused
    died = time.monotonic()
    out, err = training.communicate(timeout=300)
    seconds = time.monotonic() - died

    (state_file,) = states.glob("*/state.json")
    run_id, state = state_file.parent.name, json.loads(state_file.read_text())
    longest_epoch = max(row["epoch_seconds"] for row in state["history"])
    assert seconds < 30 + longest_epoch, f"train noticed the dead server {seconds:.0f} s after it died"
    assert training.returncode == 2, out + err
    assert len(err.strip().splitlines()) == 1, err  # no traceback, no retry warnings: one line
    failed = re.fullmatch(
        rf"genre train: error: tracking server {url} stopped answering \(connection refused\) while logging the "
        rf"metrics of step (\d) of run {run_id}; every finished epoch is checkpointed: once the store answers again, "
        rf"`genre train --resume {run_id}` continues the run\n",
        err,
    )
    assert failed, err
    assert state["epoch"] == int(failed[1]), "the epoch whose metrics could not be sent is checkpointed"
    assert state["epoch"] < EPOCHS

    server, url = start_server(backend, tmp_path)  # the store is back (on another port)
    try:
        listing = genre("runs", "--stale", cwd=tmp_path, uri=url).communicate(timeout=120)[0]
        assert f"{run_id}  stale    lost/train-convnet" in listing
        resumed = genre("train", "--resume", run_id, cwd=tmp_path, uri=url)
        out, err = resumed.communicate(timeout=600)
        assert resumed.returncode == 0, out + err
        client = MlflowClient(url)
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags[stale.RESUMED_AFTER].startswith("process ")
        for name in ("val_accuracy", "train_loss", "epoch_seconds"):
            steps = sorted(m.step for m in client.get_metric_history(run_id, name))
            assert steps == list(range(1, EPOCHS + 1)), (name, steps)  # every epoch, once
    finally:
        kill_server(server, signal.SIGTERM)
