"""A feature baseline as one network, so it is logged, served, evaluated and interpreted like a trained one.

A linear classifier on standardised (and PCA-projected) features is an affine map of the features: its class scores
are `features @ A + c`. Folded into a Dense layer after the describers of its backbones, the whole baseline (the
backbones, the blocks whose statistics it reads, the views it averages and the fitted classifier) becomes a Gluon
network that `genre.cover_model.log_cover_model` exports like any other: covers in, genre and probabilities out.
A forest is no affine map: its network ends at the features, and the model carries the forest beside it.
"""

from __future__ import annotations

import mxnet as mx
import numpy as np
from mxnet import gluon

from genre.models.features import CoverDescriber, build_describer
from genre.models.inputs import NetworkInput
from genre.models.networks import NetworkSpec

PROBE_ROWS = 512  # unit vectors put through the classifier at a time to read its affine map
PIXELS = NetworkInput(0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # the describers crop and normalise in the graph


def affine_map(classifier, width: int) -> tuple[np.ndarray, np.ndarray]:
    """`(A, c)` with `classifier.decision_function(x) == x @ A + c` for a fitted linear scikit-learn pipeline of
    `width` features, read off its answers to the zero vector and to each unit vector. A two-genre classifier's
    single score `s` becomes the scores `(0, s)`, which give the same probabilities under a softmax."""
    zero = np.atleast_2d(classifier.decision_function(np.zeros((1, width))))
    rows = []
    for start in range(0, width, PROBE_ROWS):
        units = np.eye(min(PROBE_ROWS, width - start), width, k=start)
        rows.append(np.atleast_2d(classifier.decision_function(units).reshape(len(units), -1)) - zero.reshape(1, -1))
    slope, offset = np.concatenate(rows), zero.reshape(-1)
    if slope.shape[1] == 1:
        slope, offset = np.hstack([np.zeros_like(slope), slope]), np.array([0.0, offset[0]])
    return slope, offset


class FeatureNetwork(gluon.HybridBlock):
    """Covers `(N, 3, S, S)` in [0, 1] -> class scores: each describer's features side by side, then `output`
    (with `classes` 0, no output layer: the features)."""

    def __init__(self, describers: list[CoverDescriber], classes: int, width: int) -> None:
        super().__init__(prefix="featurenet_")
        self.describers = describers
        for index, describer in enumerate(describers):
            self.register_child(describer, f"describer{index}")
        self.output = None
        if classes:
            with self.name_scope():
                self.output = gluon.nn.Dense(classes, in_units=width, prefix="output_")

    def hybrid_forward(self, F, x):
        described = [describer(x) for describer in self.describers]
        features = F.concat(*described, dim=1) if len(described) > 1 else described[0]
        return features if self.output is None else self.output(features)


def feature_network(
    specs: list[NetworkSpec],
    image_size: int,
    last_blocks: int | None,
    mirror: bool,
    classifier,
    classes: int,
    mixtures: int = 0,
) -> FeatureNetwork:
    """The describers of `specs` (the statistics of their last `last_blocks` blocks: 0 none, None all, with the
    correlations of `mixtures` channel mixtures; averaged with the mirror image when `mirror`) for covers packed at
    `image_size`, followed by `classifier` (a fitted linear
    pipeline over exactly their features, in that order) as a Dense layer; with no `classifier`, the features
    themselves. Hybridized, on the CPU."""
    ctx = mx.cpu()
    built = [build_describer(spec, image_size, ctx, last_blocks, mirror, mixtures) for spec in specs]
    describers = [describer for describer, _ in built]
    width = sum(layout.width for _, layout in built)
    if classifier is None:
        net = FeatureNetwork(describers, 0, width)
        net.hybridize(static_alloc=True)
        return net
    slope, offset = affine_map(classifier, width)
    net = FeatureNetwork(describers, classes, width)
    net.output.initialize(ctx=ctx)
    net.output.weight.set_data(mx.nd.array(slope.T, ctx=ctx))
    net.output.bias.set_data(mx.nd.array(offset, ctx=ctx))
    net.hybridize(static_alloc=True)
    return net
