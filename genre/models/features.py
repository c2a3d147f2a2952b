"""Image features from a pretrained network, for a scikit-learn classifier on top.

The original work's "CaffeNet features + random forest" (16.7%): a pretrained network describes each cover, a cheap
classifier learns the genres. Any `NetworkSpec` model works; the pooled features are what its output layer reads.

Where the network is built of blocks (EfficientNet-Lite's inverted residuals, ResNet's stages), a `CoverDescriber`
also gives each block's *style statistics*: the mean and standard deviation of every channel of its map over the
image. Style lives in a network's intermediate layers (Karayev et al. 2014, "Recognizing Image Style"; Gatys et al.
describe style by the statistics of feature maps), and on covers-dev they add about 6 points of balanced accuracy
to a linear probe on the pooled vector alone (docs/results.md).
"""

from __future__ import annotations

import dataclasses

import mxnet as mx
import numpy as np
from mxnet import gluon

from genre.models.baselines import FeatureLayout
from genre.models.fused import InferenceGraph
from genre.models.inputs import NetworkInput, network_input, to_float_nchw
from genre.models.networks import NetworkSpec, build_network, feature_block, input_for, output_prefixes
from genre.models.spec import BaselineSpec
from genre.models.style import gram_projection, last_positions, run_with_statistics, upper_pairs

FEATURE_BATCH = 64


def _block_at(net: gluon.Block, structural_name: str) -> gluon.Block:
    """`net.output`, `net.output[0]`, ... from the structural name `save_parameters` uses ('output.0')."""
    block = net
    for part in structural_name.split("."):
        block = block._children[part]  # noqa: SLF001 - Gluon keeps child blocks by structural name here
    return block


def block_positions(features: gluon.nn.HybridSequential) -> list[int]:
    """Positions in `features` of its blocks: the layers made of layers (an inverted residual, a ResNet stage), not
    a lone convolution, batch norm, activation or pooling."""
    return [index for index in range(len(features)) if features[index]._children]  # noqa: SLF001


class CoverDescriber(gluon.HybridBlock):
    """Covers as `(N, 3, S, S)` floats in [0, 1] -> `(N, D)`: the pooled vector of `features`, then the mean and
    standard deviation of each channel of the maps at `taps` (positions in `features`), averaged with the same of
    the mirror image when `mirror`; with `mixtures`, after them the correlations of that many mixtures of the
    channels of each map at `taps` (`tap_channels`: how many channels each has).

    The centre crop at the network's side and its normalisation happen inside the graph, so several describers
    (backbones of different sides and normalisations) can read one input, and an exported describer needs nothing
    but pixels.
    """

    def __init__(
        self,
        features: gluon.nn.HybridSequential,
        network: NetworkInput,
        image_size: int,
        taps: tuple[int, ...] = (),
        mirror: bool = False,
        prefix: str | None = None,
        mixtures: int = 0,
        tap_channels: tuple[int, ...] = (),
    ) -> None:
        super().__init__(prefix=prefix)
        self.features = features
        self.taps = frozenset(taps)
        self.mirror = mirror
        self.mixtures = mixtures
        self.side = min(network.size, image_size)
        self.top = (image_size - self.side) // 2
        with self.name_scope():
            self.mean = self.params.get_constant("mean", np.array(network.mean, dtype=np.float32).reshape(1, 3, 1, 1))
            self.std = self.params.get_constant("std", np.array(network.std, dtype=np.float32).reshape(1, 3, 1, 1))
            if mixtures:
                self.pairs = self.params.get_constant("pairs", upper_pairs(mixtures))
                for index, channels in enumerate(tap_channels):  # attributes, so hybrid_forward is given them
                    projection = self.params.get_constant(f"mixing{index}", gram_projection(channels, mixtures))
                    setattr(self, f"mixing{index}", projection)

    def hybrid_forward(self, F, x, mean, std, pairs=None, **mixing):
        if self.top:
            end = self.top + self.side
            x = F.slice(x, begin=(None, None, self.top, self.top), end=(None, None, end, end))
        x = F.broadcast_div(F.broadcast_sub(x, mean), std)
        if self.mirror:
            x = F.concat(x, F.flip(x, axis=3), dim=0)
        projections = tuple(mixing[f"mixing{index}"] for index in range(len(mixing)))
        described = run_with_statistics(F, self.features, x, self.taps, projections, pairs, self.mixtures)
        if self.mirror:  # rows [covers; mirrors] -> their average
            described = F.mean(F.reshape(described, shape=(-4, 2, -1, -2)), axis=0)
        return described


