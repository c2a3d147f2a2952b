"""The training configuration: every setting out of range is a one-line error when the config is made, so a
command stops before it opens an MLflow run; a warm-up as long as the run is shortened, not an error."""

from __future__ import annotations

import logging

import pytest

from genre import config
from genre.cli import build_parser
from genre.training.config import TrainConfig
from genre.training.schedule import Schedule
from tests.conftest import refused


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": -0.02}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"learning_rate": float("inf")}, "learning_rate"),
        ({"momentum": 1.0}, "momentum"),
        ({"momentum": -0.1}, "momentum"),
        ({"weight_decay": -1e-4}, "weight_decay"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": -5}, "batch_size"),
        ({"epochs": 0}, "epochs"),
        ({"lr_factor": 0.0}, "lr_factor"),
        ({"lr_steps": "10,5"}, "lr_steps"),
        ({"warmup_epochs": -1}, "warmup_epochs"),
        ({"freeze_epochs": -1}, "freeze_epochs"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"crop_size": 4}, "crop_size"),
        ({"patience": -1}, "patience"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**32}, "seed"),
        ({"cpu_contexts": 0}, "cpu_contexts"),
        ({"cpu_contexts": 1000}, "cpu_contexts"),  # issue 25: ran at 75 s an epoch instead of 8, load 83
        ({"epochs": 10**20}, "epochs"),  # ran until killed
        ({"batch_size": 100_000_000}, "batch_size"),
        ({"learning_rate": 1e39}, "learning_rate"),  # beyond float32: an MXNet traceback
        ({"crop_size": 100_000}, "crop_size"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"hidden_units": 0}, "hidden_units"),  # the network's settings are checked too ...
        ({"random_crop_area": 0.0}, "random_crop_area"),  # ... and the augmentation's
    ],
)
def test_a_setting_out_of_range_is_a_one_line_error_naming_it(settings: dict, named: str) -> None:
    refused(TrainConfig, settings, named)


def test_the_error_says_the_allowed_range() -> None:
    assert refused(TrainConfig, {"batch_size": 0}, "batch_size") == "'batch_size' must be in 1..65536, got 0"
    assert refused(TrainConfig, {"momentum": 1.5}, "momentum") == "'momentum' must be in [0, 1), got 1.5"
    message = refused(TrainConfig, {"learning_rate": 0.0}, "learning_rate")
    assert message == "'learning_rate' must be in (0, 10] (more diverges at once), got 0.0"


@pytest.mark.parametrize(("epochs", "warmup", "kept"), [(1, 1, 0), (3, 5, 2), (3, 3, 2), (3, 2, 2), (3, 0, 0)])
def test_a_warm_up_as_long_as_the_run_is_shortened_and_the_log_says_so(
    epochs: int, warmup: int, kept: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="genre.training.config"):
        settings = TrainConfig(epochs=epochs, warmup_epochs=warmup)

    assert settings.warmup_epochs == kept
    assert ("'warmup_epochs' " in caplog.text) == (kept != warmup)


def test_a_one_epoch_run_with_the_default_warm_up_starts_at_the_peak_rate() -> None:
    settings = TrainConfig(epochs=1)
    schedule = Schedule("cosine", 0.02, settings.epochs, updates_per_epoch=4, warmup_epochs=settings.warmup_epochs)

    assert schedule.learning_rate(0) == pytest.approx(0.02)
    assert 0 < schedule.learning_rate(3) < 0.02


def test_an_empty_flag_an_unset_mlflow_run_parameter_still_means_the_default() -> None:
    args = build_parser().parse_args(["train", "--epochs", "", "--batch-size", "", "--learning-rate", ""])

    settings, _ = config.load(TrainConfig, args, "")

    assert settings == TrainConfig()
