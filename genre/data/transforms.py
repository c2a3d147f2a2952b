"""Training-time augmentation on the device: uint8 pixels in, augmented, normalised float NCHW batches at the
network's size out (`genre.models.inputs` holds what a network takes and the deterministic conversion).

Pure functions over NDArrays: they run on whatever context their input lives on, so the same code
converts and augments on a GPU or a CPU. Randomness comes from a numpy Generator the caller owns
(seeded per epoch), so a resumed run draws the same augmentations as an uninterrupted one.

Packs may hold images larger than the network's input (covers packed at 256 for a 224 network): evaluation
takes the centre crop, training a random-resized crop, both at the network's side (`NetworkInput.size`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from genre.config import check_range, setting
from genre.models.inputs import GRAY_WEIGHTS, NetworkInput, fit_to_side, normalise, to_float_nchw

if TYPE_CHECKING:
    from mxnet import nd  # imported where used: `AugmentSpec`'s flags are read without MXNet


@dataclass(frozen=True)
class AugmentSpec:
    """Training-time augmentation, drawn per image."""

    random_crop_area: float = setting(0.8, "smallest share of the image a random crop keeps (1 = no cropping)")
    flip: bool = setting(False, "random horizontal flips (off for digits, whose mirror images are other shapes)")
    color_jitter: float = setting(0.0, "strength of random brightness, contrast and saturation changes (0 = off)")
    mixup_alpha: float = setting(
        0.0,
        "mixup: train on blends of two covers of a batch and of their labels, the blend's weight drawn from "
        "Beta(alpha, alpha) per batch (0 = off; 0.2-0.4 is usual)",
    )

    def __post_init__(self) -> None:
        check_range(self, "random_crop_area", 0.0, 1.0, low_open=True, note=" (1 = no cropping)")
        check_range(self, "color_jitter", 0.0, 1.0, note=" (0 = off)")
        check_range(self, "mixup_alpha", 0.0, 10.0, note=" (0 = off)")

    @property
    def active(self) -> bool:
        return self.random_crop_area < 1.0 or self.flip or self.color_jitter > 0


def draw_augmentation(count: int, spec: AugmentSpec, rng: np.random.Generator) -> np.ndarray:
    """Per-image random parameters `(count, 9)`: affine (6) for crop/flip, then brightness, contrast, saturation.

    Drawn on the host (tiny) so the random stream is the caller's and reproducible.
    """
    scale = (
        np.sqrt(rng.uniform(spec.random_crop_area, 1.0, size=count)) if spec.random_crop_area < 1 else np.ones(count)
    )
    shift_x = rng.uniform(-1.0, 1.0, size=count) * (1.0 - scale)
    shift_y = rng.uniform(-1.0, 1.0, size=count) * (1.0 - scale)
    mirror = np.where(rng.random(count) < 0.5, -1.0, 1.0) if spec.flip else np.ones(count)
    affine = np.stack([scale * mirror, np.zeros(count), shift_x, np.zeros(count), scale, shift_y], axis=1)
    jitter = rng.uniform(1.0 - spec.color_jitter, 1.0 + spec.color_jitter, size=(count, 3))
    return np.concatenate([affine, jitter], axis=1).astype(np.float32)


def draw_mixup(count: int, alpha: float, rng: np.random.Generator) -> tuple[float, np.ndarray]:
    """mixup (Zhang et al. 2018): the weight of a batch's own images, drawn from Beta(alpha, alpha), and each
    image's partner in the batch (a permutation), from the caller's random stream."""
    return float(rng.beta(alpha, alpha)), rng.permutation(count)


def augment(batch: nd.NDArray, parameters: np.ndarray, side: int | None = None) -> nd.NDArray:
    """Apply drawn crops/flips and colour jitter to `(N, 3, H, W)` floats in [0, 1]; the result is `side` square.

    A crop is one bilinear resample straight to `side` (a random-resized crop: a crop of the whole image at scale
    1, smaller parts as drawn); without crops or flips, the centre `side` square is kept as evaluation does
    (`training_input` takes that centre square first when no crops are drawn, so flips mirror what evaluation sees).
    """
    from mxnet import nd

    ctx = batch.context
    side = side or batch.shape[2]
    params = nd.array(parameters, ctx=ctx)
    affine = params[:, :6]
    if not np.allclose(parameters[:, :6], [1, 0, 0, 0, 1, 0]):
        grid = nd.GridGenerator(affine, transform_type="affine", target_shape=(side, side))
        batch = nd.BilinearSampler(batch, grid)
    else:
        batch = fit_to_side(batch, side)
    if not np.allclose(parameters[:, 6:], 1.0):
        brightness = params[:, 6].reshape((-1, 1, 1, 1))
        contrast = params[:, 7].reshape((-1, 1, 1, 1))
        saturation = params[:, 8].reshape((-1, 1, 1, 1))
        batch = nd.broadcast_mul(batch, brightness)
        weights = nd.array(GRAY_WEIGHTS, ctx=ctx).reshape((1, 3, 1, 1))
        gray = nd.sum(nd.broadcast_mul(batch, weights), axis=1, keepdims=True)
        mean_gray = nd.mean(gray, axis=(2, 3), keepdims=True)
        batch = nd.broadcast_add(nd.broadcast_mul(nd.broadcast_sub(batch, mean_gray), contrast), mean_gray)
        gray = nd.sum(nd.broadcast_mul(batch, weights), axis=1, keepdims=True)
        batch = nd.broadcast_add(nd.broadcast_mul(nd.broadcast_sub(batch, gray), saturation), gray)
        batch = nd.clip(batch, 0.0, 1.0)
    return batch


def training_input(
    images: nd.NDArray, spec: AugmentSpec, rng: np.random.Generator | None, network: NetworkInput | None = None
) -> nd.NDArray:
    """uint8 `(N, H, W, 3)` -> augmented (when `rng` is given and `spec` active), normalised network input of
    `network.size` (the images' size when `network` is None)."""
    if network is None:
        network = NetworkInput(images.shape[1])
    batch = to_float_nchw(images)
    if rng is not None and spec.active:
        if spec.random_crop_area >= 1:  # flips and colour alone: of the centre square evaluation sees
            batch = fit_to_side(batch, network.size)
        batch = augment(batch, draw_augmentation(batch.shape[0], spec, rng), network.size)
    else:
        batch = fit_to_side(batch, network.size)
    return normalise(batch, network.mean, network.std)
