"""`genre server` starts without Starlette's deprecation warning about MLflow's code (issue 17, item 3)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from genre.tracking.config import ServerConfig
from genre.tracking.tracking_server import server_invocation

# What `mlflow server` imports when it starts: its FastAPI app, which mounts the Flask one through Starlette's WSGI.
SERVER_APP = "import mlflow.server.fastapi_app"
STARLETTE_WSGI = "import starlette.middleware.wsgi"


def stderr_of(code: str, environment: dict[str, str]) -> str:
    """What a fresh Python running `code` in `environment` prints on stderr."""
    done = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stderr


@pytest.mark.slow  # imports MLflow's server app in a fresh process
def test_the_server_environment_hides_starlettes_warning_about_mlflow_and_keeps_the_users_filters(monkeypatch):
    monkeypatch.setenv("PYTHONWARNINGS", "error::ResourceWarning")
    _, environment = server_invocation(ServerConfig())
    assert environment["PYTHONWARNINGS"].startswith("error::ResourceWarning,")  # the user's own filter still holds

    plain = {**environment, "PYTHONWARNINGS": ""}
    assert "StarletteDeprecationWarning" in stderr_of(STARLETTE_WSGI, plain), "no warning: drop STARLETTE_WSGI_WARNING"
    assert "Warning" not in stderr_of(SERVER_APP, environment)
