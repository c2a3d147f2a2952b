"""A real `genre server` (mlflow server) process, with SQLite and with PostgreSQL, used as a user would."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from genre.cli import main
from genre.tracking.config import ServerConfig
from genre.tracking.tracking_server import exposure_warning, server_invocation, stop_server
from tests.conftest import PROJECT_ROOT, refused, use_store
from tests.processes import command_line, environment, process_tree, wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(url: str, process: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not become healthy")


@pytest.fixture
def postgres_uri(postgres_database: str) -> str:
    return f"postgresql://postgres:tracking-s3cret@127.0.0.1:5432/{postgres_database}"


def start_server(backend: str, folder: Path) -> tuple[subprocess.Popen, str, Path]:
    """`genre server` on a free loopback port with `backend`, as a user starts it; the process, its URL, its log."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("PGPASSWORD", None)
    log = folder / "server.log"  # a file, not a pipe: an unread pipe fills up and stalls the server
    process = subprocess.Popen(
        [sys.executable, "-m", "genre.cli", "server", "--port", str(port), "--backend-store-uri", backend,
         "--artifacts-destination", str(folder / "artifacts")],
        cwd=folder, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=terminal_ctrl_c,
    )  # fmt: skip
    return process, f"http://127.0.0.1:{port}", log


def terminal_ctrl_c() -> None:
    """In the server's process before it starts: Ctrl-C acts as in a terminal, even when this test runs from a
    background job, whose children inherit SIGINT ignored (Python then never turns it into KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def running_server(backend: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`genre server` with `backend`; MLFLOW_TRACKING_URI points at it meanwhile."""
    process, url, log = start_server(backend, folder)
    try:
        wait_until_healthy(url, process)
        use_store(monkeypatch, url, folder)
        yield url
    finally:
        while mlflow.active_run():
            mlflow.end_run()
        os.killpg(process.pid, 15)
        process.wait(timeout=120)
        assert "s3cret" not in log.read_text()  # the database password is never printed


@pytest.fixture(params=["sqlite", "postgresql"])
def tracking_server(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    backend = (
        f"sqlite:///{tmp_path / 'server.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_uri")
    )
    with running_server(backend, tmp_path, monkeypatch) as url:
        yield url


@pytest.mark.slow
def test_prepare_train_and_tune_against_a_real_tracking_server(tracking_server: str, tmp_path: Path) -> None:
    assert main(["prepare", "-q", "--image-size", "16", "--out", "digits16"]) == 0
    small = ["--data", "digits16", "--epochs", "2", "--conv-filters", "8", "--dense-units", "32"]
    assert main(["train", "-q", *small]) == 0
    space = tmp_path / "space.yaml"
    space.write_text(
        "settings: {data: digits16, epochs: 2, conv_filters: '8', dense_units: '32'}\n"
        "parameters:\n  learning_rate: {float: [0.005, 0.05], log: true}\n"
    )
    assert main(["tune", "-q", "--space", str(space), "--n-trials", "2", "--storage", "sqlite:///optuna.db"]) == 0

    client = MlflowClient(tracking_server)
    experiment = client.get_experiment_by_name("genre-digits")
    runs = {r.data.tags["genre.stage"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"prepare", "train", "tune", "trial"}
    prepare, train, tune = runs["prepare"], runs["train"], runs["tune"]
    assert all(r.info.status == "FINISHED" for r in runs.values())

    assert prepare.data.params["config.image_size"] == "16"
    assert prepare.inputs.dataset_inputs[0].dataset.digest == prepare.data.params["dataset_digest"]
    assert "samples.png" in {a.path for a in client.list_artifacts(prepare.info.run_id)}

    assert train.data.params["config.epochs"] == "2"
    assert [m.step for m in client.get_metric_history(train.info.run_id, "val_accuracy")] == [1, 2]
    assert train.inputs.dataset_inputs[0].dataset.digest == prepare.data.params["dataset_digest"]
    assert "confusion_test.png" in {a.path for a in client.list_artifacts(train.info.run_id)}
    model = mlflow.pyfunc.load_model(f"runs:/{train.info.run_id}/model")
    assert model.metadata.get_input_schema().input_names() == ["image", "path"]

    trials = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{tune.info.run_id}'")
    assert len(trials) == 2
    assert "study/optimization_history.png" in {a.path for a in client.list_artifacts(tune.info.run_id, "study")}


@pytest.mark.slow
@pytest.mark.parametrize("form", ["userinfo", "query"])
def test_a_password_in_the_backend_uri_leaves_every_server_process_s_arguments(
    postgres_uri: str, tmp_path: Path, form: str
) -> None:
    """`genre server --backend-store-uri postgresql://USER:PASSWORD@...` (or `...?password=PASSWORD`) restarts
    itself without the password, which reaches MLflow's server in PGPASSWORD; no process of the server shows it,
    and runs still land in the database."""
    database = postgres_uri.rsplit("/", 1)[1]
    if form == "query":
        postgres_uri = postgres_uri.replace(":tracking-s3cret@", "@") + "?password=tracking-s3cret"
    process, url, log = start_server(postgres_uri, tmp_path)
    try:
        wait_until_healthy(url, process)
        tree = process_tree(process.pid)
        assert len(tree) >= 3, [command_line(pid) for pid in tree]  # genre, mlflow server, its workers
        for pid in tree:
            assert "tracking-s3cret" not in command_line(pid), command_line(pid)
        (mlflow_server,) = [pid for pid in tree if " server --host " in command_line(pid)]
        assert environment(mlflow_server)["PGPASSWORD"] == "tracking-s3cret"
        client = MlflowClient(url)
        run = client.create_run(client.create_experiment("through-the-server"))
        client.log_param(run.info.run_id, "checked", "yes")
        assert client.get_run(run.info.run_id).data.params == {"checked": "yes"}
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 15)
        process.wait(timeout=60)
    output = log.read_text()
    assert "tracking-s3cret" not in output
    warnings = [line for line in output.splitlines() if "warning" in line and "PGPASSWORD" in line]
    assert warnings == [
        "genre server: warning: a database password on the command line is shown to every user of this machine "
        "(ps); genre moved it into PGPASSWORD. Next time set PGPASSWORD (or ~/.pgpass) and pass "
        f"postgresql://postgres@127.0.0.1:5432/{database}"
    ]
    assert f"(store postgresql://postgres@127.0.0.1:5432/{database}," in output


