"""`genre interpret` as a user runs it: the most confused genres and the calibration of a trained model, logged into
the model's own run without disturbing it (or into a new run); and what it logs, read from a recording tracker."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from genre.cli import main
from genre.command_config import InterpretConfig
from genre.data.config import PrepareConfig
from genre.data.prepare import prepare
from genre.errors import DiskError
from genre.metrics import interpret_split
from genre.models import explain
from genre.stages import interpret
from genre.training.loop import Evaluation
from tests.recording import RecordingTracker

SMALL = ["--epochs", "2", "--batch-size", "32", "--conv-filters", "8", "--dense-units", "32", "-q"]
ARTIFACTS = {
    "interpret/confused_pairs_test.csv",
    "interpret/confused_pairs_test.png",
    "interpret/confusion_normalised_test.png",
    "interpret/reliability_test.png",
}

PICTURES = {
    "interpret/heatmaps_right_test.png",
    "interpret/heatmaps_mistakes_test.png",
    "interpret/cover_map_test.png",
    "interpret/cover_map_test.csv",
    "interpret/neighbours_test.png",
}
QUICK = ["--heatmaps", "0", "--cover-map", "none", "--neighbours", "0"]  # only the confusions and calibration


@pytest.fixture
def digits16(tracking_store: str, tmp_path: Path) -> Path:
    """The bundled digits packed at 16x16: small enough to train in seconds."""
    return prepare(PrepareConfig(out=str(tmp_path / "digits16"), image_size=16), progress=False).root


def train_small(data: Path, store: str, *flags: str) -> tuple[MlflowClient, object]:
    """Train a small conv net on `data` (with `flags`); the store's client and the training run."""
    assert main(["train", "--data", str(data), *SMALL, *flags]) == 0
    client = MlflowClient(store)
    (trained,) = client.search_runs([client.get_experiment_by_name("genre-digits").experiment_id])
    return client, trained


def artifacts(client: MlflowClient, run_id: str) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, "interpret")}


@pytest.mark.slow
def test_interpret_logs_into_the_models_finished_run_and_leaves_it_as_it_was(
    digits16: Path, tracking_store: str, capsys, monkeypatch
) -> None:
    client, trained = train_small(digits16, tracking_store)
    run_id = trained.info.run_id
    capsys.readouterr()

    started = time.monotonic()
    assert main(["interpret", "-q", "--model-uri", f"runs:/{run_id}/model", "--data", str(digits16)]) == 0
    seconds = time.monotonic() - started
    output = capsys.readouterr().out

    after = client.get_run(run_id)
    assert artifacts(client, run_id) == ARTIFACTS | PICTURES
    assert 0 <= after.data.metrics["test_ece"] <= 1
    assert 0.1 <= after.data.metrics["test_top1_confidence"] <= 1  # ten genres: at least a tenth
    assert after.info.status == "FINISHED" and after.info.end_time == trained.info.end_time  # report's durations
    assert after.data.params == trained.data.params
    assert after.data.tags["genre.stage"] == "train"
    assert f"MLflow run {run_id} at {tracking_store}: the model's run" in output
    assert f"ECE {after.data.metrics['test_ece']:.3f} over 179 images" in output
    assert "heatmaps: Grad-CAM on layer convnet_hybridsequential0_relu0_fwd" in output
    assert seconds < 120, seconds  # the bound is for 250 images on 2 cores; these are 179 smaller ones
    csv = client.download_artifacts(run_id, "interpret/confused_pairs_test.csv", str(Path("downloaded")))
    lines = Path(csv).read_text().splitlines()
    assert lines[0] == "true,predicted,count,share"
    wrong = round((1 - after.data.metrics["test_accuracy"]) * 179)
    assert sum(int(line.split(",")[2]) for line in lines[1:]) == wrong  # every confused cover, once

    # Another split joins the same run: no param changes, so MLflow accepts it.
    val = ["--data", str(digits16), "--split", "val", *QUICK]
    assert main(["interpret", "-q", "--model-uri", f"runs:/{run_id}/model", *val]) == 0
    again = client.get_run(run_id)
    assert "val_ece" in again.data.metrics and "interpret/reliability_val.png" in artifacts(client, run_id)
    assert again.info.status == "FINISHED" and again.info.end_time == trained.info.end_time

    # Ctrl-C or a failure while logging stops the command, and the run is still FINISHED, ended when it was.
    for failure, code in ((KeyboardInterrupt(), 130), (DiskError("the disk is full"), 2)):

        def fail(*args, failure=failure) -> None:
            raise failure

        with monkeypatch.context() as patch:
            patch.setattr(interpret, "log_interpretation", fail)
            assert main(["interpret", "-q", "--model-uri", f"runs:/{run_id}/model", *val]) == code
        stopped = client.get_run(run_id)
        assert stopped.info.status == "FINISHED" and stopped.info.end_time == trained.info.end_time, failure

    # The same model from a folder names no run: its interpretation is a run of its own, with its settings.
    folder = client.download_artifacts(run_id, "model", str(Path("model-copy")))
    assert main(["interpret", "-q", "--model-uri", folder, "--data", str(digits16), *QUICK]) == 0
    (own,) = client.search_runs([trained.info.experiment_id], "tags.`genre.stage` = 'interpret'")
    assert own.info.run_name == "interpret-test" and own.info.status == "FINISHED"
    assert own.data.params["config.model_uri"] == folder and own.data.params["dataset_digest"]
    assert own.data.metrics["test_ece"] == pytest.approx(after.data.metrics["test_ece"])
    assert artifacts(client, own.info.run_id) == ARTIFACTS

    # Other data than the model's (the development subset's test split): a run of its own too, saying why.
    capsys.readouterr()
    assert (
        main(
            [
                "interpret",
                "-q",
                "--model-uri",
                f"runs:/{run_id}/model",
                "--data",
                str(digits16),
                "--variant",
                "dev",
                *QUICK,
            ]
        )
        == 0
    )
    assert f"a new run (run {run_id} was trained on digits/full" in capsys.readouterr().out
    assert len(client.search_runs([trained.info.experiment_id], "tags.`genre.stage` = 'interpret'")) == 2
    assert client.get_run(run_id).data.metrics["test_ece"] == after.data.metrics["test_ece"]  # untouched


