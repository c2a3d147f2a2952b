"""Which settings `genre train --data PACK` starts from when no experiment is named: `TrainConfig`'s defaults (the
conv net on the digits) for the bundled digits, and for covers the cover recipe measured on real covers.

Measured on covers-dev, three seeds (docs/results.md, test balanced accuracy): fine-tuned ImageNet EfficientNet-Lite0
62.0 ± 2.6%, resnet18 from scratch 32.5 ± 1.0%, the conv net from scratch 20.4 ± 1.9%. So covers start from the
Lite0 recipe, or, where its ImageNet weights are not installed, from resnet18's. A `--model` picks the recipe
measured for it; a model without one takes the cover augmentation (flip, colour jitter, crops) of resnet18's. With
the digits' defaults a network memorises covers: no flip, no colour jitter. Flags override a recipe's settings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genre.config import COMMAND_LINE, EXPERIMENTS_DIR, build, read_config_file
from genre.data.pack import DatasetInfo
from genre.data.sources import DIGITS_SOURCE
from genre.data.transforms import AugmentSpec
from genre.errors import ConfigError, DataError
from genre.models.efficientnet_lite import weights_file
from genre.training.config import TrainConfig

PROJECT_EXPERIMENTS = Path(__file__).resolve().parents[2] / EXPERIMENTS_DIR  # the checkout's, from anywhere
DIGITS_EXPERIMENT = "convnet-digits"  # TrainConfig's defaults, by name


@dataclass(frozen=True)
class CoverRecipe:
    """A named experiment measured on real covers, and the side of the packs it was measured on."""

    experiment: str
    pack_size: int


COVER_RECIPES = {  # by model: docs/results.md, sections covers-dev and covers-dev-lite2
    "efficientnet_lite0": CoverRecipe("finetune-lite0-covers-dev", 256),
    "efficientnet_lite2": CoverRecipe("finetune-lite2-covers-dev", 256),
    "resnet18_v1b": CoverRecipe("resnet18-covers-dev-128", 128),
    "convnet": CoverRecipe("convnet-covers-dev-128", 128),
}
PRETRAINED, FROM_SCRATCH = "efficientnet_lite0", "resnet18_v1b"  # measured best with and without ImageNet weights
AUGMENTATION = tuple(field.name for field in dataclasses.fields(AugmentSpec))


def is_cover_pack(data: str) -> bool:
    """Whether `data` is a prepared pack of covers (a folder's or a manifest's), not the bundled digits; False for a
    folder that holds no readable pack (the stage then says what is wrong with it)."""
    try:
        return DatasetInfo.read(Path(data)).source != DIGITS_SOURCE
    except (DataError, OSError):
        return False


def weights_installed(model: str) -> bool:
    try:
        weights_file(model)
    except ConfigError:
        return False
    return True


def recipe_file(name: str) -> Path | None:
    """`experiments/<name>.yaml` of the working folder, else of this checkout; None when neither has it."""
    for home in (EXPERIMENTS_DIR, PROJECT_EXPERIMENTS):
        if (home / f"{name}.yaml").is_file():
            return home / f"{name}.yaml"
    return None


def as_flags(settings: dict[str, Any]) -> str:
    """`{'flip': True, 'epochs': 6}` -> `'--flip true --epochs 6'`: what a user types to set them."""
    shown = {key: str(value).lower() if isinstance(value, bool) else value for key, value in settings.items()}
    return " ".join(f"--{key.replace('_', '-')} {value}" for key, value in shown.items())


def with_cover_recipe(
    config: TrainConfig, given: dict[str, Any], config_file: Path | None
) -> tuple[TrainConfig, Path | None]:
    """`config` (built from the defaults and the flags `given`) for covers: rebuilt from the cover recipe under the
    same flags, saying which recipe on stdout; unchanged for the digits, a named experiment or `--resume`.

    Returns the settings and the experiment file they came from (None: the defaults, or part of a recipe only)."""

    if config_file is not None or config.resume or not is_cover_pack(config.data):
        return config, config_file
    model = str(given["model"]).strip().lower() if given.get("model") else None
    notes: list[str] = []
    if model is None:
        model = PRETRAINED if weights_installed(PRETRAINED) else FROM_SCRATCH
        if model == FROM_SCRATCH:
            notes.append(f"{PRETRAINED}'s ImageNet weights are not installed, so the best recipe from scratch")
    recipe = COVER_RECIPES.get(model) or COVER_RECIPES[FROM_SCRATCH]
    path = recipe_file(recipe.experiment)
    if path is None:
        print(
            f"covers: the cover recipe {recipe.experiment} is not in {EXPERIMENTS_DIR}/ here (run from the project "
            "root); training with the defaults, made for the digits"
        )
        return config, None
    settings = {key: value for key, value in read_config_file(path).items() if key not in ("data", "variant")}
    whole = model in COVER_RECIPES
    if not whole:
        settings = {key: value for key, value in settings.items() if key in AUGMENTATION}
        notes.append(f"no cover recipe was measured for {model}")
    applied = {key: value for key, value in settings.items() if key not in given}
    what = f"the cover recipe {recipe.experiment}" if whole else f"the cover augmentation of {recipe.experiment}"
    size = DatasetInfo.read(Path(config.data)).image_size
    if whole and size != recipe.pack_size:
        notes.append(
            f"measured on covers packed at {recipe.pack_size} px, this pack is {size} px "
            f"(genre prepare --image-size {recipe.pack_size} packs them as measured)"
        )
    print(
        f"covers: using {what} ({as_flags(applied)}; {path})"
        + "".join(f"; {note}" for note in notes)
        + f"; flags override it, --experiment {DIGITS_EXPERIMENT} for the digits defaults"
    )
    where = str(path) if whole else f"{path} (its augmentation)"
    rebuilt = build(TrainConfig, (where, settings), (COMMAND_LINE, given))
    return rebuilt, path if whole else None
