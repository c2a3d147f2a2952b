"""Optuna studies over the training code: samplers, pruners, RDB storage with heartbeats (the study's settings,
`TuneConfig`, are in `genre.tuning.config`).

The objective is the tune stage's (`genre.stages.tune`): each trial is the train stage itself in a nested MLflow
run, reporting the validation accuracy every epoch, pruned when it lags. The storage is an Optuna RDB: a SQLite
file by default, PostgreSQL for workers on several machines; running again with the same study name continues it.
"""

from __future__ import annotations

import logging
import random
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution

from genre.credentials import mask_password
from genre.errors import ConfigError
from genre.runtime import POOL_LIMITS
from genre.tuning.config import TuneConfig

log = logging.getLogger(__name__)
TABLE_CREATION_ATTEMPTS = 5


def make_sampler(kind: str, seed: int) -> optuna.samplers.BaseSampler:
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.TPESampler(seed=seed)


def sampler_seed(seed: int, first_trial: int) -> int:
    """The seed of one invocation's sampler, from `--seed` and the number of the first trial the invocation runs.

    Every invocation seeded alike would draw the same settings: workers sharing a study would run each other's
    trials, and a continued study would repeat its first ones. Trial numbers are unique within a study, so this
    gives each invocation a stream of its own; the one that runs trial 0 (one worker on a new study) keeps `seed`
    itself, and samples what that seed always sampled.
    """
    if first_trial == 0:
        return seed
    return int(np.random.SeedSequence([seed, first_trial]).generate_state(1)[0])


class InvocationSampler(optuna.samplers.BaseSampler):
    """The sampler of `kind` seeded by `sampler_seed`: made when this invocation starts its first trial, the moment
    it learns that trial's number; `effective_seed` is None until then."""

    def __init__(self, kind: str, seed: int) -> None:
        self.kind = kind
        self.seed = seed
        self.effective_seed: int | None = None
        self._sampler: optuna.samplers.BaseSampler | None = None

    @property
    def sampler(self) -> optuna.samplers.BaseSampler:
        if self._sampler is None:
            raise RuntimeError("the sampler is made when the invocation's first trial starts")
        return self._sampler

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self._sampler is None:
            self.effective_seed = sampler_seed(self.seed, trial.number)
            self._sampler = make_sampler(self.kind, self.effective_seed)
        self._sampler.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self.sampler.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self.sampler.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self.sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        state: optuna.trial.TrialState,
        values: Sequence[float] | None,
    ) -> None:
        if self._sampler is not None:
            self._sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        if self._sampler is not None:
            self._sampler.reseed_rng()


def make_pruner(kind: str, epochs: int) -> optuna.pruners.BasePruner:
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1))
    if kind == "none":
        return optuna.pruners.NopPruner()
    # Prune from the first reported epoch once two trials have finished. benchmarks/pruning.py measured this
    # at 0.38 of the unpruned epochs; waiting for epoch 2 and four trials kept 0.65 and found no better best.
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)


def open_study(config: TuneConfig, epochs: int, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """Create the study, or load it when the name exists (`load_if_exists`), with heartbeats on."""
    import sqlalchemy.exc

    for attempt in range(TABLE_CREATION_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats
                storage = optuna.storages.RDBStorage(
                    config.storage_url,
                    heartbeat_interval=config.heartbeat_seconds,
                    grace_period=config.grace_seconds,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=config.max_retries
                    ),
                    engine_kwargs=_engine_options(config.storage_url),
                )
            break
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # Workers started together on a new database race to create Optuna's tables; the loser waits
            # for the winner to finish, then uses them.
            if attempt + 1 == TABLE_CREATION_ATTEMPTS:
                raise
            time.sleep(0.5 + random.random())
    return optuna.create_study(
        study_name=config.study_name,
        storage=storage,
        sampler=sampler,
        pruner=make_pruner(config.pruner, epochs),
        direction="maximize",
        load_if_exists=True,
    )


def _engine_options(url: str) -> dict[str, Any]:
    """A database server's connections are shared by every worker: each keeps one (`POOL_LIMITS`)."""
    if url.startswith("sqlite"):
        return {}
    options: dict[str, Any] = {"pool_pre_ping": True, **POOL_LIMITS}
    if url.startswith("postgresql"):
        options["connect_args"] = {"connect_timeout": 10}
    return options


def check_storage(url: str) -> None:
    """Fail within seconds, naming the (masked) URL, when the study's database cannot be reached."""
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url, **_engine_options(url))
        with engine.connect():
            pass
        engine.dispose()
    except Exception as error:  # noqa: BLE001 - every driver error means the same to the user
        reason = str(error).splitlines()[0][:200].replace(url, mask_password(url))
        raise ConfigError(
            f"Optuna storage {mask_password(url)} cannot be reached ({type(error).__name__}: {reason}); "
            "check the URL and that the database server is running"
        ) from None
