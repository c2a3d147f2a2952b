"""genre: infer a music release's genre from its album cover."""

from genre.runtime import configure_threads

__version__ = "0.1.0"

configure_threads()  # before anything imports mxnet: MXNet reads OMP_NUM_THREADS once, at import
