"""The GluonCV bridge: zoo classifiers by name, their output layers, and backbone weights from GluonCV or a file.

Parameters are matched by their structural names (`features.3.weight`, `fc.bias`): the names `save_parameters`
writes and GluonCV's pretrained files use. Unlike `param.name` (`resnetv1b3_conv0_weight`), they do not depend on
how many networks the process has built.

`python -m genre.models.zoo` prints the GluonCV classifier names `NetworkSpec.model` accepts.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import urllib.parse
import urllib.request
import warnings
from collections.abc import Mapping
from pathlib import Path

from mxnet import gluon, nd
from mxnet.base import MXNetError

from genre.errors import ConfigError, GenreError, some_of
from genre.models import LIST_COMMAND
from genre.models.efficientnet_lite import LITE_VARIANTS

log = logging.getLogger(__name__)

# GluonCV modules whose models take an image batch and return `(N, classes)`; the rest of the zoo detects,
# segments, estimates poses or reads videos. `*_int8` models are frozen symbol graphs and cannot be trained; the
# pruned ResNets (`resnet50_v1d_0.86`) have fixed ImageNet shapes and cannot be built without their weights.
CLASSIFIER_MODULES = frozenset(
    "gluoncv.model_zoo." + module
    for module in (
        "alexnet",
        "cifarresnet",
        "cifarresnext",
        "cifarwideresnet",
        "densenet",
        "dla",
        "googlenet",
        "hrnet",
        "inception",
        "mobilenet",
        "mobilenetv3",
        "nasnet",
        "residual_attentionnet",
        "resnest",
        "resnet",
        "resnetv1b",
        "resnext",
        "senet",
        "shufflenet",
        "squeezenet",
        "vgg",
        "xception",
        "yolo.darknet",
    )
)
# Constructors that take the class count by another name (and swallow `classes=` silently).
CLASS_COUNT_ARGUMENTS = {"gluoncv.model_zoo.hrnet": "num_classes"}
DOWNLOAD_HINT = (
    "download them where there is network (GluonCV keeps them in ~/.mxnet/models/) and pass "
    f"--pretrained-params FILE, or set pretrained to false, or use {', '.join(LITE_VARIANTS)}, "
    "whose ImageNet weights come offline from pip packages"
)
# GluonCV downloads without a timeout, so where the network drops packets it would hang for minutes: its model
# store must answer within this many seconds first.
MODEL_STORE_TIMEOUT = 5.0


def import_gluoncv():
    """`gluoncv`, imported on first use, quietly, and beside any PyTorch.

    GluonCV 0.10's `__init__` raises when it finds torch >= 2.0 (it only supports torch < 2 for its own PyTorch
    models, which this project does not use), so torch is hidden from that one check; its version check's
    deprecation warnings are silenced; and the process-wide `LOAD_TRUNCATED_IMAGES` it switches on is put back.
    """
    if "gluoncv" in sys.modules:
        return sys.modules["gluoncv"]
    from PIL import ImageFile

    truncated = ImageFile.LOAD_TRUNCATED_IMAGES
    torch = sys.modules.get("torch", _ABSENT)
    sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` raises ImportError: mxnet-only gluoncv
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import gluoncv
    finally:
        if torch is _ABSENT:
            del sys.modules["torch"]
        else:
            sys.modules["torch"] = torch
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated
    return gluoncv


_ABSENT = object()


def _gluoncv_zoo():
    """`gluoncv.model_zoo`."""
    return import_gluoncv().model_zoo


def short_reason(error: BaseException) -> str:
    """The last line of an exception's message (MXNet puts the C++ traceback first), at most 200 characters."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:200]


def _constructors() -> dict:
    """GluonCV's name -> constructor registry: private, but gluoncv is pinned; `{}` if it ever moves."""
    return getattr(_gluoncv_zoo().model_zoo, "_models", {})


def model_names() -> list[str]:
    """Every name GluonCV's model zoo knows, classifiers or not."""
    model_zoo = _gluoncv_zoo()
    return sorted(model_zoo.get_model_list())


def classifier_names() -> list[str]:
    """The GluonCV image classifiers (`resnet18_v1b`, `mobilenetv3_small`, ...) a `NetworkSpec.model` may name."""
    registry = _constructors()
    if not registry:
        return model_names()
    return sorted(name for name, make in registry.items() if _is_classifier(name, getattr(make, "__module__", "")))


def _is_classifier(name: str, module: str) -> bool:
    hrnet_segmenter = module.endswith(".hrnet") and name.endswith("_s")  # hrnet_w48_s; hrnet_w48_c classifies
    return module in CLASSIFIER_MODULES and not hrnet_segmenter


