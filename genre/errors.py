"""The project's own exception types: every message says what was wrong and what to do."""


class GenreError(Exception):
    """An error the user can act on; the CLI prints it as one line and exits non-zero."""


class ConfigError(GenreError):
    """A configuration file or flag that cannot be used as given."""


class DataError(GenreError):
    """Input data (manifest, image folder, pack) that cannot be used as given."""


class TrackingError(GenreError):
    """The MLflow tracking store cannot be reached or used."""
