"""Database passwords stay off command lines: libpq reads them from PGPASSWORD or ~/.pgpass.

A password in an argument is shown to every user of the machine (`ps`, /proc/<pid>/cmdline) for as long as the
process runs, and `mlflow run` records each -P value as a param of its run and prints its command. So the
documented commands pass `postgresql://USER@HOST/DB` and the password in the environment, where psycopg (under
MLflow's and Optuna's SQLAlchemy) finds it. When a user still types a password, `genre` moves it into PGPASSWORD
and restarts itself, same pid, without it; under `mlflow run`, where that comes too late, it refuses.
"""

from __future__ import annotations

import os
import re
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from genre.errors import ConfigError

PASSWORD_VARIABLE = "PGPASSWORD"
# scheme://user:password@ of a PostgreSQL URL (any SQLAlchemy driver); the password ends at its '@', as in
# SQLAlchemy's own parser. Other databases have no environment variable every driver reads, so they are left alone.
_USER_AND_PASSWORD = re.compile(r"(?P<user>postgres(?:ql)?(?:\+\w+)?://[^:/@\s]*):(?P<password>[^@\s]*)@")
_URL = re.compile(r"postgres(?:ql)?(?:\+\w+)?://\S*")


# A password given as a key: a URL's query parameter (`?password=...`, `&password=...`) or a libpq keyword/value
# connection string's (`host=db password=...`), in any case; its value ends at `&`, whitespace or a quote.
_PASSWORD_KEY = re.compile(r"(?i)(?<![\w])(password=)[^&\s'\"]*")


def mask_password(uri: str) -> str:
    """`postgresql://user:secret@host/db` -> `postgresql://user:***@host/db`, and `...?password=secret` ->
    `...?password=***` (also a libpq `password=secret` keyword), for anything shown or logged."""
    return _PASSWORD_KEY.sub(r"\1***", re.sub(r"(?<=://)([^:/@]+):[^@/]*@", r"\1:***@", uri))


@dataclass(frozen=True)
class PasswordFree:
    """Arguments whose PostgreSQL URLs lost their password, and that password (None: there was none)."""

    args: list[str]
    password: str | None
    urls: list[str]  # the URLs that held it, as they read now


def without_password(text: str) -> tuple[str, list[str]]:
    """`--storage=postgresql://u:p%40ss@h/db` -> (`--storage=postgresql://u@h/db`, [`p@ss`]): every PostgreSQL URL
    in `text` without its password (in its user part or its `password=` query parameter), and the passwords taken
    out, percent-decoded as libpq wants them."""
    passwords = [urllib.parse.unquote(match["password"]) for match in _USER_AND_PASSWORD.finditer(text)]
    text = _USER_AND_PASSWORD.sub(r"\g<user>@", text)

    def strip_query(match: re.Match) -> str:
        url, found = _without_query_password(match[0])
        passwords.extend(found)
        return url

    return _URL.sub(strip_query, text), passwords


def _without_query_password(url: str) -> tuple[str, list[str]]:
    """`postgresql://u@h/db?sslmode=require&password=pw` -> (`postgresql://u@h/db?sslmode=require`, [`pw`])."""
    parts = urllib.parse.urlsplit(url)
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    found = [value for key, value in pairs if key.lower() == "password"]
    if not found:
        return url, []
    kept = [(key, value) for key, value in pairs if key.lower() != "password"]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(kept))), found


def take_password(args: Sequence[str]) -> PasswordFree:
    """The arguments before a lone `--` with their database URLs' password taken out (what follows `--` is another
    program's command line). Two different passwords cannot share one PGPASSWORD: that is a `ConfigError`."""
    stop = list(args).index("--") if "--" in args else len(args)
    kept, found, urls = [], set(), []
    for arg in args[:stop]:
        clean, passwords = without_password(arg)
        kept.append(clean)
        found.update(passwords)
        if passwords:
            urls += _URL.findall(clean)
    if len(found) > 1:
        raise ConfigError(
            "two database URLs on the command line carry different passwords, and only one can travel in "
            f"{PASSWORD_VARIABLE}; put both in ~/.pgpass (HOST:PORT:DB:USER:PASSWORD) and drop them from the URLs"
        )
    return PasswordFree([*kept, *args[stop:]], found.pop() if found else None, urls)


def keep_password_off_command_line(command: str, recorded_passwords: Callable[[str], dict[str, str]]) -> None:
    """Called first by `genre COMMAND` as a process: return when its arguments hold no database password; else
    restart it without the password, which then travels in PGPASSWORD, after one line of warning on stderr.

    Refuses with a `ConfigError` when moving it cannot help: `mlflow run` already recorded it in its run (asked of
    `recorded_passwords(run_id)`: the run's params that hold one), or PGPASSWORD holds another password (which other
    connections of this process may need).
    """
    freed = take_password(sys.orig_argv[1:])
    if freed.password is None:
        return
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if run_id:  # `mlflow run` set it; a password in our arguments came from a -P it has logged
        _refuse_if_recorded(run_id, recorded_passwords(run_id))
    if os.environ.get(PASSWORD_VARIABLE, freed.password) != freed.password:
        raise ConfigError(
            f"the database URL {freed.urls[0]} was given with a password and {PASSWORD_VARIABLE} holds another; "
            f"give the password once, in {PASSWORD_VARIABLE} or ~/.pgpass, and the URL without it"
        )
    print(
        f"genre {command}: warning: a database password on the command line is shown to every user of this "
        f"machine (ps); genre moved it into {PASSWORD_VARIABLE}. Next time set {PASSWORD_VARIABLE} (or ~/.pgpass) "
        f"and pass {freed.urls[0]}",
        file=sys.stderr,
    )
    _restart(freed.args, freed.password)


def _refuse_if_recorded(run_id: str, recorded: dict[str, str]) -> None:
    if recorded:
        name, value = next(iter(recorded.items()))
        url = without_password(value)[0]
        raise ConfigError(
            f"mlflow run recorded the database password as param '{name}' of run {run_id} and printed it; delete "
            f"that run (`mlflow runs delete --run-id {run_id}`, then `mlflow gc --run-ids {run_id}`), change the "
            f"password, and rerun with it in {PASSWORD_VARIABLE} (or ~/.pgpass) and -P {name}={url}"
        )


def _restart(args: list[str], password: str) -> NoReturn:
    """Replace this process (same pid, so whoever waits for it still does) by the same command with `args`."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *args], {**os.environ, PASSWORD_VARIABLE: password})
