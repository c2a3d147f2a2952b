"""What a new user reads when running `genre` (issue 17, item 3): the project's own lines, not its dependencies'.

The commands run as a user runs them, each in its own process from a shell whose environment turns nothing off, on a
tiny folder of real JPEGs with a fresh SQLite store.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import jpeg_bytes, write_cover_folder

# What MLflow printed before: its pickling warning when a model is logged, its progress bars (and the lines they left)
# whenever a model is saved or loaded, and INFO lines such as "Validating input example against model signature".
NOISE = ("CloudPickle", "Downloading artifacts", "Validating input example", "Updating database tables")
MLFLOW_LOG_LINE = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (INFO|WARNING) mlflow", re.MULTILINE)


def genre(*args: str, cwd: Path) -> str:
    """stdout and stderr of `genre ARGS` (which must succeed), with progress bars' carriage returns as new lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_") and k != "PYTHONPATH"}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{cwd / 'mlflow.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "genre.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    output = (done.stdout + done.stderr).replace("\r", "\n")
    assert done.returncode == 0, output
    return output


@pytest.mark.slow
def test_prepare_train_and_predict_print_genres_lines_and_none_of_mlflows(tmp_path: Path) -> None:
    write_cover_folder(tmp_path / "tiny", genres=3, per_genre=12, size=16)
    (tmp_path / "cover.jpg").write_bytes(jpeg_bytes((40, 30), seed=7))

    prepared = genre("prepare", "--folder", "tiny", "--image-size", "16", cwd=tmp_path)
    network = ("--model", "mlp", "--hidden-units", "8")
    trained = genre("train", "--data", "data/prepared/tiny-16", "--epochs", "1", *network, cwd=tmp_path)
    model_uri = re.search(r"model: (runs:/\w+/model)", trained)
    assert model_uri, trained
    predicted = genre("predict", "--model-uri", model_uri.group(1), "cover.jpg", cwd=tmp_path)

    assert "prepared tiny: 36 images of 3 genres" in prepared
    assert "epoch 1/1: loss" in trained and "test accuracy" in trained
    assert re.search(r"^cover\.jpg: genre\d \d+\.\d%", predicted, re.MULTILINE), predicted
    for command, output in (("prepare", prepared), ("train", trained), ("predict", predicted)):
        assert not [noise for noise in NOISE if noise in output], f"genre {command} printed:\n{output}"
        assert not MLFLOW_LOG_LINE.search(output), f"genre {command} printed MLflow's log lines:\n{output}"
