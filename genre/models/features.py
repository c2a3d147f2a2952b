"""Image features from a network's penultimate layer, for a scikit-learn classifier on top.

The original work's "CaffeNet features + random forest" (16.7%): a pretrained network describes each cover, a cheap
classifier learns the genres. Any `NetworkSpec` model works; the features are what its output layer reads.
"""

from __future__ import annotations

import mxnet as mx
import numpy as np
from mxnet import gluon

from genre.models.inputs import network_input
from genre.models.networks import NetworkSpec, build_network, feature_block, input_for, output_prefixes

FEATURE_BATCH = 64


def _block_at(net: gluon.Block, structural_name: str) -> gluon.Block:
    """`net.output`, `net.output[0]`, ... from the structural name `save_parameters` uses ('output.0')."""
    block = net
    for part in structural_name.split("."):
        block = block._children[part]  # noqa: SLF001 - Gluon keeps child blocks by structural name here
    return block


class FeatureExtractor:
    """A network whose output layer is watched: `__call__` returns what that layer was given, flattened.

    Images packed at `image_size` reach the network as training's evaluation feeds them: the centre crop at the
    network's own resolution where the pack is large enough (224 of 256 for efficientnet_lite0), normalised as its
    weights expect.
    """

    def __init__(self, spec: NetworkSpec, image_size: int, ctx: mx.Context) -> None:
        classes = 2  # the class scores are never used; the output layer starts fresh in any case
        self.input = input_for(spec.model, 0, image_size)
        self.net = build_network(spec, classes, [ctx], self.input.size)
        self.ctx = ctx
        self._seen: list[mx.nd.NDArray] = []
        self._features = feature_block(self.net)  # hybridized, where the layout allows: no hook needed
        if self._features is None:
            self.net.hybridize(active=False)  # hooks see only imperative calls
            prefixes = output_prefixes(self.net, spec.model, classes)
            output = _block_at(self.net, prefixes[0])
            output.register_forward_pre_hook(lambda block, inputs: self._seen.append(inputs[0]))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """`(N, H, W, 3)` uint8 (a memory map is fine) -> `(N, D)` float32 features, a batch at a time."""
        parts = []
        for start in range(0, len(images), FEATURE_BATCH):
            batch = mx.nd.array(np.asarray(images[start : start + FEATURE_BATCH]), ctx=self.ctx, dtype="uint8")
            self._seen.clear()
            with mx.autograd.predict_mode():
                if self._features is not None:
                    self._seen.append(self._features(network_input(batch, self.input)))
                else:
                    self.net(network_input(batch, self.input))
            parts.append(self._seen[0].reshape((batch.shape[0], -1)).asnumpy())
        return np.concatenate(parts) if parts else np.empty((0, 0), dtype=np.float32)
