"""Style statistics: the mean and standard deviation of every channel of a block's map over the image.

Style lives in a network's intermediate layers (Karayev et al. 2014, "Recognizing Image Style"; Gatys et al. describe
style by the statistics of feature maps). The feature baselines read them from a frozen network
(`genre.models.features.CoverDescriber`); a fine-tuned EfficientNet-Lite can feed them to its output layer too
(`style_blocks`), so that fine-tuning starts from the style probe. No MXNet import: `F` is `mx.nd` or `mx.sym`.
"""

from __future__ import annotations

from typing import Any

from genre.errors import ConfigError

STATS_EPSILON = 1e-6  # inside the square root of a channel's variance: a flat channel has a finite gradient


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


def run_with_statistics(F: Any, layers: Any, x: Any, taps: frozenset[int]) -> Any:
    """Run `x` through the sequential `layers`; the flattened output, then the statistics of the maps at `taps`."""
    statistics = []
    for index in range(len(layers)):
        x = layers[index](x)
        if index in taps:
            statistics += channel_statistics(F, x)
    return F.concat(F.flatten(x), *statistics, dim=1) if statistics else F.flatten(x)
