"""The settings of the stages' commands (`genre.command_config`) are checked before a run opens."""

from __future__ import annotations

from genre.command_config import BaselineConfig, EvaluateConfig, PredictConfig
from genre.training.config import TrainConfig
from tests.conftest import refused


def test_a_batch_of_no_images_is_a_one_line_error_naming_it() -> None:
    refused(EvaluateConfig, {"batch_size": 0}, "batch_size")


def test_int8_needs_a_network_and_a_sane_number_of_calibration_covers() -> None:
    refused(BaselineConfig, {"quantize": True}, "quantize")  # a pixel baseline logs no model to quantize
    BaselineConfig(quantize=True, features="network", pretrained=True)
    for settings in ({"calibration_covers": 0}, {"calibration_covers": 10**6}):
        refused(EvaluateConfig, settings, "calibration_covers")
        refused(PredictConfig, {"model_uri": "runs:/x/model", **settings}, "calibration_covers")
        refused(TrainConfig, settings, "calibration_covers")
