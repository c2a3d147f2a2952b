"""The network factory: our MLP and conv net, their settings, the registry of names, and starting from a file."""

from __future__ import annotations

import logging
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon
from mxnet.gluon import nn

from genre import config
from genre.errors import ConfigError
from genre.models import zoo
from genre.models.networks import NetworkSpec, build_network

SIZE = 32
ONE = [mx.cpu(0)]
TWO = [mx.cpu(0), mx.cpu(1)]


def batch(count: int, ctx: mx.Context = ONE[0], seed: int = 0) -> mx.nd.NDArray:
    """A normalised float32 `(N, 3, 32, 32)` batch, as `network_input` makes it."""
    rng = np.random.default_rng(seed)
    return mx.nd.array(rng.standard_normal((count, 3, SIZE, SIZE)), ctx=ctx, dtype="float32")


def values(net: gluon.Block) -> dict[str, np.ndarray]:
    return {key: param.data(mx.cpu(0)).asnumpy() for key, param in zoo.structural_parameters(net).items()}


def layers(net: gluon.Block, kind: type) -> list[gluon.Block]:
    return [block for block in net.features._children.values() if isinstance(block, kind)]


@pytest.mark.parametrize("model", ["mlp", "convnet"])
@pytest.mark.parametrize("contexts", [ONE, TWO], ids=["one-cpu", "two-cpus"])
def test_logits_for_every_class_on_every_context(model: str, contexts: list[mx.Context]) -> None:
    net = build_network(NetworkSpec(model=model), classes=7, contexts=contexts, image_size=SIZE)

    for ctx in contexts:
        assert net(batch(4, ctx)).shape == (4, 7)
        assert net(batch(3, ctx)).shape == (3, 7)  # a smaller last batch
    for key, param in zoo.structural_parameters(net).items():
        copies = param.list_data()
        assert [copy.context for copy in copies] == contexts, key
        for copy in copies[1:]:
            np.testing.assert_array_equal(copy.asnumpy(), copies[0].asnumpy(), err_msg=key)


def test_one_training_step_on_two_contexts_keeps_copies_equal() -> None:
    net = build_network(NetworkSpec(), classes=5, contexts=TWO, image_size=SIZE)
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    data = gluon.utils.split_and_load(batch(8), TWO)
    labels = gluon.utils.split_and_load(mx.nd.array([0, 1, 2, 3, 4, 0, 1, 2]), TWO)
    before = values(net)
    with autograd.record():
        losses = [loss_fn(net(x), y) for x, y in zip(data, labels, strict=True)]
    for loss in losses:
        loss.backward()
    trainer.step(8)

    assert not np.array_equal(values(net)["output.weight"], before["output.weight"])
    for param in net.collect_params().values():
        np.testing.assert_allclose(param.data(mx.cpu(1)).asnumpy(), param.data(mx.cpu(0)).asnumpy(), rtol=1e-6)


def test_same_seed_same_network() -> None:
    mx.random.seed(3)
    first = values(build_network(NetworkSpec(), classes=4, contexts=ONE, image_size=SIZE))
    mx.random.seed(3)
    second = values(build_network(NetworkSpec(), classes=4, contexts=ONE, image_size=SIZE))
    mx.random.seed(4)
    third = values(build_network(NetworkSpec(), classes=4, contexts=ONE, image_size=SIZE))

    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    assert not np.array_equal(first["features.0.weight"], third["features.0.weight"])


@pytest.mark.parametrize(
    ("filters", "kernels", "dense", "pool", "batch_norm"),
    [
        ("8", "3", "", "max", True),
        ("8,16", "5,3", "32,16", "avg", False),
        ("4,8,8,16,16", "3", "16", "max", True),  # 5 pools: 32 -> 1
        ("4,4,4,4,4,4,4", "1,3,3,3,3,3,7", "", "none", True),  # no pools: any depth
    ],
)
def test_convnet_has_the_blocks_asked_for(filters: str, kernels: str, dense: str, pool: str, batch_norm: bool) -> None:
    spec = NetworkSpec(
        conv_filters=filters, kernel_sizes=kernels, dense_units=dense, pool=pool, batch_norm=batch_norm, dropout=0.0
    )
    net = build_network(spec, classes=3, contexts=ONE, image_size=SIZE)

    convs = layers(net, nn.Conv2D)
    filter_list = [int(f) for f in filters.split(",")]
    kernel_list = [int(k) for k in kernels.split(",")] * (len(filter_list) if "," not in kernels else 1)
    assert [conv.weight.shape[0] for conv in convs] == filter_list
    assert [conv.weight.shape[2:] for conv in convs] == [(k, k) for k in kernel_list]
    assert len(layers(net, nn.BatchNorm)) == (len(filter_list) if batch_norm else 0)
    assert len(layers(net, nn.MaxPool2D if pool == "max" else nn.AvgPool2D)) == (0 if pool == "none" else len(convs))
    hidden = [d.weight.shape[0] for d in layers(net, nn.Dense)]
    assert hidden == [int(u) for u in dense.split(",") if u]
    assert net(batch(2)).shape == (2, 3)


def test_vgg_style_blocks_stack_convolutions_before_each_pool() -> None:
    spec = NetworkSpec(conv_filters="4,8", convs_per_block=2, dense_units="", dropout=0.0)
    net = build_network(spec, classes=3, contexts=ONE, image_size=SIZE)

    assert [conv.weight.shape[:2] for conv in layers(net, nn.Conv2D)] == [(4, 3), (4, 4), (8, 4), (8, 8)]
    assert len(layers(net, nn.MaxPool2D)) == 2
    assert net(batch(2)).shape == (2, 3)


