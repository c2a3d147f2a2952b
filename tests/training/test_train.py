"""Training as a user runs it: on the bundled digits, on two CPU contexts, killed and resumed, diverging, and on
unbalanced genres."""

from __future__ import annotations

import json
import logging
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
from genre.data.config import PrepareConfig
from genre.data.pack import open_pack
from genre.data.prepare import prepare
from genre.errors import ConfigError
from genre.models import fused
from genre.training.checkpoint import CheckpointStore
from genre.training.config import TrainConfig
from genre.training.train import train
from tests.conftest import PROJECT_ROOT, assert_genre_metrics

SMALL = ["--epochs", "3", "--batch-size", "32", "--conv-filters", "8,16", "--dense-units", "32", "-q"]


@pytest.fixture
def digits16(tracking_store: str, tmp_path: Path) -> Path:
    """The bundled digits packed at 16x16: small enough to train in seconds."""
    return prepare(PrepareConfig(out=str(tmp_path / "digits16"), image_size=16), progress=False).root


def runs(uri: str, experiment: str = "genre-digits"):
    client = MlflowClient(uri)
    return client, client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


@pytest.mark.slow
def test_two_cpu_contexts_learn_and_keep_their_parameters_in_sync(digits16: Path, tmp_path: Path) -> None:
    config = TrainConfig(data=str(digits16), epochs=2, batch_size=32, conv_filters="8,16", dense_units="32")
    contexts = [mx.cpu(0), mx.cpu(1)]
    outcome = train(config, contexts, CheckpointStore(tmp_path / "checkpoints"))
    assert outcome.validation.accuracy > 0.8
    for param in outcome.net.collect_params().values():
        copies = [data.asnumpy() for data in param.list_data()]
        assert len(copies) == 2 and np.array_equal(copies[0], copies[1]), param.name


@pytest.mark.slow
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
    assert lines[1] == "notes.png is not an image (PIL: cannot identify image file)"

    assert main(["train", "-q", "--model", "mlp", "--epochs", "5"]) == 0
    _, all_runs = runs(tracking_store)
    (mlp,) = [r for r in all_runs if r.data.params.get("config.model") == "mlp"]
    assert 0.85 <= mlp.data.metrics["test_accuracy"] <= run.data.metrics["test_accuracy"]


def test_asking_for_an_absent_gpu_fails_at_once_and_says_how_to_get_one(tracking_store: str, capsys) -> None:
    assert main(["train", "--gpus", "0"]) == 2
    error = capsys.readouterr().err.strip()
    assert "no CUDA support" in error and "mxnet-cu" in error and "\n" not in error
    assert not Path("data").exists() and not Path("mlflow.db").exists()


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (["--batch-size", "0"], "'batch_size' must be in 1..65536, got 0"),
        (["--batch-size", "-5"], "'batch_size' must be in 1..65536, got -5"),
        (["--chunk-size", "0"], "'chunk_size' must be at least 1, got 0"),
        (["--epochs", "0"], "'epochs' must be in 1..10000, got 0"),
        (["--learning-rate", "nan"], "'learning_rate' must be in (0, 10] (more diverges at once), got nan"),
    ],
)
def test_a_number_out_of_range_is_one_line_before_any_run_opens(tracking_store: str, capsys, flags, error) -> None:
    assert main(["train", *flags]) == 2
    assert capsys.readouterr().err == f"genre train: error: {error}\n"
    assert not Path("data").exists() and not Path("mlflow.db").exists()


@pytest.mark.slow
def test_one_epoch_trains_with_the_default_warm_up_shortened(digits16: Path, tracking_store: str) -> None:
    assert main(["train", *SMALL, "--epochs", "1", "--data", str(digits16)]) == 0
    client, (run,) = runs(tracking_store)
    assert run.info.status == "FINISHED"
    assert run.data.params["config.epochs"] == "1" and run.data.params["config.warmup_epochs"] == "0"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1]
    assert run.data.metrics["val_accuracy"] > 0.3  # ten genres: chance is 0.1 (this split: 0.44 after the epoch)