def build_describer(
    spec: NetworkSpec,
    image_size: int,
    ctx: mx.Context,
    last_blocks: int | None,
    mirror: bool = False,
    mixtures: int = 0,
) -> tuple[CoverDescriber, FeatureLayout]:
    """A hybridized describer of `spec`'s network (weights loaded) for covers packed at `image_size`, with the
    statistics of its last `last_blocks` blocks (None: every block) and, with `mixtures`, their channel
    correlations; and the layout of what it returns."""
    from genre.errors import ConfigError

    network = input_for(spec.model, 0, image_size)
    plain = dataclasses.replace(spec, style_blocks="none")  # the describer taps the blocks itself
    net = build_network(plain, 2, [ctx], network.size)  # the class scores are never used
    features = feature_block(net)
    if features is None or not isinstance(features, gluon.nn.HybridSequential):
        raise ConfigError(
            f"'{spec.model}' is not laid out as `features` then a Dense output layer, so no style statistics can "
            "be read from it; use style_blocks 0 (the pooled features) or efficientnet_lite*"
        )
    taps = last_positions(block_positions(features), last_blocks)
    widths = []
    x = mx.nd.zeros((1, 3, min(network.size, image_size), min(network.size, image_size)), ctx=ctx)
    for index in range(len(features)):
        x = features[index](x)
        if index in taps:
            widths.append(int(x.shape[1]))
    describer = CoverDescriber(
        features, network, image_size, taps, mirror, mixtures=mixtures, tap_channels=tuple(widths)
    )
    describer.params.initialize(ctx=ctx)  # its own: the constants (the network's parameters are set already)
    describer.hybridize(static_alloc=True)
    return describer, FeatureLayout(int(x.reshape((1, -1)).shape[1]), tuple(widths), mixtures)


class FeatureExtractor:
    """A network whose output layer is watched: `__call__` returns what that layer was given, flattened, and with
    `style=True` every block's style statistics after it, and with `mixtures` their channel correlations (`layout`
    says which columns are what).

    Images packed at `image_size` reach the network as training's evaluation feeds them: the centre crop at the
    network's own resolution where the pack is large enough (224 of 256 for efficientnet_lite0), normalised as its
    weights expect. `mirror` describes the mirror images instead. The network runs as oneDNN's fused inference
    graph (`genre.models.fused`), except a layout read through a hook.
    """

    def __init__(
        self,
        spec: NetworkSpec,
        image_size: int,
        ctx: mx.Context,
        style: bool = False,
        mirror: bool = False,
        mixtures: int = 0,
    ) -> None:
        classes = 2  # the class scores are never used; the output layer starts fresh in any case
        self.ctx = ctx
        self.mirror = mirror
        self.layout: FeatureLayout | None = None
        self._seen: list[mx.nd.NDArray] = []
        self.describer: InferenceGraph | None = None
        if style:
            describer, self.layout = build_describer(spec, image_size, ctx, None, mixtures=mixtures)
            self.describer = InferenceGraph(describer, ctx)
            self.net = None
            return
        self.input = input_for(spec.model, 0, image_size)
        self.net = build_network(spec, classes, [ctx], self.input.size)
        features = feature_block(self.net)  # fused, where the layout allows: no hook needed
        self._features = InferenceGraph(features, ctx) if features is not None else None
        if self._features is None:
            self.net.hybridize(active=False)  # hooks see only imperative calls
            prefixes = output_prefixes(self.net, spec.model, classes)
            output = _block_at(self.net, prefixes[0])
            output.register_forward_pre_hook(lambda block, inputs: self._seen.append(inputs[0]))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """`(N, H, W, 3)` uint8 (a memory map is fine) -> `(N, D)` float32 features, a batch at a time."""
        parts = []
        for start in range(0, len(images), FEATURE_BATCH):
            pixels = np.asarray(images[start : start + FEATURE_BATCH])
            if self.mirror:
                pixels = np.ascontiguousarray(pixels[:, :, ::-1])
            batch = mx.nd.array(pixels, ctx=self.ctx, dtype="uint8")
            parts.append(self._describe(batch).asnumpy())
        return np.concatenate(parts) if parts else np.empty((0, 0), dtype=np.float32)

    def _describe(self, batch: mx.nd.NDArray) -> mx.nd.NDArray:
        with mx.autograd.predict_mode():
            if self.describer is not None:
                return self.describer(to_float_nchw(batch))
            self._seen.clear()
            if self._features is not None:
                self._seen.append(self._features(network_input(batch, self.input)))
            else:
                self.net(network_input(batch, self.input))
        return self._seen[0].reshape((batch.shape[0], -1))


def network_describer(config: BaselineSpec, network: str, image_size: int, style: bool = False, mirror: bool = False):
    """The features of `network` (one of `config.networks`) for `(N, S, S, 3)` uint8 images: pooled, and with
    `style` every block's style statistics (and `style_gram`'s correlations) after them; of the mirror images with
    `mirror` (imports MXNet only when asked for)."""
    mx.random.seed(config.seed)
    mixtures = config.style_gram if style else 0
    return FeatureExtractor(config.network_spec(network), image_size, mx.cpu(), style, mirror, mixtures)
