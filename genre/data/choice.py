"""Which prepared dataset a stage reads: the settings `train`, `baseline` and `evaluate` share, declared once."""

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