def _class_count_argument(name: str) -> str:
    """The keyword a zoo constructor takes the class count by: `classes`, but `num_classes` for HRNet."""
    make = _constructors().get(name)
    return CLASS_COUNT_ARGUMENTS.get(getattr(make, "__module__", ""), "classes")


def build_classifier(name: str, classes: int) -> gluon.HybridBlock:
    """GluonCV's `name` with a `classes`-way output layer, uninitialised; downloads nothing."""
    model_zoo = _gluoncv_zoo()
    try:
        return model_zoo.get_model(name, pretrained=False, **{_class_count_argument(name): classes})
    except Exception as error:  # any constructor failure means the same thing to the user
        raise ConfigError(
            f"GluonCV cannot build '{name}' as a {classes}-class classifier ({short_reason(error)}); "
            f"pick another model (`{LIST_COMMAND}` lists them)"
        ) from error


def structural_parameters(net: gluon.Block) -> dict[str, gluon.Parameter]:
    """`{'features.3.weight': Parameter, ...}`: the names `save_parameters` writes."""
    return net._collect_params_with_prefix()  # what save_parameters/load_parameters use


def _differ(shape: tuple[int, ...], other: tuple[int, ...]) -> bool:
    """Shapes that disagree where both are known (0 = not inferred yet)."""
    return len(shape) != len(other) or any(a != b and a != 0 and b != 0 for a, b in zip(shape, other, strict=True))


def output_prefixes(net: gluon.Block, name: str, classes: int) -> tuple[str, ...]:
    """Structural names of the block(s) that make the class scores of zoo model `net`: `('fc',)`, `('output',)`...

    GluonCV families name their last layer differently (`fc`, `output`, `output.0`, `classifier.2`, `out.4`,
    plus auxiliary heads in some), so the layer is found by what defines it: a second, uninitialised build with one
    more class shows which parameters' shapes depend on the class count. Their enclosing blocks are the output.
    """
    probe = structural_parameters(build_classifier(name, classes + 1))
    ours = structural_parameters(net)
    if list(ours) != list(probe):
        raise GenreError(f"cannot tell the output layer of '{name}': two builds have different parameters")
    changed = [key for key, param in ours.items() if _differ(param.shape, probe[key].shape)]
    if not changed:
        raise GenreError(f"cannot tell the output layer of '{name}': no parameter depends on the class count")
    return tuple(sorted({key.rsplit(".", 1)[0] if "." in key else key for key in changed}))


def is_output(structural_name: str, prefixes: tuple[str, ...]) -> bool:
    """Whether a parameter belongs to the output layer named by `prefixes` (see `output_prefixes`)."""
    return any(structural_name == prefix or structural_name.startswith(prefix + ".") for prefix in prefixes)


def split_parameters(
    net: gluon.Block, prefixes: tuple[str, ...]
) -> tuple[dict[str, gluon.Parameter], dict[str, gluon.Parameter]]:
    """`(backbone, output)` parameters of `net` by structural name; `prefixes` name the output layer."""
    backbone: dict[str, gluon.Parameter] = {}
    output: dict[str, gluon.Parameter] = {}
    for key, param in structural_parameters(net).items():
        (output if is_output(key, prefixes) else backbone)[key] = param
    return backbone, output


def unreachable(url: str, timeout: float) -> str | None:
    """Why the host of `url` (or the proxy to it) takes no connection within `timeout` s; None if it does."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        via = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = via.hostname or "", via.port or 8080
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as error:
        return f"{host}:{port} {'took no connection' if isinstance(error, TimeoutError) else 'unreachable'}: {error}"
    return None


class _StoreUnreachable(OSError):
    """GluonCV's model store did not answer, so its download was not started."""


def _probing(download):
    """GluonCV's `download`, preceded by a connection probe of at most `MODEL_STORE_TIMEOUT` seconds."""

    def probed(url, *args, **kwargs):
        if reason := unreachable(url, MODEL_STORE_TIMEOUT):
            raise _StoreUnreachable(reason)
        return download(url, *args, **kwargs)

    return probed


