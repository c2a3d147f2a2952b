"""The baseline's settings: every one out of range is a one-line error before a run opens."""

from __future__ import annotations

import pytest

from genre.stages.baseline import BaselineConfig
from tests.conftest import refused


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"pixels": 0}, "pixels"),  # once silently the default side
        ({"trees": 0}, "trees"),
        ({"max_depth": 0}, "max_depth"),
        ({"svm_alpha": 0.0}, "svm_alpha"),
        ({"svm_epochs": 0}, "svm_epochs"),
        ({"logreg_c": -1.0}, "logreg_c"),
        ({"logreg_c": float("inf")}, "logreg_c"),
        ({"seed": -1}, "seed"),
        ({"workers": -1}, "workers"),
    ],
)
def test_a_setting_out_of_range_is_a_one_line_error_naming_it(settings: dict, named: str) -> None:
    refused(BaselineConfig, settings, named)


def test_unset_pixels_and_depth_mean_the_defaults() -> None:
    assert BaselineConfig(pixels=None, max_depth=None) == BaselineConfig()
