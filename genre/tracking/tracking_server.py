"""`genre server`: MLflow's tracking server with the project's defaults, bound to loopback unless asked.

It starts what the UI needs and nothing else: `mlflow server` (the REST API, the UI and the proxied artifacts) and
its uvicorn worker. MLflow 3.17 would also start its job runner and seven huey consumers for its GenAI jobs, which
genre never submits: on a 2-core machine they about doubled the median time to answer and took 7 to 31 s to stop, so
`MLFLOW_SERVER_ENABLE_JOB_EXECUTION` is off unless the caller's environment sets it. `genre server` prints one line
once the server answers (the UI's address opens its Model training view, `genre.tracking.ui`), and Ctrl-C, SIGTERM
or a closed terminal stops every process of it within `STOP_GRACE_SECONDS` (and a moment).

The backend store URI reaches `mlflow server` through its environment variable, not its arguments, and its
password through PGPASSWORD (`genre.credentials` moves one typed into `genre server`'s own arguments there), so a
database password never shows in the process list, the console or a log.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from genre.errors import ConfigError, TrackingError
from genre.tracking.config import ServerConfig
from genre.tracking.store import mask_password
from genre.tracking.ui import ui_address

LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARD = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # bound to every address: asked on loopback
STOP_GRACE_SECONDS = 2.0  # uvicorn drains in about 0.5 s; a request still running after this is cut
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


# MLflow's server imports `starlette.middleware.wsgi`, which Starlette 1.x deprecates with a warning at every start:
# MLflow's to act on, not a user's. Matched by its message: naming its category would import Starlette in every process.
STARLETTE_WSGI_WARNING = "ignore:starlette.middleware.wsgi is deprecated"


def server_invocation(config: ServerConfig) -> tuple[list[str], dict[str, str]]:
    """The `mlflow server` command line and the environment that carries the backend store URI."""
    mlflow = shutil.which("mlflow") or os.path.join(os.path.dirname(sys.executable), "mlflow")
    command = [
        mlflow, "server",
        "--host", config.host,
        "--port", str(config.port),
        "--workers", str(config.workers),
        "--serve-artifacts",
        "--artifacts-destination", config.artifacts_destination,
        "--uvicorn-opts=--log-level warning",  # no line per request: genre's ready line says where the UI is
    ]  # fmt: skip
    if config.allowed_hosts:
        command += ["--allowed-hosts", config.allowed_hosts]
    environment = {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # the caller's environment may turn MLflow's job runner back on
        **os.environ,
        "MLFLOW_BACKEND_STORE_URI": config.backend_store_uri,
        "MLFLOW_REGISTRY_STORE_URI": config.backend_store_uri,  # MLflow's default, without its line saying so
        "PYTHONWARNINGS": ",".join(filter(None, (os.environ.get("PYTHONWARNINGS"), STARLETTE_WSGI_WARNING))),
    }
    return command, environment


def exposure_warning(host: str, server: str = "tracking server") -> str | None:
    """The warning for binding `server` (which has no authentication) to `host`; None on loopback."""
    if host in LOOPBACK:
        return None
    return (
        f"warning: binding {host} makes the {server} (which has no authentication) reachable from "
        "every network this machine is on; put it behind a proxy with authentication or bind 127.0.0.1"
    )


def local_url(host: str, port: int) -> str:
    """The URL of a server bound to `host`:`port`, as this machine reaches it (loopback for a wildcard bind)."""
    host = WILDCARD.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def check_port_free(host: str, port: int) -> None:
    """Raise ConfigError now if `host`:`port` cannot be listened on, rather than after MLflow's seconds of start."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:  # as uvicorn binds
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # so a port in TIME_WAIT is no conflict
            probe.bind((host, port))
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is in use (another `genre server`?); stop it or pick another --port"
            ) from None
        reason = error.strerror or str(error)
        raise ConfigError(f"cannot listen on {host}:{port} ({reason}); pick another --host or --port") from None


def answers(url: str) -> bool:
    """Whether an HTTP server answers `url` now (any status counts), asked directly, never through a proxy."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def children(pid: int) -> list[int] | None:
    """The processes `pid` started that are still running (Linux's /proc); None where that cannot be read."""
    try:
        return [
            int(child)
            for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()
        ]
    except OSError:
        return None


def stop_server(process: subprocess.Popen, grace: float = STOP_GRACE_SECONDS) -> None:
    """Stop the process group `process` leads: SIGTERM, then SIGKILL to whatever is left after `grace` seconds.

    `mlflow server` waits for its uvicorn worker, then spends 1 to 2.5 s freeing its imports at exit; once its
    workers are gone it has nothing left to do, so it is not waited for.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while process.poll() is None and time.monotonic() < deadline and children(process.pid) != []:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):  # the launcher tearing down, or a worker still draining
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """Meanwhile SIGTERM and SIGHUP (a closed terminal) interrupt like Ctrl-C, so every way of stopping cleans up.

    A signal the caller ignores stays ignored: under `nohup` (SIGHUP) or `&` in a script (SIGINT) the server runs on.
    """
    previous = {
        signum: signal.signal(signum, signal.default_int_handler)
        for signum in STOP_SIGNALS
        if signal.getsignal(signum) != signal.SIG_IGN
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_server(config: ServerConfig) -> int:
    """Run the server in the foreground until Ctrl-C, SIGTERM or SIGHUP; 0 once every process of it has stopped."""
    check_port_free(config.host, config.port)
    command, environment = server_invocation(config)
    warning = exposure_warning(config.host)
    if warning:
        print(warning, file=sys.stderr)
    url = local_url(config.host, config.port)
    with stop_signals_interrupt():
        process = subprocess.Popen(command, env=environment, start_new_session=True)  # its own group: stopped whole
        try:
            while not answers(f"{url}/health"):
                if process.poll() is not None:
                    raise TrackingError(
                        f"mlflow server exited (status {process.returncode}) before answering on {url}; "
                        "its output above says why"
                    )
                time.sleep(0.2)
            store = mask_password(config.backend_store_uri)
            print(
                f"MLflow UI at {ui_address(url)} (store {store}, artifacts {config.artifacts_destination}); "
                f"log to it with MLFLOW_TRACKING_URI={url}",
                flush=True,
            )
            status = process.wait()
            raise TrackingError(
                f"mlflow server on {url} stopped by itself (status {status}); its output above says why"
            )
        except KeyboardInterrupt:
            for signum in STOP_SIGNALS:  # a second Ctrl-C waits for the (bounded) stop instead of abandoning it
                signal.signal(signum, signal.SIG_IGN)
            stop_server(process)
            return 0
        finally:
            if process.poll() is None:  # an error of ours while it runs: leave nothing behind
                stop_server(process)
