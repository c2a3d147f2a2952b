"""Search spaces: a YAML file in experiments/spaces/ on top of a base training (or baseline) config.

    stage: train                    # what a trial runs: train (the default) or baseline (a feature baseline)
    base: convnet-digits            # a named experiment (experiments/<name>.yaml; a baseline's in baselines/)
    settings: {epochs: 6}           # fixed overrides of the base
    objective: val_balanced_accuracy # what a trial maximises (OBJECTIVES: the first of the stage's is the default)
    parameters:
      learning_rate: {float: [0.002, 0.1], log: true}
      batch_size: {categorical: [32, 64, 128]}
      conv_layers: {int: [1, 3]}                              # not a setting: a count other parameters use
      conv_filters: {int: [8, 64], log: true, repeat: conv_layers}   # sampled once per layer, joined "a,b,c"
      momentum: {float: [0.8, 0.95], when: {optimizer: [sgd, nag]}}  # exists only for these optimisers

Parameters are sampled in file order, so `when` and `repeat` refer to parameters above them (or to the
base's values). Every name must be a setting of the stage or a count used by `repeat`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from genre.config import build, find_config_file, read_config_file
from genre.errors import ConfigError
from genre.training.config import TrainConfig

KINDS = ("float", "int", "categorical")
# What a trial maximises. Training, per epoch for the pruner and at its best epoch for the sampler: the validation
# split's accuracy (the original study's number), or its balanced accuracy (real cover sets are unbalanced). A
# baseline: the balanced accuracy of a cross-validation inside the training part (cheap on cached features, and it
# leaves the validation covers unread), or the validation split's.
OBJECTIVES = {
    "train": ("val_accuracy", "val_balanced_accuracy"),
    "baseline": ("inner_balanced_accuracy", "val_balanced_accuracy", "val_accuracy"),
}
OPTIONS = {"log", "step", "repeat", "when"}


@dataclass(frozen=True)
class Parameter:
    """One searched setting."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    log: bool = False
    step: float | None = None
    repeat: str | None = None
    when: dict[str, tuple[Any, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchSpace:
    """The base settings (as a mapping of the stage's config fields) and the parameters searched on top of them;
    `config_class` is the stage's config (`TrainConfig`, or the baseline's)."""

    base: dict[str, Any]
    parameters: tuple[Parameter, ...]
    source: str = ""
    objective: str = OBJECTIVES["train"][0]
    stage: str = "train"
    config_class: type = TrainConfig

    @property
    def fields(self) -> set[str]:
        return {f.name for f in dataclasses.fields(self.config_class)}

    def base_config(self) -> Any:
        return build(self.config_class, (self.source, self.base))


def _parameter(name: str, spec: Any, where: str, known: set[str], fields: set[str]) -> Parameter:
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: parameter '{name}' must be a mapping like {{float: [0.001, 0.1]}}")
    kinds = [kind for kind in KINDS if kind in spec]
    unknown = set(spec) - set(KINDS) - OPTIONS
    if unknown:
        raise ConfigError(
            f"{where}: parameter '{name}' has unknown key '{sorted(unknown)[0]}'; "
            f"use one of {', '.join(KINDS)} and options {', '.join(sorted(OPTIONS))}"
        )
    if len(kinds) != 1:
        raise ConfigError(f"{where}: parameter '{name}' needs exactly one of {', '.join(KINDS)}")
    kind, values = kinds[0], spec[kinds[0]]
    when = spec.get("when", {})
    if not isinstance(when, dict) or not all(isinstance(v, list) for v in when.values()):
        raise ConfigError(f"{where}: parameter '{name}': 'when' maps earlier parameters to lists of values")
    for other in when:
        if other not in known and other not in fields:
            raise ConfigError(f"{where}: parameter '{name}': 'when' names '{other}', which is not defined above it")
    repeat = spec.get("repeat")
    if repeat is not None and repeat not in known:
        raise ConfigError(f"{where}: parameter '{name}': 'repeat' names '{repeat}', which is not defined above it")
    common = {"repeat": repeat, "when": {k: tuple(v) for k, v in when.items()}}
    if kind == "categorical":
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: parameter '{name}': categorical takes a non-empty list of choices")
        return Parameter(name, kind, choices=tuple(values), **common)
    if not (isinstance(values, list) and len(values) == 2 and all(isinstance(v, int | float) for v in values)):
        raise ConfigError(f"{where}: parameter '{name}': {kind} takes [low, high]")
    low, high = values
    if not low < high:
        raise ConfigError(f"{where}: parameter '{name}': low {low} must be below high {high}")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise ConfigError(f"{where}: parameter '{name}': a log scale needs low > 0")
    return Parameter(name, kind, low=low, high=high, log=log, step=spec.get("step"), **common)


def load_space(name_or_path: str, configs: Mapping[str, type] | None = None) -> SearchSpace:
    """Read and check a space file (a path, or a name in experiments/spaces/); `configs` maps each stage a trial
    can run to its config class (default: training only; `genre.stages.tune.space_stages()` adds the baseline)."""
    configs = configs or {"train": TrainConfig}
    path = find_config_file(name_or_path, "spaces")
    where = str(path)
    raw = read_config_file(path)
    unknown = set(raw) - {"stage", "base", "settings", "parameters", "objective"}
    if unknown:
        raise ConfigError(
            f"{where}: unknown key '{sorted(unknown)[0]}'; a space has stage, base, settings, objective and parameters"
        )
    stage = str(raw.get("stage") or "train")
    if stage not in configs or stage not in OBJECTIVES:
        raise ConfigError(f"{where}: 'stage' must be one of {', '.join(configs)}, got {stage!r}")
    objective = str(raw.get("objective") or OBJECTIVES[stage][0])
    if objective not in OBJECTIVES[stage]:
        raise ConfigError(
            f"{where}: 'objective' must be one of {', '.join(OBJECTIVES[stage])} for a {stage} space, got {objective!r}"
        )
    base: dict[str, Any] = {}
    if raw.get("base"):
        base_path = find_config_file(str(raw["base"]), "baselines" if stage == "baseline" else "")
        base.update(read_config_file(base_path))
    settings = raw.get("settings") or {}
    if not isinstance(settings, dict):
        raise ConfigError(f"{where}: 'settings' must be a mapping of {stage} settings")
    base.update(settings)
    build(configs[stage], (where, base))  # the base alone must be a valid config
    fields = {f.name for f in dataclasses.fields(configs[stage])}
    parameters: list[Parameter] = []
    known: set[str] = set()
    raw_parameters = raw.get("parameters") or {}
    if not isinstance(raw_parameters, dict) or not raw_parameters:
        raise ConfigError(f"{where}: 'parameters' must map setting names to their ranges")
    counts = {spec.get("repeat") for spec in raw_parameters.values() if isinstance(spec, dict)} - {None}
    for name, spec in raw_parameters.items():
        if name not in fields and name not in counts:
            raise ConfigError(
                f"{where}: parameter '{name}' is not a {'training' if stage == 'train' else stage} setting "
                f"(see `genre {stage} --help`) "
                "nor a count used by 'repeat'"
            )
        parameters.append(_parameter(name, spec, where, known, fields))
        known.add(name)
    return SearchSpace(base, tuple(parameters), where, objective, stage, configs[stage])


def _active(parameter: Parameter, chosen: dict[str, Any], base: dict[str, Any]) -> bool:
    return all((chosen[k] if k in chosen else base.get(k)) in values for k, values in parameter.when.items())


def suggest(trial: Any, space: SearchSpace) -> dict[str, Any]:
    """Sample one point: the sampled values by name (counts included), ready to overlay the base."""
    chosen: dict[str, Any] = {}
    for parameter in space.parameters:
        if not _active(parameter, chosen, space.base):
            continue
        if parameter.repeat:
            count = int(chosen[parameter.repeat])
            values = [_suggest_one(trial, parameter, f"{parameter.name}_{i + 1}") for i in range(count)]
            chosen[parameter.name] = ",".join(str(value) for value in values)
        else:
            chosen[parameter.name] = _suggest_one(trial, parameter, parameter.name)
    return chosen


def _suggest_one(trial: Any, parameter: Parameter, name: str) -> Any:
    if parameter.kind == "categorical":
        return trial.suggest_categorical(name, list(parameter.choices))
    if parameter.kind == "int":
        step = int(parameter.step or 1)
        return trial.suggest_int(name, int(parameter.low), int(parameter.high), step=step, log=parameter.log)
    return trial.suggest_float(name, parameter.low, parameter.high, step=parameter.step, log=parameter.log)


def trial_settings(space: SearchSpace, chosen: dict[str, Any]) -> dict[str, Any]:
    """The base overlaid with the chosen values that are the stage's settings (counts are dropped)."""
    fields = space.fields
    return space.base | {name: value for name, value in chosen.items() if name in fields}


def config_from(space: SearchSpace, chosen: dict[str, Any], where: str) -> Any:
    """The trial's config: a `TrainConfig`, or a `BaselineConfig` for a baseline space."""
    return build(space.config_class, (where, trial_settings(space, chosen)))
