"""The settings of the commands whose work is all in tracking: `genre server` (the MLflow tracking server),
`genre serve` (a model server), `genre runs` and `genre register`. No MLflow here: the command line lists them at
once."""

from __future__ import annotations

from dataclasses import dataclass

from genre.config import check_range, setting
from genre.tracking.store import DEFAULT_TRACKING_URI


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


@dataclass(frozen=True)
class ServeConfig:
    """Which model to serve, where the server listens and the largest request it reads."""

    model_uri: str = setting("", "the model: runs:/<run id>/model, models:/<name>@<alias>, or a local path")
    host: str = setting("127.0.0.1", "address to bind; anything but loopback exposes the model (a warning says so)")
    port: int = setting(5001, "port to listen on (the tracking server's default is 5000)")
    workers: int = setting(1, "server worker processes")
    max_request_mb: float = setting(
        64.0, "largest request body read, in MiB (a batch of 64 covers of 500 KB is about 43); larger gets HTTP 413"
    )

    def __post_init__(self) -> None:
        check_range(self, "port", 1, 65535)
        check_range(self, "workers", 1, 64)
        check_range(self, "max_request_mb", 0.0, 4096.0, low_open=True)


@dataclass(frozen=True)
class RunsConfig:
    """`genre runs`: which RUNNING runs to show, and whether to end the stale ones."""

    experiment: str | None = setting(
        None, "only this MLflow experiment (default: every active one)", metavar="EXPERIMENT"
    )
    stale: bool = setting(False, "only runs whose process is gone", switch=True)
    end: bool = setting(False, "end the stale runs KILLED, tagged genre.ended_by", switch=True)
    older_than: float | None = setting(
        None,
        "also count as stale a run owned on another host (or by an older genre) started this long ago",
        metavar="HOURS",
    )

    def __post_init__(self) -> None:
        check_range(self, "older_than", 0.0, low_open=True, optional=True, note=" (unset = never)")


@dataclass(frozen=True)
class RegisterConfig:
    """`genre register`: which run's model, under which name, and the alias that points at the new version."""

    run_id: str = setting("", "the training (or trial) run whose model to register", metavar="RUN_ID", required=True)
    name: str = setting("genre-classifier", "registered model name", metavar="NAME")
    alias: str = setting("champion", "alias to point at the new version", metavar="ALIAS")
