"""The INT8 copy of a network (oneDNN quantization): close to the float network for the networks the project serves,
written and read back exactly, the float network left as it was, and refused where INT8 cannot run."""

from __future__ import annotations

import json

import mxnet as mx
import numpy as np
import pytest

from genre.models import fused
from genre.models.networks import NetworkSpec, build_network
from genre.models.quantized import (
    QuantizationUnavailable,
    export_quantized,
    float_layers,
    load_quantized,
    quantize_network,
)
from tests.models.test_fused import needs_onednn

NETWORKS = [
    (NetworkSpec(model="convnet"), 32),
    (NetworkSpec(model="mlp", hidden_units=20), 16),
    (NetworkSpec(model="resnet18_v1b"), 64),
    (NetworkSpec(model="efficientnet_lite0"), 64),
]


def smooth_covers(count: int, side: int, seed: int = 3) -> np.ndarray:
    """Normalised float32 `(count, 3, side, side)` inputs with the spatial structure of images (bilinear upsampling of
    a coarse grid): white noise would give every layer an unrepresentative range."""
    rng = np.random.default_rng(seed)
    coarse = mx.nd.array(rng.normal(size=(count, 3, 4, 4)).astype(np.float32))
    return mx.nd.contrib.BilinearResize2D(coarse, height=side, width=side).asnumpy()


def network(spec: NetworkSpec, side: int) -> mx.gluon.HybridBlock:
    """A network as training starts it (its own initialisation keeps activations in a realistic range)."""
    mx.random.seed(4)
    net = build_network(spec, 6, [mx.cpu()], side)
    net.hybridize()
    return net


@needs_onednn
@pytest.mark.parametrize(("spec", "side"), NETWORKS, ids=[spec.model for spec, _ in NETWORKS])
def test_the_int8_copy_scores_covers_as_the_float_network_does(spec: NetworkSpec, side: int) -> None:
    net = network(spec, side)
    calibration, covers = smooth_covers(48, side, seed=3), smooth_covers(64, side, seed=5)
    expected = net(mx.nd.array(covers)).asnumpy()

    quantized = quantize_network(net, calibration)
    got = quantized(mx.nd.array(covers)).asnumpy()

    scale = np.abs(expected).max()
    assert np.abs(got - expected).mean() <= 0.08 * scale  # 8 bits through most layers: a few per cent of the range
    assert np.corrcoef(got.ravel(), expected.ravel())[0, 1] > 0.98
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).mean() >= 0.8
    np.testing.assert_array_equal(net(mx.nd.array(covers)).asnumpy(), expected)  # the float network is unchanged


@needs_onednn
def test_the_int8_copy_is_written_and_read_back_exactly_with_int8_kernels(tmp_path) -> None:
    net = network(NetworkSpec(model="convnet"), 32)
    covers = smooth_covers(8, 32)
    quantized = quantize_network(net, smooth_covers(16, 32, seed=7))

    symbol_file, params_file = export_quantized(quantized, str(tmp_path / "net-int8"), (1, 3, 32, 32))
    loaded = load_quantized(symbol_file, params_file)

    np.testing.assert_array_equal(loaded(mx.nd.array(covers)).asnumpy(), quantized(mx.nd.array(covers)).asnumpy())
    graph = json.loads(open(symbol_file).read())  # noqa: PTH123
    nodes = [node for node in graph["nodes"] if node["op"] != "null"]
    assert any(node["op"] == "_contrib_quantize_v2" for node in nodes)  # float covers in, INT8 from the first layer
    assert any(node.get("attrs", {}).get("quantized") == "true" for node in nodes)


def test_int8_is_refused_where_it_cannot_run(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    net = network(NetworkSpec(model="mlp", hidden_units=8), 8)
    with pytest.raises(QuantizationUnavailable, match="CPU only"):
        quantize_network(net, smooth_covers(4, 8), ctx=mx.gpu(0))
    monkeypatch.setenv(fused.SWITCH, "0")
    with pytest.raises(QuantizationUnavailable, match=fused.SWITCH):
        quantize_network(net, smooth_covers(4, 8))
    with pytest.raises(QuantizationUnavailable, match=fused.SWITCH):
        load_quantized(str(tmp_path / "absent-symbol.json"), str(tmp_path / "absent-0000.params"))


@needs_onednn
def test_calibration_needs_a_batch_of_network_inputs() -> None:
    net = network(NetworkSpec(model="mlp", hidden_units=8), 8)
    for bad in (np.zeros((0, 3, 8, 8), np.float32), np.zeros((3, 8, 8), np.float32)):
        with pytest.raises(ValueError, match="non-empty"):
            quantize_network(net, bad)


@needs_onednn
def test_depthwise_convolutions_and_the_first_and_last_layers_stay_float(tmp_path) -> None:
    net = network(NetworkSpec(model="efficientnet_lite0"), 64)
    graph = json.loads(net(mx.sym.var("data")).tojson())
    weighted = [node["name"] for node in graph["nodes"] if node["op"] in ("Convolution", "FullyConnected")]
    depthwise = [
        node["name"]
        for node in graph["nodes"]
        if node["op"] == "Convolution" and node["attrs"].get("num_group", "1") != "1"
    ]

    kept = float_layers(net(mx.sym.var("data")))

    assert len(depthwise) == 16 and set(kept) == {*depthwise, weighted[0], weighted[-1]}
    quantized = quantize_network(net, smooth_covers(8, 64))
    symbol_file, _ = export_quantized(quantized, str(tmp_path / "lite0-int8"), (1, 3, 64, 64))
    exported = json.loads(open(symbol_file).read())  # noqa: PTH123
    quantized_names = {node["name"] for node in exported["nodes"] if node.get("attrs", {}).get("quantized") == "true"}
    assert quantized_names and not any(name.startswith(tuple(kept)) for name in quantized_names)
