"""What a network takes: the side of its square input and the normalisation its weights were trained with, and the
deterministic conversion of uint8 pixels into that input (training's evaluation passes, feature extraction and the
served model all use it, so a cover is seen the same way everywhere).

Pure functions over NDArrays: they run on whatever context their input lives on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mxnet import nd  # imported where used: the training config's flags are read without MXNet

# ImageNet statistics: what GluonCV's pretrained networks expect, and harmless for networks trained here.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # luma, for colour jitter's contrast and saturation


@dataclass(frozen=True)
class NetworkInput:
    """What a network takes: the side of its square input and the normalisation its weights were trained with.

    `mean` and `std` are per RGB channel on the [0, 1] scale.
    """

    size: int
    mean: tuple[float, float, float] = MEAN
    std: tuple[float, float, float] = STD


def to_float_nchw(images: nd.NDArray) -> nd.NDArray:
    """`(N, H, W, 3)` uint8 -> `(N, 3, H, W)` float32 in [0, 1]."""
    from mxnet import nd

    return nd.transpose(images.astype("float32"), axes=(0, 3, 1, 2)) / 255.0


def normalise(batch: nd.NDArray, mean: tuple[float, ...] = MEAN, std: tuple[float, ...] = STD) -> nd.NDArray:
    """`(N, 3, H, W)` float in [0, 1] -> standardised per channel, as the networks take it."""
    from mxnet import nd

    mean_array = nd.array(mean, ctx=batch.context).reshape((1, 3, 1, 1))
    std_array = nd.array(std, ctx=batch.context).reshape((1, 3, 1, 1))
    return nd.broadcast_div(nd.broadcast_sub(batch, mean_array), std_array)


def fit_to_side(batch: nd.NDArray, side: int) -> nd.NDArray:
    """`(N, 3, H, W)` -> `(N, 3, side, side)`: the centre crop of a larger square, or a bilinear resize of a
    smaller one (a 128-px pack fed to a 224-px network)."""
    from mxnet import nd

    height, width = batch.shape[2:]
    if (height, width) == (side, side):
        return batch
    if height >= side and width >= side:
        top, left = (height - side) // 2, (width - side) // 2
        return batch[:, :, top : top + side, left : left + side]
    return nd.contrib.BilinearResize2D(batch, height=side, width=side)


def network_input(images: nd.NDArray, spec: NetworkInput | None = None) -> nd.NDArray:
    """uint8 `(N, H, W, 3)` -> what a network takes: normalised float32 `(N, 3, S, S)`, the centre `S = spec.size`
    (the images' own size when `spec` is None)."""
    if spec is None:
        return normalise(to_float_nchw(images))
    return normalise(fit_to_side(to_float_nchw(images), spec.size), spec.mean, spec.std)
