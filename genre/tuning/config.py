"""One `genre tune` invocation's settings (`TuneConfig`), apart from `genre.tuning.study` so that the command line
lists them without importing Optuna."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from genre.config import SEEDS, check_range, setting
from genre.errors import ConfigError
from genre.training.checkpoint import DEFAULT_CHECKPOINT_DIR

DEFAULT_STORAGE = "sqlite:///optuna.db"  # beside MLflow's mlflow.db, the embedded default


@dataclass(frozen=True)
class TuneConfig:
    """One `genre tune` invocation: which space, which study, how many trials, where the study lives."""

    space: str = setting("convnet-digits", "search space: a name in experiments/spaces/ or a YAML file")
    study: str | None = setting(None, "study name (default: the space's name); an existing study is continued")
    n_trials: int = setting(6, "trials this invocation adds to the study")
    timeout: float | None = setting(None, "start no new trial after this many seconds")
    storage: str | None = setting(
        None,
        f"Optuna storage URL (default: {DEFAULT_STORAGE}; postgresql://USER@HOST/DB to share, the password in "
        "PGPASSWORD or ~/.pgpass)",
    )
    sampler: str = setting("tpe", "how trials are chosen", ("tpe", "random", "cmaes"))
    pruner: str = setting("median", "how lagging trials are stopped", ("median", "hyperband", "none"))
    seed: int = setting(0, "seed of the sampler")
    heartbeat_seconds: int = setting(10, "how often a running trial tells the storage it is alive")
    grace_seconds: int = setting(60, "a trial silent this long is failed (its worker died) and retried")
    max_retries: int = setting(1, "times a trial of a dead worker is retried")
    checkpoint_dir: str = setting(DEFAULT_CHECKPOINT_DIR, "folder of the trials' checkpoints (<dir>/<trial run id>/)")
    register: str | None = setting(None, "register the best model in the MLflow registry under this name")
    alias: str = setting("champion", "alias the registered best model gets")
    system_metrics: bool = setting(
        False,
        "log the machine's CPU, memory, disk and network use every 10 s to the study run's System metrics tab (off "
        "by default: the monitor takes a database connection of its own, and tune workers on one PostgreSQL store "
        "then waited out their small connection pools)",
    )

    def __post_init__(self) -> None:
        check_range(self, "n_trials", 1)
        check_range(self, "timeout", 0.0, low_open=True, optional=True, note=" (unset = no limit)")
        check_range(self, "seed", *SEEDS)
        check_range(self, "heartbeat_seconds", 1)
        check_range(self, "grace_seconds", 1)
        if self.grace_seconds <= self.heartbeat_seconds:
            raise ConfigError(
                f"'grace_seconds' must be more than 'heartbeat_seconds' ({self.heartbeat_seconds}), or trials that "
                f"are still running are failed between heartbeats; got {self.grace_seconds}"
            )
        check_range(self, "max_retries", 0)

    @property
    def study_name(self) -> str:
        return self.study or Path(self.space).stem

    @property
    def storage_url(self) -> str:
        return self.storage or DEFAULT_STORAGE