def test_too_many_pools_for_the_image_size_is_a_config_error() -> None:
    spec = NetworkSpec(conv_filters="4,4,4,4,4,4")

    with pytest.raises(ConfigError, match=r"'conv_filters'.*32x32.*at most 5 blocks"):
        build_network(spec, classes=3, contexts=ONE, image_size=SIZE)
    assert build_network(spec, classes=3, contexts=ONE, image_size=64)(mx.nd.zeros((1, 3, 64, 64))).shape == (1, 3)


def test_mlp_hidden_units_and_dropout() -> None:
    net = build_network(NetworkSpec(model="mlp", hidden_units=20, dropout=0.5), classes=3, contexts=ONE, image_size=8)

    assert net.features[0].weight.shape == (20, 3 * 8 * 8)
    assert [d._rate for d in layers(net, nn.Dropout)] == [0.5]
    assert net(mx.nd.zeros((2, 3, 8, 8))).shape == (2, 3)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"conv_filters": "32,x"}, "conv_filters"),
        ({"conv_filters": ""}, "conv_filters"),
        ({"conv_filters": "32,0"}, "conv_filters"),
        ({"kernel_sizes": "3,3"}, "kernel_sizes"),  # three conv blocks
        ({"kernel_sizes": "4"}, "kernel_sizes"),
        ({"convs_per_block": 0}, "convs_per_block"),
        ({"kernel_sizes": "three"}, "kernel_sizes"),
        ({"dense_units": "256,"}, "dense_units"),
        ({"pool": "min"}, "pool"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"hidden_units": 0}, "hidden_units"),
        ({"backbone_lr_mult": -1.0}, "backbone_lr_mult"),
        ({"backbone_lr_mult": float("nan")}, "backbone_lr_mult"),
        ({"pretrained": True}, "pretrained"),  # convnet has no GluonCV weights
        ({"model": "mobilenet0.25", "pretrained": True, "pretrained_params": "x.params"}, "pretrained_params"),
        ({"freeze_backbone": True}, "freeze_backbone"),
        ({"frozen_layers": 3}, "frozen_layers"),  # no loaded weights to hold
        ({"frozen_layers": -1, "pretrained_params": "x.params"}, "frozen_layers"),
    ],
)
def test_unusable_settings_are_one_line_config_errors_naming_the_setting(settings: dict, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        NetworkSpec(**settings)

    message = str(caught.value)
    assert f"'{named}'" in message
    assert "\n" not in message


def test_settings_come_from_files_and_flags_like_every_config() -> None:
    spec = config.build(NetworkSpec, ("run.yaml", {"conv-filters": "16, 32", "dropout": "0.1"}), ("flags", {}))

    assert spec.conv_filters == "16, 32" and spec.dropout == 0.1
    with pytest.raises(ConfigError, match="'pool' must be one of max, avg, none"):
        config.build(NetworkSpec, ("flags", {"pool": "sum"}))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet18", ["resnet18_v1", "resnet18_v1b", "python -m genre.models.zoo"]),
        ("convent", ["convnet", "mlp"]),
        ("no-such-net", ["mlp, convnet", "python -m genre.models.zoo"]),
    ],
)
def test_unknown_model_names_list_the_choices(name: str, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        NetworkSpec(model=name)

    for text in expected:
        assert text in str(caught.value)


def test_gluoncv_models_that_are_not_classifiers_are_refused() -> None:
    with pytest.raises(ConfigError, match="'ssd_300_vgg16_atrous_voc' is a GluonCV model but not an image classifier"):
        NetworkSpec(model="ssd_300_vgg16_atrous_voc")


def test_convnet_starts_from_an_earlier_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spec = NetworkSpec(conv_filters="8,16", dense_units="32")
    earlier = build_network(spec, classes=4, contexts=ONE, image_size=SIZE)
    path = tmp_path / "earlier.params"
    earlier.save_parameters(str(path))

    mx.random.seed(11)  # a different draw for the output layer
    with caplog.at_level(logging.INFO, logger="genre.models.zoo"):
        net = build_network(
            NetworkSpec(conv_filters="8,16", dense_units="32", pretrained_params=str(path), freeze_backbone=True),
            classes=4,
            contexts=TWO,
            image_size=SIZE,
        )

    saved = values(earlier)
    for key, param in zoo.structural_parameters(net).items():
        is_output = key.startswith("output.")
        for copy in param.list_data():
            if not is_output:
                np.testing.assert_array_equal(copy.asnumpy(), saved[key], err_msg=key)
        assert param.grad_req == ("write" if is_output else "null"), key
    assert not np.array_equal(values(net)["output.weight"], saved["output.weight"])  # fresh, not the file's
    assert "loaded 12 of 12 backbone tensors" in caplog.text


def test_files_with_block_prefixed_names_load_too(tmp_path: Path) -> None:
    """`collect_params().save` and `export` write `convnet_..._weight` names, not `features.0.weight`."""
    earlier = build_network(NetworkSpec(model="mlp", hidden_units=16), classes=3, contexts=ONE, image_size=SIZE)
    path = tmp_path / "exported.params"
    mx.nd.save(str(path), {f"arg:{p.name}": p.data() for p in earlier.collect_params().values()})

    net = build_network(
        NetworkSpec(model="mlp", hidden_units=16, pretrained_params=str(path)), classes=5, contexts=ONE, image_size=SIZE
    )

    np.testing.assert_array_equal(values(net)["features.0.weight"], values(earlier)["features.0.weight"])