def hand_made() -> tuple[Evaluation, list[str]]:
    """Ten covers of three genres, top-1 confidence 0.9 (four covers, two right) or 0.7 (six, three right)."""
    genres = ["folk", "jazz", "metal"]
    rows = [[0.9, 0.05, 0.05]] * 4 + [[0.7, 0.2, 0.1]] * 6  # every cover predicted folk
    labels = [0, 0, 1, 2] + [0, 0, 0, 1, 1, 2]
    return Evaluation(0.5, np.array(rows), np.array(labels)), genres


def test_log_interpretation_logs_the_confused_pairs_the_figures_and_the_ece() -> None:
    evaluation, genres = hand_made()
    interpretation = interpret_split(evaluation, genres, "test")
    recorded = RecordingTracker()

    interpret.log_interpretation(recorded, interpretation, top_pairs=1, note="runs:/abc/model")

    assert recorded.metrics["test_ece"][None] == pytest.approx(4 / 10 * 0.4 + 6 / 10 * 0.2)  # 0.28
    assert recorded.metrics["test_top1_confidence"][None] == pytest.approx(0.78)
    assert recorded.texts["interpret/confused_pairs_test.csv"].splitlines() == [
        "true,predicted,count,share",
        "jazz,folk,3,1.0000",  # every jazz cover was called folk
        "metal,folk,2,1.0000",
    ]
    assert set(recorded.figures) == ARTIFACTS - {"interpret/confused_pairs_test.csv"}
    assert recorded.params == {}  # a model's run keeps its params: nothing logged there
    lines = interpret.describe(interpretation, top_pairs=1)
    assert lines == [
        "test: accuracy 50.0%, mean top-1 confidence 78.0%, ECE 0.280 over 10 images",
        "most confused (true -> predicted), 1 of 2 pairs:",
        "  jazz -> folk: 3 (100.0% of jazz)",
    ]


def test_a_new_run_gets_the_settings_and_the_data_as_params(digits16: Path) -> None:
    from genre.data.pack import DatasetInfo

    config = InterpretConfig(data=str(digits16), model_uri="models:/genre-classifier@champion", split="val")
    recorded = RecordingTracker()
    interpret.log_settings(recorded, config, DatasetInfo.read(digits16))
    assert recorded.params["config.model_uri"] == "models:/genre-classifier@champion"
    assert recorded.params["config.split"] == "val" and recorded.params["config.top_pairs"] == "10"
    assert recorded.params["dataset_name"] == "digits" and recorded.tags["genre.dataset"] == "digits"


