"""A linear probe as the starting output layer: fit a logistic regression on the pretrained features, then fine-tune.

Fine-tuning from a random output layer first spends epochs teaching the head, and its large early gradients
disturb the pretrained features (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features"). On a thousand
covers a logistic regression on the pooled features already reaches the linear probe's accuracy in seconds; starting
the head there ("LP-FT") leaves the epochs to adapting the backbone.
"""

from __future__ import annotations

import logging

import numpy as np
from mxnet import autograd, gluon

from genre.data.iterator import ChunkedIterator
from genre.errors import ConfigError
from genre.models.fused import InferenceGraph, symbol_view
from genre.models.inputs import NetworkInput, network_input
from genre.models.networks import output_input
from genre.models.spec import PROBE_C

log = logging.getLogger(__name__)


def head_of(net: gluon.Block) -> tuple[InferenceGraph, gluon.nn.Dense]:
    """`(what the output layer reads, output)` of a network laid out as ours are, the former as an inference graph
    of its own (fused by oneDNN on the CPU); a `ConfigError` for any other layout."""
    describe = output_input(net)
    if describe is None:
        raise ConfigError(
            "'probe_head' needs a network made of `features` then one Dense `output` layer (efficientnet_lite*, "
            "convnet, mlp, GluonCV's vgg and alexnet); turn it off for other zoo models"
        )
    ctx = net.output.weight.list_ctx()[0]
    return InferenceGraph(symbol_view(describe, net.collect_params()), ctx), net.output


def pooled_features(
    features: InferenceGraph, batches: ChunkedIterator, network: NetworkInput
) -> tuple[np.ndarray, ...]:
    """`(N, D)` float32 features (what the output layer reads, no dropout) and `(N,)` labels, in pack order."""
    parts, labels = [], []
    with autograd.predict_mode():
        for batch in batches.epoch(0):
            for x, y in batch.shards:
                parts.append(features(network_input(x, network)).reshape((x.shape[0], -1)).asnumpy())
                labels.append(y.asnumpy().astype(np.int64))
    return np.concatenate(parts), np.concatenate(labels)


def fit_probe_head(
    net: gluon.Block,
    batches: ChunkedIterator,
    network: NetworkInput,
    classes: int,
    seed: int,
    c: float = PROBE_C,
    class_weight: str = "none",
) -> float:
    """Set `net.output` to a logistic regression fitted on the features of `batches` (with the network's
    `style_blocks`, the style probe's); returns its training accuracy.

    The regression is fitted on standardised features (as the `logreg` baseline is), its genres weighted by the
    inverse of their share with `class_weight` "balanced", then folded into the Dense layer's weights and bias, so
    the network computes exactly the probe's logits.
    """
    from sklearn.linear_model import LogisticRegression

    features, output = head_of(net)
    x, y = pooled_features(features, batches, network)
    if len(np.unique(y)) < classes:
        raise ConfigError(
            f"'probe_head' needs covers of all {classes} genres in the training split, it has {len(np.unique(y))}"
        )
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    weights = "balanced" if class_weight == "balanced" else None
    probe = LogisticRegression(C=c, max_iter=2000, class_weight=weights, random_state=seed).fit((x - mean) / scale, y)
    weight = probe.coef_ / scale
    bias = probe.intercept_ - weight @ mean
    output.weight.set_data(weight.astype(np.float32))
    output.bias.set_data(bias.astype(np.float32))
    accuracy = float(np.mean(probe.predict((x - mean) / scale) == y))
    log.info("output layer starts from a linear probe on %d training covers: training accuracy %.3f", len(y), accuracy)
    return accuracy
