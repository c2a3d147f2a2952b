"""The project's own exception types (every message says what was wrong and what to do), and the exit status a
command ends with."""

# What `genre <command>` returns: done; done, but some inputs were left out (predict's unreadable files); an error
# of ours (one line); interrupted (Ctrl-C or SIGTERM; finished work is kept).
EXIT_OK, EXIT_INCOMPLETE, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


class GenreError(Exception):
    """An error the user can act on; the CLI prints it as one line and exits non-zero."""


class ConfigError(GenreError):
    """A configuration file or flag that cannot be used as given."""


class DataError(GenreError):
    """Input data (manifest, image folder, pack) that cannot be used as given."""


class TrackingError(GenreError):
    """The MLflow tracking store cannot be reached or used."""


class DiskError(GenreError):
    """A folder that cannot be written, or a disk that filled up (see `genre.disk`)."""


class StoreUnreachable(BaseException):  # noqa: N818 - named for what happened, like KeyboardInterrupt
    """The tracking store stopped answering in the middle of a command.

    Like `KeyboardInterrupt` it is not an `Exception`, so what carries on past one failed trial or experiment (an
    Optuna study, a suite) stops instead of failing every next one against a dead store; the CLI prints it as one
    line. `run_id` is the run that was being logged, if any.
    """

    def __init__(self, message: str, run_id: str | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id


def some_of(names: list[str], limit: int) -> str:
    """The first `limit` of `names` for a message, and how many more there are: `a, b (+3 more)`."""
    return ", ".join(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")
