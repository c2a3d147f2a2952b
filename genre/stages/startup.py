"""What a stage's command does around its work: SIGTERM stops it as Ctrl-C does, and the bundled dataset is prepared
on first use."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from genre.data.config import DEFAULT_DATASET, PrepareConfig
from genre.data.pack import DATASET_FILE
from genre.data.prepare import prepare_if_missing


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (`kill PID`) stops the command the way Ctrl-C does: `KeyboardInterrupt` in the
    main thread, so worker processes are stopped, the run ends KILLED and finished work is kept."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def ensure_dataset(data: str, progress: bool) -> None:
    """The bundled default is prepared on first use (saying so); any other missing dataset is the user's to
    prepare."""
    root = Path(data)
    if (root / DATASET_FILE).exists() or data != DEFAULT_DATASET:
        return
    print(f"{root} is not prepared yet: preparing the bundled digits first")
    prepare_if_missing(PrepareConfig(out=data), progress=progress)  # unless another process did meanwhile
