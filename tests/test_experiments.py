"""Every named config in experiments/ loads into its command's settings; unknown keys would fail here."""

from __future__ import annotations

from pathlib import Path

import pytest

from genre.config import build, read_config_file
from genre.data.prepare import PrepareConfig
from genre.models.baselines import BaselineConfig
from genre.training.config import TrainConfig
from genre.tuning.space import load_space
from tests.conftest import PROJECT_ROOT

EXPERIMENTS = PROJECT_ROOT / "experiments"
KIND = {"datasets": PrepareConfig, "baselines": BaselineConfig, "experiments": TrainConfig}


CONFIGS = sorted(p for p in EXPERIMENTS.rglob("*.yaml") if p.parent.name != "spaces")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(EXPERIMENTS)))
def test_every_named_config_is_valid(path: Path) -> None:
    settings = build(KIND[path.parent.name], (str(path), read_config_file(path)))
    assert settings is not None


@pytest.mark.parametrize("path", sorted((EXPERIMENTS / "spaces").glob("*.yaml")), ids=lambda p: p.name)
def test_every_search_space_is_valid(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PROJECT_ROOT)  # spaces name their base experiment relative to the project
    space = load_space(str(path))
    assert space.parameters and space.base_config()


def test_the_default_experiment_is_what_train_does_with_no_flags() -> None:
    path = EXPERIMENTS / "convnet-digits.yaml"
    assert build(TrainConfig, (str(path), read_config_file(path))) == TrainConfig()
