"""Figures logged with runs. Pure: arrays in, a matplotlib Figure out (the caller saves or logs it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def sample_grid(samples: Mapping[str, Sequence[np.ndarray]], columns: int = 8) -> Figure:
    """One row per genre with up to `columns` sample covers `(H, W, 3)` uint8."""
    genres = list(samples)
    figure, axes = plt.subplots(
        len(genres), columns, figsize=(columns * 1.2, len(genres) * 1.25), squeeze=False, layout="constrained"
    )
    for row, genre in enumerate(genres):
        for column in range(columns):
            axis = axes[row][column]
            axis.set_xticks([])
            axis.set_yticks([])
            for spine in axis.spines.values():
                spine.set_visible(False)
            if column < len(samples[genre]):
                axis.imshow(samples[genre][column], interpolation="nearest")
        axes[row][0].set_ylabel(genre, rotation=0, ha="right", va="center", fontsize=10)
    figure.suptitle("Sample training images per genre")
    return figure


def confusion_matrix_figure(matrix: np.ndarray, genres: Sequence[str], title: str) -> Figure:
    """Rows are true genres, columns predicted; cells show counts, colour shows the row's share."""
    matrix = np.asarray(matrix)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    side = max(4.0, 0.55 * len(genres) + 2)
    figure, axis = plt.subplots(figsize=(side + 1, side), layout="constrained")
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(len(genres)), genres, rotation=45, ha="right")
    axis.set_yticks(range(len(genres)), genres)
    axis.set_xlabel("predicted genre")
    axis.set_ylabel("true genre")
    for (row, column), count in np.ndenumerate(matrix):
        axis.text(
            column,
            row,
            str(count),
            ha="center",
            va="center",
            fontsize=8,
            color="white" if shares[row, column] > 0.5 else "black",
        )
    figure.colorbar(image, ax=axis, label="share of the true genre")
    axis.set_title(title)
    return figure


def learning_curves(history: Sequence[Mapping[str, float]]) -> Figure:
    """Loss and accuracy per epoch, training beside validation."""
    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for axis, metric in ((loss_axis, "loss"), (accuracy_axis, "accuracy")):
        for split, style in (("train", "-o"), ("val", "-s")):
            axis.plot(epochs, [row[f"{split}_{metric}"] for row in history], style, label=f"{split}_{metric}")
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    return figure
