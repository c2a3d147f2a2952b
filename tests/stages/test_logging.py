"""What the stages log, read from a recording tracker: the stage's logging is tested without any tracking store,
and training reports through its callback alone."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import mxnet as mx
import numpy as np
import optuna
import pytest

from genre.command_config import BaselineConfig
from genre.cover_model import log_cover_model
from genre.data.config import PrepareConfig
from genre.data.folds import split_digest
from genre.data.pack import DatasetInfo, open_pack
from genre.data.prepare import prepare
from genre.models.baselines import fit_and_score
from genre.predictions import CoverPredictions
from genre.stages import baseline, train, tune
from genre.training.checkpoint import CheckpointStore
from genre.training.config import TrainConfig
from genre.training.train import TrainOutcome
from genre.training.train import train as train_network
from tests.recording import RecordingTracker


@pytest.fixture(scope="module")
def digits16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled digits packed at 16x16, prepared without any run."""
    folder = tmp_path_factory.mktemp("logging") / "digits16"
    return prepare(PrepareConfig(out=str(folder), image_size=16), progress=False).root


@dataclass
class Trained:
    """A two-epoch training of a tiny conv net, with what its callback heard after each epoch."""

    config: TrainConfig
    outcome: TrainOutcome
    heard: list[tuple[int, int, set[str]]]  # (epoch, epochs checkpointed by then, metric names)