def test_an_empty_split_logs_nan_rather_than_failing() -> None:
    empty = Evaluation(float("nan"), np.zeros((0, 3)), np.zeros(0, dtype=np.int64))
    interpretation = interpret_split(empty, ["folk", "jazz", "metal"], "val")
    recorded = RecordingTracker()
    interpret.log_interpretation(recorded, interpretation, top_pairs=10, note="a path")
    assert math.isnan(recorded.metrics["val_ece"][None]) and interpretation.pairs == []


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        ([], "--model-uri is required, e.g. runs:/<run id>/model or models:/genre-classifier@champion"),
        (["--model-uri", "runs:/x/model", "--batch-size", "0"], "'batch_size' must be at least 1, got 0"),
        (["--model-uri", "runs:/x/model", "--top-pairs", "0"], "'top_pairs' must be at least 1, got 0"),
        (["--model-uri", "runs:/x/model", "--heatmaps", "-1"], "'heatmaps' must be at least 0, got -1"),
        (
            ["--model-uri", "runs:/x/model", "--register", "covers"],
            "'register' covers names where the calibrated model goes: add --calibrate",
        ),
    ],
)
def test_a_missing_uri_or_a_bad_number_is_one_line_before_any_work(tracking_store: str, capsys, flags, error) -> None:
    assert main(["interpret", *flags]) == 2
    assert capsys.readouterr().err == f"genre interpret: error: {error}\n"
    assert not Path("data").exists() and not Path("mlflow.db").exists()


