"""Which MLflow tracking store to use, and a fast check that it answers before any work starts."""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from genre.errors import TrackingError

# MLflow >= 3.7's own default: a SQLite file in the working directory (the project root under `mlflow run`).
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
REACHABILITY_TIMEOUT_SECONDS = 5.0


def mask_password(uri: str) -> str:
    """`postgresql://user:secret@host/db` -> `postgresql://user:***@host/db`, for anything shown or logged."""
    return re.sub(r"(?<=://)([^:/@]+):[^@/]*@", r"\1:***@", uri)


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` when set, else the embedded SQLite default."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def check_reachable(uri: str) -> None:
    """Fail within seconds, naming the URI, when a tracking server or database cannot be reached."""
    shown = mask_password(uri)
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=REACHABILITY_TIMEOUT_SECONDS):
                return
        except urllib.error.HTTPError as error:
            if error.code < 500:
                return  # it answered; authentication or routing is MLflow's business
            raise TrackingError(
                f"tracking server {shown} answered HTTP {error.code}; check the server's log"
            ) from error
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise TrackingError(
                f"tracking server {shown} cannot be reached ({reason}); start it (`genre server`) "
                "or unset MLFLOW_TRACKING_URI to use the local SQLite store"
            ) from error
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).expanduser().resolve().parent
        if not folder.is_dir():
            raise TrackingError(f"tracking store {shown}: folder {folder} does not exist; create it or fix the URI")
    elif uri.startswith(("postgresql", "mysql", "mssql")):
        try:
            import sqlalchemy

            engine = sqlalchemy.create_engine(uri, connect_args=_connect_timeout(uri))
            with engine.connect():
                pass
            engine.dispose()
        except Exception as error:  # noqa: BLE001 - any driver error means the same to the user
            raise TrackingError(
                f"tracking database {shown} cannot be reached ({type(error).__name__}); check that the server "
                "is running and the URI is right"
            ) from None


def _connect_timeout(uri: str) -> dict[str, int]:
    return {"connect_timeout": int(REACHABILITY_TIMEOUT_SECONDS)} if uri.startswith(("postgresql", "mysql")) else {}