@pytest.mark.slow
def test_a_run_logs_the_machine_s_use_to_its_system_metrics_tab_unless_told_not_to(
    digits16: Path, tracking_store: str, monkeypatch
) -> None:
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")  # MLflow's own setting; 10 s by default

    assert main(["train", *SMALL, "--epochs", "1", "--data", str(digits16)]) == 0
    assert main(["train", *SMALL, "--epochs", "1", "--data", str(digits16), "--system-metrics", "false"]) == 0

    client, finished = runs(tracking_store)
    watched = next(run for run in finished if run.data.params["config.system_metrics"] == "True")
    unwatched = next(run for run in finished if run.data.params["config.system_metrics"] == "False")
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(watched.data.metrics)
    assert 0 <= watched.data.metrics["system/cpu_utilization_percentage"] <= 100
    assert not [key for key in unwatched.data.metrics if key.startswith("system/")]


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_run_on_unbalanced_genres_logs_balanced_accuracy_macro_f1_and_recall_like_scikit_learn(
    unbalanced_covers: Path, tracking_store: str
) -> None:
    from genre.stages import train as train_stage

    config = TrainConfig(data=str(unbalanced_covers), epochs=2, batch_size=16, conv_filters="8,16", dense_units="32")
    staged = train_stage.run(config)

    client = MlflowClient(tracking_store)
    metrics = client.get_run(staged.run_id).data.metrics
    genres = ["genre0", "genre1", "genre2"]
    for prefix, evaluation in (("test", staged.result.test), ("best_val", staged.result.validation)):
        assert_genre_metrics(metrics, prefix, evaluation.labels, evaluation.predictions, genres)
    assert sorted(name for name in metrics if name.startswith("test_recall_")) == [f"test_recall_{g}" for g in genres]
    assert np.isnan(metrics["best_val_recall_genre2"]), "genre2 has no validation cover"
    curve = client.get_metric_history(staged.run_id, "val_balanced_accuracy")
    assert sorted(m.step for m in curve) == [1, 2]

    model = f"runs:/{staged.run_id}/model"
    assert main(["evaluate", "-q", "--model-uri", model, "--data", str(unbalanced_covers), "--split", "test"]) == 0
    evaluation = next(r for r in runs(tracking_store, "genre-unbalanced")[1] if r.info.run_id != staged.run_id)
    for name in ("test_balanced_accuracy", "test_macro_f1", *(f"test_recall_{g}" for g in genres)):
        assert evaluation.data.metrics[name] == pytest.approx(metrics[name], abs=1e-9), name


def test_frozen_epochs_train_only_the_output_layer_then_release_the_backbone(digits16: Path, tmp_path: Path) -> None:
    from genre.models.networks import build_network

    small = {"conv_filters": "8,16", "dense_units": "32", "batch_size": 32, "warmup_epochs": 0}
    start = tmp_path / "start.params"
    build_network(TrainConfig(**small), 10, [mx.cpu()], 16).save_parameters(str(start))
    loaded = mx.nd.load(str(start))

    def trained(epochs: int) -> dict[str, np.ndarray]:
        config = TrainConfig(data=str(digits16), epochs=epochs, freeze_epochs=1, pretrained_params=str(start), **small)
        outcome = train(config, [mx.cpu()], CheckpointStore(tmp_path / f"run{epochs}"))
        return {key: p.data().asnumpy() for key, p in outcome.net._collect_params_with_prefix().items()}

    frozen, released = trained(1), trained(2)

    conv = "features.0.weight"
    np.testing.assert_array_equal(frozen[conv], loaded[conv].asnumpy())  # held still through the frozen epoch
    assert not np.allclose(frozen["output.weight"], released["output.weight"])
    assert not np.allclose(released[conv], loaded[conv].asnumpy()), "the backbone trains once released"


def test_frozen_epochs_without_loaded_weights_are_refused() -> None:
    with pytest.raises(ConfigError, match="'freeze_epochs' holds a loaded backbone still"):
        TrainConfig(freeze_epochs=2)


@pytest.mark.slow
def test_a_crop_smaller_than_the_pack_is_what_the_logged_model_takes(digits16: Path, tracking_store: str) -> None:
    from genre.cover_model import load_cover_model

    args = ["--data", str(digits16), "--crop-size", "12", "--epochs", "2", "--conv-filters", "8", "--dense-units", ""]
    assert main(["train", "-q", *args]) == 0
    _, (run,) = runs(tracking_store)
    model = load_cover_model(f"runs:/{run.info.run_id}/model").unwrap_python_model()
    assert (model.image_size, model.network.size) == (16, 12)
    pixels = np.asarray(open_pack(digits16, "full", "test").images[:3])
    assert list(model.predict(None, pixels).columns[:2]) == ["genre", "p_0"]


