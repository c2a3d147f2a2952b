"""Held leading layers as a fused inference graph, the rest as the training graph: the same logits and gradients as
the whole network, and the whole network where the two cannot be split."""

from __future__ import annotations

import logging

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd

from genre.models import held as held_module
from genre.models.held import HeldThenTrained, held_then_trained
from genre.models.networks import NetworkSpec, build_network, freeze_leading_layers
from tests.models.test_fused import covers, needs_onednn, randomised

HELD = 13  # lite0's stem (3 layers) and first 10 blocks, as the fine-tuning experiments hold them


def lite0_with_held_layers(count: int = HELD, style_blocks: str = "none") -> mx.gluon.HybridBlock:
    net = build_network(NetworkSpec(model="efficientnet_lite0", style_blocks=style_blocks), 5, [mx.cpu()], 64)
    randomised(net)
    freeze_leading_layers(net, "efficientnet_lite0", count)
    return net


def trained_gradients(net: mx.gluon.Block) -> dict[str, np.ndarray]:
    return {name: param.grad().asnumpy() for name, param in net.collect_params().items() if param.grad_req != "null"}


@needs_onednn
@pytest.mark.parametrize("style_blocks", ["none", "2"])
def test_held_layers_fused_give_the_whole_network_s_logits_and_gradients(style_blocks: str) -> None:
    net = lite0_with_held_layers(style_blocks=style_blocks)
    batch = covers(4, 64)
    labels = mx.nd.array([0, 1, 2, 3])
    loss_fn = mx.gluon.loss.SoftmaxCrossEntropyLoss()
    with autograd.record(train_mode=False):  # dropout off: the two draw no masks to compare
        expected = net(batch)
        loss = loss_fn(expected, labels)
    loss.backward()
    expected_gradients = trained_gradients(net)

    scores = held_then_trained(net, HELD, [mx.cpu()])
    with autograd.record(train_mode=False):
        got = scores(batch)
        loss = loss_fn(got, labels)
    loss.backward()

    assert isinstance(scores, HeldThenTrained) and scores.held.fused
    reference = np.abs(expected.asnumpy()).max()
    np.testing.assert_allclose(got.asnumpy(), expected.asnumpy(), rtol=0, atol=1e-4 * reference)
    gradients = trained_gradients(net)
    assert gradients.keys() == expected_gradients.keys() and len(gradients) > 2
    for name, gradient in gradients.items():
        scale = np.abs(expected_gradients[name]).max() or 1.0
        np.testing.assert_allclose(gradient, expected_gradients[name], rtol=0, atol=1e-3 * scale, err_msg=name)
    assert {id(param) for param in scores.collect_params().values()} == {
        id(param) for param in net.collect_params().values()
    }


@pytest.mark.parametrize(
    ("count", "style_blocks", "contexts", "reason"),
    [
        (0, "none", [mx.cpu()], None),
        (HELD, "none", [mx.gpu(0)], "CPU only"),
        (HELD, "none", [mx.cpu(0), mx.cpu(1)], "one CPU context"),
        (HELD, "8", [mx.cpu()], "style statistics of a held block"),
    ],
    ids=["nothing-held", "gpu", "two-contexts", "held-style-block"],
)
def test_layers_that_cannot_run_apart_train_in_the_whole_network_and_the_log_says_why(
    count, style_blocks, contexts, reason, caplog
) -> None:
    net = lite0_with_held_layers(max(count, 1), style_blocks)

    with caplog.at_level(logging.INFO, logger=held_module.__name__):
        scores = held_then_trained(net, count, contexts)

    assert scores is net
    if reason:
        assert any(reason in record.getMessage() for record in caplog.records), caplog.text
