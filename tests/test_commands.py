"""`genre prepare` and `genre baseline` as a user runs them, checked in a real SQLite tracking store."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from genre.cli import main
from tests.conftest import write_cover_folder


@pytest.fixture
def project_configs(tracking_store: str) -> Path:
    """The project's experiments/ folder, seen from the test's working folder."""
    Path("experiments").symlink_to(Path(__file__).resolve().parents[1] / "experiments")
    return Path("experiments")


def only_run(uri: str, experiment: str):
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1
    return client, runs[0]


@pytest.mark.slow
def test_prepare_logs_params_dataset_input_artifacts_and_figure(tracking_store: str, capsys) -> None:
    assert main(["prepare", "--quiet"]) == 0
    assert "prepared digits: 1797 images of 10 genres at 32px" in capsys.readouterr().out

    client, run = only_run(tracking_store, "genre-digits")
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["source_kind"] == "digits" and params["config.image_size"] == "32"
    assert params["config.seed"] == "2015" and params["config.dev_size"] == "1000" and params["genre_count"] == "10"
    assert run.data.metrics["full_train_count"] == 1439 and run.data.metrics["dev_train_count"] == 800
    assert run.data.tags["genre.stage"] == "prepare"

    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "digits"
    assert dataset_input.dataset.digest == params["dataset_digest"]
    assert "data/prepared/digits-32" in dataset_input.dataset.source

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"samples.png", "dataset"} <= artifacts
    dataset_files = {a.path for a in client.list_artifacts(run.info.run_id, "dataset")}
    files = {"split.csv", "report.json", "dataset.json", "near_copies.csv"}
    assert dataset_files == {f"dataset/{name}" for name in files}
    figure = Path(client.download_artifacts(run.info.run_id, "samples.png"))
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 10_000


@pytest.mark.slow
def test_random_forest_baseline_on_the_digits_reaches_what_a_forest_gets(tracking_store: str, project_configs) -> None:
    assert main(["prepare", "--quiet"]) == 0
    assert main(["baseline", "--quiet", "--experiment", "rf-digits"]) == 0
    client = MlflowClient(tracking_store)
    experiment = client.get_experiment_by_name("genre-digits")
    (run,) = client.search_runs([experiment.experiment_id], "tags.`genre.stage` = 'baseline'")
    assert run.data.metrics["test_accuracy"] >= 0.95
    assert run.data.metrics["val_accuracy"] >= 0.93
    assert run.data.params["config.model"] == "rf" and run.data.params["config.trees"] == "200"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"confusion_test.png", "confusion_val.png", "classification_report_test.txt"} <= artifacts


def test_a_named_config_is_found_and_flags_override_it(project_configs: Path, tmp_path: Path) -> None:
    folder = write_cover_folder(tmp_path / "mine", genres=2, per_genre=10)
    assert main(["prepare", "-q", "--dataset", "digits", "--folder", str(folder), "--image-size", "16"]) == 0
    client, run = only_run(f"sqlite:///{tmp_path / 'mlflow.db'}", "genre-mine")
    assert run.data.params["config.image_size"] == "16" and run.data.params["source_kind"] == "folder"
    assert run.data.tags["genre.config_file"] == "experiments/datasets/digits.yaml"


@pytest.mark.parametrize(
    ("config_text", "message"),
    [
        ("image_sise: 64\n", "unknown setting 'image_sise'"),
        ("image_size: big\n", "'image_size' must be int, got 'big'"),
        ("image_size: 0\n", "'image_size' must be in 8..1024 pixels"),
        ("- a list\n", "must hold a mapping"),
    ],
)
def test_a_bad_config_file_is_one_line_naming_the_key(tracking_store: str, capsys, config_text: str, message: str):
    Path("bad.yaml").write_text(config_text)
    assert main(["prepare", "--dataset", "bad.yaml"]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error and error.startswith("genre prepare: error: bad.yaml")


def test_an_unknown_config_name_lists_the_known_ones(project_configs: Path, capsys) -> None:
    assert main(["prepare", "--dataset", "nope"]) == 2
    assert (
        "known names: covers, covers-128, covers-256, covers-64, covers-dev, covers-dev-128, covers-discogs, "
        "covers-discogs-128, digits" in capsys.readouterr().err
    )


def test_a_wrong_flag_is_refused_by_the_parser(tracking_store: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "--image-size", "large"])
    assert exit_info.value.code == 2
    assert "--image-size" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "error"),
    [
        (["prepare", "--dev-size", "-1"], "'dev_size' must be at least 0 (0 = no development subset), got -1"),
        (["prepare", "--image-size", "0"], "'image_size' must be in 8..1024 pixels (unset = 350, digits 32), got 0"),
        (["baseline", "--trees", "0"], "'trees' must be at least 1, got 0"),
        (["evaluate", "--batch-size", "0"], "'batch_size' must be at least 1, got 0"),
        (["predict", "-m", "runs:/0/model", "--top", "0", "cover.jpg"], "'top' must be at least 1, got 0"),
        (["server", "--port", "70000"], "'port' must be in 1..65535, got 70000"),
        (["launch", "--workers", "0", "--", "genre", "train"], "'workers' must be at least 1, got 0"),
    ],
)
def test_a_number_out_of_range_is_one_line_before_any_work(tracking_store: str, capsys, command, error) -> None:
    assert main(command) == 2
    assert capsys.readouterr().err == f"genre {command[0]}: error: {error}\n"
    assert not Path("data").exists() and not Path("mlflow.db").exists()


def test_an_unreachable_tracking_server_fails_fast_before_any_work(tracking_store: str, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    started = time.monotonic()
    assert main(["prepare", "--quiet"]) == 2
    assert time.monotonic() - started < 30  # the promise (30 s); a refused port answers at once, the rest is imports
    error = capsys.readouterr().err
    assert "tracking server http://127.0.0.1:9 cannot be reached" in error
    assert not Path("data").exists()


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.slow
def test_a_model_on_an_unreachable_tracking_server_fails_fast_in_one_line(tracking_store, tmp_path, command) -> None:
    """The model is fetched from the server: its absence is found before loading, not after minutes of retries."""
    import os
    import subprocess
    import sys

    from genre.data.prepare import PrepareConfig, prepare
    from genre.tracking.store import HTTP_LIMITS
    from tests.conftest import PROJECT_ROOT, jpeg_bytes

    model = "runs:/0123456789abcdef0123456789abcdef/model"
    if command == "predict":
        Path("cover.jpg").write_bytes(jpeg_bytes())
        args = ["predict", "-m", model, "cover.jpg"]
    else:
        data = prepare(PrepareConfig(out=str(tmp_path / "digits16"), image_size=16), progress=False).root
        args = ["evaluate", "--model-uri", model, "--data", str(data)]
    env = {key: value for key, value in os.environ.items() if key not in HTTP_LIMITS}  # genre's own defaults
    env |= {"PYTHONPATH": str(PROJECT_ROOT), "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "genre.cli", *args], env=env, capture_output=True, timeout=120)
    assert time.monotonic() - started < 30
    assert result.returncode == 2
    assert result.stderr.decode() == (
        f"genre {command}: error: tracking server http://127.0.0.1:9 cannot be reached ([Errno 111] Connection "
        "refused); start it (`genre server`) or unset MLFLOW_TRACKING_URI to use the local SQLite store\n"
    )


def test_a_baseline_on_a_folder_that_was_never_prepared_says_how_to_prepare(tracking_store: str, capsys) -> None:
    assert main(["baseline", "--data", "nowhere"]) == 2
    assert "nowhere is not a prepared dataset" in capsys.readouterr().err


@pytest.mark.slow
def test_a_baseline_on_unbalanced_genres_logs_balanced_accuracy_macro_f1_and_each_genres_recall(
    unbalanced_covers: Path, tracking_store: str
) -> None:
    from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score

    from genre.stages import baseline
    from genre.stages.baseline import BaselineConfig

    staged = baseline.run(BaselineConfig(data=str(unbalanced_covers), trees=20, workers=1), None, {})

    metrics = MlflowClient(tracking_store).get_run(staged.run_id).data.metrics
    genres = ["genre0", "genre1", "genre2"]
    for split in ("train", "val", "test"):
        # The run's predictions, as pairs (true genre, predicted genre): every metric here is blind to their order.
        matrix = staged.result.scores[split].confusion
        labels, predicted = (np.repeat(axis, matrix.ravel()) for axis in np.indices(matrix.shape).reshape(2, -1))
        present = sorted(set(labels))
        assert metrics[f"{split}_balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predicted))
        macro = f1_score(labels, predicted, average="macro", zero_division=0)
        assert metrics[f"{split}_macro_f1"] == pytest.approx(macro)
        recall = recall_score(labels, predicted, labels=present, average=None)
        assert [metrics[f"{split}_recall_{genres[g]}"] for g in present] == pytest.approx(recall)
    assert sorted(name for name in metrics if name.startswith("test_recall_")) == [f"test_recall_{g}" for g in genres]
    assert math.isnan(metrics["val_recall_genre2"]), "genre2 has no validation cover: no recall, rather than 0"


def test_clean_removes_the_checkpoints_of_finished_runs_only(tracking_store: str, capsys) -> None:
    client = MlflowClient(tracking_store)
    experiment = client.create_experiment("genre-covers")
    folders = {}
    for status in ("FINISHED", "KILLED", "FAILED", "RUNNING", "FINISHED"):
        run_id = client.create_run(experiment).info.run_id
        if status != "RUNNING":
            client.set_terminated(run_id, status)
        folder = Path("checkpoints") / run_id
        folder.mkdir(parents=True)
        (folder / "state.json").write_text("{}")
        (folder / "best.params").write_bytes(bytes(2**20))
        folders[run_id] = (status, folder)
    elsewhere = Path("checkpoints") / ("0" * 32)  # a run of another tracking store
    elsewhere.mkdir()
    notes = Path("checkpoints") / "notes"  # not a run's folder at all
    notes.mkdir()

    assert main(["clean", "--dry-run"]) == 0
    said = capsys.readouterr().out
    assert "would remove the checkpoints of 2 FINISHED run(s) from checkpoints: 2.0 MB" in said
    assert all(folder.exists() for _, folder in folders.values())

    assert main(["clean"]) == 0
    said = capsys.readouterr().out
    assert "removed the checkpoints of 2 FINISHED run(s) from checkpoints: 2.0 MB" in said
    assert "kept 4: 1 FAILED, 1 KILLED, 1 RUNNING, 1 unknown" in said and "genre train --resume RUN_ID" in said
    assert {status for status, folder in folders.values() if folder.exists()} == {"KILLED", "FAILED", "RUNNING"}
    assert elsewhere.exists() and notes.exists()


def test_clean_without_a_tracking_store_removes_nothing_and_makes_no_store(tracking_store: str, capsys) -> None:
    (Path("checkpoints") / ("a" * 32)).mkdir(parents=True)
    assert main(["clean"]) == 0
    assert "nothing to remove: the tracking store" in capsys.readouterr().out
    assert (Path("checkpoints") / ("a" * 32)).exists() and not Path("mlflow.db").exists()


@pytest.mark.slow
def test_the_demos_end_prints_a_predict_command_that_works_and_the_experiments_ui_address(
    tracking_store: str, tmp_path: Path, capsys
) -> None:
    import shlex

    from genre.data.prepare import PrepareConfig, prepare

    prepare(PrepareConfig(out="digits16", image_size=16), progress=False)
    small = ["--epochs", "1", "--conv-filters", "8", "--dense-units", "", "--batch-size", "128"]
    assert main(["train", "-q", "--data", "digits16", *small]) == 0
    capsys.readouterr()

    assert main(["demo-end"]) == 0

    said = capsys.readouterr().out.splitlines()
    experiment = MlflowClient(tracking_store).get_experiment_by_name("genre-digits").experiment_id
    assert said[1].endswith(
        f"ui --backend-store-uri {tracking_store}   # then open "
        f"http://127.0.0.1:5000/#/experiments/{experiment}?workflowType=machine_learning"  # the Model training view
    )
    command = shlex.split(said[3])
    (run,) = MlflowClient(tracking_store).search_runs([experiment], "tags.`genre.stage` = 'train'")
    assert command[1:4] == ["predict", "--model-uri", f"runs:/{run.info.run_id}/model"]
    image = Path(command[4])
    assert image.parent.parent == Path("digits16/images") and f"genre {image.parent.name}:" in said[2]
    assert main(command[1:]) == 0
    assert capsys.readouterr().out.startswith(f"{image}: ")


def test_a_covers_example_image_is_its_source_file_or_else_its_packed_pixels(unbalanced_covers: Path) -> None:
    import shutil

    from PIL import Image

    from genre.commands import example_image
    from genre.data.pack import DatasetInfo, open_pack

    info = DatasetInfo.read(unbalanced_covers)
    image, genre = example_image(unbalanced_covers, info, "full")
    assert image == Path(info.source.removeprefix("file://")) / info.files["full/test"][0] and image.is_file()
    shutil.rmtree(image.parent.parent)  # the source folder moved away

    image, genre = example_image(unbalanced_covers, info, "full")
    assert image.parent == unbalanced_covers / "examples" and genre == info.files["full/test"][0].split("/")[0]
    pixels = np.asarray(Image.open(image))
    assert np.array_equal(pixels, open_pack(unbalanced_covers, "full", "test").images[0])
