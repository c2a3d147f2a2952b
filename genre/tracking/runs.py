"""Reading runs back from the tracking store (and the few writes that are not a running stage's): one client per
store, made after the store answered."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from genre.credentials import mask_password
from genre.errors import DataError, TrackingError
from genre.predictions import CoverPredictions, predictions_artifact
from genre.tracking.store import check_reachable, tracking_uri


def client():
    """An `MlflowClient` on the configured store, failing fast (one line) when it cannot be reached."""
    return _client_for(tracking_uri())


@functools.cache
def _client_for(uri: str):
    """One client per store: a report or a suite asks many times, and the reachability check is a round trip."""
    from mlflow.tracking import MlflowClient

    check_reachable(uri)
    return MlflowClient(uri)


def shown_store() -> str:
    """The configured tracking store, password masked: for messages."""
    return mask_password(tracking_uri())


def quote(value: str) -> str:
    """`value` inside a single-quoted string of an MLflow search filter."""
    return value.replace("'", "\\'")


def experiment_id(name: str) -> str:
    """The id of the MLflow experiment called `name`; a `TrackingError` saying what to do when there is none."""
    found = client().get_experiment_by_name(name)
    if found is None:
        raise TrackingError(f"no MLflow experiment named '{name}' at {shown_store()}")
    return found.experiment_id


def experiment_names() -> dict[str, str]:
    """Every active experiment's name, by id."""
    return {e.experiment_id: e.name for e in client().search_experiments()}


def search(
    experiment_ids: list[str] | None, query: str = "", newest_first: bool = False, max_results: int = 50_000
) -> list[Any]:
    """The runs of `experiment_ids` (None: every active experiment) matching the filter `query`."""
    store = client()
    if experiment_ids is None:
        experiment_ids = [e.experiment_id for e in store.search_experiments()]
    if not experiment_ids:
        return []
    order = ["attributes.start_time DESC"] if newest_first else None
    return store.search_runs(experiment_ids, query, max_results=max_results, order_by=order)


def run_experiment_id(run_id: str) -> str:
    return client().get_run(run_id).info.experiment_id


def set_tags(run_id: str, tags: Mapping[str, str]) -> None:
    """Tag a run that may have ended (the fluent API tags only the active run)."""
    store = client()
    for key, value in tags.items():
        store.set_tag(run_id, key, value)


def run_record(run_id: str) -> Any:
    """Run `run_id` as the store returns it (info, params, metrics, tags); a `TrackingError` when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        return client().get_run(run_id)
    except MlflowException as error:
        raise TrackingError(f"no run {run_id} at {shown_store()} ({error.message})") from None


def run_params(run_id: str) -> dict[str, str]:
    """The params of run `run_id`; a `TrackingError` when the store holds no such run."""
    return dict(run_record(run_id).data.params)


def run_statuses(run_ids: list[str]) -> dict[str, str]:
    """The status (FINISHED, RUNNING, KILLED, FAILED, SCHEDULED) of each run of `run_ids` the store holds, deleted ones
    included, by id; a run it does not hold is left out."""
    from mlflow.exceptions import MlflowException

    store, found = client(), {}
    for run_id in run_ids:
        try:
            found[run_id] = store.get_run(run_id).info.status
        except MlflowException:
            continue
    return found


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """`[(step, value), ...]` of one metric of one run, by step."""
    return sorted((m.step, m.value) for m in client().get_metric_history(run_id, key))


def params_with_passwords(run_id: str) -> dict[str, str]:
    """The params of run `run_id` whose value holds a URL with a password (`mlflow run` logs each -P as given);
    empty when there is no such run."""
    from mlflow.exceptions import MlflowException

    try:
        params = client().get_run(run_id).data.params
    except MlflowException:
        return {}
    return {name: value for name, value in params.items() if mask_password(value) != value}


def download(run_id: str, artifact: str, into: Path) -> Path | None:
    """One artifact of a run into folder `into`; None if the run has no such artifact."""
    from mlflow.exceptions import MlflowException

    into.mkdir(parents=True, exist_ok=True)
    try:
        return Path(client().download_artifacts(run_id, artifact, str(into)))
    except (MlflowException, OSError):
        return None


def logged_predictions(run_id: str, split: str = "test") -> CoverPredictions | None:
    """The per-cover predictions run `run_id` logged for `split` (`predictions/<split>.csv`, see `genre.predictions`);
    None for a run that logged none (one older than them). A file that cannot be read is a `DataError` naming it."""
    import tempfile

    artifact = predictions_artifact(split)
    with tempfile.TemporaryDirectory(prefix="genre-predictions-") as folder:
        path = download(run_id, artifact, Path(folder))
        if path is None or not path.is_file():
            return None
        text = path.read_text()
    try:
        return CoverPredictions.from_csv_text(text)
    except (ValueError, IndexError) as error:
        raise DataError(f"run {run_id}'s {artifact} cannot be read: {error}") from None
