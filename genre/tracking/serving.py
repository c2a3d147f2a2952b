"""`genre serve`: MLflow's model server for a cover model, started the same way from any shell.

`mlflow models serve` starts its web server by running `uvicorn` by name, so from a shell where the
project's venv is not activated (`.venv/bin/mlflow models serve ...`) it stops with "uvicorn: not found".
This runs it with the interpreter's scripts folder, where pip put `uvicorn` beside `mlflow`, first on PATH.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from dataclasses import dataclass
from typing import NoReturn

from genre.config import check_range, setting
from genre.errors import ConfigError
from genre.tracking.server import exposure_warning


@dataclass(frozen=True)
class ServeConfig:
    """Which model to serve and where the server listens."""

    model_uri: str = setting("", "the model: runs:/<run id>/model, models:/<name>@<alias>, or a local path")
    host: str = setting("127.0.0.1", "address to bind; anything but loopback exposes the model (a warning says so)")
    port: int = setting(5001, "port to listen on (the tracking server's default is 5000)")
    workers: int = setting(1, "server worker processes")

    def __post_init__(self) -> None:
        check_range(self, "port", 1, 65535)
        check_range(self, "workers", 1)


def serve_invocation(config: ServeConfig) -> tuple[list[str], dict[str, str]]:
    """The `mlflow models serve` command line, and the environment whose PATH finds this environment's `uvicorn`."""
    if not config.model_uri:
        raise ConfigError("which model? give --model-uri runs:/<run id>/model or models:/<name>@<alias>")
    command = [
        sys.executable, "-m", "mlflow", "models", "serve",
        "--model-uri", config.model_uri,
        "--env-manager", "local",  # the environment the model was trained in; no conda or network needed
        "--host", config.host,
        "--port", str(config.port),
        "--workers", str(config.workers),
    ]  # fmt: skip
    scripts = sysconfig.get_path("scripts")
    environment = {**os.environ, "PATH": os.pathsep.join([scripts, os.environ.get("PATH", os.defpath)])}
    return command, environment


def check_model_there(model_uri: str) -> None:
    """Before the server starts (it would print a traceback of 48 lines): the store answers and holds the model, or
    the usual one-line error (an unreachable store, `MLflow at ...: Run with id=... not found`)."""
    import mlflow

    from genre.tracking.store import check_reachable, tracking_uri

    if model_uri.startswith(("runs:/", "models:/", "mlflow-artifacts:/")):
        check_reachable()  # in seconds, not after MLflow's minutes of retries
    mlflow.set_tracking_uri(tracking_uri())
    mlflow.models.get_model_info(model_uri)  # reads the model's MLmodel file only


def serve_model(config: ServeConfig) -> NoReturn:
    """Become the model server (exec, so Ctrl-C and SIGTERM reach MLflow directly); returns only by failing."""
    command, environment = serve_invocation(config)
    check_model_there(config.model_uri)
    warning = exposure_warning(config.host, "model server")
    if warning:
        print(warning, file=sys.stderr)
    print(
        f"serving {config.model_uri} on http://{config.host}:{config.port} (POST /invocations, GET /ping)", flush=True
    )
    sys.stderr.flush()
    os.execve(command[0], command, environment)
