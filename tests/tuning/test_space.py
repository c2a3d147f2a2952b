"""Search spaces: conditional and repeated parameters, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from genre.errors import ConfigError
from genre.training.config import TrainConfig
from genre.tuning.space import config_from, load_space, suggest
from tests.conftest import PROJECT_ROOT


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return str(path)


def test_the_shipped_default_space_samples_valid_configs_and_architecture_decides_the_parameters() -> None:
    space = load_space(str(PROJECT_ROOT / "experiments" / "spaces" / "convnet-digits.yaml"))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen = set()
    for _ in range(20):
        trial = study.ask()
        chosen = suggest(trial, space)
        config = config_from(space, chosen, "test")
        assert isinstance(config, TrainConfig) and config.epochs == 6
        seen.add(chosen["model"])
        if chosen["model"] == "mlp":
            assert "hidden_units" in chosen and "conv_layers" not in chosen
        else:
            assert "hidden_units" not in chosen
            filters = chosen["conv_filters"].split(",")
            assert len(filters) == chosen["conv_layers"]  # one sampled filter count per layer
            assert config.conv_filters == chosen["conv_filters"]
            assert [f"conv_filters_{i + 1}" in trial.params for i in range(len(filters))] == [True] * len(filters)
        study.tell(trial, 0.5)
    assert seen == {"mlp", "convnet"}


def test_log_float_int_step_and_categorical_ranges_are_respected(tmp_path: Path) -> None:
    space = load_space(
        write(
            tmp_path,
            "parameters:\n"
            "  learning_rate: {float: [0.001, 0.1], log: true}\n"
            "  epochs: {int: [2, 10], step: 2}\n"
            "  optimizer: {categorical: [sgd, adam]}\n",
        )
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        chosen = suggest(study.ask(), space)
        assert 0.001 <= chosen["learning_rate"] <= 0.1
        assert chosen["epochs"] in (2, 4, 6, 8, 10) and chosen["optimizer"] in ("sgd", "adam")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("parameters:\n  learnig_rate: {float: [0.1, 1]}\n", "parameter 'learnig_rate' is not a training setting"),
        ("parameters:\n  dropout: {float: [0.5, 0.1]}\n", "low 0.5 must be below high 0.1"),
        ("parameters:\n  dropout: {flaot: [0, 0.5]}\n", "parameter 'dropout' has unknown key 'flaot'"),
        ("parameters:\n  dropout: {float: [0, 0.5], int: [1, 2]}\n", "needs exactly one of float, int, categorical"),
        ("parameters:\n  learning_rate: {float: [0, 0.1], log: true}\n", "a log scale needs low > 0"),
        ("parameters:\n  conv_filters: {int: [8, 64], repeat: layers}\n", "'repeat' names 'layers'"),
        ("parameters:\n  momentum: {float: [0.8, 0.9], when: {optimiser: [sgd]}}\n", "'when' names 'optimiser'"),
        ("base_config: x\nparameters:\n  epochs: {int: [1, 2]}\n", "unknown key 'base_config'"),
        ("settings: {epoch: 3}\nparameters:\n  epochs: {int: [1, 2]}\n", "unknown setting 'epoch'"),
        ("parameters: {}\n", "'parameters' must map setting names"),
    ],
)
def test_a_malformed_space_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_space(write(tmp_path, text))
