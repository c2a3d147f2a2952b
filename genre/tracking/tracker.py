"""The small reporting interface the stages use, and its MLflow implementation.

Stages call `log_params`, `log_metrics(step=...)`, `log_artifact`, `log_figure`, `log_dataset`; only this
module imports MLflow, so the stages can run in a test against a `RecordingTracker`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from genre.errors import TrackingError
from genre.tracking.store import check_reachable, mask_password, tracking_uri

log = logging.getLogger(__name__)
MAX_PARAM_LENGTH = 6000  # MLflow's limit on one param value


class Tracker(Protocol):
    run_id: str

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    def log_figure(self, figure: Any, name: str) -> None: ...
    def log_text(self, text: str, name: str) -> None: ...
    def log_dataset(self, name: str, digest: str, source_uri: str, context: str, shape: tuple[int, ...]) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...
    def log_model(self, net: Any, genres: list[str], image_size: int, example: bytes, network: Any = None) -> None: ...


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

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        import mlflow

        mlflow.log_params(flatten(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        import mlflow

        mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_figure(self, figure: Any, name: str) -> None:
        import matplotlib.pyplot as plt
        import mlflow

        mlflow.log_figure(figure, name)
        plt.close(figure)

    def log_text(self, text: str, name: str) -> None:
        import mlflow

        mlflow.log_text(text, name)

    def log_dataset(self, name: str, digest: str, source_uri: str, context: str, shape: tuple[int, ...]) -> None:
        """Record the packed dataset as an MLflow dataset input (name, digest, source, tensor schema)."""
        import mlflow
        import numpy as np
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.types.schema import Schema, TensorSpec

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MLflow warns that several local source types match
            source = resolve_dataset_source(source_uri)
        schema = Schema([TensorSpec(np.dtype(np.uint8), (-1, *shape[1:]), "image")])
        mlflow.log_input(MetaDataset(source, name=name, digest=digest, schema=schema), context=context)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        import mlflow

        mlflow.set_tags(dict(tags))

    def log_model(self, net: Any, genres: list[str], image_size: int, example: bytes, network: Any = None) -> None:
        """The network as an `mlflow.pyfunc` model under `model/` (see `genre.tracking.model`); `network` is its
        `NetworkInput` (input side and normalisation)."""
        from genre.tracking.model import log_cover_model

        log_cover_model(net, genres, image_size, example, name="model", network=network)


def _experiment_id(name: str) -> str:
    import mlflow

    experiment = mlflow.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else mlflow.create_experiment(name)


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
) -> Iterator[MlflowTracker]:
    """Open a run in `experiment` (or, under `mlflow run`, join the run it made): ends FAILED if the body
    raises (FINISHED for the exceptions in `finished_on`, e.g. a pruned trial), KILLED on Ctrl-C.
    `experiment=None` leaves the choice to MLflow's environment variables; `run_id` reopens an existing run
    (to resume it); `nested` opens a child of the active run (a tuning trial).
    """
    import mlflow

    if nested:
        run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name, nested=True)
        with _ending(run, finished_on):
            mlflow.set_tags(dict(tags))
            yield MlflowTracker(run.info.run_id)
        return
    uri = tracking_uri()
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    joined = os.environ.pop("MLFLOW_RUN_ID", None)  # `mlflow run` made this run; later (nested) runs are new
    try:
        if joined or run_id:
            run = mlflow.start_run(run_id=joined or run_id)
        else:
            if experiment:
                mlflow.set_experiment(experiment_id=_experiment_id(experiment))
            run = mlflow.start_run(run_name=run_name)
    except Exception as error:  # noqa: BLE001 - any store error is the same to the user
        raise TrackingError(f"cannot open an MLflow run at {mask_password(uri)}: {error}") from error
    log.info("MLflow run %s in experiment %s at %s", run.info.run_id, run.info.experiment_id, mask_password(uri))
    with _ending(run, finished_on):
        mlflow.set_tags(dict(tags))
        yield MlflowTracker(run.info.run_id)


@contextlib.contextmanager
def _ending(run: Any, finished_on: tuple[type[BaseException], ...]) -> Iterator[None]:
    """End `run` with the status its body earned."""
    import mlflow

    try:
        yield
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise
    except finished_on:
        mlflow.end_run("FINISHED")
        raise
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    else:
        mlflow.end_run("FINISHED")


class NullTracker:
    """Records nothing: a worker of a distributed job that does not own the run (worker 0 logs the global numbers)."""

    run_id = ""

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

    def log_dataset(self, name: str, digest: str, source_uri: str, context: str, shape: tuple[int, ...]) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass

    def log_model(self, net: Any, genres: list[str], image_size: int, example: bytes, network: Any = None) -> None:
        pass
