"""Fine-tuning with held leading layers: they run as oneDNN's fused inference graph, the rest as the training graph.

`--frozen-layers N` holds the first N layers of `features` at their loaded weights, batch norm on its running
statistics: no gradient reaches them and nothing in them changes, so their forward pass is inference, and it can
run fused (`genre.models.fused`), as serving does. Only the trained rest is recorded for backpropagation.
"""

from __future__ import annotations

import logging
import warnings

import mxnet as mx
from mxnet import gluon

from genre.models.fused import InferenceGraph, fusion_refusal, symbol_view

log = logging.getLogger(__name__)


class TrainedRest(gluon.HybridBlock):
    """`net` from `features[start]` on, given the map of the layer before: the same parameters, the same head."""

    def __init__(self, net: gluon.HybridBlock, start: int) -> None:
        super().__init__(prefix=f"{net.prefix}rest_")
        self.net = net
        self.start = start

    def forward(self, x):
        with warnings.catch_warnings():  # the held layers' parameters are `net`'s too, unused here by design
            warnings.filterwarnings("ignore", ".*is not used by any computation", UserWarning)
            return super().forward(x)

    def hybrid_forward(self, F, x):
        return self.net.head(F, self.net.describe(F, x, self.start))


class HeldThenTrained(gluon.Block):
    """Covers -> class scores of `net`: the held layers fused, then the trained rest; its parameters are `net`'s."""

    def __init__(self, held: InferenceGraph, rest: TrainedRest) -> None:
        super().__init__(prefix=rest.prefix)
        self.held = held  # not a child: its parameters are the rest's `net`'s, collected there
        self.rest = rest

    def forward(self, x):
        return self.rest(self.held(x))


def _refusal(net: gluon.Block, count: int, contexts: list[mx.Context]) -> str | None:
    """Why the first `count` layers of `net` cannot run apart from the rest, or None."""
    if len(contexts) != 1:
        return f"held layers run fused on one CPU context, not {len(contexts)} contexts"
    reason = fusion_refusal(contexts[0])
    if reason:
        return reason
    if not (hasattr(net, "describe") and hasattr(net, "head")):
        return f"{net.name} is not one of genre's own networks (describe, then head)"
    if any(tap < count for tap in getattr(net, "taps", ())):
        return "the output layer reads the style statistics of a held block"
    dropouts: list[gluon.Block] = []
    for layer in list(net.features._children.values())[:count]:  # noqa: SLF001 - Gluon 1.x keeps layers here
        layer.apply(lambda block: dropouts.append(block) if isinstance(block, gluon.nn.Dropout) else None)
    if dropouts:
        return "a held layer is a dropout, which inference would turn off"
    return None


def held_then_trained(net: gluon.HybridBlock, count: int, contexts: list[mx.Context]) -> gluon.Block:
    """What training calls for `net`'s class scores when its first `count` feature layers are held
    (`freeze_leading_layers`): those layers as a fused inference graph, then the rest as a training graph, both on
    `net`'s parameters; `net` itself when `count` is 0 or they cannot be split (the log says why).

    Build it when the held parameters have their final values (after a checkpoint is restored): fusion folds them
    into its kernels then.
    """
    if not count:
        return net
    reason = _refusal(net, count, contexts)
    if reason:
        log.info("the %d held layers run in the training graph: %s", count, reason)
        return net
    layers = list(net.features._children.values())[:count]  # noqa: SLF001

    def held_map(F, x):
        for layer in layers:
            x = layer(x)
        return x

    held = InferenceGraph(symbol_view(held_map, net.collect_params()), contexts[0], static_shape=True)
    rest = TrainedRest(net, count)
    rest.hybridize(static_alloc=True, static_shape=True)
    log.info("the %d held layers run as a fused inference graph; the other layers train", count)
    return HeldThenTrained(held, rest)
