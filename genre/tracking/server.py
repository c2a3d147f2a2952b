"""`genre server`: MLflow's tracking server with the project's defaults, bound to loopback unless asked.

The backend store URI reaches `mlflow server` through its environment variable, not its arguments, and its
password through PGPASSWORD (`genre.credentials` moves one typed into `genre server`'s own arguments there), so a
database password never shows in the process list, the console or a log.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass

from genre.config import check_range, setting
from genre.tracking.store import DEFAULT_TRACKING_URI, mask_password

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServerConfig:
    """Where the server listens and where it keeps runs and artifacts."""

    host: str = setting("127.0.0.1", "address to bind; anything but loopback exposes the server (a warning says so)")
    port: int = setting(5000, "port to listen on")
    backend_store_uri: str = setting(
        DEFAULT_TRACKING_URI,
        "where runs live: the embedded SQLite file, or postgresql://USER@HOST/DB (password in PGPASSWORD or ~/.pgpass)",
    )
    artifacts_destination: str = setting(
        "./mlartifacts", "where the server keeps artifacts it proxies for clients (a folder, or s3://... etc.)"
    )
    workers: int = setting(1, "server worker processes")
    allowed_hosts: str | None = setting(
        None, "Host headers accepted when bound beyond loopback, e.g. 'mlflow.lab:5000'"
    )

    def __post_init__(self) -> None:
        check_range(self, "port", 1, 65535)
        check_range(self, "workers", 1)


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
    ]  # fmt: skip
    if config.allowed_hosts:
        command += ["--allowed-hosts", config.allowed_hosts]
    environment = {**os.environ, "MLFLOW_BACKEND_STORE_URI": config.backend_store_uri}
    return command, environment


def exposure_warning(host: str, server: str = "tracking server") -> str | None:
    """The warning for binding `server` (which has no authentication) to `host`; None on loopback."""
    if host in LOOPBACK:
        return None
    return (
        f"warning: binding {host} makes the {server} (which has no authentication) reachable from "
        "every network this machine is on; put it behind a proxy with authentication or bind 127.0.0.1"
    )


def run_server(config: ServerConfig) -> int:
    """Run the server in the foreground until Ctrl-C or SIGTERM; return its exit status."""
    command, environment = server_invocation(config)
    warning = exposure_warning(config.host)
    if warning:
        print(warning, file=sys.stderr)
    address = f"http://{config.host}:{config.port}"
    backend = mask_password(config.backend_store_uri)
    print(
        f"MLflow tracking server on {address} (backend {backend}, artifacts {config.artifacts_destination}); "
        f"use it with MLFLOW_TRACKING_URI={address}",
        flush=True,
    )
    process = subprocess.Popen(command, env=environment, start_new_session=True)

    def stop(signum: int, _frame: object) -> None:
        os.killpg(process.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    try:
        return process.wait()
    except KeyboardInterrupt:
        os.killpg(process.pid, signal.SIGTERM)
        return process.wait()
