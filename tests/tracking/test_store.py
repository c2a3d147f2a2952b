"""The tracking store choice and the masking of database passwords."""

from __future__ import annotations

import pytest

from genre.errors import TrackingError
from genre.tracking.store import DEFAULT_TRACKING_URI, check_reachable, mask_password, tracking_uri
from genre.tracking.tracker import flatten


def test_the_embedded_default_is_mlflows_own_sqlite_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri() == DEFAULT_TRACKING_URI == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri() == "http://127.0.0.1:5000"


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("postgresql://genre:s3cret@db.example:5432/mlflow", "postgresql://genre:***@db.example:5432/mlflow"),
        ("postgresql+psycopg2://u:p%40ss@127.0.0.1/x", "postgresql+psycopg2://u:***@127.0.0.1/x"),
        ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ],
)
def test_passwords_are_masked(uri: str, shown: str) -> None:
    assert mask_password(uri) == shown


def test_params_are_flattened_and_masked() -> None:
    flat = flatten({"storage": "postgresql://a:b@h/d", "nested": {"x": 1, "y": None}})
    assert flat == {"storage": "postgresql://a:***@h/d", "nested.x": "1", "nested.y": ""}


def test_a_sqlite_store_in_a_missing_folder_is_named(tmp_path) -> None:
    with pytest.raises(TrackingError, match="does not exist"):
        check_reachable(f"sqlite:///{tmp_path}/no/such/mlflow.db")
