"""The project's own exception types: every message says what was wrong and what to do."""


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
