"""mixup: a step trains on blends of two covers of its batch against the same blend of their labels' losses."""

from __future__ import annotations

from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon, nd

from genre.data.config import PrepareConfig
from genre.data.prepare import prepare
from genre.data.transforms import AugmentSpec, draw_mixup, training_input
from genre.errors import ConfigError
from genre.training.checkpoint import CheckpointStore
from genre.training.config import TrainConfig
from genre.training.loop import _forward
from genre.training.train import train


@pytest.fixture
def digits16(tracking_store: str, tmp_path: Path) -> Path:
    return prepare(PrepareConfig(out=str(tmp_path / "digits16"), image_size=16), progress=False).root


def test_a_draw_is_a_weight_in_0_1_and_a_permutation_from_the_callers_stream() -> None:
    weight, partner = draw_mixup(32, 0.4, np.random.default_rng(7))
    again = draw_mixup(32, 0.4, np.random.default_rng(7))

    assert 0.0 < weight < 1.0 and sorted(partner) == list(range(32))
    assert weight == again[0] and np.array_equal(partner, again[1])


def test_a_mixed_step_scores_the_blend_against_both_labels_in_the_drawn_proportion() -> None:
    net = gluon.nn.Dense(3, in_units=4 * 4 * 3)
    net.initialize(mx.init.Normal(0.5))
    images = nd.array(np.random.default_rng(0).integers(0, 256, size=(6, 4, 4, 3)), dtype="uint8")
    labels = nd.array([0, 1, 2, 0, 1, 2])
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    spec = AugmentSpec(random_crop_area=1.0, mixup_alpha=0.4)

    outputs, losses = _forward(net, images, labels, spec, np.random.default_rng(3), None, loss_fn)

    weight, partner = draw_mixup(6, 0.4, np.random.default_rng(3))  # the same draw, spec being otherwise inactive
    plain = training_input(images, AugmentSpec(random_crop_area=1.0), None)
    blend = weight * plain + (1 - weight) * plain.take(nd.array(partner))
    expected = net(blend)
    np.testing.assert_allclose(outputs.asnumpy(), expected.asnumpy(), rtol=1e-5)
    mixed_loss = weight * loss_fn(expected, labels) + (1 - weight) * loss_fn(expected, labels.take(nd.array(partner)))
    np.testing.assert_allclose(losses.asnumpy(), mixed_loss.asnumpy(), rtol=1e-5)
    assert not np.allclose(losses.asnumpy(), loss_fn(expected, labels).asnumpy())  # both labels count


def test_a_network_trained_with_mixup_still_learns_the_digits(digits16: Path, tmp_path: Path) -> None:
    config = TrainConfig(data=str(digits16), epochs=3, batch_size=32, conv_filters="8,16", dense_units="32",
                         mixup_alpha=0.4)  # fmt: skip

    outcome = train(config, [mx.cpu()], CheckpointStore(tmp_path / "checkpoints"))

    assert outcome.validation.accuracy > 0.8  # chance is 0.1


@pytest.mark.parametrize("alpha", [-0.1, 11.0])
def test_an_absurd_alpha_is_refused_naming_the_setting(alpha: float) -> None:
    with pytest.raises(ConfigError, match="mixup_alpha"):
        AugmentSpec(mixup_alpha=alpha)
