"""The pictures of `genre interpret`: a heatmap laid over a cover, grids of such covers and of nearest neighbours,
and the map of covers by genre; checked on the arrays and the matplotlib artists a reader would see."""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnnotationBbox
from matplotlib.text import Text
from PIL import Image

from genre.figures import embedding_map, genre_colours, heatmap_grid, heatmap_overlay, neighbours_figure


def cover(seed: int, size: tuple[int, int] = (24, 32)) -> np.ndarray:
    """A smooth random RGB cover `(H, W, 3)` uint8."""
    small = np.random.default_rng(seed).integers(0, 256, size=(3, 3, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize(size[::-1], Image.Resampling.BILINEAR))


def image_panels(figure: Figure) -> int:
    return sum(1 for axis in figure.axes if axis.images)


def texts(figure: Figure) -> set[str]:
    return {text.get_text() for text in figure.findobj(Text)}


def saved(figure: Figure) -> Image.Image:
    """The figure as the PNG a run would hold."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return Image.open(io.BytesIO(buffer.getvalue()))


def test_the_overlay_keeps_the_cover_and_is_red_where_the_heatmap_is_high_blue_where_it_is_zero() -> None:
    grey = np.full((24, 32, 3), 128, dtype=np.uint8)
    heatmap = np.zeros((3, 4))  # a coarse Grad-CAM map: resized to the cover
    heatmap[:, :2] = 1.0  # the left half matters
    overlay = heatmap_overlay(grey, heatmap)
    assert overlay.shape == grey.shape and overlay.dtype == np.uint8
    redness = overlay[..., 0].astype(int) - overlay[..., 2].astype(int)
    assert redness[:, :8].min() > 40  # the far left: heatmap 1
    assert redness[:, -8:].max() < -40  # the far right: heatmap 0
    greenness = overlay[..., 1].astype(int) - np.maximum(overlay[..., 0], overlay[..., 2])
    assert greenness[:, 12:20].max() > 20  # resized smoothly: jet's green between red and blue, no hard seam
    np.testing.assert_array_equal(heatmap_overlay(grey, heatmap, alpha=0.0), grey)


def test_the_overlay_clips_a_heatmap_outside_zero_to_one_and_refuses_a_grey_cover() -> None:
    picture = cover(0)
    np.testing.assert_array_equal(
        heatmap_overlay(picture, np.full((24, 32), 5.0)), heatmap_overlay(picture, np.ones((24, 32)))
    )
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        heatmap_overlay(picture[..., 0], np.ones((24, 32)))


def test_the_heatmap_grid_shows_each_cover_with_its_caption_and_each_row_with_its_label() -> None:
    rows = [
        ("rock", [(cover(n), np.random.default_rng(n).random((6, 8)), f"rock -> rock {90 - n}%") for n in range(3)]),
        ("folk", [(cover(9), np.ones((24, 32)), "folk -> metal 87%")]),
    ]
    figure = heatmap_grid(rows, "most confidently correct covers per genre")
    assert image_panels(figure) == 4  # the short row ends blank
    shown = texts(figure)
    assert {"rock", "folk", "rock -> rock 90%", "rock -> rock 88%", "folk -> metal 87%"} <= shown
    assert "most confidently correct covers per genre" in shown
    assert saved(figure).size[0] > 0


def test_an_empty_heatmap_grid_says_so() -> None:
    figure = heatmap_grid([], "top losses")
    assert image_panels(figure) == 0 and "no cover to show" in texts(figure)
    plt.close(figure)


def test_the_neighbours_figure_shows_each_query_then_its_neighbours_with_captions() -> None:
    rows = [
        (cover(0), "query: folk", [(cover(1), "folk 0.93"), (cover(2), "folk 0.90"), (cover(3), "rock 0.71")]),
        (cover(4), "query: rock", [(cover(5), "rock 0.88"), (cover(6), "metal 0.80")]),
    ]
    figure = neighbours_figure(rows, "nearest neighbours in the penultimate layer")
    assert image_panels(figure) == 7
    assert {"query: folk", "folk 0.93", "rock 0.71", "query: rock", "metal 0.80", "neighbour 3"} <= texts(figure)
    assert saved(figure).size[0] > 0


def test_the_map_colours_covers_by_genre_with_a_legend_of_the_genres_present() -> None:
    rng = np.random.default_rng(0)
    points, labels = rng.normal(size=(30, 2)), np.repeat([0, 2], 15)
    figure = embedding_map(points, labels, ["rock", "folk", "metal"], "penultimate layer, t-SNE")
    (axis,) = figure.axes
    legend = [text.get_text() for text in axis.get_legend().get_texts()]
    assert legend == ["rock", "metal"]  # folk has no cover here
    colours = genre_colours(3)
    assert [tuple(collection.get_facecolor()[0]) for collection in axis.collections] == [colours[0], colours[2]]
    assert saved(figure).size[0] > 0


def test_the_map_with_thumbnails_draws_every_cover_framed_in_its_genres_colour() -> None:
    points, labels = np.random.default_rng(1).normal(size=(6, 2)), np.array([0, 1, 1, 0, 1, 0])
    thumbnails = np.stack([cover(n, (16, 16)) for n in range(6)])
    figure = embedding_map(points, labels, ["rock", "folk"], "covers on the map", thumbnails=thumbnails)
    (axis,) = figure.axes
    boxes = [artist for artist in axis.artists if isinstance(artist, AnnotationBbox)]
    assert len(boxes) == 6
    colours = genre_colours(2)
    assert [tuple(box.patch.get_edgecolor()) for box in boxes] == [colours[label] for label in labels]
    assert saved(figure).size[0] > 0


def test_genre_colours_are_distinct_up_to_twenty_genres() -> None:
    assert len(set(genre_colours(10))) == 10 and len(set(genre_colours(20))) == 20


def test_the_accuracy_chart_draws_each_test_interval_as_an_error_bar_beside_the_seeds_spread() -> None:
    from genre.figures import accuracy_bars
    from genre.intervals import Interval

    figure = accuracy_bars(
        ["cnn", "rf", "old"],
        [[0.6, 0.62], [0.5], [0.4]],
        [[0.5, 0.52], [0.4], [0.3]],
        chance=1 / 6,
        test_intervals=[Interval(0.51, 0.41, 0.6), Interval(0.4, 0.31, 0.49), None],  # old: no predictions
    )

    labels = [text.get_text() for text in figure.legends[0].get_texts()]
    assert "test 95% interval (bootstrap over covers)" in labels and "validation" in labels
    (interval,) = [found for found in figure.axes[0].containers if found.get_label().startswith("test 95% interval")]
    _, _, (lines,) = interval.lines
    spans = sorted(tuple(np.round(segment[:, 0], 6)) for segment in lines.get_segments())
    assert spans == [(31.0, 49.0), (41.0, 60.0)]  # the two intervals, in percent; none for the row without
    (test_bars,) = [found for found in figure.axes[0].containers if found.get_label() == "test"]
    _, _, (spread,) = test_bars.errorbar.lines
    cnn = spread.get_segments()[0][:, 0]
    assert cnn == pytest.approx([51 - 1.41421, 51 + 1.41421], abs=1e-4)  # the seeds' std stays
    plt.close(figure)