def test_a_probe_head_predicts_what_the_logistic_regression_on_its_features_predicts(digits16: Path) -> None:
    from genre.data.iterator import ChunkedIterator
    from genre.models.inputs import NetworkInput, network_input
    from genre.models.networks import build_network
    from genre.training.probe import fit_probe_head

    net = build_network(TrainConfig(conv_filters="8,16", dense_units="32"), 10, [mx.cpu()], 16)
    pack = open_pack(digits16, "full", "train")
    network = NetworkInput(16)

    train_accuracy = fit_probe_head(net, ChunkedIterator(pack, 64, 512, [mx.cpu()]), network, 10, seed=0)

    with mx.autograd.predict_mode():
        logits = net(network_input(mx.nd.array(np.asarray(pack.images), dtype="uint8"), network)).asnumpy()
    assert train_accuracy > 0.5  # random conv features of digits are linearly separable enough
    assert np.mean(logits.argmax(axis=1) == pack.labels) == pytest.approx(train_accuracy, abs=2 / len(pack))


def test_a_style_probe_head_is_the_balanced_logistic_regression_on_the_style_probe_s_features(
    tmp_path: Path,
) -> None:
    """LP-FT from the style probe: the head starts as the regression the style baseline fits (weights balanced)."""
    from sklearn.linear_model import LogisticRegression

    from genre.data.config import PrepareConfig
    from genre.data.iterator import ChunkedIterator
    from genre.data.prepare import prepare
    from genre.models.features import build_describer
    from genre.models.inputs import network_input
    from genre.models.networks import build_network, input_for
    from genre.training.probe import fit_probe_head
    from tests.conftest import write_cover_folder

    folder = write_cover_folder(tmp_path / "style-covers", per_genre=(12, 6, 3), size=48)
    root = prepare(PrepareConfig(folder=str(folder), out=str(tmp_path / "packed"), image_size=48), False).root
    pack = open_pack(root, "full", "train")
    spec = TrainConfig(model="efficientnet_lite0", pretrained=True, style_blocks="2", probe_head=True)
    network = input_for(spec.model, 0, 48)
    net = build_network(spec, 3, [mx.cpu()], network.size)

    fit_probe_head(net, ChunkedIterator(pack, 8, 64, [mx.cpu()]), network, 3, 0, c=0.01, class_weight="balanced")

    images = np.asarray(pack.images)
    with mx.autograd.predict_mode():
        logits = net(network_input(mx.nd.array(images, dtype="uint8"), network)).asnumpy()
    describer, _ = build_describer(spec, 48, mx.cpu(), last_blocks=2)
    x = describer(mx.nd.array(images.transpose(0, 3, 1, 2) / 255.0)).asnumpy()
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    standardised = (x - x.mean(axis=0)) / scale
    probe = LogisticRegression(C=0.01, class_weight="balanced", max_iter=2000).fit(standardised, pack.labels)
    expected = probe.decision_function(standardised)
    np.testing.assert_allclose(logits - logits.mean(axis=1, keepdims=True),
                               expected - expected.mean(axis=1, keepdims=True), atol=2e-2)  # fmt: skip


def test_frozen_batch_norm_keeps_the_loaded_statistics_while_the_rest_trains(digits16: Path, tmp_path: Path) -> None:

    small = {"conv_filters": "8,16", "dense_units": "32", "batch_size": 32, "warmup_epochs": 0, "epochs": 1}
    first = train(TrainConfig(data=str(digits16), **small), [mx.cpu()], CheckpointStore(tmp_path / "a"))
    start = tmp_path / "start.params"
    first.net.save_parameters(str(start))  # statistics of real digits, as a pretrained network has of its images
    loaded = {key: value.asnumpy() for key, value in mx.nd.load(str(start)).items()}
    config = TrainConfig(data=str(digits16), pretrained_params=str(start), freeze_batch_norm=True, **small)

    outcome = train(config, [mx.cpu()], CheckpointStore(tmp_path / "b"))

    trained = {key: p.data().asnumpy() for key, p in outcome.net._collect_params_with_prefix().items()}
    np.testing.assert_array_equal(trained["features.1.running_mean"], loaded["features.1.running_mean"])
    np.testing.assert_array_equal(trained["features.1.running_var"], loaded["features.1.running_var"])
    assert not np.allclose(trained["features.1.gamma"], loaded["features.1.gamma"])
    assert outcome.validation.accuracy >= first.validation.accuracy - 0.05  # training still works on top of them


