"""genre: infer a music release's genre from its album cover."""

__version__ = "0.1.0"
