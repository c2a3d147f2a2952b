"""Figures logged with runs. Pure: arrays in, a matplotlib Figure out (the caller saves or logs it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from genre.intervals import Interval, percent_level  # noqa: E402
from genre.metrics import ConfusedPair, Reliability  # noqa: E402


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


def confusion_matrix_figure(
    matrix: np.ndarray, genres: Sequence[str], title: str, *, normalised: bool = False
) -> Figure:
    """Rows are true genres, columns predicted; cells show counts (`normalised`: the row's share, in %), colour
    shows the row's share. `matrix` holds counts either way."""
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
            f"{100 * shares[row, column]:.0f}" if normalised else str(count),
            ha="center",
            va="center",
            fontsize=8,
            color="white" if shares[row, column] > 0.5 else "black",
        )
    figure.colorbar(image, ax=axis, label="share of the true genre")
    if normalised:
        axis.set_xlabel("predicted genre (cells: % of the true genre's covers)")
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


def accuracy_bars(
    labels: Sequence[str],
    val: Sequence[Sequence[float]],
    test: Sequence[Sequence[float]],
    chance: float | None,
    test_intervals: Sequence[Interval | None] | None = None,
) -> Figure:
    """Per experiment (best at the top): validation and test accuracy, mean over seeds with std error bars, and
    each experiment's test interval (`test_intervals`, from its pooled per-cover predictions; None where it has
    none) as a red error bar around the pooled test accuracy, over the test bar."""
    count = len(labels)
    positions = np.arange(count)[::-1]
    figure, axis = plt.subplots(figsize=(9, 1.6 + 0.45 * count), layout="constrained")
    highest = 0.0
    for offset, name, values, colour in ((0.2, "validation", val, "tab:blue"), (-0.2, "test", test, "tab:orange")):
        means = [100 * float(np.mean(v)) for v in values]
        errors = [100 * float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in values]
        axis.barh(positions + offset, means, height=0.38, xerr=errors, capsize=3, color=colour, label=name)
        highest = max([highest, *(m + e for m, e in zip(means, errors, strict=True))])
    intervals = test_intervals or [None] * count
    shown = [(position, interval) for position, interval in zip(positions, intervals, strict=True) if interval]
    if shown:
        estimates, lows, highs = (100 * np.array([[i.estimate, i.low, i.high] for _, i in shown])).T
        level = percent_level(shown[0][1].level)
        axis.errorbar(
            estimates,
            [position - 0.2 for position, _ in shown],
            xerr=[estimates - lows, highs - estimates],
            fmt="none",
            ecolor="tab:red",
            elinewidth=2,
            capsize=5,
            label=f"test {level} interval (bootstrap over covers)",
        )
        highest = max(highest, float(highs.max()))
    if chance:
        axis.axvline(100 * chance, color="grey", linestyle="--", linewidth=1, label=f"chance {100 * chance:.0f}%")
    axis.set_yticks(positions, labels)
    axis.set_xlabel("accuracy % (bars: mean ± std over seeds; red: test interval of the pooled covers)")
    axis.set_xlim(0, min(100.0, highest * 1.08 + 2))  # covers' 10-25% stay readable
    axis.grid(axis="x", alpha=0.3)
    figure.legend(loc="outside lower center", ncol=4)
    axis.set_title("Accuracy per experiment")
    return figure


def overlaid_curves(curves: Mapping[str, Sequence[Sequence[tuple[int, float]]]], metric: str) -> Figure:
    """One line per experiment: `metric` per epoch, mean over its seeds, with the seeds' range shaded."""
    figure, axis = plt.subplots(figsize=(9, 5), layout="constrained")
    for label, runs in curves.items():
        length = min(len(run) for run in runs)
        if length == 0:
            continue
        epochs = [step for step, _ in runs[0][:length]]
        values = 100 * np.array([[value for _, value in run[:length]] for run in runs])
        (line,) = axis.plot(epochs, values.mean(axis=0), "-o", markersize=3, label=label)
        if len(runs) > 1:
            axis.fill_between(epochs, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.15)
    axis.set_xlabel("epoch")
    axis.set_ylabel(f"{metric} %")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(f"Learning curves: {metric} per epoch (mean over seeds, range shaded)")
    return figure


