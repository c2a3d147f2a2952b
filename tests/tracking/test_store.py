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


def test_a_sqlite_store_in_a_read_only_folder_fails_in_seconds_naming_it(
    tracking_store: str, read_only_folder, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # The working folder of the default sqlite:///mlflow.db, read-only: SQLAlchemy retried opening it for 2 minutes.
    import time
    from pathlib import Path

    from genre.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{read_only_folder}/mlflow.db")
    started = time.monotonic()
    assert main(["prepare", "-q", "--out", "digits"]) == 2
    assert time.monotonic() - started < 60
    error = capsys.readouterr().err
    assert error.startswith(
        f"genre prepare: error: tracking store sqlite:///{read_only_folder}/mlflow.db: folder {read_only_folder} "
        "is not writable ("
    )
    assert error.endswith("make it writable or choose another with MLFLOW_TRACKING_URI\n") and error.count("\n") == 1
    assert not Path("digits").exists()


def test_mlflow_s_retries_are_bounded_unless_the_user_chose_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from mlflow.tracking import MlflowClient

    from genre.tracking.store import HTTP_LIMITS, limit_http_retries, tracking_failure

    chosen = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}
    assert limit_http_retries(chosen) == HTTP_LIMITS | chosen  # the user's value wins, the rest are filled in

    for name, value in HTTP_LIMITS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    started = time.monotonic()
    with pytest.raises(Exception) as caught:  # noqa: PT011 - whatever MLflow raises, genre names the store
        MlflowClient("http://127.0.0.1:9").search_experiments()
    assert time.monotonic() - started < 10  # MLflow's own defaults: 267 s
    assert tracking_failure(caught.value) == (
        "tracking server http://127.0.0.1:9 cannot be reached (connection refused); what was finished is kept: rerun "
        "the command once the store answers again"
    )


def test_an_mlflow_error_that_is_not_the_store_s_absence_is_one_line_of_mlflow_s_own(tracking_store: str) -> None:
    from mlflow.tracking import MlflowClient

    from genre.tracking.store import tracking_failure, unreachable_reason

    with pytest.raises(Exception) as caught:  # noqa: PT011
        MlflowClient(tracking_store).get_run("0123456789abcdef0123456789abcdef")
    assert unreachable_reason(caught.value) is None
    assert tracking_failure(caught.value) == (
        f"MLflow at {tracking_store}: Run with id=0123456789abcdef0123456789abcdef not found"
    )
    assert tracking_failure(ValueError("a bug of ours")) is None  # not MLflow's: the traceback stays


def test_only_a_database_tracking_store_gets_the_small_connection_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tune worker bounds MLflow's pool on a database server (tests/tuning/test_study.py counts the connections),
    and leaves SQLite and a tracking server alone: its environment passes to child processes, an MLflow server's too.
    A value the user set wins."""
    import os

    from genre.tracking.store import limit_database_connections

    names = ["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE", "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"]
    for name in names:  # set, then removed: monkeypatch restores the variable's absence afterwards
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    limit_database_connections("sqlite:///mlflow.db")
    limit_database_connections("http://127.0.0.1:5000")
    assert [os.environ.get(name) for name in names] == [None, None]
    limit_database_connections("postgresql://genre@db.lab:5432/mlflow")
    assert [os.environ.get(name) for name in names] == ["1", "1"]
    monkeypatch.setenv("MLFLOW_SQLALCHEMYSTORE_POOL_SIZE", "8")
    limit_database_connections("postgresql://genre@db.lab:5432/mlflow")
    assert os.environ["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"] == "8"


def test_a_plain_web_server_as_the_tracking_uri_is_one_line_not_its_html_page(tmp_path, monkeypatch, capsys) -> None:
    """Issue 25, case 8: the error used to paste the server's 14-line HTML 404 page."""
    import functools
    import http.server
    import threading

    from genre.cli import main

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # the test reads stderr: only genre's line goes there
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    try:
        assert main(["prepare", "-q", "--out", "digits16", "--image-size", "16"]) == 2
    finally:
        server.shutdown()
    assert capsys.readouterr().err == (
        f"genre prepare: error: {uri} answered HTTP 404 for /health: it is not an MLflow tracking server; start one "
        "(`genre server`) or fix MLFLOW_TRACKING_URI\n"
    )
    assert not (tmp_path / "digits16").exists()


def test_mlflow_s_message_loses_the_web_page_a_server_pasted_into_it() -> None:
    from mlflow.exceptions import MlflowException

    from genre.tracking.store import first_line

    error = MlflowException(
        "API request to /api/2.0/x failed with error code 404 != 200. Response body: '<html>\n</html>'"
    )
    assert first_line(error) == "API request to /api/2.0/x failed with error code 404 != 200."
