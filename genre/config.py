"""Layered configuration: dataclass defaults, then a YAML file from `experiments/`, then command-line flags.

Each setting is declared once, as a dataclass field with its default and help text (`setting(...)`);
the CLI flags and the YAML keys are derived from the fields, so they cannot disagree.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from genre.errors import ConfigError

T = TypeVar("T")
EXPERIMENTS_DIR = Path("experiments")
COMMAND_LINE = "command line"  # where flag values come from, in error messages


def setting(
    default: Any,
    help: str,  # noqa: A002
    choices: tuple[str, ...] | None = None,
    *,
    metavar: str | None = None,
    short: str | None = None,
    required: bool = False,
    switch: bool = False,
) -> Any:
    """A config field with its help text (and allowed values), shown by `--help`. How its flag looks, when that is not
    the usual `--kebab-name TYPE`: `metavar` (`--top N`), a `short` alias (`-m`), `required` on the command line, or
    a bool `switch` that takes no value (`--explain`, then never mistaken for a positional argument after it)."""
    metadata = {"help": help, "choices": choices, "metavar": metavar, "short": short, "required": required}
    return dataclasses.field(default=default, metadata=metadata | {"switch": switch})


def check_range(
    config: Any,
    name: str,
    low: float,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
    note: str = "",
) -> None:
    """A one-line `ConfigError` naming setting `name` of `config` and its range, unless its value is a finite number
    from `low` to `high` (ends included unless `*_open`; no upper limit when `high` is None). Give float bounds
    for a float setting: the message then says "a finite number >= 0" or "in [0, 1)" rather than "at least 0".

    Configs call this from `__post_init__`, so a bad value stops a command before it opens an MLflow run.
    `optional`: None (unset, e.g. "use the default") passes. `note` follows the range, e.g. " (0 = every core)".
    """
    value = getattr(config, name)
    if value is None and optional:
        return
    number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    above = number and (value > low if low_open else value >= low)
    below = high is None or (number and (value < high if high_open else value <= high))
    if number and above and below:
        return
    integers = isinstance(low, int) and isinstance(high, int | None) and not (low_open or high_open)
    start, end = (f"{x:g}" if isinstance(x, float) else str(x) for x in (low, high))
    if high is None and integers:
        allowed = f"at least {start}"
    elif high is None:
        allowed = f"a finite number {'>' if low_open else '>='} {start}"
    elif integers:
        allowed = f"in {start}..{end}"
    else:
        allowed = f"in {'(' if low_open else '['}{start}, {end}{')' if high_open else ']'}"
    raise ConfigError(f"'{name}' must be {allowed}{note}, got {value!r}")


SEEDS = (0, 2**32 - 1)  # what numpy, scikit-learn and Optuna's samplers all accept


def _base_type(annotation: Any) -> type:
    """`int | None` -> int; the scalar type a flag or YAML value converts to."""
    if isinstance(annotation, str):
        annotation = eval(annotation, {**vars(typing), "types": types})  # noqa: S307 - our own annotations
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def _field_types(cls: type) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    return {f.name: _base_type(hints[f.name]) for f in dataclasses.fields(cls)}


def _convert(cls: type, key: str, value: Any, kind: type, where: str) -> Any:
    if value is None:
        return None
    field = {f.name: f for f in dataclasses.fields(cls)}[key]
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                value = value.lower() in ("true", "1", "yes")
            converted: Any = bool(value)
        elif kind is float and isinstance(value, int | float | str):
            converted = float(value)
        elif kind is int and isinstance(value, int | str) and not isinstance(value, bool):
            converted = int(value)
        elif kind is str and isinstance(value, list | tuple):
            converted = ",".join(str(item) for item in value)  # a YAML list for a comma-separated setting
        elif kind is str:
            converted = str(value)
        else:
            raise ValueError(value)
    except ValueError:
        raise ConfigError(f"{where}: '{key}' must be {kind.__name__}, got {value!r}") from None
    choices = field.metadata.get("choices")
    if choices and converted not in choices:
        raise ConfigError(f"{where}: '{key}' must be one of {', '.join(choices)}, got {converted!r}")
    return converted


def build(cls: type[T], *layers: tuple[str, Mapping[str, Any]]) -> T:
    """Make `cls` from its defaults overlaid by each `(where, values)` layer in turn.

    Unknown keys are errors that name the key, where it came from and the valid keys; a value the config refuses
    (its `__post_init__`) is named with the file it came from.
    """
    kinds = _field_types(cls)
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for where, layer in layers:
        for key, value in layer.items():
            name = key.replace("-", "_")
            if name not in kinds:
                valid = ", ".join(sorted(kinds))
                raise ConfigError(f"{where}: unknown setting '{key}'; valid settings are: {valid}")
            values[name] = _convert(cls, name, value, kinds[name], where)
            origins[name] = where
    try:
        return cls(**values)
    except ConfigError as error:
        named = re.match(r"'(\w+)'", str(error))
        where = origins.get(named.group(1), COMMAND_LINE) if named else COMMAND_LINE
        if where == COMMAND_LINE:  # the user just typed it
            raise
        raise ConfigError(f"{where}: {error}") from None


def find_config_file(name_or_path: str, folder: str) -> Path:
    """A YAML path as given, or a name looked up as `experiments/<folder>/<name>.yaml`."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    home = EXPERIMENTS_DIR / folder if folder else EXPERIMENTS_DIR
    candidate = home / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    known = sorted(p.stem for p in home.glob("*.yaml")) if home.is_dir() else []
    hint = f"known names: {', '.join(known)}" if known else f"no {home}/ folder here; run from the project root"
    raise ConfigError(f"no config named '{name_or_path}' in {home}/ ({hint})")


