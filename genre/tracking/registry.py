"""The MLflow model registry: register a logged model under a name and point an alias at it."""

from __future__ import annotations

import contextlib
import re

from genre.errors import TrackingError
from genre.tracking.runs import client, quote, shown_store
from genre.tracking.store import tracking_uri


def register_model(model_uri: str, name: str, alias: str, refused: str | None = None) -> str:
    """Register `model_uri` as a new version of `name`, move `alias` to it, and return the version. When MLflow
    refuses (no such run or model), a `TrackingError` says so, after `refused` (default: what was asked)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    store = client()  # fails in one line when the store does not answer
    mlflow.set_tracking_uri(tracking_uri())
    refused = refused or f"cannot register {model_uri} as {name}"
    if found := RUN_URI.fullmatch(model_uri):  # before MLflow prints "Successfully registered model"
        try:
            store.get_run(found.group(1))
        except MlflowException:
            raise TrackingError(
                f"{refused}: the tracking store has no run {found.group(1)} (`genre runs` lists them)"
            ) from None
    try:
        existed = bool(store.get_registered_model(name))
    except MlflowException:
        existed = False
    try:
        version = mlflow.register_model(model_uri, name)
        store.set_registered_model_alias(name, alias, version.version)
    except MlflowException as error:
        if not existed:  # MLflow made the name before it failed on the version: leave no empty model behind
            with contextlib.suppress(MlflowException):
                store.delete_registered_model(name)
        raise TrackingError(f"{refused}: {error.message}") from None
    return str(version.version)


RUN_URI = re.compile(r"runs:/([^/]+)/.+")
REGISTERED_URI = re.compile(r"models:/([^/@]+)[/@].+")  # a registered model's version, by alias or number
ALIAS_URI = re.compile(r"models:/([^/@]+)@([^/]+)")
VERSION_URI = re.compile(r"models:/([^/@]+)/([^/]+)")  # a version number, `latest` or a stage
LOGGED_MODEL_URI = re.compile(r"models:/(m-[0-9a-f]+)")  # MLflow 3's id of a logged model


def source_run(model_uri: str) -> str | None:
    """The id of the run that logged the model `model_uri` names: `runs:/RUN_ID/...`, a registered version
    (`models:/NAME@ALIAS`, `models:/NAME/VERSION`, `/latest` or `/STAGE`) or a logged model (`models:/m-...`).
    None for a local path, or a version registered from outside any run. A name, alias or version the registry
    does not hold is a `TrackingError` saying so."""
    from mlflow.exceptions import MlflowException

    if found := RUN_URI.fullmatch(model_uri):
        return found.group(1)
    if not model_uri.startswith("models:/"):
        return None
    store = client()
    try:
        if found := LOGGED_MODEL_URI.fullmatch(model_uri):
            return store.get_logged_model(found.group(1)).source_run_id or None
        if found := ALIAS_URI.fullmatch(model_uri):
            return store.get_model_version_by_alias(*found.groups()).run_id or None
        if not (found := VERSION_URI.fullmatch(model_uri)):
            raise TrackingError(f"{model_uri} is not a model URI: models:/NAME@ALIAS or models:/NAME/VERSION")
        name, suffix = found.groups()
        if suffix.isdigit():
            return store.get_model_version(name, suffix).run_id or None
        versions = store.search_model_versions(f"name = '{quote(name)}'")
        if suffix.lower() != "latest":
            versions = [v for v in versions if v.current_stage.lower() == suffix.lower()]
        if not versions:
            raise TrackingError(f"{model_uri}: model '{name}' has no version {suffix} at {shown_store()}")
        return max(versions, key=lambda version: int(version.version)).run_id or None
    except MlflowException as error:
        raise TrackingError(f"{model_uri}: {error.message} (at {shown_store()})") from None


def run_of(model_uri: str) -> str | None:
    """The run a `runs:/RUN_ID/...` URI names, without asking the store; None for any other URI."""
    found = RUN_URI.fullmatch(model_uri)
    return found.group(1) if found else None


def registered_name(model_uri: str) -> str:
    """The registered model a `models:/NAME@ALIAS` or `models:/NAME/VERSION` URI names; "" for any other URI."""
    found = REGISTERED_URI.fullmatch(model_uri)
    return found.group(1) if found else ""
