"""Shared fixtures: real image files, a real SQLite tracking store, a project-local working folder."""

from __future__ import annotations

import io
from pathlib import Path

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


def write_cover_folder(root: Path, genres: int = 3, per_genre: int = 10, size: int = 64) -> Path:
    """`root/<genre>/<n>.jpg` with real JPEGs; returns root."""
    for g in range(genres):
        folder = root / f"genre{g}"
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(per_genre):
            (folder / f"{n:03d}.jpg").write_bytes(jpeg_bytes((size, size), seed=g * 1000 + n))
    return root


@pytest.fixture
def tracking_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite tracking store; the test runs in tmp_path so relative outputs land there."""
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    yield uri
    import mlflow

    while mlflow.active_run():
        mlflow.end_run()
