"""`genre train --data PACK` with no named experiment: covers train with the cover recipe measured best, the digits
with the digits' defaults, and flags still win."""

from __future__ import annotations

from pathlib import Path

import pytest

from genre.cli import main
from genre.data.config import PrepareConfig
from genre.data.prepare import prepare
from genre.stages import recipes
from genre.training.config import TrainConfig


@pytest.fixture
def trained_with(monkeypatch: pytest.MonkeyPatch, capsys):
    """`trained_with(*flags)`: runs `genre train FLAGS` up to the stage and returns the settings the run would train
    with, the experiment file they came from and what the command printed."""

    def run(*flags: str) -> tuple[TrainConfig, Path | None, str]:
        seen = {}

        def command(config, experiment, config_file, progress, given=None):
            seen.update(config=config, file=config_file)
            return 0

        monkeypatch.setattr("genre.stages.train.command", command)
        assert main(["train", "-q", *flags]) == 0
        return seen["config"], seen["file"], capsys.readouterr().out

    return run


def test_covers_train_with_the_cover_recipe_measured_best_and_say_which(
    unbalanced_covers: Path, trained_with, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, file, said = trained_with("--data", str(unbalanced_covers))

    assert file is not None and file.name == "finetune-lite0-covers-dev.yaml"
    assert (config.model, config.pretrained, config.probe_head) == ("efficientnet_lite0", True, True)
    assert config.frozen_layers == 13
    assert (config.flip, config.epochs, config.learning_rate) == (True, 6, 0.0003)
    assert config.data == str(unbalanced_covers)
    assert said.startswith("covers: using the cover recipe finetune-lite0-covers-dev (--model efficientnet_lite0 ")
    assert "--flip true" in said and "--experiment convnet-digits for the digits defaults" in said
    assert "measured on covers packed at 256 px, this pack is 16 px" in said and said.count("\n") == 1

    monkeypatch.setattr(recipes, "weights_installed", lambda model: False)
    config, file, said = trained_with("--data", str(unbalanced_covers))
    assert file is not None and file.name == "resnet18-covers-dev-128.yaml"
    assert (config.model, config.pretrained, config.flip, config.color_jitter) == ("resnet18_v1b", False, True, 0.1)
    assert "efficientnet_lite0's ImageNet weights are not installed, so the best recipe from scratch" in said


def test_flags_override_the_recipe_and_a_model_takes_the_recipe_measured_for_it(
    unbalanced_covers: Path, trained_with
) -> None:
    config, file, said = trained_with("--data", str(unbalanced_covers), "--epochs", "1", "--flip", "false")
    assert (config.epochs, config.flip, config.label_smoothing) == (1, False, 0.1)
    assert "--epochs" not in said and "--flip" not in said  # the recipe's settings that apply, as flags

    config, file, said = trained_with("--data", str(unbalanced_covers), "--model", "convnet")
    assert file is not None and file.name == "convnet-covers-dev-128.yaml"
    assert (config.conv_filters, config.color_jitter, config.random_crop_area) == ("32,64,128,256", 0.1, 0.5)

    config, file, said = trained_with("--data", str(unbalanced_covers), "--model", "mlp")
    assert file is None  # only part of a recipe: the run is not tagged with its file
    assert (config.flip, config.color_jitter, config.random_crop_area) == (True, 0.1, 0.5)
    assert (config.epochs, config.learning_rate) == (TrainConfig.epochs, TrainConfig.learning_rate)
    assert said.startswith("covers: using the cover augmentation of resnet18-covers-dev-128 (--flip true ")
    assert "no cover recipe was measured for mlp" in said


def test_the_digits_and_named_experiments_keep_their_own_settings(
    unbalanced_covers: Path, trained_with, tmp_path: Path
) -> None:
    digits = prepare(PrepareConfig(out=str(tmp_path / "digits-8"), image_size=8), progress=False).root
    config, file, said = trained_with("--data", str(digits))
    assert config == TrainConfig(data=str(digits)) and file is None and said == ""

    named = tmp_path / "mine.yaml"
    named.write_text("epochs: 2\n")
    config, file, said = trained_with("--experiment", str(named), "--data", str(unbalanced_covers))
    assert config == TrainConfig(data=str(unbalanced_covers), epochs=2) and file == named and said == ""
