"""Runs left RUNNING by a killed process: a real `genre train` SIGKILLed mid-training, found by `genre runs --stale`
and ended KILLED with a tag saying why, in a real SQLite tracking store; live runs are never touched."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from genre.cli import main
from genre.data.config import PrepareConfig
from genre.data.prepare import prepare
from genre.errors import ConfigError
from genre.tracking import stale
from genre.tracking.tracker import tracked_run
from tests.conftest import PROJECT_ROOT

SMALL = ["--batch-size", "32", "--conv-filters", "8,16", "--dense-units", "32", "-q"]


def start_train(tmp_path: Path, *args: str) -> subprocess.Popen:
    """`genre train` with the small settings, or `genre train -q --resume RUN` (a resumed run keeps its own)."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    settings = ["-q"] if "--resume" in args else SMALL
    return subprocess.Popen(
        [sys.executable, "-m", "genre.cli", "train", *settings, *args],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def wait_for_epoch(process: subprocess.Popen, epoch: int, timeout: float = 120.0) -> str:
    """The id of the run `process` trains, once it has checkpointed `epoch` epochs."""
    deadline = time.monotonic() + timeout
    while True:
        for state in Path("checkpoints").glob("*/state.json"):
            try:
                if json.loads(state.read_text())["epoch"] >= epoch:
                    return state.parent.name
            except ValueError:  # being replaced right now
                pass
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, f"no checkpoint of epoch {epoch} within {timeout} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_sigkilled_train_run_is_listed_stale_and_ended_killed_while_live_runs_are_left_alone(
    tracking_store: str, tmp_path: Path, capsys
) -> None:
    data = prepare(PrepareConfig(out=str(tmp_path / "digits16"), image_size=16), progress=False).root
    killed = start_train(tmp_path, "--epochs", "4", "--data", str(data), "--mlflow-experiment", "stale")
    killed_run = wait_for_epoch(killed, 1)
    assert killed.poll() is None, "it finished before it could be killed"
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    client = MlflowClient(tracking_store)
    assert client.get_run(killed_run).info.status == "RUNNING"  # nobody could end it
    other_host = client.create_run(
        client.get_experiment_by_name("stale").experiment_id,
        start_time=int((time.time() - 3 * 3600) * 1000),
        tags={stale.HOST: "another-host", stale.PID: "4242"},
        run_name="elsewhere",
    ).info.run_id

    with tracked_run("stale", "live", {"genre.stage": "train"}) as live:  # this process: alive
        capsys.readouterr()
        assert main(["runs"]) == 0
        listing = capsys.readouterr().out
        assert f"{killed_run}  stale    stale/train-convnet  (train, started " in listing
        assert f"{live.run_id}  alive    stale/live  (train, started " in listing
        assert f"{other_host}  unknown  stale/elsewhere" in listing and "by process 4242 on another-host" in listing
        assert "3 RUNNING run(s): 1 still running, 1 whose process is gone, 1 owned on another host" in listing

        assert main(["runs", "--stale"]) == 0
        listed = capsys.readouterr().out.splitlines()
        assert [line.split()[0] for line in listed[:-1]] == [killed_run]

        assert main(["runs", "--stale", "--end"]) == 0
        assert "ended 1 stale run(s) KILLED (tag genre.ended_by says why)" in capsys.readouterr().out
        ended = client.get_run(killed_run)
        assert ended.info.status == "KILLED"
        pid = ended.data.tags[stale.PID]
        assert ended.data.tags[stale.ENDED_BY] == (
            f"genre runs --end: process {pid} on {socket.gethostname()} that ran it had ended, leaving it RUNNING"
        )
        assert client.get_run(live.run_id).info.status == "RUNNING"
        assert client.get_run(other_host).info.status == "RUNNING"  # its owner cannot be checked from here

        assert main(["runs", "--stale", "--end", "--older-than", "2"]) == 0  # ... unless it is old enough
        assert "ended 1 stale run(s)" in capsys.readouterr().out
        assert client.get_run(other_host).info.status == "KILLED"
        why = client.get_run(other_host).data.tags[stale.ENDED_BY]
        assert (
            why == "genre runs --end: RUNNING for over 2 h, owned by process 4242 on another-host (cannot be "
            "checked from here)"
        )
        assert client.get_run(live.run_id).info.status == "RUNNING"

        with pytest.raises(ConfigError, match=f"run {live.run_id} is still being trained by process {os.getpid()}"):
            stale.check_not_alive(live.run_id)  # what `genre train --resume` asks first

    resumed = start_train(tmp_path, "--resume", killed_run)  # a run ended KILLED still resumes
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output
    assert client.get_run(killed_run).info.status == "FINISHED"


def test_a_reused_pid_is_not_taken_for_the_run_s_owner(tracking_store: str) -> None:
    with tracked_run("owners", "mine", {}) as tracker:
        tags = MlflowClient(tracking_store).get_run(tracker.run_id).data.tags
    assert tags[stale.PID] == str(os.getpid()) and stale.owner_state(tags) == stale.ALIVE
    assert stale.owner_state(tags | {stale.PROCESS_START: "another-boot:1"}) == stale.GONE
    assert stale.owner_state(tags | {stale.HOST: "another-host"}) == stale.UNKNOWN
    assert stale.owner_state({}) == stale.UNKNOWN  # a run from before these tags


def test_listing_runs_of_a_store_that_does_not_exist_creates_nothing(tracking_store: str, capsys) -> None:
    assert main(["runs", "--stale"]) == 0
    assert "no runs: the tracking store" in capsys.readouterr().out
    assert not Path("mlflow.db").exists()
