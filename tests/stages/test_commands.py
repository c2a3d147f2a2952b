"""`genre prepare` and `genre baseline` as a user runs them (and any stage's flags and config files, refused before
any work), checked in a real SQLite tracking store."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from genre.cli import main
from tests.conftest import PROJECT_ROOT, assert_genre_metrics, write_cover_folder


@pytest.fixture
def project_configs(tracking_store: str) -> Path:
    """The project's experiments/ folder, seen from the test's working folder."""
    Path("experiments").symlink_to(PROJECT_ROOT / "experiments")
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

    from genre.data.config import PrepareConfig
    from genre.data.prepare import prepare
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
    from genre.command_config import BaselineConfig
    from genre.stages import baseline

    staged = baseline.run(BaselineConfig(data=str(unbalanced_covers), trees=20, workers=1), None, {})

    metrics = MlflowClient(tracking_store).get_run(staged.run_id).data.metrics
    genres = ["genre0", "genre1", "genre2"]
    for split in ("train", "val", "test"):
        # The run's predictions, as pairs (true genre, predicted genre): every metric here is blind to their order.
        matrix = staged.result.scores[split].confusion
        labels, predicted = (np.repeat(axis, matrix.ravel()) for axis in np.indices(matrix.shape).reshape(2, -1))
        assert_genre_metrics(metrics, split, labels, predicted, genres)
    assert sorted(name for name in metrics if name.startswith("test_recall_")) == [f"test_recall_{g}" for g in genres]
    assert math.isnan(metrics["val_recall_genre2"]), "genre2 has no validation cover: no recall, rather than 0"
