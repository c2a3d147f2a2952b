"""The small reporting interface the stages use (`Tracker`), its MLflow implementation, and the run around it.

Stages call `log_params`, `log_metrics(step=...)`, `log_artifact`, `log_figure`, `log_dataset`, `log_model`; the
MLflow calls and their failures (a store that stopped answering, a full disk) stay here, so a stage's logging can
be tested against a recording double (`tests/recording.py`) without a tracking store.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import mlflow
import numpy as np
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.types.schema import Schema, TensorSpec

from genre.disk import check_writable, disk_faults, full_database, local_folder
from genre.errors import StoreUnreachable, TrackingError
from genre.figures import close_figure
from genre.tracking import runs
from genre.tracking.stale import owner_tags
from genre.tracking.store import (
    check_reachable,
    first_line,
    lost_store_stops,
    mask_password,
    single_try,
    tracking_uri,
    unreachable_reason,
)
from genre.tracking.ui import serves_ui, ui_address

log = logging.getLogger(__name__)
MAX_PARAM_LENGTH = 6000  # MLflow's limit on one param value
ARTIFACTS_ELSEWHERE = "a new experiment (--mlflow-experiment) or store (MLFLOW_TRACKING_URI)"


class Tracker(Protocol):
    run_id: str
    store: str  # the tracking store the run lives in, password masked: for messages

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    def log_figure(self, figure: Any, name: str) -> None: ...
    def log_text(self, text: str, name: str) -> None: ...
    def log_table(self, columns: Mapping[str, list], name: str) -> None: ...
    def log_dataset(self, name: str, digest: str, source_uri: str, context: str, shape: tuple[int, ...]) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...
    def log_model(self, log: Callable[[], object]) -> None: ...


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings to dotted keys with string values, as MLflow params need them."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            text = "" if value is None else str(value)
            flat[name] = mask_password(text)[:MAX_PARAM_LENGTH]
    return flat


class MlflowTracker:
    """Logs to the active MLflow run (see `tracked_run`)."""

    def __init__(self, run_id: str, store: str) -> None:
        self.run_id = run_id
        self.store = store

    def _calling(self, doing: str) -> contextlib.AbstractContextManager[None]:
        calling = contextlib.ExitStack()
        calling.enter_context(lost_store_stops(f"{doing} of run {self.run_id}", self.run_id))
        calling.enter_context(disk_faults(_artifacts_of(self.run_id), _kept_on_full_disk(self.run_id), self.store))
        return calling

    def log_params(self, params: Mapping[str, Any]) -> None:
        with self._calling("logging the params"):
            mlflow.log_params(flatten(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        with self._calling("logging the metrics" if step is None else f"logging the metrics of step {step}"):
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        with self._calling(f"uploading {path.name}"):
            mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_figure(self, figure: Any, name: str) -> None:
        try:
            with self._calling(f"uploading {name}"):
                mlflow.log_figure(figure, name)
        finally:
            close_figure(figure)

    def log_text(self, text: str, name: str) -> None:
        with self._calling(f"uploading {name}"):
            mlflow.log_text(text, name)

    def log_table(self, columns: Mapping[str, list], name: str) -> None:
        """Rows as an MLflow table artifact (`name` ends in .json), which the run's Artifacts tab shows as a table."""

        with self._calling(f"uploading {name}"):
            mlflow.log_table(dict(columns), name)

    def log_dataset(self, name: str, digest: str, source_uri: str, context: str, shape: tuple[int, ...]) -> None:
        """Record the packed dataset as an MLflow dataset input (name, digest, source, tensor schema)."""

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MLflow warns that several local source types match
            source = resolve_dataset_source(source_uri)
        schema = Schema([TensorSpec(np.dtype(np.uint8), (-1, *shape[1:]), "image")])
        dataset = MetaDataset(source, name=name, digest=digest, schema=schema)
        with self._calling("logging the dataset"):
            try:
                mlflow.log_input(dataset, context=context)
            except mlflow.exceptions.MlflowException as error:
                # The SQL store looks the dataset up, then inserts it: two workers of one study logging the same
                # dataset at once can both miss it, and the second insert breaks the unique key. Once it exists,
                # logging it again finds it (seen on PostgreSQL with three tune workers).
                if "dataset_pk" not in str(error) and "UNIQUE constraint failed: datasets" not in str(error):
                    raise
                mlflow.log_input(dataset, context=context)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        with self._calling("setting tags"):
            mlflow.set_tags(dict(tags))

    def log_model(self, log: Callable[[], object]) -> None:
        """Run `log`, which logs a model to the active run (`genre.cover_model.log_cover_model`), with the store's
        and the disk's failures turned into one line."""
        with self._calling("uploading the model"):
            log()


