"""The MLflow model registry: register a logged model under a name and point an alias at it."""

from __future__ import annotations

from genre.errors import TrackingError
from genre.tracking.runs import client
from genre.tracking.store import tracking_uri


def register_model(model_uri: str, name: str, alias: str, refused: str | None = None) -> str:
    """Register `model_uri` as a new version of `name`, move `alias` to it, and return the version. When MLflow
    refuses (no such run or model), a `TrackingError` says so, after `refused` (default: what was asked)."""
    import mlflow

    store = client()  # fails in one line when the store does not answer
    mlflow.set_tracking_uri(tracking_uri())
    try:
        version = mlflow.register_model(model_uri, name)
        store.set_registered_model_alias(name, alias, version.version)
    except mlflow.exceptions.MlflowException as error:
        raise TrackingError(f"{refused or f'cannot register {model_uri} as {name}'}: {error.message}") from None
    return str(version.version)
