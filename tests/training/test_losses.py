"""The training loss: plain cross-entropy, or label-smoothed towards the uniform distribution over genres."""

from __future__ import annotations

import numpy as np
import pytest
from mxnet import gluon, nd

from genre.training.losses import SmoothedCrossEntropy, training_loss


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def test_smoothing_zero_is_gluons_cross_entropy() -> None:
    logits = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    labels = np.array([0, 3, 1, 2, 3])

    ours = SmoothedCrossEntropy(0.0)(nd.array(logits), nd.array(labels)).asnumpy()
    gluons = gluon.loss.SoftmaxCrossEntropyLoss()(nd.array(logits), nd.array(labels)).asnumpy()

    np.testing.assert_allclose(ours, gluons, rtol=1e-5)


def test_smoothed_loss_is_cross_entropy_against_the_smoothed_target() -> None:
    logits = np.random.default_rng(1).normal(size=(6, 5)).astype(np.float32)
    labels = np.array([4, 0, 2, 2, 1, 3])
    smoothing = 0.1
    target = np.full((6, 5), smoothing / 5)
    target[np.arange(6), labels] += 1 - smoothing

    loss = SmoothedCrossEntropy(smoothing)(nd.array(logits), nd.array(labels)).asnumpy()

    np.testing.assert_allclose(loss, -(target * log_softmax(logits)).sum(axis=1), rtol=1e-5)


def test_smoothing_stops_rewarding_certainty() -> None:
    confident = nd.array([[20.0, 0.0, 0.0]])
    moderate = nd.array([[3.0, 0.0, 0.0]])
    label = nd.array([0])
    smoothed = training_loss(0.2)

    assert smoothed(moderate, label).asscalar() < smoothed(confident, label).asscalar()


def test_smoothing_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="label smoothing"):
        SmoothedCrossEntropy(1.0)
