"""Device-side image transforms: uint8 pixels in, normalised float NCHW batches out.

Pure functions over NDArrays: they run on whatever context their input lives on, so the same code
converts and augments on a GPU or a CPU. Randomness comes from a numpy Generator the caller owns
(seeded per epoch), so a resumed run draws the same augmentations as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mxnet import nd

from genre.config import setting

# ImageNet statistics: what GluonCV's pretrained networks expect, and harmless for networks trained here.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
GRAY_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class AugmentSpec:
    """Training-time augmentation, drawn per image."""

    random_crop_area: float = setting(0.8, "smallest share of the image a random crop keeps (1 = no cropping)")
    flip: bool = setting(False, "random horizontal flips (off for digits, whose mirror images are other shapes)")
    color_jitter: float = setting(0.0, "strength of random brightness, contrast and saturation changes (0 = off)")

    @property
    def active(self) -> bool:
        return self.random_crop_area < 1.0 or self.flip or self.color_jitter > 0


def to_float_nchw(images: nd.NDArray) -> nd.NDArray:
    """`(N, H, W, 3)` uint8 -> `(N, 3, H, W)` float32 in [0, 1]."""
    return nd.transpose(images.astype("float32"), axes=(0, 3, 1, 2)) / 255.0


def normalise(batch: nd.NDArray) -> nd.NDArray:
    """`(N, 3, H, W)` float in [0, 1] -> standardised with `MEAN`/`STD`, as the networks take it."""
    mean = nd.array(MEAN, ctx=batch.context).reshape((1, 3, 1, 1))
    std = nd.array(STD, ctx=batch.context).reshape((1, 3, 1, 1))
    return nd.broadcast_div(nd.broadcast_sub(batch, mean), std)


def network_input(images: nd.NDArray) -> nd.NDArray:
    """uint8 `(N, H, W, 3)` -> what a network takes: normalised float32 `(N, 3, H, W)`."""
    return normalise(to_float_nchw(images))


def draw_augmentation(count: int, spec: AugmentSpec, rng: np.random.Generator) -> np.ndarray:
    """Per-image random parameters `(count, 7)`: affine (6) for crop/flip, then brightness, contrast, saturation.

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


def augment(batch: nd.NDArray, parameters: np.ndarray) -> nd.NDArray:
    """Apply drawn crops/flips (one bilinear resample) and colour jitter to `(N, 3, H, W)` floats in [0, 1]."""
    ctx = batch.context
    params = nd.array(parameters, ctx=ctx)
    affine = params[:, :6]
    if not np.allclose(parameters[:, :6], [1, 0, 0, 0, 1, 0]):
        grid = nd.GridGenerator(affine, transform_type="affine", target_shape=batch.shape[2:])
        batch = nd.BilinearSampler(batch, grid)
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


def training_input(images: nd.NDArray, spec: AugmentSpec, rng: np.random.Generator | None) -> nd.NDArray:
    """uint8 `(N, H, W, 3)` -> augmented (when `rng` is given and `spec` active), normalised network input."""
    batch = to_float_nchw(images)
    if rng is not None and spec.active:
        batch = augment(batch, draw_augmentation(batch.shape[0], spec, rng))
    return normalise(batch)