def pretrained_parameters(name: str) -> dict[str, nd.NDArray]:
    """GluonCV's pretrained weights for `name` by structural name; downloads them on first use.

    Offline, a needed download fails within `MODEL_STORE_TIMEOUT` seconds (not after GluonCV's unbounded wait)
    with a `GenreError` saying what to use instead; weights already in GluonCV's folder load without network.
    """
    model_zoo = _gluoncv_zoo()
    store = model_zoo.model_store
    download = store.download  # what store.get_model_file calls, only when the weights are not on disk yet
    store.download = _probing(download)
    try:
        reference = model_zoo.get_model(name, pretrained=True)
    except _StoreUnreachable as error:
        raise GenreError(
            f"could not download GluonCV's pretrained weights for '{name}': its model store is unreachable "
            f"({error}); {DOWNLOAD_HINT}"
        ) from error
    except Exception as error:  # network, missing weights, bad checksum: the user's fix is the same
        raise GenreError(
            f"could not get GluonCV's pretrained weights for '{name}': the download failed or there are none "
            f"({type(error).__name__}: {short_reason(error)}); {DOWNLOAD_HINT}"
        ) from error
    finally:
        store.download = download
    return {key: param.data() for key, param in structural_parameters(reference).items()}


def read_parameter_file(path: str | os.PathLike[str]) -> dict[str, nd.NDArray]:
    """The named tensors of a `.params` file (`save_parameters`, `mx.nd.save` of a dict, `export`)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"pretrained_params file {path} does not exist; pass a .params file written by save_parameters "
            "(a model of an earlier run, or GluonCV's weights from ~/.mxnet/models/)"
        )
    try:
        loaded = nd.load(str(path))
    except MXNetError as error:
        raise ConfigError(
            f"pretrained_params file {path} is not an MXNet parameter file ({short_reason(error)}); pass a .params "
            "file written by save_parameters or mx.nd.save"
        ) from error
    if not isinstance(loaded, dict) or not loaded:
        raise ConfigError(
            f"pretrained_params file {path} holds no named tensors; pass a .params file written by save_parameters"
        )
    return loaded


def _common_prefix(names: list[str]) -> str:
    """'resnetv1b_' for ['resnetv1b_conv0_weight', 'resnetv1b_layer1_...']: up to the last '_' all share."""
    shared = os.path.commonprefix(names)
    return shared[: shared.rfind("_") + 1]


def _by_structural_name(source: Mapping[str, nd.NDArray], net: gluon.Block) -> dict[str, nd.NDArray]:
    """`source` keyed by `net`'s structural names.

    `save_parameters` files already are. Files written by `collect_params().save` or `export` use block-prefixed
    names (`arg:convnet_conv0_weight`); those match when they agree after each side's shared prefix.
    """
    if any("." in key for key in source):
        return dict(source)
    plain = {key.split(":", 1)[1] if key.startswith(("arg:", "aux:")) else key: value for key, value in source.items()}
    theirs = _common_prefix(list(plain))
    ours = net.prefix
    matched = {}
    for key, param in structural_parameters(net).items():
        short = param.name[len(ours) :] if param.name.startswith(ours) else param.name
        if theirs + short in plain:
            matched[key] = plain[theirs + short]
    return matched


def load_backbone(net: gluon.Block, source: Mapping[str, nd.NDArray], prefixes: tuple[str, ...], origin: str) -> int:
    """Copy into initialised `net` every backbone tensor of `source` whose name and shape match; returns the count.

    The output layer (`prefixes`) is never copied: it keeps its fresh initialisation, sized for this run's
    classes. Logs what was loaded and which backbone parameters were not; none at all is a `ConfigError`.
    """
    by_name = _by_structural_name(source, net)
    loaded: list[str] = []
    missing: list[str] = []
    mismatched: list[str] = []
    for key, param in structural_parameters(net).items():
        if is_output(key, prefixes):
            continue
        value = by_name.get(key)
        if value is None:
            missing.append(key)
        elif tuple(value.shape) != tuple(param.shape):
            mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(param.shape)}")
        else:
            param.set_data(value)
            loaded.append(key)
    if not loaded:
        raise ConfigError(
            f"{origin}: none of its {len(source)} tensors matches a backbone parameter of this network by name and "
            "shape, so it was saved from a different architecture; pass parameters of the same model"
        )
    log.info(
        "%s: loaded %d of %d backbone tensors; the output layer (%s) starts fresh; %d tensors of the source unused",
        origin,
        len(loaded),
        len(loaded) + len(missing) + len(mismatched),
        ", ".join(prefixes),
        len(source) - len(loaded),
    )
    if missing:
        log.warning(
            "%s: %d backbone parameters not found keep their initial values: %s",
            origin,
            len(missing),
            some_of(missing, 8),
        )
    if mismatched:
        log.warning(
            "%s: %d backbone parameters differ in shape, not loaded: %s",
            origin,
            len(mismatched),
            some_of(mismatched, 8),
        )
    return len(loaded)


if __name__ == "__main__":
    print("\n".join(classifier_names()))
