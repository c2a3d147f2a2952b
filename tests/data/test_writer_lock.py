"""One writer per dataset folder, and packs checked against their digests when opened (issue 25, case 1).

Two `genre prepare` into one `--out` used to write each other's `.partial/` packs: one died, the other exited 0
with zeroed rows and wrong digests, and nothing noticed later."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from genre.data import pack
from genre.data.config import DEFAULT_DATASET, PrepareConfig
from genre.data.pack import DATASET_FILE, open_pack, pack_paths
from genre.data.prepare import prepare
from genre.data.writer_lock import LOCK_FILE, writer_lock
from genre.errors import DataError
from tests.conftest import PROJECT_ROOT, write_cover_folder
from tests.data.test_prepare import finish, pack_files, run_prepare


def wait_for(condition, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


@pytest.mark.slow
def test_two_prepares_into_one_folder_take_turns_and_leave_what_a_lone_run_leaves(tmp_path: Path) -> None:
    folder = write_cover_folder(tmp_path / "my-covers", genres=3, per_genre=30, size=160)
    common = ["--folder", str(folder), "--image-size", "64", "--workers", "1"]
    finish(run_prepare([*common, "--out", "lone"], tmp_path))

    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    with writer_lock(tmp_path / "shared", "dataset folder"):  # both start while the folder is taken
        writers = [run_prepare([*common, "--out", "shared"], tmp_path, log.open("w")) for log in logs]
        for log in logs:
            wait_for(lambda log=log: "being written by" in log.read_text(), f"{log.name} to say it waits")
        assert not (tmp_path / "shared" / ".partial").exists()  # neither wrote anything while waiting
    for writer in writers:  # then they race each other for the folder
        assert writer.wait(timeout=600) == 0, [log.read_text() for log in logs]

    said = logs[0].read_text()
    assert f"dataset folder shared is being written by process {os.getpid()}: waiting" in said
    assert pack_files(tmp_path / "shared") == pack_files(tmp_path / "lone")
    assert not (tmp_path / "shared" / LOCK_FILE).exists()
    for split in ("train", "val", "test"):
        open_pack(tmp_path / "shared", "full", split)  # every pack matches its digest


@pytest.mark.slow
def test_two_trainings_preparing_the_bundled_digits_at_once_both_train_on_one_good_pack(tmp_path: Path) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "PYTHONPATH": str(PROJECT_ROOT)}
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(name, None)
    subprocess.run([sys.executable, "-m", "genre.cli", "prepare", "-q", "--out", "lone"], cwd=tmp_path, env=env,
                   check=True, capture_output=True, timeout=600)  # fmt: skip
    small = ["--epochs", "1", "--conv-filters", "8", "--dense-units", "", "--batch-size", "64"]
    trainings = [
        subprocess.Popen(
            [sys.executable, "-m", "genre.cli", "train", "-q", *small],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    outputs = [training.communicate(timeout=900)[0] for training in trainings]

    assert [training.returncode for training in trainings] == [0, 0], outputs
    assert pack_files(tmp_path / DEFAULT_DATASET) == pack_files(tmp_path / "lone")


def prepared(tmp_path: Path) -> Path:
    folder = write_cover_folder(tmp_path / "my-covers", genres=2, per_genre=12, size=32)
    config = PrepareConfig(folder=str(folder), out=str(tmp_path / "packed"), image_size=16, workers=1)
    return prepare(config, progress=False).root


def test_a_pack_changed_after_prepare_is_refused_when_opened(tmp_path: Path) -> None:
    root = prepared(tmp_path)
    open_pack(root, "full", "train")
    images = np.load(pack_paths(root, "full", "train")[0], mmap_mode="r+")
    images[:3] = 0  # what the race left: complete-looking files, some rows zeroed
    images.flush()
    del images

    with pytest.raises(DataError, match=r"pack full/train of .* is not what prepare wrote .* prepare it again"):
        open_pack(root, "full", "train")
    open_pack(root, "full", "val")  # the others are still good


def test_a_verified_pack_is_hashed_again_only_when_its_files_change(tmp_path: Path, monkeypatch) -> None:
    root = prepared(tmp_path)
    hashed = []
    real = pack.content_digest
    monkeypatch.setattr(pack, "content_digest", lambda *args: hashed.append(1) or real(*args))

    open_pack(root, "full", "train")
    open_pack(root, "full", "train")
    assert len(hashed) == 1
    images_path = pack_paths(root, "full", "train")[0]
    os.utime(images_path, ns=(time.time_ns(), time.time_ns() + 10**9))
    open_pack(root, "full", "train")
    assert len(hashed) == 2


def test_a_killed_holder_leaves_a_lock_the_next_writer_takes(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\nfrom genre.data.writer_lock import "
         "writer_lock\nwith writer_lock(Path(sys.argv[1]), 'x'):\n    print('held', flush=True)\n    time.sleep(600)",
         str(folder)],
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    assert (folder / LOCK_FILE).exists()  # SIGKILL gave it no chance to tidy up

    with writer_lock(folder, "dataset folder"):  # the kernel released its lock with the process
        assert (folder / LOCK_FILE).read_text().strip() == str(os.getpid())
    assert not (folder / LOCK_FILE).exists()
    assert not (folder / DATASET_FILE).exists()
