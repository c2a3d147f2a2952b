"""Database passwords leave command lines for PGPASSWORD, where libpq (under SQLAlchemy and psycopg) finds them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from genre.credentials import PASSWORD_VARIABLE, mask_password, take_password
from genre.errors import ConfigError
from tests.conftest import PROJECT_ROOT


def test_the_password_leaves_every_postgresql_url_before_a_double_dash() -> None:
    args = [
        "-m", "genre.cli", "tune", "--storage", "postgresql://genre:p%40ss@db.lab:5432/optuna",
        "--other=postgresql+psycopg://genre:p%40ss@db.lab/mlflow", "--space", "sqlite:///u:v@x.db",
        "--", "genre", "tune", "--storage", "postgresql://genre:p%40ss@db.lab/optuna",
    ]  # fmt: skip
    freed = take_password(args)
    assert freed.password == "p@ss"  # percent-decoded, as libpq wants it
    assert freed.args[:8] == [
        "-m", "genre.cli", "tune", "--storage", "postgresql://genre@db.lab:5432/optuna",
        "--other=postgresql+psycopg://genre@db.lab/mlflow", "--space", "sqlite:///u:v@x.db",
    ]  # fmt: skip
    assert freed.args[8:] == args[8:]  # another program's command line is its own business
    assert freed.urls == ["postgresql://genre@db.lab:5432/optuna", "postgresql+psycopg://genre@db.lab/mlflow"]
    assert take_password(["tune", "--storage", "postgresql://genre@db.lab/optuna"]).password is None


@pytest.mark.parametrize(
    ("given", "freed", "shown"),
    [
        ("postgresql://genre@db.lab/optuna?password=p%40ss", "postgresql://genre@db.lab/optuna",
         "postgresql://genre@db.lab/optuna?password=***"),
        ("postgresql://genre@db.lab/optuna?sslmode=require&PASSWORD=p%40ss&connect_timeout=5",
         "postgresql://genre@db.lab/optuna?sslmode=require&connect_timeout=5",
         "postgresql://genre@db.lab/optuna?sslmode=require&PASSWORD=***&connect_timeout=5"),
        ("postgresql://genre:p%40ss@db.lab/optuna", "postgresql://genre@db.lab/optuna",
         "postgresql://genre:***@db.lab/optuna"),
    ],
    ids=["query", "query-among-others", "userinfo"],
)  # fmt: skip
def test_a_password_in_the_query_leaves_the_url_and_is_masked_as_one_in_the_user_part(
    given: str, freed: str, shown: str
) -> None:
    """Issue 25: `?password=` used to be printed, logged as `config.storage` and kept in `ps`."""
    taken = take_password(["tune", "--storage", given])
    assert (taken.args, taken.password, taken.urls) == (["tune", "--storage", freed], "p@ss", [freed])
    assert mask_password(given) == shown
    assert mask_password("host=db.lab user=genre password=s3cret dbname=optuna") == (
        "host=db.lab user=genre password=*** dbname=optuna"
    )  # a libpq keyword/value string, as an error message may quote it


def test_two_different_passwords_are_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match="different passwords") as caught:
        take_password(["tune", "--storage", "postgresql://a:pw-first@h/x", "--x", "postgresql://a:pw-second@h/y"])
    message = str(caught.value)
    assert "\n" not in message and "pw-first" not in message and "pw-second" not in message


def test_libpq_takes_the_password_from_the_environment_for_a_url_without_one(
    postgres_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the design relies on: MLflow and Optuna connect through SQLAlchemy and psycopg, and libpq under them
    uses PGPASSWORD when the URL has no password."""
    import sqlalchemy

    monkeypatch.setenv(PASSWORD_VARIABLE, "env-s3cret")
    engine = sqlalchemy.create_engine(f"{postgres_server}/postgres")
    connection = engine.raw_connection()
    try:
        assert connection.driver_connection.info.password == "env-s3cret"
    finally:
        connection.close()
        engine.dispose()


def test_a_url_password_unlike_pgpassword_is_refused_before_any_work(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), PASSWORD_VARIABLE: "the-other-one"}
    env.pop("MLFLOW_RUN_ID", None)
    storage = "postgresql://genre:url-s3cret@127.0.0.1:9/optuna"
    result = subprocess.run(
        [sys.executable, "-m", "genre.cli", "tune", "--storage", storage], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        "genre tune: error: the database URL postgresql://genre@127.0.0.1:9/optuna was given with a password and "
        "PGPASSWORD holds another; give the password once, in PGPASSWORD or ~/.pgpass, and the URL without it\n"
    )
    assert "url-s3cret" not in result.stdout and list(tmp_path.iterdir()) == []  # nothing started, nothing written
