"""The experiment catalogue: every YAML in `experiments/` (networks) and `experiments/baselines/` by name.

A suite refers to experiments by these names. An experiment's identity for resuming is the digest of its resolved
settings (`config_digest`) beside the digest of the data it reads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genre.command_config import BaselineConfig
from genre.config import EXPERIMENTS_DIR, build, read_config_file
from genre.errors import ConfigError
from genre.training.config import TrainConfig

KINDS = {"train": "", "baseline": "baselines"}  # kind -> folder under experiments/
# Settings that change where or how fast a run works, never what it learns.
NOT_IDENTITY = frozenset({"resume", "checkpoint_dir", "workers", "data", "system_metrics"})


@dataclass(frozen=True)
class Experiment:
    """One runnable entry of the catalogue: its name, kind (train or baseline), settings and file."""

    name: str
    kind: str
    config: Any  # TrainConfig or BaselineConfig
    file: Path

    def with_settings(self, **changes: object) -> Experiment:
        """The same experiment with some settings changed (a seed, a fold), checked again."""
        return dataclasses.replace(self, config=dataclasses.replace(self.config, **changes))


def config_class(kind: str) -> type:
    if kind == "baseline":
        return BaselineConfig

    return TrainConfig


def experiment_files(root: Path = EXPERIMENTS_DIR) -> dict[str, tuple[str, Path]]:
    """`{name: (kind, file)}` of every experiment; a name used by both kinds is an error."""
    found: dict[str, tuple[str, Path]] = {}
    for kind, folder in KINDS.items():
        for path in sorted((root / folder).glob("*.yaml")):
            if path.stem in found:
                raise ConfigError(f"experiment name '{path.stem}' is used twice: {found[path.stem][1]} and {path}")
            found[path.stem] = (kind, path)
    return found


def find_experiment(name: str, root: Path = EXPERIMENTS_DIR) -> Experiment:
    """The experiment `name` (or a YAML file of train settings), loaded and validated."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"experiment file {path} does not exist")
        kind = "baseline" if path.parent.name == KINDS["baseline"] else "train"
    else:
        files = experiment_files(root)
        if name not in files:
            raise ConfigError(
                f"no experiment named '{name}' in {root}/ or {root}/baselines/ (known: {', '.join(sorted(files))})"
            )
        kind, path = files[name]
    return Experiment(path.stem, kind, build(config_class(kind), (str(path), read_config_file(path))), path)


# What tells the runs of one version of an experiment apart: the seed, and the fold of a cross-validation.
RUN_OF_VERSION = frozenset({"seed", "fold", "repeat"})


def config_digest(config: Any, seed: bool = True) -> str:
    """A short digest of the settings that decide what a run learns (`seed=False` leaves out the seed and the fold
    and repeat of a cross-validation, which the runs of one version of an experiment differ by).

    Settings at their default are left out too, so a new setting (whose default keeps the old behaviour) does not
    make every finished suite run look like another version."""
    left_out = NOT_IDENTITY | (set() if seed else RUN_OF_VERSION)
    defaults = {field.name: field.default for field in dataclasses.fields(config)}
    settings = {
        key: value
        for key, value in dataclasses.asdict(config).items()
        if key not in left_out and value != defaults[key]
    }
    text = json.dumps({"class": type(config).__name__, **settings}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_names(text: str) -> list[str]:
    """`'a, b,,c'` -> `['a', 'b', 'c']`."""
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_seeds(text: str) -> list[int]:
    """`'0,1,2'` -> `[0, 1, 2]`; anything else is a `ConfigError` naming the setting."""
    try:
        seeds = [int(part) for part in parse_names(text)]
    except ValueError:
        raise ConfigError(f"'seeds' must be comma-separated integers like '0,1,2', got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"'seeds' must name at least one seed, each once, got {text!r}")
    return seeds
