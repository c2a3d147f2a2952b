"""Shared fixtures: real image files, a real SQLite tracking store, a project-local working folder."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest_plugins = ["tests.coverserver"]

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def jpeg_bytes(size: tuple[int, int] = (64, 48), seed: int = 0, quality: int = 90) -> bytes:
    """A real JPEG of smooth random colour (compresses like a photo, decodes deterministically)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize(size, Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def write_cover_folder(root: Path, genres: int = 3, per_genre: int | Sequence[int] = 10, size: int = 64) -> Path:
    """`root/<genre>/<n>.jpg` with real JPEGs; returns root. `per_genre` may give each genre its own count
    (unbalanced genres, as real cover sets are)."""
    counts = [per_genre] * genres if isinstance(per_genre, int) else list(per_genre)
    for g, count in enumerate(counts):
        folder = root / f"genre{g}"
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(count):
            (folder / f"{n:03d}.jpg").write_bytes(jpeg_bytes((size, size), seed=g * 1000 + n))
    return root


def refused(make: Callable[..., Any], settings: dict[str, Any], named: str) -> str:
    """`make(**settings)` must raise a one-line `ConfigError` that starts by naming setting `named` (what the CLI
    prints after "genre COMMAND: error: "); returns the message."""
    from genre.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        make(**settings)
    message = str(caught.value)
    assert message.startswith(f"'{named}'"), message
    assert "\n" not in message and "got" in message, message
    return message


@pytest.fixture
def unbalanced_covers(tracking_store: str, tmp_path: Path) -> Path:
    """Three genres of 40, 16 and 4 covers packed at 16px and split 60/10/30, so genre2 is a tenth of genre0, has
    no validation cover and one test cover: the shape of a real, unbalanced cover set, in a second."""
    from genre.data.config import PrepareConfig
    from genre.data.prepare import prepare

    folder = write_cover_folder(tmp_path / "unbalanced", per_genre=(40, 16, 4), size=16)
    splits = {"train_fraction": 0.6, "val_fraction": 0.1, "test_fraction": 0.3}
    config = PrepareConfig(folder=str(folder), out=str(tmp_path / "unbalanced-16"), image_size=16, **splits)
    return prepare(config, progress=False).root


def use_store(patch: pytest.MonkeyPatch, uri: str, folder: Path) -> None:
    """Point MLflow at the store `uri` and work in `folder`, with no run or experiment of the caller's environment,
    nor the experiment an earlier test made active in this process (in another store, where its id means nothing)."""
    import mlflow.tracking.fluent

    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        patch.delenv(name, raising=False)
    patch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    patch.setenv("MLFLOW_TRACKING_URI", uri)
    patch.chdir(folder)


@pytest.fixture
def tracking_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite tracking store; the test runs in tmp_path so relative outputs land there."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    use_store(monkeypatch, uri, tmp_path)
    yield uri
    import mlflow

    while mlflow.active_run():
        mlflow.end_run()


POSTGRES = "postgresql://postgres@127.0.0.1:5432"


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The local PostgreSQL (trust auth). Missing, the tests that need it skip, unless CI requires it."""
    import os

    import psycopg

    try:
        psycopg.connect(f"{POSTGRES}/postgres", connect_timeout=30).close()  # absent refuses at once; busy is slow
    except psycopg.OperationalError as error:
        if os.environ.get("GENRE_REQUIRE_POSTGRES"):
            raise
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432 ({error}); start one to run this test")
    return POSTGRES


@pytest.fixture
def postgres_database(postgres_server: str):
    """A database of its own, dropped afterwards; returns its name."""
    import uuid

    import psycopg

    name = f"genre_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(f"{postgres_server}/postgres", autocommit=True)
    admin.execute(f"CREATE DATABASE {name}")
    yield name
    admin.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
    admin.execute(f"DROP DATABASE {name}")
    admin.close()


def mount_small_disk(folder: Path, kilobytes: int, read_only: bool = False) -> bool:
    """Mount a tmpfs of `kilobytes` on `folder` (made if missing): a disk that really fills up, or a really read-only
    one. False where this process may not mount (not root, or no CAP_SYS_ADMIN)."""
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={kilobytes}k" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    return mounted.returncode == 0


def unmount(folder: Path) -> None:
    import subprocess

    subprocess.run(["umount", "--lazy", str(folder)], capture_output=True, check=True)


@pytest.fixture
def small_disk(tmp_path: Path):
    """`small_disk(kilobytes)`: a fresh folder on a tmpfs of that size, unmounted afterwards. Skips where this process
    may not mount; the tests that need no rights make a write fail with ENOSPC at /dev/full instead."""
    mounted: list[Path] = []

    def make(kilobytes: int) -> Path:
        folder = tmp_path / f"disk-{len(mounted)}"
        if not mount_small_disk(folder, kilobytes):
            pytest.skip("mounting a small tmpfs (a disk that fills up) needs root with CAP_SYS_ADMIN")
        mounted.append(folder)
        return folder

    yield make
    for folder in reversed(mounted):
        unmount(folder)


@pytest.fixture
def read_only_folder(tmp_path: Path):
    """A folder in which no file can be made: mode 0o555 for a user; for root, whom mode bits do not stop, a
    read-only tmpfs, else an immutable folder (`chattr +i`). Skips only where none of these is allowed."""
    import os
    import subprocess

    folder = tmp_path / "read-only"
    if os.geteuid() != 0:
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
    elif mount_small_disk(folder, 1024, read_only=True):
        yield folder
        unmount(folder)
    elif subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        yield folder
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        pytest.skip("as root, a read-only folder needs a read-only mount or chattr +i, and neither is allowed here")


def assert_genre_metrics(metrics: dict, prefix: str, labels, predicted, genres: list[str]) -> None:
    """A run's `<prefix>_balanced_accuracy`, `_macro_f1` and per-genre `_recall_<genre>` are scikit-learn's on these
    predictions (recall only for the genres present)."""
    from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score

    present = sorted(set(labels))
    assert metrics[f"{prefix}_balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predicted))
    assert metrics[f"{prefix}_macro_f1"] == pytest.approx(f1_score(labels, predicted, average="macro", zero_division=0))
    recall = recall_score(labels, predicted, labels=present, average=None)
    assert [metrics[f"{prefix}_recall_{genres[g]}"] for g in present] == pytest.approx(recall)