@pytest.fixture(scope="module")
def trained(digits16: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    config = TrainConfig(data=str(digits16), epochs=2, batch_size=64, conv_filters="8", dense_units="", seed=1)
    checkpoints = CheckpointStore(tmp_path_factory.mktemp("logging") / "run")
    heard: list[tuple[int, int, set[str]]] = []

    def on_epoch_end(epoch: int, metrics: dict[str, float]) -> None:
        heard.append((epoch, checkpoints.read_state().epoch, set(metrics)))

    outcome = train_network(config, [mx.cpu()], checkpoints, on_epoch_end)
    assert outcome is not None
    return Trained(config, outcome, heard)


def test_training_reports_each_epoch_through_its_callback_after_the_checkpoint(trained: Trained) -> None:
    assert [(epoch, saved) for epoch, saved, _ in trained.heard] == [(1, 1), (2, 2)]  # on disk before anyone hears
    for _, _, names in trained.heard:
        assert {"train_loss", "val_accuracy", "val_balanced_accuracy", "epoch_seconds"} <= names
    assert trained.outcome.state.epoch == 2


def test_the_train_stage_logs_settings_dataset_test_report_figures_and_the_model(trained: Trained) -> None:
    config, outcome = trained.config, trained.outcome
    info = DatasetInfo.read(Path(config.data))
    recorded = RecordingTracker()

    train.log_training_start(recorded, config, info, "cpu(0)")
    train.log_training_outcome(recorded, outcome, train.example_input(config))

    assert recorded.params["config.epochs"] == "2" and recorded.params["dataset_digest"] == info.digest
    assert recorded.params["genres"] == ",".join(info.genres) and "version.mxnet" in recorded.params
    assert recorded.datasets[0]["shape"] == (sum(info.counts["full"].values()), 16, 16, 3)
    assert recorded.metrics["test_accuracy"][None] == pytest.approx(outcome.test.accuracy)
    assert recorded.metrics["best_epoch"][None] == outcome.state.best_epoch
    assert {f"test_recall_{genre}" for genre in info.genres} <= recorded.metrics.keys()
    assert set(recorded.figures) == {"confusion_test.png", "learning_curves.png"}
    assert recorded.texts["test_per_genre.csv"].count("\n") >= len(info.genres)
    (model,) = recorded.models  # the model is logged by the cover model's own code, inside the tracker's call
    assert model.func is log_cover_model and model.args[1] == info.genres and model.keywords["name"] == "model"
    test = CoverPredictions.from_csv_text(recorded.texts["predictions/test.csv"])
    assert test.covers == open_pack(Path(config.data), "full", "test").files and test.genres == info.genres
    assert test.accuracy == pytest.approx(outcome.test.accuracy)
    assert np.allclose(test.probabilities, outcome.test.probabilities, atol=1e-6)
    assert "predictions/val.csv" in recorded.texts and "predictions/val.json" in recorded.tables
    assert recorded.params["split_digest"] == split_digest(outcome.files)


def test_the_baseline_stage_logs_every_split_and_the_balanced_metrics(digits16: Path) -> None:
    config = BaselineConfig(data=str(digits16), trees=10, workers=1)
    info = DatasetInfo.read(digits16)
    fitted = baseline.fit(config, workers=1)
    recorded = RecordingTracker()

    baseline.log_baseline(recorded, config, fitted, info)

    assert recorded.params["config.model"] == "rf" and recorded.params["feature_set"] == "16x16 RGB pixels"
    for split in ("train", "val", "test"):
        assert recorded.metrics[f"{split}_accuracy"][None] == pytest.approx(fitted.result.scores[split].accuracy)
        assert f"{split}_balanced_accuracy" in recorded.metrics
    assert recorded.metrics["test_accuracy"][None] > 0.7  # a forest on digit pixels
    assert set(recorded.figures) == {"confusion_val.png", "confusion_test.png"}
    reports = {"classification_report_val.txt", "classification_report_test.txt"}
    assert set(recorded.texts) == reports | {"predictions/val.csv", "predictions/test.csv"}
    test = CoverPredictions.from_csv_text(recorded.texts["predictions/test.csv"])
    assert test.covers == open_pack(digits16, "full", "test").files  # every test cover once, keyed by its file
    assert test.accuracy == pytest.approx(recorded.metrics["test_accuracy"][None])
    assert test.probabilities is not None and np.allclose(test.probabilities.sum(axis=1), 1.0)
    assert recorded.tables["predictions/test.json"]["cover"] == test.covers
    assert recorded.params["split_digest"] == fitted.split_digest


def test_a_baseline_classifier_sees_only_arrays() -> None:
    rng = np.random.default_rng(0)
    labels = {split: np.arange(n) % 2 for split, n in (("train", 40), ("val", 10), ("test", 10))}
    features = {split: (labels[split][:, None] * 2.0 + rng.normal(0, 0.1, (len(labels[split]), 3))) for split in labels}

    result = fit_and_score(BaselineConfig(model="logreg"), features, labels, ["a", "b"], "3 numbers", workers=1)

    assert result.genres == ["a", "b"] and result.features == "3 numbers"
    assert all(score.accuracy == 1.0 for score in result.scores.values())


def test_the_tune_stage_logs_the_studys_progress_after_each_trial() -> None:
    study = optuna.create_study(direction="maximize")
    recorded = RecordingTracker()
    for number, value in enumerate([0.5, 0.7]):
        trial = study.ask()
        study.tell(trial, value)
        tune.log_study_progress(recorded, study, number, sampler_seed=7)
    pruned = study.ask()
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    tune.log_study_progress(recorded, study, 2, sampler_seed=7)

    assert recorded.params["sampler_seed"] == "7"
    assert recorded.metrics["best_val_accuracy"] == {0: 0.5, 1: 0.7, 2: 0.7}
    assert recorded.metrics["trials_pruned"] == {0: 0, 1: 0, 2: 1}
    assert not any(math.isnan(value) for value in recorded.metrics["trials_complete"].values())


def test_a_param_logged_twice_with_another_value_is_caught_as_mlflow_would() -> None:
    recorded = RecordingTracker()
    recorded.log_params({"config.seed": 1})
    with pytest.raises(AssertionError, match="config.seed"):
        recorded.log_params({"config.seed": 2})


def test_a_second_fold_of_a_feature_baseline_extracts_nothing(digits16: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    described: list[int] = []

    def describer(config: object, network: str, image_size: int, style: bool = False, mirror: bool = False):
        def describe(images: np.ndarray) -> np.ndarray:
            described.append(len(images))
            return np.asarray(images, dtype=np.float32).reshape(len(images), -1)[:, ::7]

        return describe

    monkeypatch.setattr(baseline, "network_describer", describer)
    config = BaselineConfig(data=str(digits16), features="network", pretrained=True, model="logreg", folds=5)
    first = baseline.fit(config, workers=1)
    assert sum(described) == 1797  # every cover once, through the static packs, into the feature cache
    second = baseline.fit(dataclasses.replace(config, fold=1), workers=1)
    assert sum(described) == 1797, "the second fold extracted features again"
    assert set(first.files["test"]).isdisjoint(second.files["test"])
    assert first.result.scores["test"].accuracy > 0.8
