"""Which prepared dataset a stage reads: the settings `train`, `baseline`, `evaluate` and `interpret` share."""

from __future__ import annotations

from dataclasses import dataclass

from genre.config import setting
from genre.data.pack import VARIANTS
from genre.data.prepare import DEFAULT_DATASET


@dataclass(frozen=True)
class DatasetChoice:
    """A prepared dataset folder and which of its variants to read."""

    data: str = setting(
        DEFAULT_DATASET, "prepared dataset folder (from `genre prepare`; the bundled digits are prepared on first use)"
    )
    variant: str = setting("full", "the full dataset or its development subset", VARIANTS)


@dataclass(frozen=True)
class ModelDataChoice(DatasetChoice):
    """The dataset a stage scores a logged model on (`evaluate`, `interpret`): unset (""), the one the model was
    trained on, which the stage reads from the model's run (`genre.stages.model_data`)."""

    data: str = setting(
        "",
        "prepared dataset folder (default: the one the model was trained on, read from its run; for a model that "
        f"names no run, {DEFAULT_DATASET})",
    )
    variant: str = setting("", "the full dataset or its development subset (default: the model's, else full)", VARIANTS)