def confused_pairs_figure(pairs: Sequence[ConfusedPair], title: str) -> Figure:
    """The most confused pairs as horizontal bars, the most frequent at the top: "true -> predicted", each bar's
    count with its share of the true genre's covers."""
    count = len(pairs)
    figure, axis = plt.subplots(figsize=(8, 1.4 + 0.4 * max(count, 1)), layout="constrained")
    positions = np.arange(count)[::-1]
    axis.barh(positions, [pair.count for pair in pairs], height=0.6, color="tab:red")
    for position, pair in zip(positions, pairs, strict=True):
        axis.text(pair.count, position, f" {pair.count} ({pair.share:.0%} of {pair.true})", va="center", fontsize=8)
    axis.set_yticks(positions, [f"{pair.true} \u2192 {pair.predicted}" for pair in pairs])
    axis.set_xlabel("covers (true genre \u2192 predicted genre)")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlim(0, max([pair.count for pair in pairs], default=1) * 1.35)  # room for the labels
    if not pairs:
        axis.text(0.5, 0.5, "no cover was confused", transform=axis.transAxes, ha="center", va="center")
    axis.grid(axis="x", alpha=0.3)
    axis.set_title(title)
    return figure


def reliability_diagram(bins: Reliability, ece: float, title: str) -> Figure:
    """Above: each bin's accuracy as a bar, with the gap to the bin's mean top-1 confidence hatched, beside the
    diagonal a calibrated model follows (bars below it: overconfident). Below: how many covers each bin holds."""
    edges = bins.edges
    width = np.diff(edges)
    centres = edges[:-1] + width / 2
    filled = bins.count > 0
    figure, (accuracy_axis, count_axis) = plt.subplots(
        2, 1, figsize=(6, 7), sharex=True, height_ratios=(3, 1), layout="constrained"
    )
    accuracy = bins.accuracy[filled]
    accuracy_axis.bar(centres[filled], accuracy, width[filled], edgecolor="black", label="accuracy")
    accuracy_axis.bar(
        centres[filled],
        bins.confidence[filled] - accuracy,
        width[filled],
        bottom=accuracy,
        color="tab:red",
        alpha=0.3,
        hatch="//",
        edgecolor="tab:red",
        label="gap to the mean confidence",
    )
    accuracy_axis.plot([0, 1], [0, 1], "--", color="grey", label="calibrated")
    accuracy_axis.set_xlim(0, 1)
    accuracy_axis.set_ylim(0, 1)
    accuracy_axis.set_ylabel("accuracy of the bin's top-1 predictions")
    accuracy_axis.grid(alpha=0.3)
    accuracy_axis.legend(loc="upper left")
    accuracy_axis.set_title(f"{title}\nECE {ece:.3f}", fontsize=10)
    count_axis.bar(centres, bins.count, width=width, edgecolor="black", color="tab:gray")
    count_axis.set_xlabel("top-1 confidence")
    count_axis.set_ylabel("covers")
    count_axis.grid(alpha=0.3)
    return figure


HeatmapPanel = tuple[np.ndarray, np.ndarray, str]  # cover (H, W, 3) uint8, heatmap (h, w) in [0, 1], caption
NeighbourPanel = tuple[np.ndarray, str]  # cover (H, W, 3) uint8, caption


def heatmap_overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """A cover `(H, W, 3)` uint8 with a heatmap `(h, w)` in [0, 1] (e.g. Grad-CAM) laid over it in the "jet"
    colours (blue 0, red 1): `(H, W, 3)` uint8, `alpha` the heatmap's weight. A heatmap of another size is resized
    to the cover's bilinearly; values outside [0, 1] (and NaN, as 0) are clipped."""
    image = np.asarray(image)
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"the cover must be (H, W, 3), got shape {image.shape}")
    if heatmap.ndim != 2:
        raise ValueError(f"the heatmap must be (h, w), got shape {heatmap.shape}")
    height, width = image.shape[:2]
    heatmap = np.nan_to_num(heatmap, nan=0.0)
    if heatmap.shape != (height, width):
        from PIL import Image

        resized = Image.fromarray(np.ascontiguousarray(heatmap)).resize((width, height), Image.Resampling.BILINEAR)
        heatmap = np.asarray(resized, dtype=np.float32)
    colours = matplotlib.colormaps["jet"](np.clip(heatmap, 0.0, 1.0))[..., :3] * 255.0
    blend = (1.0 - alpha) * image.astype(np.float32) + alpha * colours
    return np.clip(np.rint(blend), 0, 255).astype(np.uint8)


def _cover_panel(axis: plt.Axes, image: np.ndarray | None, caption: str = "") -> None:
    """One cover in a grid: no ticks or frame, the caption in small type under it; None leaves the panel blank."""
    axis.set_xticks([])
    axis.set_yticks([])
    for spine in axis.spines.values():
        spine.set_visible(False)
    if image is not None:
        axis.imshow(image, interpolation="nearest")
        axis.set_xlabel(caption, fontsize=7)


def _panel_grid(rows: int, columns: int) -> tuple[Figure, np.ndarray]:
    """A figure of `rows` x `columns` cover panels, room under each for a caption."""
    return plt.subplots(
        max(rows, 1),
        max(columns, 1),
        figsize=(max(columns, 1) * 1.5 + 1, max(rows, 1) * 1.75 + 0.6),
        squeeze=False,
        layout="constrained",
    )


