"""Disk faults as one line a user can act on: folders checked for writing before work starts, and a full disk
named where it strikes, with what was kept.

Nothing here knows about MXNet or MLflow; their writers report a failed write in their own ways (an MXNet error
without an errno, SQLite's "database or disk is full"), which their callers turn into `OSError`s or pass to
`disk_fault`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

from genre.errors import DiskError

FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
NOT_WRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
MIN_FREE_BYTES = 2**20  # less than this at the start is a full disk: the SQLite store alone grows by more per run


def _megabytes(count: int) -> str:
    return f"{count / 2**20:.1f} MB"


def existing_folder(path: Path) -> Path:
    """`path`, or the nearest folder above it that exists: where a missing `path` would be created."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(folder: Path, what: str, flag: str, min_free: int = MIN_FREE_BYTES) -> None:
    """Raise a one-line `DiskError` naming `folder` (described as `what`; `flag` is the option that chooses
    another) unless a new file can be made in it, or where it would be created, and its disk has at least
    `min_free` bytes free.

    It really makes (and removes) a file, so it answers for root, read-only mounts and ACLs alike, where
    permission bits or `os.access` do not; a missing `folder` is not created.
    """
    existing = existing_folder(folder)
    if not existing.is_dir():
        raise DiskError(f"{what} {folder}: {existing} is a file, not a folder; choose another with {flag}")
    try:
        handle, probe = tempfile.mkstemp(prefix=".genre-write-check-", dir=existing)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise DiskError(
            f"{what} {folder} is not writable ({error.strerror}); make it writable or choose another with {flag}"
        ) from None
    free = shutil.disk_usage(existing).free
    if free < min_free:
        raise DiskError(
            f"not enough space for the {what} {folder}: {_megabytes(free)} free, {_megabytes(min_free)} needed; "
            f"free some space or choose another folder with {flag}"
        )


def check_output_file(path: Path, what: str, flag: str) -> None:
    """Before the work whose result goes to the file `path`: a one-line `DiskError` when `path` is a folder, or its
    folder cannot be written (`check_writable`)."""
    if path.is_dir():
        raise DiskError(f"{flag} {path} is a folder; give the {what} a file name (a new file in it, say)")
    check_writable(path.parent, f"the {what}'s folder", flag)


def local_folder(uri: str) -> Path | None:
    """The folder a `file:` URI or a plain path names; None for a remote one (`s3://`, `mlflow-artifacts:/`)."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if not parsed.scheme or len(parsed.scheme) == 1:  # a plain path (a drive letter on Windows)
        return Path(uri)
    return None


def reserve(path: Path) -> None:
    """Allocate the whole of an existing file (a memory-mapped pack) now, so that a full disk is an `OSError` here
    rather than a SIGBUS, with no message, when a page of the map is written later."""
    with open(path, "r+b") as handle:
        size = os.fstat(handle.fileno()).st_size
        try:
            os.posix_fallocate(handle.fileno(), 0, size)
        except OSError as error:
            if error.errno in FULL:
                raise OSError(error.errno, error.strerror, str(path)) from None
            if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system that cannot: write as before
                raise


def failed_write(path: Path, needed: int, detail: str) -> OSError:
    """The `OSError` behind a write that failed without an errno (MXNet's writer reports a short write only):
    ENOSPC when the disk of `path` has less than `needed` bytes free (the file's size), else EIO with `detail`."""
    free = shutil.disk_usage(existing_folder(path.parent)).free
    if free < needed:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return OSError(errno.EIO, detail, str(path))


def describe(error: OSError, path: Path | str | None = None) -> str | None:
    """For a disk fault, 'no space left on device writing PATH' or 'Read-only file system: PATH' (`path` stands in
    when the error names no file); None for any other `OSError`."""
    named = error.filename2 or error.filename or path
    if error.errno in FULL:
        return "no space left on device" + (f" writing {named}" if named else "")
    if error.errno in NOT_WRITABLE:
        return f"{error.strerror}" + (f": {named}" if named else "")
    return None


def disk_fault(error: BaseException, path: Path | str | None = None, database: str = "") -> str | None:
    """`describe` for `error` or whatever caused it, SQLite's "database or disk is full" included (what MLflow's
    and Optuna's SQLite stores raise on a full disk; `database` names it); None when no disk fault is behind it."""
    for cause in causes(error):
        if isinstance(cause, OSError) and (message := describe(cause, path)):
            return message
        if _full_database(cause):
            return f"no space left on device writing the SQLite database {database}".rstrip()
    return None


def causes(error: BaseException | None) -> Iterator[BaseException]:
    """`error`, then what caused it (`__cause__`, else `__context__`), each once."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _full_database(error: BaseException) -> bool:
    return isinstance(error, sqlite3.OperationalError) and "disk is full" in str(error)


def full_database(error: BaseException | None) -> bool:
    """Whether `error`, or what caused it, is SQLite's "database or disk is full"."""
    return any(_full_database(cause) for cause in causes(error))


@contextlib.contextmanager
def disk_faults(path: Path | str, then: str, database: str = "") -> Iterator[None]:
    """Within the block, a full or read-only disk (see `disk_fault`) raises a one-line `DiskError`: what failed
    on which file (`path` when the error names none), then `then` (what is kept and what to do). Any other error
    passes through unchanged."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - only disk faults are translated; the rest is re-raised
        message = disk_fault(error, path, database)
        if message is None:
            raise
        fault = DiskError(f"{message}; {then}")
        try:
            raise fault from None
        finally:  # a handler further out that looks beneath a failure (for a lost tracking store) finds nothing
            fault.__context__ = None
