"""`genre predict` over files and folders as a user runs it, with a real logged model in a real SQLite store: the CSV
holds what the model says of each file on its own, bad files are listed and not fatal, `--log-run` and the
MLproject entry point log the CSV."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service.utils import _use_tracking_uri

from genre.cli import main
from genre.cover_model import load_cover_model, log_cover_model
from tests.conftest import PROJECT_ROOT, jpeg_bytes, use_store, write_cover_folder
from tests.test_cover_model import COVERS, GENRES, SIZE, tiny_net

COLUMNS = ["path", "genre", *(f"p_{genre}" for genre in GENRES)]


@dataclass(frozen=True)
class Model:
    tracking_uri: str
    uri: str  # runs:/<id>/model


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Model]:
    """The tiny network logged once in a store of its own."""
    folder = tmp_path_factory.mktemp("predict-model")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch, _use_tracking_uri(uri):
        use_store(patch, uri, folder)
        experiment_id = MlflowClient(uri).create_experiment("model")
        with mlflow.start_run(experiment_id=experiment_id) as run:
            log_cover_model(tiny_net(), GENRES, SIZE, example=COVERS[0])
    yield Model(uri, f"runs:/{run.info.run_id}/model")


@pytest.fixture
def in_store(model: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Model:
    """The test's shell: the model's store, a working folder of its own."""
    use_store(monkeypatch, model.tracking_uri, tmp_path)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return model


def one_by_one(model: Model, paths: list[Path]) -> pd.DataFrame:
    """What the logged model says of each file sent alone, as its bytes (what a client of the server sends)."""
    with _use_tracking_uri(model.tracking_uri):
        loaded = load_cover_model(model.uri)
    rows = [loaded.predict(pd.DataFrame({"image": [path.read_bytes()]})) for path in paths]
    return pd.concat(rows, ignore_index=True)


def read_table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False)


@pytest.fixture
def covers(tmp_path: Path) -> Path:
    """Three genre folders of 30 covers, nested one level deeper for one genre, with a track and two bad files."""
    root = write_cover_folder(tmp_path / "covers", genres=3, per_genre=30, size=40)
    (root / "genre1").rename(root / "nested")
    (root / "deeper").mkdir()
    (root / "nested").rename(root / "deeper" / "genre1")
    (root / "genre0" / "fake.jpg").write_text("a text file named like a cover")
    (root / "genre2" / "zero.png").write_bytes(b"")
    (root / "genre2" / "track.mp3").write_bytes(b"ID3")
    return root


def test_a_folder_becomes_a_csv_equal_to_the_model_on_each_file_with_the_bad_files_listed(
    in_store: Model, covers: Path, capsys
) -> None:
    code = main(
        ["predict", "-q", "-m", in_store.uri, "--output", "out/predictions.csv", "--batch-size", "16", "covers"]
    )
    assert code == 1  # incomplete: two files are not covers
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == [
        "covers/genre0/fake.jpg is not an image (PIL: cannot identify image file)",
        "covers/genre2/zero.png is not an image (empty file (0 bytes))",
    ]
    assert out[2].startswith("90 covers predicted into out/predictions.csv in ")
    assert out[3:] == [
        "2 files could not be used (listed above)",
        "1 file in the folders left out: not named as images (.jpg, .png, ...)",
    ]

    table = read_table(Path("out/predictions.csv"))
    assert list(table.columns) == COLUMNS and len(table) == 90
    expected = sorted(str(p) for p in Path("covers").rglob("*") if p.suffix == ".jpg" and p.name != "fake.jpg")
    assert list(table["path"]) == expected  # path order, the nested folder in its place
    alone = one_by_one(in_store, [Path(p) for p in table["path"]])
    assert list(table["genre"]) == list(alone["genre"])
    np.testing.assert_allclose(table[COLUMNS[2:]].to_numpy(), alone[COLUMNS[2:]].to_numpy(), rtol=1e-5, atol=1e-6)
    assert not list(Path("out").glob("*.partial"))


def test_without_output_each_file_is_printed_in_the_order_given(in_store: Model, tmp_path: Path, capsys) -> None:
    Path("a.jpg").write_bytes(jpeg_bytes(seed=1))
    Path("notes.txt").write_text("not a cover")
    Path("b.png").write_bytes(COVERS[2])
    assert main(["predict", "-q", "-m", in_store.uri, "--top", "2", "b.png", "notes.txt", "gone.jpg", "a.jpg"]) == 1
    lines = capsys.readouterr().out.splitlines()
    alone = one_by_one(in_store, [Path("b.png"), Path("a.jpg")])
    for line, (_, row) in zip([lines[0], lines[3]], alone.iterrows(), strict=True):
        ranked = sorted(GENRES, key=lambda genre: -row[f"p_{genre}"])[:2]
        assert line.split(": ")[1] == ", ".join(f"{genre} {row[f'p_{genre}']:.1%}" for genre in ranked)
    assert lines[0].startswith("b.png: ") and lines[3].startswith("a.jpg: ")
    assert lines[1] == "notes.txt is not an image (PIL: cannot identify image file)"
    assert lines[2] == "gone.jpg cannot be read (No such file or directory)"
    assert len(lines) == 4


def test_log_run_logs_the_csv_and_the_unreadable_files_in_a_run(in_store: Model, covers: Path, capsys) -> None:
    assert main(["predict", "-q", "-m", in_store.uri, "--log-run", "--mlflow-experiment", "mine", "covers"]) == 1
    out = capsys.readouterr().out
    client = MlflowClient(in_store.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("mine").experiment_id])
    assert f"MLflow run {run.info.run_id} at {in_store.tracking_uri}: predictions.csv logged" in out
    assert run.info.status == "FINISHED" and run.data.tags["genre.stage"] == "predict"
    assert run.data.metrics["covers_predicted"] == 90 and run.data.metrics["files_unreadable"] == 2
    assert run.data.params["config.model_uri"] == in_store.uri and run.data.params["inputs"] == "covers"
    logged = read_table(Path(client.download_artifacts(run.info.run_id, "predictions.csv")))
    assert list(logged.columns) == COLUMNS and len(logged) == 90
    unreadable = list(csv.reader(Path(client.download_artifacts(run.info.run_id, "unreadable.csv")).open()))
    assert unreadable == [
        ["path", "problem"],
        ["covers/genre0/fake.jpg", "covers/genre0/fake.jpg is not an image (PIL: cannot identify image file)"],
        ["covers/genre2/zero.png", "covers/genre2/zero.png is not an image (empty file (0 bytes))"],
    ]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--batch-size", "0", "covers"], "'batch_size' must be at least 1, got 0"),
        (["--workers", "-1", "covers"], "'workers' must be at least 0 (0 = one per usable core), got -1"),
        (["empty"], "no cover images in empty (a folder's covers are found by their names: .jpg, .png, ...)"),
        ([""], "which covers? give image files or folders of them"),
    ],
)
def test_nothing_to_predict_is_one_line_before_any_run(in_store: Model, capsys, args: list[str], error: str) -> None:
    Path("covers").mkdir()
    Path("empty").mkdir()
    (Path("empty") / "notes.txt").write_text("no covers here")
    assert main(["predict", "-q", "-m", in_store.uri, "--log-run", *args]) == 2
    assert capsys.readouterr().err == f"genre predict: error: {error}\n"
    client = MlflowClient(in_store.tracking_uri)
    assert client.get_experiment_by_name("genre-predictions") is None


def test_the_mlproject_entry_point_passes_every_parameter() -> None:
    entry = yaml.safe_load((PROJECT_ROOT / "MLproject").read_text())["entry_points"]["predict"]
    passed = {"model_uri", "output", "batch_size", "workers", "quantize", "calibration_covers", "calibration_data"}
    assert set(entry["parameters"]) == {*passed, "inputs"}
    assert all(p["default"] == "" for p in entry["parameters"].values())
    for name in passed:
        assert f"--{name.replace('_', '-')} {{{name}}}" in entry["command"]
    assert entry["command"].endswith("--log-run -- {inputs}")


@pytest.mark.slow
def test_mlflow_run_of_the_predict_entry_point_logs_the_csv(model: Model, tmp_path: Path) -> None:
    import subprocess

    from tests.test_mlproject import mlflow_run_command

    folder = write_cover_folder(tmp_path / "mine", genres=2, per_genre=5, size=40)
    command, env = mlflow_run_command("predict", {"model_uri": model.uri, "inputs": str(folder)}, tmp_path)
    env["MLFLOW_TRACKING_URI"] = model.tracking_uri
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(model.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("mlproject-test").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["genre.stage"] == "predict"
    table = read_table(Path(client.download_artifacts(run.info.run_id, "predictions.csv", str(tmp_path))))
    assert list(table["path"]) == sorted(str(p) for p in folder.rglob("*.jpg"))
    assert "unreadable.csv" not in {a.path for a in client.list_artifacts(run.info.run_id)}
