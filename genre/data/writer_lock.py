"""One writer at a time per folder that `prepare` writes (a dataset's packs, a manifest's downloads).

Two `genre prepare` into one folder, or two `genre train` auto-preparing the bundled digits at once, would otherwise
write each other's `.partial/` packs and leave a complete-looking dataset of mixed or zeroed rows. The lock is
`flock` on `<folder>/.writer.lock`: the kernel releases it when its holder exits, however it exits (SIGKILL
included), so a stale lock cannot outlive a process (a killed holder leaves the empty file, which the next writer
takes over). A second writer says which process it waits for, then waits.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_FILE = ".writer.lock"


def lock_holder(path: Path) -> str:
    """What the lock file says of its holder: `process 1234`, or `another process` when it says nothing yet."""
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"process {pid}" if pid.isdigit() else "another process"


@contextlib.contextmanager
def writer_lock(folder: Path, what: str) -> Iterator[None]:
    """Hold `folder`'s writer lock (creating the folder) for the block; wait, saying so, while another holds it.

    The holder removes the lock file before releasing it, so nothing is left behind; a waiter that then wins the
    lock of a removed file opens the path again (the usual `flock` protocol for lock files that come and go)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    said = False
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not said:
                log.warning("%s %s is being written by %s: waiting for it to finish", what, folder, lock_holder(path))
                said = True
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            current = os.stat(path).st_ino == os.fstat(handle).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(handle)  # the holder removed this file as it finished: lock the path anew
    try:
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(handle)