def read_config_file(path: Path) -> dict[str, Any]:
    """The mapping in a YAML config file; anything else is a `ConfigError` naming the file."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read this config file: {str(error).splitlines()[0]}") from error
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping of settings, got {type(loaded).__name__}")
    return loaded


def _flag_type(kind: type) -> Any:
    """Parse a flag; an empty string (an unset `mlflow run` parameter) means 'not given'."""

    def parse(text: str) -> Any:
        if text == "":
            return None
        if kind is bool:
            return text
        return kind(text)

    parse.__name__ = kind.__name__
    return parse


def add_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    title: str,
    exclude: tuple[type, ...] = (),
    positional: tuple[str, ...] = (),
) -> None:
    """One `--kebab-case` flag per field of `cls` (less those of `exclude`, listed in their own groups), showing a
    setting's allowed values as `{a,b,c}`; defaults stay in the dataclass (flags default to unset). The fields named
    in `positional` are positional arguments instead, in that order (`genre compare A B`)."""
    group = parser.add_argument_group(title)
    kinds = _field_types(cls)
    skipped = {f.name for base in exclude for f in dataclasses.fields(base)}
    fields = {field.name: field for field in dataclasses.fields(cls)}
    for name in positional:
        group.add_argument(name, type=_flag_type(kinds[name]), metavar=name.upper(), help=fields[name].metadata["help"])
    for field in dataclasses.fields(cls):
        if field.name in skipped or field.name in positional:
            continue
        group.add_argument(*_flags(field), dest=field.name, default=argparse.SUPPRESS, **_flag_options(field, kinds))


def _flags(field: dataclasses.Field) -> list[str]:
    short = field.metadata.get("short")
    return [*([short] if short else []), "--" + field.name.replace("_", "-")]


def _flag_options(field: dataclasses.Field, kinds: dict[str, type]) -> dict[str, Any]:
    """How a setting's flag parses and shows: unset by default (the default stays in the dataclass, and its help says
    it), a bool alone meaning true, the allowed values shown as `{a,b,c}`."""
    kind = kinds[field.name]
    default = field.default if field.default is not dataclasses.MISSING else None
    help_text = field.metadata.get("help", "")
    shown_default = default not in (None, "") and not (kind is bool and field.metadata.get("switch"))
    help_text += f" (default: {default})" if shown_default else ""
    if field.metadata.get("switch"):
        return {"action": "store_const", "const": "true", "help": help_text}
    switch = {"nargs": "?", "const": "true"} if kind is bool else {}  # `--calibrate` alone means true
    shown = [choice for choice in field.metadata.get("choices") or () if choice]  # '' (unset): its help says
    if field.metadata.get("metavar"):
        metavar = field.metadata["metavar"]
    elif shown:  # `build` checks the value, so that an empty flag (an unset `mlflow run` parameter) passes here
        metavar = "{" + ",".join(shown) + "}"
    else:
        metavar = kind.__name__.upper() if kind is not bool else "{true,false}"
    required = {"required": True} if field.metadata.get("required") else {}
    return {"type": _flag_type(kind), "metavar": metavar, "choices": None, "help": help_text, **switch, **required}


def flag_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of `cls` that were given on the command line (non-empty)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def load(cls: type[T], args: argparse.Namespace, folder: str) -> tuple[T, Path | None]:
    """Defaults < the named config file (`--dataset`/`--experiment`) < flags; returns the config and that file."""
    return resolve(cls, getattr(args, "named_config", None), folder, flag_values(args, cls))


def resolve(cls: type[T], named: str | None, folder: str, flags: Mapping[str, Any]) -> tuple[T, Path | None]:
    """Defaults < the config file `named` (a name in experiments/<folder>/ or a path) < `flags`; returns the config
    and that file."""
    layers: list[tuple[str, Mapping[str, Any]]] = []
    path = None
    if named:
        path = find_config_file(named, folder)
        layers.append((str(path), read_config_file(path)))
    layers.append((COMMAND_LINE, flags))
    return build(cls, *layers), path