def heatmap_grid(rows: Sequence[tuple[str, Sequence[HeatmapPanel]]], title: str) -> Figure:
    """One row per label (a genre, say) with its label at the left; each panel a cover with its heatmap laid over it
    (`heatmap_overlay`) and its caption under it ("rock -> metal 87%"). Rows with fewer panels than the longest end
    blank."""
    columns = max((len(panels) for _, panels in rows), default=0)
    figure, axes = _panel_grid(len(rows), columns)
    for row, (label, panels) in enumerate(rows):
        for column in range(axes.shape[1]):
            if column < len(panels):
                cover, heatmap, caption = panels[column]
                _cover_panel(axes[row][column], heatmap_overlay(cover, heatmap), caption)
            else:
                _cover_panel(axes[row][column], None)
        axes[row][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if not rows:
        _cover_panel(axes[0][0], None)
        axes[0][0].text(0.5, 0.5, "no cover to show", ha="center", va="center", transform=axes[0][0].transAxes)
    figure.suptitle(title, fontsize=10)
    return figure


def genre_colours(count: int) -> list[tuple[float, float, float, float]]:
    """`count` distinct colours, one per genre: tab10 up to 10 genres, tab20 up to 20 (beyond, they repeat)."""
    palette = matplotlib.colormaps["tab10" if count <= 10 else "tab20"]
    return [palette(index % palette.N) for index in range(count)]


def embedding_map(
    points: np.ndarray,
    labels: np.ndarray,
    genres: Sequence[str],
    title: str,
    thumbnails: np.ndarray | None = None,
) -> Figure:
    """A 2-D map of covers: `points` `(N, 2)` float (e.g. `genre.models.embedding.project`), coloured by genre
    (`labels` `(N,)` int indices into `genres`), with a legend of the genres present. With `thumbnails`
    `(N, h, w, 3)` uint8 each cover is drawn as itself, framed in its genre's colour (keep N to a few hundred)."""
    points = np.asarray(points, dtype=np.float64)
    labels = np.asarray(labels)
    if points.ndim != 2 or points.shape[1] != 2 or labels.shape != (len(points),):
        raise ValueError(f"need points (N, 2) and labels (N,), got {points.shape} and {labels.shape}")
    if thumbnails is not None and len(thumbnails) != len(points):
        raise ValueError(f"need one thumbnail per point, got {len(thumbnails)} for {len(points)} points")
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    colours = genre_colours(len(genres))
    figure, axis = plt.subplots(figsize=(9, 8), layout="constrained")
    for index, genre in enumerate(genres):
        mine = labels == index
        if mine.any():  # under thumbnails the points still set the axes' limits and give the legend its colours
            axis.scatter(*points[mine].T, s=6 if thumbnails is not None else 14, color=colours[index], label=genre)
    if thumbnails is not None:
        for (x, y), label, thumbnail in zip(points, labels, thumbnails, strict=True):
            picture = OffsetImage(thumbnail, zoom=22 / max(thumbnail.shape[:2]))  # about 22 points a side
            frame = {"edgecolor": colours[int(label)], "linewidth": 1.5}
            axis.add_artist(AnnotationBbox(picture, (x, y), frameon=True, pad=0.1, bboxprops=frame))
    axis.set_xticks([])
    axis.set_yticks([])
    if len(points):
        axis.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, markerscale=2, title="genre")
    axis.set_title(title, fontsize=10)
    return figure


def neighbours_figure(rows: Sequence[tuple[np.ndarray, str, Sequence[NeighbourPanel]]], title: str) -> Figure:
    """One row per query cover: the query with its caption, framed, then its nearest neighbours in order, each with
    its caption ("folk 0.93"). Rows with fewer neighbours than the longest end blank."""
    columns = 1 + max((len(neighbours) for _, _, neighbours in rows), default=0)
    figure, axes = _panel_grid(len(rows), columns)
    for row, (query, caption, neighbours) in enumerate(rows):
        _cover_panel(axes[row][0], query, caption)
        for spine in axes[row][0].spines.values():
            spine.set_visible(True)
            spine.set_linewidth(2)
        for column in range(1, columns):
            if column <= len(neighbours):
                _cover_panel(axes[row][column], *neighbours[column - 1])
            else:
                _cover_panel(axes[row][column], None)
    if rows:
        axes[0][0].set_title("query", fontsize=8)
        for column in range(1, columns):
            axes[0][column].set_title(f"neighbour {column}", fontsize=8)
    else:
        _cover_panel(axes[0][0], None)
        axes[0][0].text(0.5, 0.5, "no cover to show", ha="center", va="center", transform=axes[0][0].transAxes)
    figure.suptitle(title, fontsize=10)
    return figure


def close_figure(figure: Figure) -> None:
    """Free a figure once it is saved (pyplot keeps every figure it made until it is closed)."""
    plt.close(figure)
