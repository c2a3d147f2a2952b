"""`genre evaluate` (and `genre interpret`, which loads its model and data the same way) as the README runs it: with
no --data, on the dataset the model was trained on; and nothing logged when the data cannot be scored."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from genre.cli import main
from genre.cover_model import load_cover_model
from genre.data.pack import open_pack
from genre.models import fused
from tests.models.test_fused import needs_onednn

SMALL = ["--epochs", "2", "--batch-size", "32", "--conv-filters", "8", "--dense-units", "32", "-q"]
QUICK = ["--heatmaps", "0", "--cover-map", "none", "--neighbours", "0"]


def all_runs(client: MlflowClient) -> list:
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.mark.slow
def test_the_readme_command_scores_the_model_on_its_own_data_and_a_missing_pack_is_one_line(
    tracking_store: str, unbalanced_covers: Path, capsys
) -> None:
    # A model trained on a pack that is not the default one (the digits at 16 px rather than 32).
    assert main(["prepare", "-q", "--image-size", "16", "--out", "digits16"]) == 0
    assert main(["train", "--data", "digits16", *SMALL]) == 0
    client = MlflowClient(tracking_store)
    (trained,) = client.search_runs(
        [client.get_experiment_by_name("genre-digits").experiment_id], "tags.`genre.stage` = 'train'"
    )
    run_id = trained.info.run_id
    capsys.readouterr()

    assert main(["evaluate", "--model-uri", f"runs:/{run_id}/model", "--split", "test", "-q"]) == 0
    output = capsys.readouterr().out
    assert output.startswith(f"data: digits16, variant full (the model's run {run_id})\n")
    assert f"runs:/{run_id}/model on digits/full/test: accuracy" in output
    (evaluated,) = client.search_runs([trained.info.experiment_id], "tags.`genre.stage` = 'evaluate'")
    assert evaluated.info.status == "FINISHED" and evaluated.data.params["config.data"] == "digits16"
    assert evaluated.data.params["dataset_digest"] == trained.data.params["dataset_digest"]
    assert evaluated.data.metrics["test_accuracy"] == pytest.approx(trained.data.metrics["test_accuracy"])
    scored = Path(client.download_artifacts(evaluated.info.run_id, "predictions/test.csv")).read_text()
    logged = Path(client.download_artifacts(run_id, "predictions/test.csv")).read_text()
    assert scored.splitlines()[0] == logged.splitlines()[0] and len(scored.splitlines()) == len(logged.splitlines())
    assert [row.split(",")[:3] for row in scored.splitlines()] == [row.split(",")[:3] for row in logged.splitlines()]
    assert not Path("data/prepared/digits-32").exists()  # the default digits were not prepared on the way

    # A registered version leads to its source run, for interpret too.
    assert main(["register", "--run-id", run_id, "-q"]) == 0
    capsys.readouterr()
    assert main(["interpret", "-q", "--model-uri", "models:/genre-classifier@champion", *QUICK]) == 0
    output = capsys.readouterr().out
    assert output.startswith(f"data: digits16, variant full (the model's run {run_id})\n")
    (interpreted,) = client.search_runs([trained.info.experiment_id], "tags.`genre.stage` = 'interpret'")
    assert interpreted.data.params["config.data"] == "digits16" and interpreted.data.params["config.variant"] == "full"

    # The pack is not here: one line naming the dataset and the command that makes it, and no run at all.
    Path("digits16").rename("moved")
    before = len(all_runs(client))
    for command in ("evaluate", "interpret"):
        assert main([command, "-q", "--model-uri", f"runs:/{run_id}/model"]) == 2
        error = capsys.readouterr().err
        digest = trained.data.params["dataset_digest"]
        assert error == (
            f"genre {command}: error: the model was trained on the dataset digits (digest {digest}) in digits16, "
            "which is not here: make it with `genre prepare --image-size 16 --out digits16`, or give --data\n"
        )
    assert len(all_runs(client)) == before

    # That command makes the same pack again, and the README command works again.
    prepare = re.search(r"`(genre prepare [^`]*)`", error).group(1)
    assert main([*shlex.split(prepare)[1:], "-q"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "-q", "--model-uri", f"runs:/{run_id}/model"]) == 0
    assert capsys.readouterr().out.startswith(f"data: digits16, variant full (the model's run {run_id})\n")

    # A given --data wins; a dataset of other genres stops the command before any run opens (no FAILED run).
    before = len(all_runs(client))
    assert main(["evaluate", "-q", "--model-uri", f"runs:/{run_id}/model", "--data", str(unbalanced_covers)]) == 2
    assert "the model predicts genres" in capsys.readouterr().err
    assert len(all_runs(client)) == before


@needs_onednn
@pytest.mark.slow
def test_int8_models_from_training_or_on_request_score_and_say_they_ran_int8(
    tracking_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    assert main(["prepare", "-q", "--image-size", "16", "--out", "digits16"]) == 0
    client = MlflowClient(tracking_store)

    # Trained with --quantize: the logged model holds an INT8 copy, calibrated on its training covers.
    assert main(["train", "--data", "digits16", *SMALL, "--quantize", "--calibration-covers", "64"]) == 0
    (trained,) = client.search_runs(
        [client.get_experiment_by_name("genre-digits").experiment_id], "tags.`genre.stage` = 'train'"
    )
    assert trained.data.params["config.quantize"] == "True"
    model = load_cover_model(f"runs:/{trained.info.run_id}/model").unwrap_python_model()
    assert model.precision == "int8" and model.quantized["covers"] == 64

    # evaluate scores it through that copy, near the float network's accuracy, and its run says INT8 ran.
    assert main(["evaluate", "-q", "--model-uri", f"runs:/{trained.info.run_id}/model"]) == 0
    (evaluated,) = client.search_runs([trained.info.experiment_id], "tags.`genre.stage` = 'evaluate'")
    assert evaluated.data.tags["genre.precision"] == "int8"
    assert evaluated.data.metrics["test_accuracy"] == pytest.approx(trained.data.metrics["test_accuracy"], abs=0.05)

    # A float model quantized on request: evaluate --quantize and predict --quantize (calibrated on its dataset).
    assert main(["train", "--data", "digits16", *SMALL, "--seed", "1"]) == 0
    (plain,) = client.search_runs(
        [trained.info.experiment_id], "tags.`genre.stage` = 'train' and params.`config.seed` = '1'"
    )
    uri = f"runs:/{plain.info.run_id}/model"
    assert load_cover_model(uri).unwrap_python_model().precision == "float32"
    assert main(["evaluate", "-q", "--model-uri", uri, "--quantize"]) == 0
    (requested,) = client.search_runs(
        [trained.info.experiment_id], "tags.`genre.stage` = 'evaluate' and params.`config.quantize` = 'True'"
    )
    assert requested.data.tags["genre.precision"] == "int8"
    assert requested.data.metrics["test_accuracy"] == pytest.approx(plain.data.metrics["test_accuracy"], abs=0.05)
    covers = tmp_path / "covers"
    covers.mkdir()
    for index, pixels in enumerate(open_pack(Path("digits16"), "full", "test").images[:5]):
        Image.fromarray(pixels).save(covers / f"{index}.png")
    capsys.readouterr()
    assert main(["predict", "--model-uri", uri, "--quantize", "--output", "int8.csv", str(covers)]) == 0
    assert len(Path("int8.csv").read_text().splitlines()) == 6
    # A model from a folder names no run, hence no dataset: --calibration-data names one.
    local = mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "local-model"))
    capsys.readouterr()
    assert main(["predict", "-q", "--model-uri", local, str(covers), "--quantize"]) == 2
    assert capsys.readouterr().err == (
        f"genre predict: error: --quantize calibrates on training covers, and {local} names no run that logged its "
        "dataset: give --calibration-data DIR (a prepared dataset)\n"
    )
    assert main(["predict", "-q", "-m", local, "--quantize", "--calibration-data", "digits16", str(covers)]) == 0

    # Where INT8 cannot run, asking for it is one line, and nothing is logged.
    before = len(all_runs(client))
    monkeypatch.setenv(fused.SWITCH, "0")
    capsys.readouterr()
    assert main(["evaluate", "-q", "--model-uri", uri, "--quantize"]) == 2
    assert capsys.readouterr().err == (
        f"genre evaluate: error: --quantize cannot run here: {fused.SWITCH}=0 turns oneDNN fusion off; leave it off\n"
    )
    assert len(all_runs(client)) == before
    assert main(["train", "--data", "digits16", *SMALL, "--quantize", "true"]) == 2  # before training, not after
    assert capsys.readouterr().err.startswith("genre train: error: --quantize cannot run here")
    assert len(all_runs(client)) == before
    # and a model with an INT8 copy is scored by its float network, which its run says.
    assert main(["evaluate", "-q", "--model-uri", f"runs:/{trained.info.run_id}/model"]) == 0
    (fallen_back,) = client.search_runs(
        [trained.info.experiment_id], "tags.`genre.stage` = 'evaluate' and tags.`genre.precision` = 'float32'"
    )
    assert fallen_back.data.params["config.quantize"] == "False"
