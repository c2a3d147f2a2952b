"""Training as a user runs it: on the bundled digits, on two CPU contexts, killed and resumed, diverging."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from genre.cli import main
from genre.data.pack import open_pack
from genre.data.prepare import PrepareConfig, prepare
from genre.tracking.tracker import tracked_run
from genre.training.checkpoint import CheckpointStore
from genre.training.config import TrainConfig
from genre.training.train import train
from tests.conftest import PROJECT_ROOT

SMALL = ["--epochs", "3", "--batch-size", "32", "--conv-filters", "8,16", "--dense-units", "32", "-q"]


@pytest.fixture
def digits16(tracking_store: str, tmp_path: Path) -> Path:
    """The bundled digits packed at 16x16: small enough to train in seconds."""
    return prepare(PrepareConfig(out=str(tmp_path / "digits16"), image_size=16), progress=False).root


def runs(uri: str, experiment: str = "genre-digits"):
    client = MlflowClient(uri)
    return client, client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def test_two_cpu_contexts_learn_and_keep_their_parameters_in_sync(digits16: Path, tmp_path: Path) -> None:
    config = TrainConfig(data=str(digits16), epochs=2, batch_size=32, conv_filters="8,16", dense_units="32")
    contexts = [mx.cpu(0), mx.cpu(1)]
    with tracked_run("two-contexts", "train", {}) as tracker:
        outcome = train(config, contexts, tracker, CheckpointStore(tmp_path / "checkpoints"))
    assert outcome.validation.accuracy > 0.8
    for param in outcome.net.collect_params().values():
        copies = [data.asnumpy() for data in param.list_data()]
        assert len(copies) == 2 and np.array_equal(copies[0], copies[1]), param.name


def test_the_default_convnet_reaches_98_percent_on_the_digits_and_logs_a_complete_run(
    tracking_store: str, capsys
) -> None:
    assert main(["train", "-q"]) == 0  # prepares the bundled digits on first use
    output = capsys.readouterr().out
    assert "preparing the bundled digits first" in output
    client, (run,) = runs(tracking_store)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_accuracy"] >= 0.98
    assert run.data.metrics["test_top3_accuracy"] >= run.data.metrics["test_accuracy"]
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert [m.step for m in history] == list(range(1, 16))
    for name in ("train_loss", "train_accuracy", "val_loss", "learning_rate", "images_per_second", "epoch_seconds"):
        assert len(client.get_metric_history(run.info.run_id, name)) == 15, name
    params = run.data.params
    assert params["config.model"] == "convnet" and params["config.epochs"] == "15" and params["contexts"] == "cpu(0)"
    assert params["dataset_split"] == "train=1439,val=179,test=179" and params["version.mxnet"] == "1.9.1"
    assert params["omp_num_threads"] == os.environ["OMP_NUM_THREADS"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"confusion_test.png", "learning_curves.png", "test_per_genre.csv"} <= artifacts  # the model: below
    assert run.inputs.dataset_inputs[0].dataset.digest == params["dataset_digest"]

    assert main(["evaluate", "-q", "--model-uri", f"runs:/{run.info.run_id}/model", "--split", "test"]) == 0
    _, all_runs = runs(tracking_store)
    (evaluation,) = [r for r in all_runs if r.data.tags.get("genre.stage") == "evaluate"]
    assert evaluation.data.metrics["test_accuracy"] == pytest.approx(run.data.metrics["test_accuracy"], abs=1e-9)

    digit = Path("seven.png")
    Image.fromarray(np.asarray(open_pack(Path("data/prepared/digits-32"), "full", "test").images[0])).save(digit)
    Path("notes.png").write_text("not a cover")
    capsys.readouterr()
    assert main(["predict", "--model-uri", f"runs:/{run.info.run_id}/model", str(digit), "notes.png"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("seven.png: ") and lines[0].count("%") == 3
    assert lines[1].startswith("notes.png: row 0: not an image")

    assert main(["train", "-q", "--model", "mlp", "--epochs", "5"]) == 0
    _, all_runs = runs(tracking_store)
    (mlp,) = [r for r in all_runs if r.data.params.get("config.model") == "mlp"]
    assert 0.85 <= mlp.data.metrics["test_accuracy"] <= run.data.metrics["test_accuracy"]


def test_asking_for_an_absent_gpu_fails_at_once_and_says_how_to_get_one(tracking_store: str, capsys) -> None:
    assert main(["train", "--gpus", "0"]) == 2
    error = capsys.readouterr().err.strip()
    assert "no CUDA support" in error and "mxnet-cu" in error and "\n" not in error
    assert not Path("data").exists() and not Path("mlflow.db").exists()


def test_a_diverging_run_stops_fails_and_keeps_the_last_good_checkpoint(digits16: Path, tracking_store, capsys):
    # Epoch 1 trains normally; the step schedule then multiplies the rate by 1e9.
    args = ["train", *SMALL, "--data", str(digits16), "--lr-schedule", "step", "--lr-steps", "1", "--lr-factor", "1e9"]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "epoch 2: the training loss became" in error and "last good checkpoint (epoch 1)" in error
    _, (run,) = runs(tracking_store)
    assert run.info.status == "FAILED"
    state = json.loads((Path("checkpoints") / run.info.run_id / "state.json").read_text())
    assert state["epoch"] == 1


def test_a_run_killed_with_sigkill_resumes_to_the_same_result(digits16: Path, tracking_store: str, tmp_path) -> None:
    args = [*SMALL, "--epochs", "4", "--data", str(digits16), "--mlflow-experiment", "resume"]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}

    def genre(*extra: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "genre.cli", "train", *extra],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip

    assert genre(*args, "--checkpoint-dir", "uninterrupted").wait(timeout=300) == 0
    killed = genre(*args)
    deadline = time.monotonic() + 120
    while not any(json.loads(p.read_text())["epoch"] >= 2 for p in (tmp_path / "checkpoints").glob("*/state.json")):
        assert killed.poll() is None and time.monotonic() < deadline, killed.stdout.read()
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()

    client, all_runs = runs(tracking_store, "resume")
    whole = next(r for r in all_runs if r.info.status == "FINISHED")
    interrupted = next(r for r in all_runs if r.info.status == "RUNNING")
    resumed = genre("--resume", interrupted.info.run_id)
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output
    assert f"resuming run {interrupted.info.run_id} after epoch" in output

    finished = client.get_run(interrupted.info.run_id)
    assert finished.info.status == "FINISHED"
    assert finished.data.metrics["test_accuracy"] == whole.data.metrics["test_accuracy"]
    for name in ("val_loss", "train_loss"):
        original = [m.value for m in sorted(client.get_metric_history(whole.info.run_id, name), key=lambda m: m.step)]
        steps = {m.step: m.value for m in client.get_metric_history(finished.info.run_id, name)}
        assert sorted(steps) == [1, 2, 3, 4]
        assert [steps[s] for s in range(1, 5)] == pytest.approx(original, rel=1e-5), name
