"""The MLflow model registry: register a logged model under a name and point an alias at it."""

from __future__ import annotations

import mlflow
from mlflow.tracking import MlflowClient


def register_model(model_uri: str, name: str, alias: str) -> str:
    """Register `model_uri` as a new version of `name`, move `alias` to it, and return the version."""
    version = mlflow.register_model(model_uri, name)
    MlflowClient().set_registered_model_alias(name, alias, version.version)
    return str(version.version)
