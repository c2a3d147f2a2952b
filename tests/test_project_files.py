"""The project's own files agree with each other: pins, MLproject parameters, the README's commands."""

from __future__ import annotations

import dataclasses
import re
import shlex
import tomllib

import pytest
import yaml

from genre.command_config import BaselineConfig, EvaluateConfig, InterpretConfig, ReportConfig, SuiteConfig
from genre.data.config import PrepareConfig
from genre.training.config import TrainConfig
from genre.tuning.study import TuneConfig
from tests.conftest import PROJECT_ROOT


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    pins = dict(re.fullmatch(r"([\w.-]+)(?:\[[\w,]+\])?==([\w.]+)", spec).groups() for spec in project["dependencies"])
    assert len(pins) == len(project["dependencies"]), "every dependency is pinned exactly"
    return pins


def test_conda_env_pins_equal_pyproject_pins() -> None:
    conda = yaml.safe_load((PROJECT_ROOT / "conda.yaml").read_text())
    assert "python=3.11" in conda["dependencies"]
    (pip_section,) = [d for d in conda["dependencies"] if isinstance(d, dict)]
    conda_pins = dict(spec.split("==") for spec in pip_section["pip"])
    assert {re.sub(r"\[.*\]", "", name): version for name, version in conda_pins.items()} == pyproject_pins()


def test_the_lock_file_holds_every_pin() -> None:
    lock = dict(
        line.split("==") for line in (PROJECT_ROOT / "requirements.lock").read_text().splitlines() if "==" in line
    )
    normalise = lambda name: name.lower().replace("_", "-")  # noqa: E731
    lock = {normalise(k): v for k, v in lock.items()}
    for name, version in pyproject_pins().items():
        assert lock[normalise(name)] == version, name


@pytest.mark.parametrize(
    ("entry_point", "config_class", "named"),
    [
        ("prepare", PrepareConfig, "dataset"),
        ("baseline", BaselineConfig, "experiment"),
        ("train", TrainConfig, "experiment"),
        ("evaluate", EvaluateConfig, None),
        ("interpret", InterpretConfig, None),
        ("tune", TuneConfig, None),
        ("suite", SuiteConfig, "suite"),
        ("report", ReportConfig, None),
    ],
)
def test_mlproject_parameters_are_the_config_fields(entry_point: str, config_class: type, named: str) -> None:
    project = yaml.safe_load((PROJECT_ROOT / "MLproject").read_text())
    entry = project["entry_points"][entry_point]
    fields = {f.name for f in dataclasses.fields(config_class)}
    assert set(entry["parameters"]) == fields | ({named} if named else set())
    if named:
        assert f"--{named} {{{named}}}" in entry["command"]
    assert all(p["default"] == "" for p in entry["parameters"].values()), "defaults live in the dataclass only"
    for name in fields:
        assert f"--{name.replace('_', '-')} {{{name}}}" in entry["command"]


def test_ci_runs_the_readmes_test_command() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    assert re.search(r"^make test$", (PROJECT_ROOT / ".ci" / "run").read_text(), re.MULTILINE)


def readme_commands() -> list[str]:
    """Every `genre ...` line of the README's code blocks, without its comment."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash)?\n(.*?)```", readme, re.DOTALL)
    lines = [line for block in blocks for line in block.splitlines()]
    return [line.split("  #")[0].strip() for line in lines if line.startswith("genre ")]


@pytest.mark.parametrize("command", readme_commands())
def test_every_genre_command_in_the_readme_parses(command: str) -> None:
    from genre.cli import build_parser

    words = shlex.split(command)[1:]
    args = build_parser().parse_args(words)
    assert args.command == words[0]  # (an unknown flag or value already failed the parse)