def test_the_server_command_keeps_the_password_out_of_its_arguments_and_warns_when_exposed() -> None:
    config = ServerConfig(backend_store_uri="postgresql://genre:s3cret@db/mlflow", host="0.0.0.0")
    command, environment = server_invocation(config)
    assert "s3cret" not in " ".join(command)
    assert environment["MLFLOW_BACKEND_STORE_URI"] == "postgresql://genre:s3cret@db/mlflow"
    assert "reachable from every network" in exposure_warning(config.host)
    assert exposure_warning(ServerConfig().host) is None


@pytest.mark.parametrize(
    ("settings", "named"), [({"port": 0}, "port"), ({"port": 65536}, "port"), ({"workers": 0}, "workers")]
)
def test_a_server_setting_out_of_range_is_a_one_line_error_naming_it(settings: dict, named: str) -> None:
    refused(ServerConfig, settings, named)


def running(pids: list[int]) -> list[str]:
    """The command lines of those of `pids` still running (a zombie has finished)."""
    alive = []
    for pid in pids:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                alive.append(command_line(pid))
    return alive


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_the_server_says_when_it_answers_and_a_stop_signal_leaves_no_process(signum: int, tmp_path: Path) -> None:
    """One line once the UI answers; MLflow's job runner is not started; Ctrl-C or SIGTERM stops every process."""
    process, url, log = start_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path)
    try:
        wait_for(lambda: "MLflow UI at" in log.read_text() or process.poll() is not None, "the ready line", 240)
        with urllib.request.urlopen(f"{url}/health", timeout=10):  # it answers by the time the line is printed
            pass
        tree = process_tree(process.pid)
        commands = [command_line(pid) for pid in tree]
        assert not any("huey" in command or "_job_runner" in command for command in commands), commands
        assert len(tree) == 3, commands  # genre, mlflow server, its uvicorn worker
        os.kill(process.pid, signum)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert running(tree) == []
    lines = [line for line in log.read_text().splitlines() if "MLflow UI" in line]
    assert lines == [  # the UI's address opens its Model training view (tests/tracking/test_ui.py opens it)
        f"MLflow UI at {url}/#/?workflowType=machine_learning (store sqlite:///{tmp_path / 'server.db'}, "
        f"artifacts {tmp_path / 'artifacts'}); log to it with MLFLOW_TRACKING_URI={url}"
    ]
    assert '"GET /health' not in log.read_text()  # no line per request


def test_a_port_in_use_is_a_one_line_error_before_mlflow_starts(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["server", "--port", str(port)]) == 2
    assert capsys.readouterr().err == (
        f"genre server: error: port {port} on 127.0.0.1 is in use (another `genre server`?); stop it or pick "
        "another --port\n"
    )


@pytest.mark.slow
def test_a_server_that_cannot_start_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port, store = free_port(), tmp_path / "server.db"
    store.write_text("a text file where the SQLite tracking store should be\n" * 20)
    assert main(["server", "--port", str(port), "--backend-store-uri", f"sqlite:///{store}"]) == 2
    assert capsys.readouterr().err == (
        f"genre server: error: mlflow server exited (status 1) before answering on http://127.0.0.1:{port}; "
        "its output above says why\n"
    )


def test_a_server_that_ignores_sigterm_is_killed_once_the_grace_is_over() -> None:
    worker = "import time; print(flush=True); time.sleep(60)"
    launcher = subprocess.Popen(
        [sys.executable, "-c", "import signal, subprocess, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
         f"subprocess.run([sys.executable, '-c', {worker!r}])"],
        stdout=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    launcher.stdout.readline()  # the worker runs, and like its launcher ignores SIGTERM
    tree = process_tree(launcher.pid)
    assert len(tree) == 2
    stop_server(launcher, grace=1.0)
    wait_for(lambda: running(tree) == [], "every process of the group to end", 10)


def test_mlflow_s_job_runner_stays_off_unless_the_environment_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", raising=False)
    assert server_invocation(ServerConfig())[1]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    monkeypatch.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "true")
    assert server_invocation(ServerConfig())[1]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"