def _artifacts_of(run_id: str) -> str:
    """Where run `run_id` keeps its artifacts, as far as this process knows without asking the store."""

    active = mlflow.active_run()
    if active is None or active.info.run_id != run_id:
        return f"the artifacts of run {run_id}"
    return str(local_folder(active.info.artifact_uri) or active.info.artifact_uri)


def _kept_on_full_disk(run_id: str) -> str:
    return (
        f"what run {run_id} logged before is kept: free some space and rerun "
        f"(`genre train --resume {run_id}` continues a training run from its last checkpoint)"
    )


def _check_artifact_folder(run: Any) -> None:
    """A local artifact folder that cannot be written is named now, not when the first artifact is logged."""
    folder = local_folder(run.info.artifact_uri)
    if folder is not None:
        check_writable(folder, f"artifact folder of run {run.info.run_id}", ARTIFACTS_ELSEWHERE)


def _experiment_id(name: str) -> str:
    """The id of experiment `name`, created if missing. Workers starting together may all find it missing: the
    ones whose create loses the race read the winner's."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return mlflow.create_experiment(name)
    except mlflow.exceptions.MlflowException:
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def experiment_name(flag: str | None, default: str) -> str | None:
    """The experiment to log to: the flag, else what MLFLOW_EXPERIMENT_NAME/ID chose (None), else `default`."""
    if flag:
        return flag
    if os.environ.get("MLFLOW_EXPERIMENT_NAME") or os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return None
    return default


@contextlib.contextmanager
def tracked_run(
    experiment: str | None,
    run_name: str | None,
    tags: Mapping[str, str],
    run_id: str | None = None,
    nested: bool = False,
    finished_on: tuple[type[BaseException], ...] = (),
    system_metrics: bool = False,
) -> Iterator[MlflowTracker]:
    """Open a run in `experiment` (or, under `mlflow run`, join the run it made): ends FAILED if the body
    raises (FINISHED for the exceptions in `finished_on`, e.g. a pruned trial), KILLED on Ctrl-C.
    `experiment=None` leaves the choice to MLflow's environment variables; `run_id` reopens an existing run
    (to resume it); `nested` opens a child of the active run (a tuning trial). `system_metrics` has MLflow sample the
    machine's CPU, memory, disk, network (and GPU) use into a run that is not nested while it is open (its "System
    metrics" tab).

    A run `mlflow run` made is renamed `run_name`, the name the same command gives the run it opens itself
    (`prepare`, `train-convnet`), in place of MLflow's random one (`placid-swan-781`).

    Every run is tagged with the process that owns it (`genre.tracking.stale.owner_tags`), so a later command
    can tell a run whose process was killed from one still going. Once a run (not a nested one) has ended in a
    tracking server, one line gives its UI page (`genre.tracking.ui`), in place of MLflow's two lines, whose
    addresses open in MLflow's GenAI view.
    """

    uri = tracking_uri()
    if nested:
        with lost_store_stops("opening a nested run"):
            # A nested run (a trial, a suite's run) never starts MLflow's monitor: its parent's covers the same time,
            # and a second monitor thread per process would take a second database connection from a pool that
            # `limit_database_connections` keeps to two (tune workers on PostgreSQL timed out waiting for one).
            run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name, nested=True)
        with _ending(run, finished_on, None):
            with lost_store_stops(f"tagging run {run.info.run_id}", run.info.run_id):
                mlflow.set_tags(dict(tags) | owner_tags())
            yield MlflowTracker(run.info.run_id, mask_password(uri))
        return
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    joined = os.environ.pop("MLFLOW_RUN_ID", None)  # `mlflow run` made this run; later (nested) runs are new
    try:
        if joined:
            run = mlflow.start_run(
                run_id=joined, run_name=run_name, log_system_metrics=system_metrics
            )  # renames it (tests/tracking/test_tracker.py)
        elif run_id:
            run = mlflow.start_run(run_id=run_id, log_system_metrics=system_metrics)
        else:
            if experiment:
                mlflow.set_experiment(experiment_id=_experiment_id(experiment))
            run = mlflow.start_run(run_name=run_name, log_system_metrics=system_metrics)
    except Exception as error:  # noqa: BLE001 - any store error is the same to the user
        raise TrackingError(f"cannot open an MLflow run at {mask_password(uri)}: {first_line(error)}") from error
    log.info("MLflow run %s in experiment %s at %s", run.info.run_id, run.info.experiment_id, mask_password(uri))
    page = ui_address(mask_password(uri), run.info.experiment_id, run.info.run_id) if serves_ui(uri) else None
    with _ending(run, finished_on, page):
        _check_artifact_folder(run)
        with lost_store_stops(f"tagging run {run.info.run_id}", run.info.run_id):
            mlflow.set_tags(dict(tags) | owner_tags())
        yield MlflowTracker(run.info.run_id, mask_password(uri))


@contextlib.contextmanager
def _ending(run: Any, finished_on: tuple[type[BaseException], ...], page: str | None) -> Iterator[None]:
    """End `run` with the status its body earned; once it has ended, print its UI `page` (None: nothing).

    When the body failed, the store may be what failed: ending the run is then one brief try, and its failure is
    logged rather than raised, so the command still says what went wrong first (the run stays RUNNING, and
    `genre runs --stale` finds it)."""

    try:
        yield
    except KeyboardInterrupt:
        _end_quietly(run, "KILLED", False, page)
        raise
    except finished_on:
        _end_quietly(run, "FINISHED", False, page)
        raise
    except BaseException as error:
        lost = isinstance(error, StoreUnreachable) or (
            isinstance(error, Exception) and unreachable_reason(error) is not None
        )
        _end_quietly(run, "FAILED", lost, page)
        raise
    else:
        with lost_store_stops(f"ending run {run.info.run_id}", run.info.run_id):
            mlflow.end_run("FINISHED")
        _show_page(run, page)


def _end_quietly(run: Any, status: str, last_try: bool, page: str | None) -> None:
    try:
        with single_try() if last_try else contextlib.nullcontext():
            mlflow.end_run(status)
    except Exception as error:  # noqa: BLE001 - the body's own error is the one to report
        reason = unreachable_reason(error)
        if full_database(error):  # the end cannot be written either: say what to do later
            log.warning(
                "MLflow run %s stays RUNNING: its store's disk is full, so its end could not be written either; once "
                "space is freed, `genre train --resume %s` continues a training run, `genre runs --stale --end` "
                "ends any run", run.info.run_id, run.info.run_id,
            )  # fmt: skip
        elif reason is None:
            log.warning("could not end MLflow run %s %s: %s", run.info.run_id, status, str(error).splitlines()[0])
        else:  # the error the command reports already says the store is gone
            log.info("MLflow run %s stays RUNNING: the store did not answer (%s)", run.info.run_id, reason)
    else:
        _show_page(run, page)


def _show_page(run: Any, page: str | None) -> None:
    if page is not None:
        print(f"run {run.info.run_name} in the MLflow UI: {page}", flush=True)


@contextlib.contextmanager
def reopened_run(run_id: str, project_tags: Mapping[str, str]) -> Iterator[Tracker]:
    """Reopen the FINISHED run `run_id` to log more into it, and leave it FINISHED with its old end time (its
    duration), even when logging fails or is interrupted (`tracked_run` would end it FAILED or KILLED, now).

    Under `mlflow run` the entry point's own run is left to MLflow and tagged with `project_tags` (where the logging
    went)."""
    ended = runs.client().get_run(run_id).info.end_time
    project_run = os.environ.pop("MLFLOW_RUN_ID", None)  # else `tracked_run` would join the entry point's run
    logged = False
    try:
        with tracked_run(None, None, {}, run_id=run_id) as tracker:
            yield tracker
        logged = True
    finally:  # after a failure, a best try: the error that stopped the command is the one to report
        with contextlib.nullcontext() if logged else contextlib.suppress(Exception):
            runs.client().set_terminated(run_id, "FINISHED", end_time=ended)
    if project_run and project_run != run_id:  # `mlflow run -e train -P interpret=true` is one run: tagged as train
        runs.set_tags(project_run, dict(project_tags))


class NullTracker:
    """Records nothing: a worker of a distributed job that does not own the run (worker 0 logs the global numbers)."""

    run_id = ""
    store = ""

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        pass

    def log_figure(self, figure: Any, name: str) -> None:
        pass

    def log_text(self, text: str, name: str) -> None:
        pass

    def log_table(self, columns: Mapping[str, list], name: str) -> None:
        pass

    def log_dataset(self, name: str, digest: str, source_uri: str, context: str, shape: tuple[int, ...]) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass

    def log_model(self, log: Callable[[], object]) -> None:
        pass
