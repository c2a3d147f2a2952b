"""What `genre <command> --help` shows of the settings: the allowed values of every setting that has them."""

from __future__ import annotations

import re

import pytest

from genre import config
from genre.cli import build_parser, main
from genre.command_config import EvaluateConfig
from genre.models.embedding import METHODS


def help_text(command: str, capsys) -> str:
    """`genre COMMAND --help` as printed, its lines joined (argparse wraps to the terminal's width)."""
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def shown_choices(text: str, flag: str) -> list[str]:
    """The `{a,b,c}` that follows `flag` in a help text."""
    found = re.search(rf"\[?{flag} \{{([^}}]*)\}}", text)
    assert found, f"{flag} shows no choices"
    return found.group(1).split(",")


@pytest.mark.parametrize(
    ("command", "flag", "choices"),
    [
        ("baseline", "--model", ["rf", "svm", "logreg"]),
        ("baseline", "--variant", ["full", "dev"]),
        ("evaluate", "--variant", ["full", "dev"]),
        ("evaluate", "--split", ["train", "val", "test"]),
        ("interpret", "--cover-map", [*METHODS, "none"]),
        ("train", "--optimizer", ["sgd", "nag", "adam"]),
        ("train", "--kvstore", ["dist_sync", "dist_device_sync"]),  # unset ('') is this process alone: its help says
        ("tune", "--pruner", ["median", "hyperband", "none"]),
    ],
)
def test_help_lists_the_allowed_values_of_a_setting(capsys, command: str, flag: str, choices: list[str]) -> None:
    assert shown_choices(help_text(command, capsys), flag) == choices


def test_help_of_trains_free_model_name_says_the_families_and_how_to_list_them(capsys) -> None:
    text = help_text("train", capsys)
    model = text[text.index("--model STR") :]
    model = model[: model.index("(default: convnet)")]
    for family in ("mlp", "convnet", "efficientnet_lite", "GluonCV", "python -m genre.models.zoo"):
        assert family in model


def test_an_empty_flag_with_choices_still_means_the_default() -> None:
    """`mlflow run` passes an unset parameter as ''; the choices shown in --help must not refuse it."""
    args = build_parser().parse_args(["evaluate", "--split", "", "--variant", ""])
    settings, _ = config.load(EvaluateConfig, args, "")
    assert settings.split == "test" and settings.variant == ""  # unset: the model's variant, read from its run


def test_a_value_outside_the_choices_is_one_line_naming_them(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may be written, here or anywhere
    assert main(["evaluate", "--split", "holdout"]) == 2
    assert capsys.readouterr().err == (
        "genre evaluate: error: command line: 'split' must be one of train, val, test, got 'holdout'\n"
    )


def test_a_positional_setting_is_an_argument_in_its_place_with_the_fields_help(capsys) -> None:
    from genre.command_config import CompareConfig

    args = build_parser().parse_args(["compare", "cnn-covers", "rf-covers", "--log-run"])
    settings, _ = config.load(CompareConfig, args, "")

    assert (settings.a, settings.b, settings.log_run, settings.experiment) == ("cnn-covers", "rf-covers", True, "")
    text = help_text("compare", capsys)
    assert "A model A: a run id (or run ids, comma-separated, pooled), or an experiment name" in text
    assert "--a " not in text and "--b " not in text
