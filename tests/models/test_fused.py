"""oneDNN's fused inference graph: the same outputs as the unfused graph for every network the project trains, and the
unfused graph where fusion cannot run."""

from __future__ import annotations

import json
import logging

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon

from genre.models import fused
from genre.models.fused import InferenceGraph, fusion_refusal, symbol_view
from genre.models.networks import NetworkSpec, build_network

ONEDNN = mx.runtime.Features().is_enabled(fused.FEATURE)
needs_onednn = pytest.mark.skipif(not ONEDNN, reason="this MXNet build has no oneDNN")

NETWORKS = [
    (NetworkSpec(model="convnet"), 32),
    (NetworkSpec(conv_filters="4,8", convs_per_block=2, dense_units="16", dropout=0.5), 32),  # VGG-style blocks
    (NetworkSpec(model="mlp", hidden_units=20, dropout=0.5), 16),
    (NetworkSpec(model="alexnet"), 64),
    (NetworkSpec(model="resnet18_v1b"), 64),
    (NetworkSpec(model="efficientnet_lite0"), 64),
    (NetworkSpec(model="efficientnet_lite1"), 64),
    (NetworkSpec(model="efficientnet_lite2"), 64),
]


def randomised(net: gluon.Block, seed: int = 0) -> gluon.Block:
    """`net` with every parameter drawn at random, batch norm's running variances positive: a fresh network's batch
    norms (mean 0, variance 1) would leave nothing for fusion to fold."""
    rng = np.random.default_rng(seed)
    for name, param in sorted(net.collect_params().items()):
        shape = param.shape
        if name.endswith(("running_var", "gamma")):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(0.0, 0.1, shape)
        param.set_data(mx.nd.array(value, dtype=param.dtype))
    return net


def operators(block: gluon.HybridBlock) -> set[str]:
    """The operators of the graph `block` built at its first call."""
    return {node["op"] for node in json.loads(block._cached_graph[1].tojson())["nodes"]}  # noqa: SLF001


def covers(count: int, side: int, seed: int = 1) -> mx.nd.NDArray:
    return mx.nd.array(np.random.default_rng(seed).normal(size=(count, 3, side, side)), dtype="float32")


@needs_onednn
@pytest.mark.parametrize(("spec", "side"), NETWORKS, ids=[spec.model + str(side) for spec, side in NETWORKS])
def test_the_fused_graph_gives_the_unfused_outputs_for_every_network_the_project_trains(spec, side) -> None:
    net = randomised(build_network(spec, 5, [mx.cpu()], side))
    batch = covers(6, side)
    with mx.autograd.predict_mode():
        expected = net(batch).asnumpy()

    graph = InferenceGraph(net, mx.cpu())
    got = graph(batch).asnumpy()

    assert graph.fused
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
    smaller = graph(batch[:2]).asnumpy()  # another batch size plans again, on the same fused graph
    np.testing.assert_allclose(smaller, expected[:2], rtol=0, atol=1e-4 * np.abs(expected).max())


@needs_onednn
def test_the_fused_graph_folds_convolution_batch_norm_and_relu6_of_lite0() -> None:
    net = randomised(build_network(NetworkSpec(model="efficientnet_lite0"), 5, [mx.cpu()], 64))
    graph = InferenceGraph(net, mx.cpu())
    graph(covers(2, 64))

    assert "_sg_mkldnn_conv" in operators(graph.block)
    assert not {"clip", "BatchNorm"} & operators(graph.block)


def test_a_gpu_context_or_the_switch_runs_the_unfused_graph_and_says_why_once(monkeypatch, caplog) -> None:
    assert "CPU only" in fusion_refusal(mx.gpu(0))
    monkeypatch.setenv(fused.SWITCH, "0")
    monkeypatch.setattr(fused, "_said", set())
    net = randomised(build_network(NetworkSpec(model="convnet"), 3, [mx.cpu()], 32))
    with mx.autograd.predict_mode():
        expected = net(covers(2, 32)).asnumpy()

    with caplog.at_level(logging.INFO, logger=fused.__name__):
        graph = InferenceGraph(net, mx.cpu())
        InferenceGraph(net, mx.cpu())

    assert not graph.fused
    np.testing.assert_array_equal(graph(covers(2, 32)).asnumpy(), expected)
    said = [record.getMessage() for record in caplog.records]
    assert said == ["inference runs the unfused graph: GENRE_ONEDNN_FUSION=0 turns oneDNN fusion off"]


class RefusedByTheBackend(gluon.HybridBlock):
    """A block whose graph the backend 'refuses': building it fused raises what MXNet raises."""

    def hybrid_forward(self, F, x):
        if self._backend:  # noqa: SLF001
            raise mx.MXNetError("the backend cannot partition this graph")
        return F.relu(x)


@needs_onednn
def test_a_graph_the_backend_refuses_runs_unfused_and_the_log_says_why(caplog) -> None:
    with caplog.at_level(logging.INFO, logger=fused.__name__):
        graph = InferenceGraph(RefusedByTheBackend(), mx.cpu())
        out = graph(mx.nd.array([[-1.0, 2.0]]))

    np.testing.assert_array_equal(out.asnumpy(), [[0.0, 2.0]])
    assert not graph.fused
    assert any(
        "refused" in record.getMessage() and "cannot partition" in record.getMessage() for record in caplog.records
    )


@needs_onednn
def test_a_symbol_view_reads_the_network_s_own_parameters_and_leaves_its_training_graph_alone() -> None:
    net = randomised(build_network(NetworkSpec(model="efficientnet_lite0"), 4, [mx.cpu()], 64))
    batch = covers(3, 64)
    view = InferenceGraph(symbol_view(lambda F, x: net.features(x), net.collect_params()), mx.cpu())
    with mx.autograd.predict_mode():
        expected = net.features(batch).asnumpy()
        net(batch)

    np.testing.assert_allclose(view(batch).asnumpy(), expected, rtol=0, atol=1e-4 * np.abs(expected).max())
    shared = set(view.block.collect_params().keys())
    assert all(view.block.collect_params()[name] is net.collect_params()[name] for name in shared)
    with mx.autograd.record(train_mode=False):  # the network still trains: its graph is not the fused one
        loss = net(batch).sum()
    loss.backward()
    assert float(net.output.weight.grad().abs().sum().asscalar()) > 0
    np.testing.assert_allclose(view(batch).asnumpy(), expected, rtol=0, atol=1e-4 * np.abs(expected).max())
    assert not any(op.startswith("_sg_mkldnn") for op in operators(net))
    assert "_sg_mkldnn_conv" in operators(view.block)
