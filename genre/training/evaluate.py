"""Evaluating a logged model (any `mlflow.pyfunc` cover model) on a split of a prepared dataset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from genre.config import check_range, setting
from genre.data.choice import ModelDataChoice
from genre.data.pack import Pack
from genre.errors import DataError

if TYPE_CHECKING:
    from genre.training.loop import Evaluation  # MXNet's loop: imported when a model is evaluated

PROBABILITY_PREFIX = "p_"


@dataclass(frozen=True)
class EvaluateConfig(ModelDataChoice):
    """Which model, on which split of which dataset (by default the one the model was trained on)."""

    model_uri: str = setting("", "the model: runs:/<run id>/model, models:/<name>@<alias>, or a local path")
    split: str = setting("test", "split to evaluate on", ("train", "val", "test"))
    batch_size: int = setting(256, "images per prediction call")

    def __post_init__(self) -> None:
        check_range(self, "batch_size", 1)


def probabilities_of(predictions: Any, genres: list[str]) -> np.ndarray:
    """The `p_<genre>` columns of a model's output, in the dataset's genre order."""
    columns = [f"{PROBABILITY_PREFIX}{genre}" for genre in genres]
    missing = [column for column in columns if column not in predictions.columns]
    if missing:
        known = [c.removeprefix(PROBABILITY_PREFIX) for c in predictions.columns if c.startswith(PROBABILITY_PREFIX)]
        raise DataError(
            f"the model predicts genres {known}, the dataset has {genres}; "
            "evaluate it on the dataset it was trained for"
        )
    return predictions[columns].to_numpy(dtype=np.float64)


def evaluate_model(model: Any, pack: Pack, batch_size: int) -> Evaluation:
    """Predict every image of `pack` with a pyfunc cover `model`; loss is the mean negative log-likelihood.

    Pixels go straight to the cover model's `predict` (the pyfunc wrapper's schema takes encoded images only).
    """
    from genre.training.loop import Evaluation

    classifier = model.unwrap_python_model()
    parts = []
    for start in range(0, len(pack), batch_size):
        pixels = np.ascontiguousarray(pack.images[start : start + batch_size])
        parts.append(probabilities_of(classifier.predict(None, pixels), pack.genres))
    probabilities = np.concatenate(parts) if parts else np.zeros((0, len(pack.genres)))
    labels = pack.labels.astype(np.int64)
    picked = probabilities[np.arange(len(labels)), labels] if len(labels) else np.zeros(0)
    loss = float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0)))) if len(labels) else float("nan")
    return Evaluation(loss, probabilities, labels)
