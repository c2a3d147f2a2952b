"""Evaluating a logged model: its settings are checked before a run opens."""

from __future__ import annotations

from genre.training.evaluate import EvaluateConfig
from tests.conftest import refused


def test_a_batch_of_no_images_is_a_one_line_error_naming_it() -> None:
    refused(EvaluateConfig, {"batch_size": 0}, "batch_size")
