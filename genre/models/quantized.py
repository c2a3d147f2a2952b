"""An INT8 copy of an inference network, through MXNet's oneDNN quantization, for serving and batch prediction.

`quantize_net_v2` rewrites the graph with oneDNN's INT8 kernels (`MKLDNN_QUANTIZE`): weights are quantized per
output channel, and each quantized layer's output range is calibrated once, from the float network's activations on
a few hundred training covers (`naive`: their minimum and maximum), so no range is measured while serving; the
depthwise convolutions, the first layer and the output layer stay float32 (`float_layers`). The copy
is a graph of its own with its own parameters: the float network stays as it was (Grad-CAM still needs its
gradients). What it costs in accuracy and gains in speed on real covers is measured in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import logging
import warnings

import mxnet as mx
import numpy as np
from mxnet import gluon

from genre.models.fused import INPUT_NAME, fusion_refusal, symbol_view
from genre.models.inputs import NetworkInput, network_input

log = logging.getLogger(__name__)

CALIBRATION_BATCH = 32
CALIBRATION_MODE = "naive"  # per-layer min/max of the calibration covers; "entropy" (KL) lost more agreement here
GRANULARITY = "channel-wise"  # one weight scale per output channel
WEIGHTED = ("Convolution", "FullyConnected")


def quantization_settings(covers: int) -> dict[str, object]:
    """How an INT8 copy was made, as a logged model records it (`classifier.json`'s `quantized`)."""
    return {
        "covers": covers,
        "mode": CALIBRATION_MODE,
        "granularity": GRANULARITY,
        "float_layers": "depthwise convolutions, first and last layers",
    }


class QuantizationUnavailable(Exception):
    """INT8 cannot run here (a GPU context, an MXNet without oneDNN, fusion switched off)."""


def quantization_refusal(ctx: mx.Context) -> str | None:
    """Why an INT8 graph cannot run on `ctx`, or None: it needs what fusion needs (oneDNN on a CPU)."""
    return fusion_refusal(ctx)


def quantize_network(
    net: gluon.HybridBlock, calibration: np.ndarray, ctx: mx.Context | None = None
) -> gluon.SymbolBlock:
    """An INT8 `SymbolBlock` computing what `net` does on `ctx` (default: the CPU), its ranges calibrated on
    `calibration`: the network's input for the calibration covers, float32 `(N, 3, S, S)`, N >= 1.

    `net` (hybridizable, its parameters on `ctx`) is read through a view of its own (`symbol_view`), so its own graph
    and hybridization stay as they were. Raises `QuantizationUnavailable` where INT8 cannot run.
    """
    from mxnet.contrib.quantization import quantize_net_v2

    ctx = ctx or mx.cpu()
    reason = quantization_refusal(ctx)
    if reason:
        raise QuantizationUnavailable(reason)
    if calibration.ndim != 4 or not len(calibration):
        raise ValueError(f"calibration covers must be a non-empty (N, 3, S, S) batch, got shape {calibration.shape}")
    kept = float_layers(net(mx.sym.var(INPUT_NAME)))
    batches = mx.io.NDArrayIter(
        {INPUT_NAME: calibration.astype(np.float32)}, batch_size=min(CALIBRATION_BATCH, len(calibration))
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Cannot decide type", UserWarning)
        warnings.filterwarnings("ignore", ".*is not used by any computation", UserWarning)
        warnings.filterwarnings("ignore", ".*infer_type", UserWarning)
        quantized = quantize_net_v2(
            symbol_view(lambda F, x: net(x), net.collect_params()),
            quantized_dtype="auto",
            quantize_granularity=GRANULARITY,
            calib_data=batches,
            calib_mode=CALIBRATION_MODE,
            num_calib_examples=len(calibration),
            ctx=ctx,
            exclude_layers=kept,
        )
    quantized.hybridize(static_alloc=True)
    return quantized


def float_layers(symbol: mx.sym.Symbol) -> list[str]:
    """The layers of a network's graph the INT8 copy keeps in float32: its depthwise convolutions (one filter per
    channel: too few weights to share a scale well), the first layer (it reads the pixels) and the last (the genre
    scores). On a fine-tuned Lite0 they halved the answers INT8 changed on covers-dev (docs/benchmarks.md)."""
    nodes = [node for node in json.loads(symbol.tojson())["nodes"] if node["op"] in WEIGHTED]
    depthwise = [node for node in nodes if int(node.get("attrs", {}).get("num_group", "1")) > 1]
    ends = nodes[:1] + nodes[-1:]
    return list(dict.fromkeys(node["name"] for node in depthwise + ends))


def export_quantized(quantized: gluon.SymbolBlock, prefix: str, input_shape: tuple[int, ...]) -> tuple[str, str]:
    """Write an INT8 block as a symbol file and a parameter file (`prefix`-symbol.json, `prefix`-0000.params);
    returns their paths. Its graph is built first, by one pass over a zero batch of `input_shape`, as `export`
    requires."""
    quantized(mx.nd.zeros(input_shape, ctx=mx.cpu())).wait_to_read()
    quantized.export(prefix)
    return f"{prefix}-symbol.json", f"{prefix}-0000.params"


def load_quantized(symbol_file: str, params_file: str, ctx: mx.Context | None = None) -> gluon.SymbolBlock:
    """The INT8 block `export_quantized` wrote; `QuantizationUnavailable` where it cannot run."""
    ctx = ctx or mx.cpu()
    reason = quantization_refusal(ctx)
    if reason:
        raise QuantizationUnavailable(reason)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Cannot decide type", UserWarning)
        block = gluon.SymbolBlock.imports(symbol_file, [INPUT_NAME], params_file, ctx=ctx)
    block.hybridize(static_alloc=True)
    return block


class Int8Graph:
    """An INT8 block called as `genre.models.fused.InferenceGraph` is: predict mode, nothing recorded."""

    def __init__(self, block: gluon.SymbolBlock) -> None:
        self.block = block
        self.fused = True  # its graph is oneDNN's (`MKLDNN_QUANTIZE`)

    def __call__(self, batch: mx.nd.NDArray) -> mx.nd.NDArray:
        with mx.autograd.pause(train_mode=False):
            return self.block(batch)


def saved_int8_graph(files: list[str]) -> Int8Graph | None:
    """The INT8 copy a model saved (its symbol and parameter files), or None when it has none or it cannot run here
    (the log says why: the float network then scores the covers)."""
    if not all(files):
        return None
    try:
        return Int8Graph(load_quantized(*files))
    except QuantizationUnavailable as reason:
        log.info("the model's INT8 graph cannot run here (%s): the float32 network scores the covers", reason)
        return None


def calibration_covers(images: np.ndarray, count: int) -> np.ndarray:
    """`count` covers of `images` (uint8 `(N, H, W, 3)`, e.g. a training pack), evenly spaced over it, as a
    contiguous array: what an INT8 copy of a network is calibrated on. All of them when there are fewer."""
    if count < 1:
        raise ValueError(f"calibration needs at least one cover, got {count}")
    rows = np.unique(np.linspace(0, len(images) - 1, min(count, len(images))).round().astype(np.int64))
    return np.ascontiguousarray(images[rows])


def int8_copy(
    symbol_file: str, params_file: str, calibration: np.ndarray, image_size: int, network: NetworkInput, prefix: str
) -> tuple[str, str]:
    """Quantize an exported network (read back on the CPU, where INT8 runs) on the `calibration` covers, uint8
    `(N, image_size, image_size, 3)` as decoded, and write the INT8 copy at `prefix`: its symbol and parameter files."""
    if calibration.ndim != 4 or calibration.shape[1:] != (image_size, image_size, 3) or calibration.dtype != np.uint8:
        raise ValueError(
            f"calibration covers must be uint8 (N, {image_size}, {image_size}, 3), got {calibration.dtype} "
            f"{calibration.shape}"
        )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Cannot decide type", UserWarning)
        exported = gluon.SymbolBlock.imports(symbol_file, [INPUT_NAME], params_file, ctx=mx.cpu())
    inputs = network_input(mx.nd.array(calibration, ctx=mx.cpu(), dtype="uint8"), network)
    quantized = quantize_network(exported, inputs.asnumpy())
    return export_quantized(quantized, prefix, (1, *inputs.shape[1:]))
