"""The settings of the stages' commands (`genre.command_config`) are checked before a run opens."""

from __future__ import annotations

from genre.command_config import EvaluateConfig
from tests.conftest import refused


def test_a_batch_of_no_images_is_a_one_line_error_naming_it() -> None:
    refused(EvaluateConfig, {"batch_size": 0}, "batch_size")
