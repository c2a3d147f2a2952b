"""Which MLflow tracking store to use, and a fast check that it answers before any work starts."""

from __future__ import annotations

import contextlib
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterator, MutableMapping
from pathlib import Path

from genre.credentials import mask_password
from genre.disk import full_database
from genre.errors import StoreUnreachable, TrackingError
from genre.runtime import POOL_LIMITS

# MLflow >= 3.7's own default: a SQLite file in the working directory (the project root under `mlflow run`).
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
REACHABILITY_TIMEOUT_SECONDS = 5.0

# MLflow's own defaults retry a call to a server that stopped answering 7 times, waiting up to 120 s for each
# answer and 2 s doubling between tries: 267 s per call, and a command makes several. These fail a call within
# 3 s when the server is gone (connection refused) and within 24 s when it stops answering (3 x 7 s + 3 s), while
# still riding out a 2 s hiccup; with the last try to end the run (2 s), a command stops within 30 s of losing its
# store (measured: 4.6 s and 27 s). A value the user set wins.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "7",  # seconds to connect, and to wait for an answer, per try
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # waits 0 s, then 2 s (+ up to 1 s of MLflow's jitter)
    "PGCONNECT_TIMEOUT": "7",  # libpq's, for a postgresql:// tracking store
}
LAST_TRY_TIMEOUT_SECONDS = "2"


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` when set, else the embedded SQLite default."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def limit_http_retries(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Bound how long an MLflow call waits for a store that stopped answering (`HTTP_LIMITS`, unless the user set
    the variable); returns the values in force. MLflow reads them at each call, so this works at any time."""
    for name, value in HTTP_LIMITS.items():
        environ.setdefault(name, value)
    return {name: environ[name] for name in HTTP_LIMITS}


# MLflow's own output that a user of `genre` has no use for: its progress bars of the few files of a model it saves
# or loads (a second at most, leaving a line each), its INFO lines ("Validating input example against model
# signature", "Updating database tables"), and the two lines giving a run's and its experiment's UI page each time a
# run ends in a tracking server, whose addresses open in MLflow's GenAI view (`tracked_run` prints one line instead,
# whose address opens in the Model training view); its warnings and errors still show. A user's own setting wins.
QUIET_MLFLOW = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


def quiet_mlflow(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Turn MLflow's own progress bars and INFO lines off (`QUIET_MLFLOW`, unless the user set the variable) in this
    process and the ones it starts; returns the values in force. MLflow reads its logging level when it is imported,
    so call this first."""
    for name, value in QUIET_MLFLOW.items():
        environ.setdefault(name, value)
    return {name: environ[name] for name in QUIET_MLFLOW}


class FullDatabaseFilter(logging.Filter):
    """Drops MLflow's ERROR records (each with a traceback) of a SQLite store whose disk is full: genre says so in one
    line naming the database and what was kept (`genre.disk.disk_faults`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not full_database(record.exc_info[1] if record.exc_info else None)


def quiet_full_database() -> None:
    """Install `FullDatabaseFilter` on the MLflow logger that reports SQLAlchemy errors."""
    logging.getLogger("mlflow.store.db.utils").addFilter(FullDatabaseFilter())


@contextlib.contextmanager
def single_try() -> Iterator[None]:
    """MLflow calls in the block try once, briefly: a last word (ending a run FAILED) to a store that just stopped
    answering should not add another retry cycle before the command can say so."""
    limits = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": LAST_TRY_TIMEOUT_SECONDS}
    saved = {name: os.environ.get(name) for name in limits}
    os.environ.update(limits)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def unreachable_reason(error: BaseException) -> str | None:
    """Why a failed MLflow call failed, in a few words, when the reason is that the store did not answer (refused
    connection, no answer in time, server errors after every retry, a database that cannot be connected to); None
    when it failed for any other reason (a bad request, a missing run), which is not the store's absence."""
    import requests.exceptions
    import sqlalchemy.exc

    no_answer = f"no answer within {os.environ.get('MLFLOW_HTTP_REQUEST_TIMEOUT', '120')} s"
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, requests.exceptions.RetryError):
            return "it answered with server errors on every try"
        if isinstance(cause, requests.exceptions.Timeout):
            return no_answer
        if isinstance(cause, requests.exceptions.ConnectionError):  # after the retries, a timeout is one of these too
            text = str(cause).lower()
            if "timed out" in text or "timeout" in text:
                return no_answer
            return "connection refused" if "refused" in text else "connection failed"
        if isinstance(cause, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
            return "the database connection failed"
        cause = cause.__cause__ or cause.__context__
    return None


def describe_store(uri: str) -> str:
    """'tracking server http://...' or 'tracking database postgresql://user:***@...', for messages."""
    kind = "server" if uri.startswith(("http://", "https://")) else "database" if "://" in uri else "store"
    return f"tracking {kind} {mask_password(uri)}"


@contextlib.contextmanager
def lost_store_stops(doing: str, run_id: str | None = None) -> Iterator[None]:
    """An MLflow call in the block that fails because the store stopped answering raises `StoreUnreachable`: one
    line naming the store, the reason and what was being done (`doing`, e.g. "logging metrics"). Any other failure
    passes through as it is."""
    try:
        yield
    except Exception as error:
        reason = unreachable_reason(error)
        if reason is None:
            raise
        raise StoreUnreachable(
            f"{describe_store(tracking_uri())} stopped answering ({reason}) while {doing}; what was finished is "
            "kept: rerun the command once the store answers again",
            run_id,
        ) from None


def tracking_failure(error: Exception) -> str | None:
    """The one line for an MLflow call that failed outside any `lost_store_stops` block (loading a model, reading
    runs back): the store's absence, or MLflow's own first line; None when `error` did not come from MLflow."""
    reason = unreachable_reason(error)
    if reason is not None:
        return (
            f"{describe_store(tracking_uri())} cannot be reached ({reason}); what was finished is kept: rerun the "
            "command once the store answers again"
        )
    if type(error).__module__.startswith("mlflow."):
        return f"MLflow at {mask_password(tracking_uri())}: {first_line(error)}"
    return None


def first_line(error: BaseException) -> str:
    """MLflow's message in one line: its first, without the response body a server pasted into it (a web page)."""
    lines = (getattr(error, "message", None) or str(error)).strip().splitlines()
    line = lines[0] if lines else type(error).__name__
    return line.split(" Response body:", 1)[0]


def check_reachable(uri: str | None = None) -> None:
    """Fail within seconds, naming the URI (default: the configured store), when a tracking server or database
    cannot be reached."""
    uri = uri or tracking_uri()
    shown = mask_password(uri)
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=REACHABILITY_TIMEOUT_SECONDS):
                return
        except urllib.error.HTTPError as error:
            if error.code == 404:  # an MLflow server answers /health; a plain web server has no such page
                raise TrackingError(
                    f"{shown} answered HTTP 404 for /health: it is not an MLflow tracking server; start one "
                    "(`genre server`) or fix MLFLOW_TRACKING_URI"
                ) from None
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
        database = Path(uri.removeprefix("sqlite:///")).expanduser().resolve()
        folder = database.parent
        if not folder.is_dir():
            raise TrackingError(f"tracking store {shown}: folder {folder} does not exist; create it or fix the URI")
        from genre.disk import check_writable  # else SQLAlchemy retries opening it for two minutes

        check_writable(folder, f"tracking store {shown}: folder", "MLFLOW_TRACKING_URI")
        if database.exists() and not os.access(database, os.W_OK):
            raise TrackingError(f"tracking store {shown} is read-only; make {database} writable or fix the URI")
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


def limit_database_connections(uri: str | None = None) -> None:
    """Give MLflow's store at `uri` the pool of `POOL_LIMITS` when it is a database server, unless the user set its
    variables. MLflow reads them when this process first opens the store, so call this before any run opens. Other
    stores are left alone: the variables pass to child processes, and there an MLflow server's pool needs room."""
    uri = uri or tracking_uri()
    if not uri.startswith(("postgresql", "mysql", "mssql")):
        return
    os.environ.setdefault("MLFLOW_SQLALCHEMYSTORE_POOL_SIZE", str(POOL_LIMITS["pool_size"]))
    os.environ.setdefault("MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW", str(POOL_LIMITS["max_overflow"]))


def missing_sqlite_store() -> str | None:
    """The configured store's URI when it is a SQLite file that does not exist yet (opening it would create it):
    a command that only reads runs has nothing to read."""
    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).expanduser().exists():
        return uri
    return None
