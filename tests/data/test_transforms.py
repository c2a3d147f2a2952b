"""Device-side transforms: the network's input side and normalisation, centre crops, random-resized crops."""

from __future__ import annotations

import numpy as np
import pytest
from mxnet import nd

from genre.data.transforms import AugmentSpec, draw_augmentation, training_input
from genre.models.inputs import MEAN, STD, NetworkInput, network_input
from tests.conftest import refused


def gradient_images(count: int, side: int) -> np.ndarray:
    """`(count, side, side, 3)` uint8 whose red channel is the column index and green the row index."""
    rows, columns = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    image = np.stack([columns, rows, np.zeros_like(rows)], axis=-1).astype(np.uint8)
    return np.repeat(image[None], count, axis=0)


def test_without_a_spec_the_network_takes_the_whole_image_standardised_with_imagenet_statistics() -> None:
    pixels = gradient_images(2, 8)

    batch = network_input(nd.array(pixels, dtype="uint8")).asnumpy()

    assert batch.shape == (2, 3, 8, 8)
    expected_red = (pixels[..., 0] / 255.0 - MEAN[0]) / STD[0]
    np.testing.assert_allclose(batch[:, 0], expected_red, rtol=1e-5, atol=1e-5)


def test_a_larger_pack_is_centre_cropped_to_the_networks_side_with_its_own_normalisation() -> None:
    pixels = gradient_images(1, 40)
    spec = NetworkInput(32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

    batch = network_input(nd.array(pixels, dtype="uint8"), spec).asnumpy()

    assert batch.shape == (1, 3, 32, 32)
    red = batch[0, 0] * 0.5 + 0.5  # back to [0, 1]
    np.testing.assert_allclose(red[0] * 255, np.arange(4, 36), atol=1e-3)  # columns 4..35: the centre 32


def test_a_smaller_pack_is_resized_up_to_the_networks_side() -> None:
    batch = network_input(nd.array(gradient_images(1, 16), dtype="uint8"), NetworkInput(24)).asnumpy()

    assert batch.shape == (1, 3, 24, 24)


def test_augmentation_draws_nine_parameters_per_image_and_is_repeatable() -> None:
    spec = AugmentSpec(random_crop_area=0.5, flip=True, color_jitter=0.2)

    first = draw_augmentation(5, spec, np.random.default_rng(3))
    again = draw_augmentation(5, spec, np.random.default_rng(3))

    assert first.shape == (5, 9)
    np.testing.assert_array_equal(first, again)


def test_training_crops_are_random_resized_crops_at_the_networks_side() -> None:
    pixels = nd.array(gradient_images(6, 48), dtype="uint8")
    spec = AugmentSpec(random_crop_area=0.4, flip=False)
    network = NetworkInput(32)

    batch = training_input(pixels, spec, np.random.default_rng(0), network).asnumpy()

    assert batch.shape == (6, 3, 32, 32)
    red = batch[:, 0] * STD[0] + MEAN[0]
    spans = red[:, 16, -1] - red[:, 16, 0]  # how much of the image's width each crop covers
    assert np.ptp(spans) > 0.05, "crops of different sizes"
    assert spans.max() <= 47 / 255 + 1e-3


def test_without_augmentation_training_sees_what_evaluation_sees() -> None:
    pixels = nd.array(gradient_images(2, 40), dtype="uint8")
    network = NetworkInput(32, (0.4, 0.4, 0.4), (0.3, 0.3, 0.3))
    off = AugmentSpec(random_crop_area=1.0, flip=False, color_jitter=0.0)

    trained_on = training_input(pixels, off, np.random.default_rng(0), network).asnumpy()

    np.testing.assert_allclose(trained_on, network_input(pixels, network).asnumpy(), rtol=1e-6)


def test_flips_alone_mirror_the_centre_square_evaluation_sees() -> None:
    pixels = nd.array(gradient_images(8, 40), dtype="uint8")
    network = NetworkInput(32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    centre = network_input(pixels, network).asnumpy()

    flipped = training_input(pixels, AugmentSpec(random_crop_area=1.0, flip=True), np.random.default_rng(1), network)

    rows = flipped.asnumpy()
    mirrored = [np.allclose(row, centre[0][:, :, ::-1], atol=1e-5) for row in rows]
    kept = [np.allclose(row, centre[0], atol=1e-5) for row in rows]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True)), "each image is the centre square, mirrored or not"
    assert any(mirrored) and any(kept)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"random_crop_area": 0.0}, "random_crop_area"),
        ({"random_crop_area": 1.5}, "random_crop_area"),
        ({"color_jitter": -0.1}, "color_jitter"),
        ({"color_jitter": 1.5}, "color_jitter"),
        ({"color_jitter": float("nan")}, "color_jitter"),
    ],
)
def test_augmentation_out_of_range_is_a_one_line_error_naming_the_setting(settings: dict, named: str) -> None:
    refused(AugmentSpec, settings, named)