def test_frozen_layers_hold_the_first_layers_while_the_later_ones_train(digits16: Path, tmp_path: Path) -> None:

    small = {"conv_filters": "8,16", "dense_units": "32", "batch_size": 32, "warmup_epochs": 0, "epochs": 1}
    first = train(TrainConfig(data=str(digits16), **small), [mx.cpu()], CheckpointStore(tmp_path / "a"))
    start = tmp_path / "start.params"
    first.net.save_parameters(str(start))
    loaded = {key: value.asnumpy() for key, value in mx.nd.load(str(start)).items()}
    config = TrainConfig(data=str(digits16), pretrained_params=str(start), frozen_layers=2, **small)

    outcome = train(config, [mx.cpu()], CheckpointStore(tmp_path / "b"))

    trained = {key: p.data().asnumpy() for key, p in outcome.net._collect_params_with_prefix().items()}
    for held in ("features.0.weight", "features.1.gamma", "features.1.running_mean", "features.1.running_var"):
        np.testing.assert_array_equal(trained[held], loaded[held], err_msg=held)
    assert not np.allclose(trained["features.4.weight"], loaded["features.4.weight"])  # the second conv trains


@pytest.mark.slow
def test_a_run_with_its_held_layers_fused_scores_as_the_unfused_run(
    digits16: Path, tmp_path: Path, monkeypatch, caplog
) -> None:

    small = {"conv_filters": "8,16", "dense_units": "32", "batch_size": 32, "warmup_epochs": 0, "epochs": 1}
    first = train(TrainConfig(data=str(digits16), **small), [mx.cpu()], CheckpointStore(tmp_path / "a"))
    start = tmp_path / "start.params"
    first.net.save_parameters(str(start))
    config = TrainConfig(data=str(digits16), pretrained_params=str(start), frozen_layers=3, **small)

    with caplog.at_level(logging.INFO, logger="genre.models.held"):
        fused_run = train(config, [mx.cpu()], CheckpointStore(tmp_path / "fused"))
    assert "the 3 held layers run as a fused inference graph" in caplog.text
    monkeypatch.setenv(fused.SWITCH, "0")
    unfused_run = train(config, [mx.cpu()], CheckpointStore(tmp_path / "unfused"))

    for split in ("validation", "test"):
        got, expected = getattr(fused_run, split), getattr(unfused_run, split)
        np.testing.assert_allclose(got.probabilities, expected.probabilities, rtol=1e-4, atol=1e-6, err_msg=split)
        assert got.accuracy == expected.accuracy


def test_frozen_layers_must_leave_something_to_train(digits16: Path, tmp_path: Path) -> None:

    start = tmp_path / "start.params"
    small = {"conv_filters": "8", "dense_units": "", "batch_size": 32, "warmup_epochs": 0, "epochs": 1}
    first = train(TrainConfig(data=str(digits16), **small), [mx.cpu()], CheckpointStore(tmp_path / "a"))
    first.net.save_parameters(str(start))
    config = TrainConfig(data=str(digits16), pretrained_params=str(start), frozen_layers=50, **small)

    with pytest.raises(ConfigError, match="'frozen_layers' 50 would hold all"):
        train(config, [mx.cpu()], CheckpointStore(tmp_path / "b"))


@pytest.mark.slow
def test_sigterm_stops_training_like_ctrl_c_the_run_ends_killed_and_resumes(digits16: Path, tracking_store, tmp_path):
    args = [*SMALL, "--epochs", "4", "--data", str(digits16), "--mlflow-experiment", "terminated"]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    command = [sys.executable, "-m", "genre.cli", "train"]
    stopped = subprocess.Popen(
        [*command, *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 120
    while not any(json.loads(p.read_text())["epoch"] >= 1 for p in Path("checkpoints").glob("*/state.json")):
        assert stopped.poll() is None and time.monotonic() < deadline, stopped.stdout.read()
        time.sleep(0.02)
    stopped.send_signal(signal.SIGTERM)  # what `kill PID`, systemd and a batch scheduler send

    output = stopped.communicate(timeout=120)[0]
    assert stopped.returncode == 130, output
    assert "genre train: interrupted; finished work is kept, rerun to continue" in output
    assert "Traceback" not in output, output  # the whole output: a traceback here has shown once only, under load
    client, (run,) = runs(tracking_store, "terminated")
    assert run.info.status == "KILLED"
    resumed = subprocess.run([*command, "--resume", run.info.run_id], cwd=tmp_path, env=env, capture_output=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
