"""Inference through MXNet's oneDNN subgraph fusion, wherever no gradient is needed.

On the CPU, MXNet's oneDNN backend (`hybridize(backend="MKLDNN")`, the Partition API behind `optimize_for`) folds
each convolution with its batch norm and activation, ReLU6's `clip` included, into one kernel that stays in
oneDNN's blocked layout: EfficientNet-Lite0 forward at 224 px ran 2.3x as many images a second as the unfused graph,
outputs within 1e-6 (docs/benchmarks.md). The folding happens when the graph is first built, from the parameters'
values then, and the fused kernels compute batch norm from its running statistics: a fused graph serves only
weights that no longer change (a logged model, a pretrained describer, the held layers of a fine-tune).

Where fusion cannot run (a GPU context, an MXNet without oneDNN, `GENRE_ONEDNN_FUSION=0`, a graph the backend
refuses), the plain hybridized graph runs and the log says why, once per reason.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from typing import Any

import mxnet as mx
from mxnet import autograd, gluon

log = logging.getLogger(__name__)

BACKEND = "MKLDNN"  # MXNet 1.9's name for its oneDNN subgraph backend (`SubgraphBackendRegistry`)
FEATURE = "MKLDNN"  # and for oneDNN in its build (`mx.runtime.Features`)
SWITCH = "GENRE_ONEDNN_FUSION"  # "0" runs every inference graph unfused (a benchmark's baseline, a suspected bug)
INPUT_NAME = "data"
_said: set[str] = set()


def _say_once(reason: str) -> None:
    if reason not in _said:
        _said.add(reason)
        log.info("inference runs the unfused graph: %s", reason)


def fusion_refusal(ctx: mx.Context) -> str | None:
    """Why a graph on `ctx` cannot be fused, or None when it can."""
    if os.environ.get(SWITCH, "1").strip().lower() in ("0", "off", "false", "no"):
        return f"{SWITCH}={os.environ[SWITCH]} turns oneDNN fusion off"
    if ctx.device_type != "cpu":
        return f"oneDNN fuses graphs for the CPU only, and this one runs on {ctx}"
    if not mx.runtime.Features().is_enabled(FEATURE):
        return "this MXNet build has no oneDNN (MKLDNN) backend"
    return None


def symbol_view(describe: Callable[[Any, Any], Any], params: gluon.ParameterDict) -> gluon.SymbolBlock:
    """A block computing `describe(F, x)` with the very `params` of the network it reads (shared, not copied), with
    a cache of its own: fusing it leaves the network's training graph alone."""
    data = mx.sym.var(INPUT_NAME)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Cannot decide type", UserWarning)
        return gluon.SymbolBlock(describe(mx.sym, data), data, params=params)


class InferenceGraph:
    """`block` for inference: oneDNN's fused graph where it can run, else the plain hybridized graph.

    Calls run in predict mode (dropout off, batch norm on its running statistics) and record nothing for autograd,
    even inside `autograd.record()`. `fused` says which graph ran. `static_shape` keeps memory planned for one
    batch shape (a new shape plans again).
    """

    def __init__(self, block: gluon.HybridBlock, ctx: mx.Context, static_shape: bool = False) -> None:
        self.block = block
        self.static_shape = static_shape
        reason = fusion_refusal(ctx)
        if reason:
            _say_once(reason)
        self.fused = reason is None
        self._built = False
        block.hybridize(static_alloc=True, static_shape=static_shape, backend=BACKEND if self.fused else None)

    def __call__(self, *inputs: mx.nd.NDArray) -> Any:
        with autograd.pause(train_mode=False):
            if self._built:
                return self.block(*inputs)
            try:
                outputs = self._first_call(inputs)
            except mx.MXNetError as error:
                if not self.fused:
                    raise
                _say_once(f"oneDNN refused the graph of {self.block.name} ({str(error).splitlines()[0]})")
                self.fused = False
                self.block.hybridize(static_alloc=True, static_shape=self.static_shape, backend=None)
                outputs = self._first_call(inputs)
            self._built = True
            return outputs

    def _first_call(self, inputs: tuple[mx.nd.NDArray, ...]) -> Any:
        """The call that builds (and, fused, partitions) the graph; its outputs are waited for, so that a kernel the
        backend cannot run fails here, where the unfused graph can still take over."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Cannot decide type", UserWarning)
            warnings.filterwarnings("ignore", ".*is not used by any computation", UserWarning)
            outputs = self.block(*inputs)
        for output in outputs if isinstance(outputs, (list, tuple)) else [outputs]:
            output.wait_to_read()
        return outputs
