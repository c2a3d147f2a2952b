"""Style statistics: the mean and standard deviation of every channel of a block's map over the image.

Style lives in a network's intermediate layers (Karayev et al. 2014, "Recognizing Image Style"; Gatys et al. describe
style by the statistics of feature maps). The feature baselines read them from a frozen network
(`genre.models.features.CoverDescriber`); a fine-tuned EfficientNet-Lite can feed them to its output layer too
(`style_blocks`), so that fine-tuning starts from the style probe. No MXNet import: `F` is `mx.nd` or `mx.sym`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from genre.errors import ConfigError

STATS_EPSILON = 1e-6  # inside the square root of a channel's variance: a flat channel has a finite gradient
GRAM_MIXTURES = (0, 64)  # bounds of style_gram: 0 none; a 320-channel map gives at most 64 mixtures' 2,016 pairs


def parse_style_blocks(value: object) -> int | None:
    """How many of a network's last blocks give style statistics, from `none`/`0` (0), `all` (None) or `N`."""
    text = str(value).strip().lower()
    if text in ("none", "0", ""):
        return 0
    if text == "all":
        return None
    if not text.isdigit():
        raise ConfigError(f"'style_blocks' must be none, all or a number of blocks, got {value!r}")
    return int(text)


def last_positions(positions: list[int], last_blocks: int | None) -> tuple[int, ...]:
    """The last `last_blocks` of `positions` (None: all of them)."""
    return tuple(positions if last_blocks is None else positions[len(positions) - min(last_blocks, len(positions)) :])


def channel_statistics(F: Any, x: Any) -> list[Any]:
    """`(N, C, H, W)` -> `[(N, C) mean, (N, C) standard deviation]` of each channel over its map."""
    centred = F.broadcast_sub(x, F.mean(x, axis=(2, 3), keepdims=True))
    return [F.mean(x, axis=(2, 3)), F.sqrt(F.mean(F.square(centred), axis=(2, 3)) + STATS_EPSILON)]


def gram_pairs(mixtures: int) -> int:
    """How many numbers the correlation summary of `mixtures` channel mixtures gives: its matrix above the diagonal."""
    return mixtures * (mixtures - 1) // 2


def gram_projection(channels: int, mixtures: int) -> np.ndarray:
    """`(mixtures, channels, 1, 1)`: fixed random mixtures of a map's channels, the same for every map of that many
    channels (seeded by it), so that a summary computed today matches one computed by a logged model tomorrow."""
    rng = np.random.default_rng(channels)
    return (rng.standard_normal((mixtures, channels)) / np.sqrt(channels)).astype(np.float32)[:, :, None, None]


def upper_pairs(mixtures: int) -> np.ndarray:
    """Positions in a flattened `mixtures x mixtures` matrix of its entries above the diagonal, row by row."""
    rows, columns = np.triu_indices(mixtures, k=1)
    return (rows * mixtures + columns).astype(np.float32)


def channel_correlations(F: Any, x: Any, projection: Any, pairs: Any, mixtures: int) -> Any:
    """`(N, C, H, W)` -> `(N, k(k-1)/2)`: the correlations over the map between `k = mixtures` mixtures of its
    channels (`projection`, `(k, C, 1, 1)`), above the diagonal (`pairs`, from `upper_pairs`): a reduced Gram
    matrix. Gatys et al. describe style by the full `C x C` one; 320 channels would give 51,040 numbers a block."""
    mixed = F.reshape(F.Convolution(x, projection, kernel=(1, 1), num_filter=mixtures, no_bias=True), shape=(0, 0, -1))
    centred = F.broadcast_sub(mixed, F.mean(mixed, axis=2, keepdims=True))
    unit = F.broadcast_div(centred, F.sqrt(F.sum(F.square(centred), axis=2, keepdims=True) + STATS_EPSILON))
    correlations = F.batch_dot(unit, unit, transpose_b=True)  # (N, k, k), ones on the diagonal
    return F.take(F.reshape(correlations, shape=(0, -1)), pairs, axis=1)


def run_with_statistics(
    F: Any,
    layers: Any,
    x: Any,
    taps: frozenset[int],
    mixing: tuple[Any, ...] = (),
    pairs: Any = None,
    mixtures: int = 0,
    start: int = 0,
) -> Any:
    """Run `x` through the sequential `layers` (from position `start`: `x` is then the map of `start - 1`); the
    flattened output, then the statistics of the maps at `taps`, then (with `mixing`, one `(mixtures, C, 1, 1)`
    projection per tap in order, and `pairs`) their channel correlations."""
    if any(tap < start for tap in taps):
        raise ValueError(f"taps {sorted(taps)} include a map before position {start}")
    statistics, correlations = [], []
    for index in range(start, len(layers)):
        x = layers[index](x)
        if index in taps:
            statistics += channel_statistics(F, x)
            if mixing:
                correlations.append(channel_correlations(F, x, mixing[len(correlations)], pairs, mixtures))
    parts = statistics + correlations
    return F.concat(F.flatten(x), *parts, dim=1) if parts else F.flatten(x)