def test_a_model_on_an_unreachable_tracking_server_is_one_line_before_any_work(
    tracking_store: str, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    assert main(["interpret", "-q", "--model-uri", "runs:/0123456789abcdef0123456789abcdef/model"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("genre interpret: error: tracking server http://127.0.0.1:9 cannot be reached")
    assert error.count("\n") == 1 and not Path("data").exists()


def test_a_run_that_does_not_exist_is_one_line(digits16: Path, tracking_store: str, capsys) -> None:
    model = "runs:/0123456789abcdef0123456789abcdef/model"
    assert main(["interpret", "-q", "--model-uri", model, "--data", str(digits16)]) == 2
    error = capsys.readouterr().err.splitlines()[-1]  # after MLflow's own notes on creating the fresh store
    assert error == f"genre interpret: error: MLflow at {tracking_store}: Run with id={model[6:38]} not found"


@pytest.mark.slow
def test_train_with_interpret_reads_its_covers_and_predict_explain_writes_a_heatmap(
    digits16: Path, tracking_store: str, capsys, tmp_path: Path
) -> None:
    client, trained = train_small(digits16, tracking_store, "--interpret")
    output = capsys.readouterr().out
    run_id = trained.info.run_id
    assert artifacts(client, run_id) == ARTIFACTS | PICTURES  # the model's own run, still FINISHED
    assert trained.info.status == "FINISHED" and "test_ece" in trained.data.metrics
    assert f"MLflow run {run_id} at {tracking_store}: the model's run, under interpret/" in output
    table = Path(client.download_artifacts(run_id, "interpret/cover_map_test.csv", str(tmp_path))).read_text()
    assert table.splitlines()[0] == "cover,genre,x,y" and len(table.splitlines()) == 1 + 179

    from genre.data.pack import open_pack

    test = open_pack(digits16, "full", "test")
    from PIL import Image

    cover = tmp_path / "seven.png"
    Image.fromarray(test.images[int(np.flatnonzero(test.labels == 7)[0])]).save(cover)
    (tmp_path / "notes.jpg").write_text("not a cover")
    out = tmp_path / "heatmaps"
    model = f"runs:/{run_id}/model"
    assert (
        main(
            [
                "predict",
                "-q",
                "-m",
                model,
                "--explain",
                "--explain-dir",
                str(out),
                str(cover),
                str(tmp_path / "notes.jpg"),
            ]
        )
        == 1
    )
    lines = capsys.readouterr().out.splitlines()
    top = lines[0].split(": ")[1].split()[0]
    assert lines[1] == f"  where the evidence for {top} lies: {out / 'seven.png.heatmap.png'}"
    assert lines[2] == f"{tmp_path / 'notes.jpg'} is not an image (PIL: cannot identify image file)"  # named, not fatal
    picture = Image.open(out / "seven.png.heatmap.png")
    assert picture.height >= 256 and picture.width > 2 * picture.height * 0.9  # the cover beside its heatmap
    assert sorted(p.name for p in out.iterdir()) == ["seven.png.heatmap.png"]


@pytest.mark.slow
def test_calibrate_fits_a_temperature_on_val_logs_a_calibrated_model_and_registers_it(
    digits16: Path, tracking_store: str, capsys, tmp_path: Path
) -> None:
    from genre.cover_model import load_cover_model
    from genre.data.pack import open_pack
    from genre.metrics import expected_calibration_error
    from genre.stages.model_data import score_cover_model

    client, trained = train_small(digits16, tracking_store)
    run_id = trained.info.run_id
    capsys.readouterr()
    model = f"runs:/{run_id}/model"
    flags = ["--data", str(digits16), *QUICK, "--calibrate", "--register", "genre-digits-calibrated"]
    assert main(["interpret", "-q", "--model-uri", model, *flags]) == 0
    output = capsys.readouterr().out

    metrics = client.get_run(run_id).data.metrics
    assert metrics["val_ece_calibrated"] <= metrics["val_ece"]  # fitted there: not worse on validation
    assert metrics["val_nll_calibrated"] <= metrics["val_nll"] + 1e-9
    assert "interpret/reliability_test_calibrated.png" in artifacts(client, run_id)
    assert (
        f"calibrated model: runs:/{run_id}/model_calibrated, registered as genre-digits-calibrated version 1" in output
    )
    assert f"temperature {metrics['temperature']:.3f} fitted on val" in output

    # Serving the calibrated model returns the calibrated probabilities: its ECE on val is the one logged.
    validation = open_pack(digits16, "full", "val")
    calibrated = score_cover_model(load_cover_model("models:/genre-digits-calibrated@calibrated"), validation, 256)
    original = score_cover_model(load_cover_model(model), validation, 256)
    assert expected_calibration_error(calibrated.probabilities, calibrated.labels) == pytest.approx(
        metrics["val_ece_calibrated"], abs=1e-6
    )
    assert (calibrated.predictions == original.predictions).all()  # the same genres, other confidences
    assert not np.allclose(calibrated.probabilities, original.probabilities)


def test_ranked_picks_the_most_confident_right_covers_and_the_worst_mistakes_per_genre() -> None:
    evaluation, _ = hand_made()  # every cover predicted folk (genre 0)
    right = explain.ranked(evaluation, 3, 2, right=True)
    assert right == [[0, 1], [], []]  # folk covers at 0.9 first; jazz and metal are never right
    mistakes = explain.ranked(evaluation, 3, 2, right=False)
    assert mistakes == [[], [2, 7], [3, 9]]  # the least probability on the true genre first (0.05 before 0.2)
    assert explain.spread([[1, 2, 3], [], [4]], 3) == [1, 4, 2]


def test_log_readings_logs_the_grids_the_map_and_its_points_and_leaves_out_what_is_empty() -> None:
    cover, heat = np.zeros((8, 8, 3), np.uint8), np.ones((8, 8), np.float32)
    readings = explain.Readings(
        layer="pool1",
        genres=["folk", "jazz"],
        labels=np.array([0, 1, 1]),
        right=[("folk", [(cover, heat, "folk 90%")]), ("jazz", [])],
        mistakes=[("folk", []), ("jazz", [])],  # no mistake: no grid
        method="pca",
        points=np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]),
        thumbnails=None,
        neighbours=[],
    )
    recorded = RecordingTracker()
    interpret.log_readings(recorded, readings, "val", "runs:/abc/model")
    assert set(recorded.figures) == {"interpret/heatmaps_right_val.png", "interpret/cover_map_val.png"}
    assert recorded.texts["interpret/cover_map_val.csv"].splitlines() == [
        "cover,genre,x,y",
        "0,folk,0.00000,1.00000",
        "1,jazz,2.00000,3.00000",
        "2,jazz,4.00000,5.00000",
    ]


@pytest.mark.slow
def test_a_layer_that_cannot_carry_a_heatmap_is_one_line_before_any_run(
    digits16: Path, tracking_store: str, capsys
) -> None:
    client, trained = train_small(digits16, tracking_store)
    capsys.readouterr()
    model = f"runs:/{trained.info.run_id}/model"
    assert main(["interpret", "-q", "--model-uri", model, "--data", str(digits16), "--heatmap-layer", "conv9"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("genre interpret: error: the network has no layer 'conv9'; its last spatial layers are")
    assert error.count("\n") == 1
    assert artifacts(client, trained.info.run_id) == set()  # nothing logged
