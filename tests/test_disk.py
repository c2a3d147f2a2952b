"""Disk faults as a user meets them: a folder that cannot be written, a disk that is full, a write that fails."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from genre.disk import check_writable, disk_faults, reserve
from genre.errors import DiskError


def refused(folder: Path, **kwargs: int) -> str:
    with pytest.raises(DiskError) as caught:
        check_writable(folder, "checkpoint folder", "--checkpoint-dir", **kwargs)
    message = str(caught.value)
    assert "\n" not in message and message.endswith("--checkpoint-dir"), message
    return message


def test_a_writable_folder_passes_and_a_missing_one_is_not_created(tmp_path: Path) -> None:
    check_writable(tmp_path / "checkpoints" / "run", "checkpoint folder", "--checkpoint-dir")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor the probe file is left


def test_a_read_only_folder_is_named_with_what_to_do(read_only_folder: Path) -> None:
    message = refused(read_only_folder / "checkpoints")
    assert message.startswith(f"checkpoint folder {read_only_folder / 'checkpoints'} is not writable (")
    assert "make it writable or choose another with --checkpoint-dir" in message


def test_a_folder_under_a_regular_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a folder")
    message = refused(tmp_path / "notes.txt" / "checkpoints")
    assert f"{tmp_path / 'notes.txt'} is a file, not a folder" in message


def test_a_full_disk_is_refused_before_work_with_what_is_free_and_needed(small_disk) -> None:
    disk = small_disk(512)
    message = refused(disk, min_free=2**20)
    assert message.startswith(f"not enough space for the checkpoint folder {disk}: 0.5 MB free, 1.0 MB needed; ")


def test_a_memory_mapped_file_on_a_full_disk_is_an_error_not_a_crash(small_disk) -> None:
    # Without `reserve`, writing the map's pages kills the process with SIGBUS and no message.
    disk = small_disk(256)
    images = np.lib.format.open_memmap(disk / "staging.npy", mode="w+", dtype=np.uint8, shape=(64, 64, 64, 3))
    with pytest.raises(OSError) as caught:
        reserve(disk / "staging.npy")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(disk / "staging.npy")
    del images


def test_reserve_allocates_a_file_that_fits(tmp_path: Path) -> None:
    images = np.lib.format.open_memmap(tmp_path / "pack.npy", mode="w+", dtype=np.uint8, shape=(4, 64, 64, 3))
    reserve(tmp_path / "pack.npy")
    assert (tmp_path / "pack.npy").stat().st_blocks * 512 >= images.nbytes  # allocated, not a sparse file
    del images


def test_a_write_to_a_full_device_becomes_one_line_naming_the_file_and_what_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.symlink_to("/dev/full")  # every write to /dev/full fails with ENOSPC, as on a full disk
    with pytest.raises(DiskError) as caught, disk_faults(tmp_path, "earlier work is kept: free some space"):
        with open(target, "w") as handle:
            handle.write("{}")
    assert str(caught.value) == f"no space left on device writing {tmp_path}; earlier work is kept: free some space"
    assert caught.value.__context__ is None  # nothing beneath it for a handler to mistake for a lost store


def test_a_full_sqlite_database_is_a_full_disk(tmp_path: Path) -> None:
    database = sqlite3.connect(tmp_path / "mlflow.db")
    database.execute("CREATE TABLE metrics (value BLOB)")
    database.execute("PRAGMA max_page_count = 2")  # SQLite's own "database or disk is full", as on a full disk
    with pytest.raises(DiskError) as caught, disk_faults(tmp_path, "free some space", "sqlite:///mlflow.db"):
        database.execute("INSERT INTO metrics VALUES (?)", (b"x" * 100_000,))
    message = "no space left on device writing the SQLite database sqlite:///mlflow.db; free some space"
    assert str(caught.value) == message


def test_other_errors_pass_through_unchanged(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError), disk_faults(tmp_path, "free some space"):
        (tmp_path / "missing.txt").read_text()
