"""`genre serve`: MLflow's model server for a cover model, with limits on a request, started the same way from any
shell.

`mlflow models serve` starts its web server by running `uvicorn` by name, so from a shell where the project's venv
is not activated (`.venv/bin/mlflow models serve ...`) it stops with "uvicorn: not found"; and it reads a request of
any size. This runs MLflow's scoring app behind `genre.tracking.model_server_app.RequestLimits`, with this interpreter's
uvicorn and its scripts folder first on PATH.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from typing import NoReturn

from genre.errors import ConfigError
from genre.tracking.config import ServeConfig
from genre.tracking.tracking_server import exposure_warning


def serve_invocation(config: ServeConfig, model_path: str) -> tuple[list[str], dict[str, str]]:
    """The command line of MLflow's scoring app behind genre's request limits (`genre.tracking.model_server_app`) for
    the model downloaded to `model_path`, and its environment, whose PATH finds this environment's scripts first.

    MLflow's own `mlflow models serve --env-manager local` runs the same app the same way (uvicorn, the model's
    folder in `_SERVER_MODEL_PATH`), without the limits."""
    from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
    from mlflow.pyfunc.scoring_server import _SERVER_MODEL_PATH

    from genre.tracking.model_server_app import MAX_REQUEST_VARIABLE

    command = [
        sys.executable, "-m", "uvicorn",
        "--host", config.host,
        "--port", str(config.port),
        "--workers", str(config.workers),
        "genre.tracking.model_server_app:app",
    ]  # fmt: skip
    scripts = sysconfig.get_path("scripts")
    environment = {
        **os.environ,
        "PATH": os.pathsep.join([scripts, os.environ.get("PATH", os.defpath)]),
        _SERVER_MODEL_PATH: model_path,
        MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.name: str(MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get()),
        MAX_REQUEST_VARIABLE: str(int(config.max_request_mb * 2**20)),
    }
    return command, environment


def local_model(model_uri: str) -> str:
    """Before the server starts (it would print a traceback of 48 lines): the store answers and holds the model,
    which is downloaded to a local folder (as `mlflow models serve` does); else the usual one-line error (an
    unreachable store, `MLflow at ...: Run with id=... not found`)."""
    import mlflow

    from genre.tracking.store import check_reachable, tracking_uri

    if model_uri.startswith(("runs:/", "models:/", "mlflow-artifacts:/")):
        check_reachable()  # in seconds, not after MLflow's minutes of retries
    mlflow.set_tracking_uri(tracking_uri())
    mlflow.models.get_model_info(model_uri)  # reads the model's MLmodel file only: a missing model fails here
    return mlflow.artifacts.download_artifacts(artifact_uri=model_uri)


def serve_model(config: ServeConfig) -> NoReturn:
    """Become the model server (exec, so Ctrl-C and SIGTERM reach uvicorn directly); returns only by failing."""
    if not config.model_uri:
        raise ConfigError("which model? give --model-uri runs:/<run id>/model or models:/<name>@<alias>")
    command, environment = serve_invocation(config, local_model(config.model_uri))
    warning = exposure_warning(config.host, "model server")
    if warning:
        print(warning, file=sys.stderr)
    print(
        f"serving {config.model_uri} on http://{config.host}:{config.port} (POST /invocations, GET /ping; requests "
        f"up to {config.max_request_mb:g} MiB)",
        flush=True,
    )
    sys.stderr.flush()
    os.execve(command[0], command, environment)
