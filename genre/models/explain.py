"""What a trained network looks at: Grad-CAM heatmaps and penultimate-layer embeddings of an exported network.

Works on the exported symbol graph (what `HybridBlock.export` writes and the pyfunc cover model loads), so it
serves every network the project trains, ours and GluonCV's alike, with no Python class to rebuild. The graph is cut
in two at the heatmap's layer: a head (cover -> that layer's maps) and a tail (maps -> logits). MXNet's autograd
then gives the gradient of a genre's logit with respect to the maps, which Grad-CAM (Selvaraju et al. 2017)
averages into one weight per channel.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from typing import Protocol

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon, nd

from genre.errors import ConfigError
from genre.figures import HeatmapPanel, NeighbourPanel
from genre.metrics import Scored
from genre.models.embedding import NEIGHBOURS_SHOWN, nearest_neighbours, project
from genre.models.fused import InferenceGraph
from genre.models.inputs import NetworkInput, fit_to_side, network_input, to_float_nchw

INPUT_NAME = "data"  # what `HybridBlock.export` calls the network's input
MAPS_NAME = "genre_explain_maps"  # the tail's input: the heatmap layer's output
MAP_THUMBNAILS = 400  # a map of more covers draws points: thumbnails would hide each other
HEATMAP_BATCH = 32  # covers per Grad-CAM pass (a backward pass holds the activations)
WEIGHTED_OPS = ("FullyConnected", "Convolution")  # the last of these on the way to the output is the classifier


class ExplainError(ConfigError):
    """A layer that cannot carry a heatmap (not in the graph, not a spatial map, not a cut of the graph)."""


@dataclass(frozen=True)
class Layers:
    """Where to cut an exported graph: `maps`, the node whose output the heatmaps are computed on (the last
    spatial map every path to the output goes through), and `embedding`, the node feeding the classifier
    (its output, flattened, is the cover's embedding)."""

    maps: str
    embedding: str
    maps_shape: tuple[int, ...]  # (C, h, w) for one cover
    embedding_size: int


def _graph(symbol: mx.sym.Symbol) -> dict:
    return json.loads(symbol.tojson())


def _node_shapes(symbol: mx.sym.Symbol, side: int) -> dict[str, tuple[int, ...]]:
    """Each node's first output's shape for one `(1, 3, side, side)` input, by node name."""
    internals = symbol.get_internals()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, shapes, _ = internals.infer_shape_partial(**{INPUT_NAME: (1, 3, side, side)})
    shown: dict[str, tuple[int, ...]] = {}
    for name, shape in zip(internals.list_outputs(), shapes, strict=True):
        if name.endswith("_output"):
            shown.setdefault(name.removesuffix("_output"), tuple(shape))
        elif name == INPUT_NAME:
            shown[INPUT_NAME] = tuple(shape)
    return shown


def _cut(graph: dict, node: int) -> dict | None:
    """The graph with node `node` replaced by the input variable `MAPS_NAME` and every node no longer needed
    dropped; None when the output still reads the network's input by another path (the node is not a cut) or
    reads another of the node's outputs."""
    nodes = graph["nodes"]
    for other in nodes:
        if any(source == node and index != 0 for source, index, *_ in other["inputs"]):
            return None
    replaced = [dict(n) for n in nodes]
    replaced[node] = {"op": "null", "name": MAPS_NAME, "inputs": []}
    needed: set[int] = set()
    stack = [head[0] for head in graph["heads"]]
    while stack:
        index = stack.pop()
        if index not in needed:
            needed.add(index)
            stack += [source for source, *_ in replaced[index]["inputs"]]
    if any(replaced[i]["op"] == "null" and replaced[i]["name"] == INPUT_NAME for i in needed):
        return None
    order = sorted(needed)
    renumber = {old: new for new, old in enumerate(order)}
    kept = []
    for old in order:
        entry = dict(replaced[old])
        entry["inputs"] = [[renumber[source], *rest] for source, *rest in entry["inputs"]]
        kept.append(entry)
    return {
        "nodes": kept,
        "arg_nodes": [i for i, entry in enumerate(kept) if entry["op"] == "null"],
        "heads": [[renumber[head[0]], *head[1:]] for head in graph["heads"]],
        "attrs": graph.get("attrs", {}),
    }


def find_layers(symbol: mx.sym.Symbol, side: int, maps: str | None = None) -> Layers:
    """The heatmap layer (`maps`, or by default the last node whose output is a spatial map, `(C, h, w)` with
    h x w > 1, that every path to the output goes through and that is not a pooling) and the embedding layer, for
    `(3, side, side)` inputs.

    Pooling is passed over as Grad-CAM's authors did (VGG's last convolution, not pool5): the gradient through a max
    pool reaches one cell in four, and on the digits conv net 27% of the heatmaps of its last pool were empty, against
    0.6% of its last convolution's (before the pool, at twice the resolution).

    A network with no such map inside (the mlp flattens its input first) gets its input as the heatmap layer:
    Grad-CAM over the input pixels' three channels.
    """
    graph = _graph(symbol)
    nodes = graph["nodes"]
    shapes = _node_shapes(symbol, side)
    by_name = {node["name"]: index for index, node in enumerate(nodes)}
    if maps is not None:
        if maps not in by_name:
            spatial = [n["name"] for n in nodes if len(shapes.get(n["name"], ())) == 4 and n["op"] != "null"]
            raise ExplainError(
                f"the network has no layer {maps!r}; its last spatial layers are {', '.join(spatial[-5:])}"
            )
        candidates = [by_name[maps]]
    else:
        candidates = [
            index
            for index, node in enumerate(nodes)
            if (node["op"] not in ("null", "Pooling") or node["name"] == INPUT_NAME)
            and _is_map(shapes.get(node["name"], ()))
        ][::-1]
    chosen = next((index for index in candidates if _cut(graph, index) is not None), None)
    if chosen is None:
        raise ExplainError(
            f"layer {maps!r} cannot carry a heatmap: its output is not a (C, h, w) map that every path to the "
            "output goes through; leave the layer unset to take the last such map"
        )
    classifier = _classifier_node(graph)
    feeding = nodes[classifier]["inputs"][0][0]
    embedding = nodes[feeding]["name"]
    return Layers(
        maps=nodes[chosen]["name"],
        embedding=embedding,
        maps_shape=shapes[nodes[chosen]["name"]][1:],
        embedding_size=int(np.prod(shapes[embedding][1:])),
    )


def _is_map(shape: tuple[int, ...]) -> bool:
    """A `(1, C, h, w)` map of one cover: not one of a graph that stacks views of it (a mirrored copy) in the batch."""
    return len(shape) == 4 and shape[0] == 1 and shape[2] * shape[3] > 1


def _classifier_node(graph: dict) -> int:
    """The last weighted layer (FullyConnected or Convolution) on the way to the output."""
    nodes = graph["nodes"]
    stack, seen = [graph["heads"][0][0]], set()
    while stack:  # breadth by index: the largest index first is the nearest to the output
        index = max(stack)
        stack.remove(index)
        if index in seen:
            continue
        seen.add(index)
        if nodes[index]["op"] in WEIGHTED_OPS:
            return index
        stack += [source for source, *_ in nodes[index]["inputs"]]
    raise ExplainError("the network has no FullyConnected or Convolution layer making its output")


class Explainer:
    """Heatmaps and embeddings of an exported network whose parameters are `params` (shared, not copied).

    Runs on `context` (the CPU by default); `network` is what the network takes (side, normalisation).
    """

    def __init__(
        self,
        symbol: mx.sym.Symbol,
        params: gluon.ParameterDict,
        network: NetworkInput,
        *,
        maps: str | None = None,
        context: mx.Context | None = None,
    ) -> None:
        self.network = network
        self.layers = find_layers(symbol, network.size, maps)
        self.context = context or mx.cpu()
        graph = _graph(symbol)
        index = next(i for i, node in enumerate(graph["nodes"]) if node["name"] == self.layers.maps)
        internals = symbol.get_internals()
        data, maps_input = mx.sym.var(INPUT_NAME), mx.sym.var(MAPS_NAME)
        maps_output = data if self.layers.maps == INPUT_NAME else internals[f"{self.layers.maps}_output"]
        tail = mx.sym.load_json(json.dumps(_cut(graph, index)))
        embedding = internals[f"{self.layers.embedding}_output"]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Cannot decide type", UserWarning)
            head = gluon.SymbolBlock(maps_output, data, params=params)
            self._tail = gluon.SymbolBlock(tail, maps_input, params=params)
            seen = gluon.SymbolBlock(mx.sym.Group([embedding, symbol]), data, params=params)
        # The passes that take no gradient (to the heatmap's maps; embeddings and logits) run fused where they can.
        self._head = InferenceGraph(head, self.context)
        self._seen = InferenceGraph(seen, self.context)

    def inputs(self, images: np.ndarray) -> nd.NDArray:
        """uint8 `(N, H, W, 3)` covers -> the network's input on the explainer's context."""
        return network_input(nd.array(images, ctx=self.context, dtype="uint8"), self.network)

    def view(self, images: np.ndarray) -> np.ndarray:
        """What the network sees of uint8 `(N, H, W, 3)` covers (its centre crop or resize), as uint8
        `(N, S, S, 3)`: the pixels a heatmap of `heatmaps` lies on."""
        batch = fit_to_side(to_float_nchw(nd.array(images, ctx=self.context, dtype="uint8")), self.network.size)
        return np.clip(np.rint(batch.transpose((0, 2, 3, 1)).asnumpy() * 255), 0, 255).astype(np.uint8)

    def embed(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The covers' embeddings `(N, D)` float32 and logits `(N, genres)`, in one forward pass."""
        embedding, logits = self._seen(self.inputs(images))
        return embedding.reshape((len(images), -1)).asnumpy(), logits.asnumpy()

    def heatmaps(self, images: np.ndarray, genres: np.ndarray) -> np.ndarray:
        """Grad-CAM of each cover for the genre (label) given for it: `(N, S, S)` float32 in [0, 1] over the
        network's view of the cover (`view`); 1 marks where the evidence for that genre is strongest, and a map
        with no positive evidence is all 0."""
        maps = self._head(self.inputs(images))
        maps.attach_grad()
        with autograd.record(train_mode=False):  # inference behaviour: batch norm statistics, no dropout
            logits = self._tail(maps)
            score = nd.pick(logits, nd.array(genres, ctx=self.context), axis=1)
        score.backward()
        weights = maps.grad.mean(axis=(2, 3), keepdims=True)
        cams = nd.relu((weights * maps).sum(axis=1, keepdims=True))
        side = self.network.size
        if cams.shape[2:] != (side, side):
            cams = nd.contrib.BilinearResize2D(cams, height=side, width=side, align_corners=False)
        cams = cams.reshape((len(images), side, side)).asnumpy()
        peaks = cams.reshape(len(images), -1).max(axis=1)
        scale = np.where(peaks > 0, peaks, 1.0)[:, None, None]
        return np.clip(cams / scale, 0.0, 1.0).astype(np.float32)


class Covers(Protocol):
    """A split's covers as `read_covers` reads them (`genre.data.pack.Pack` is one): `images` `(N, S, S, 3)` uint8 and
    `labels` `(N,)`, indexable by row."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int: ...


class Asked(Protocol):
    """What to read (`genre.command_config.InterpretConfig` is one): covers per genre in each Grad-CAM grid, the 2-D
    map's method ("none": no map), how many covers get their neighbours, and covers per forward pass."""

    heatmaps: int
    cover_map: str
    neighbours: int
    batch_size: int


@dataclass(frozen=True)
class Readings:
    """What the network reads in the split's covers: Grad-CAM grids (rows of (genre, panels)) of the most confidently
    right covers (heatmap of their genre) and of the worst mistakes (heatmap of the genre wrongly given), the covers'
    2-D map (`points` `(N, 2)`, None when not drawn) and a few covers with their nearest neighbours."""

    layer: str
    genres: list[str]
    labels: np.ndarray  # (N,) the split's true genres, the map's colours
    right: list[tuple[str, list[HeatmapPanel]]]
    mistakes: list[tuple[str, list[HeatmapPanel]]]
    method: str
    points: np.ndarray | None
    thumbnails: np.ndarray | None
    neighbours: list[tuple[np.ndarray, str, list[NeighbourPanel]]]


def ranked(evaluation: Scored, genres: int, per_genre: int, right: bool) -> list[list[int]]:
    """Per true genre, the indices of at most `per_genre` covers: the right ones by falling confidence (`right`), or
    the wrong ones by falling loss (the least probability given to the true genre first)."""
    predicted, labels = evaluation.predictions, evaluation.labels
    truth = evaluation.probabilities[np.arange(len(labels)), labels] if len(labels) else np.zeros(0)
    rows = []
    for genre in range(genres):
        chosen = np.flatnonzero((labels == genre) & ((predicted == labels) == right))
        order = np.argsort(-truth[chosen] if right else truth[chosen], kind="stable")
        rows.append([int(index) for index in chosen[order][:per_genre]])
    return rows


def heatmap_rows(
    explainer: Explainer, pack: Covers, evaluation: Scored, genres: list[str], rows: list[list[int]]
) -> list[tuple[str, list[HeatmapPanel]]]:
    """The grid rows of the covers `rows[genre]`, each cover's heatmap for the genre the model gave it, captioned
    "given p" for a right cover and "given p (true p)" for a mistake."""
    flat = [index for row in rows for index in row]
    given = evaluation.predictions[flat] if flat else np.zeros(0, dtype=np.int64)
    maps, views = [], []
    for start in range(0, len(flat), HEATMAP_BATCH):
        images = np.ascontiguousarray(pack.images[flat[start : start + HEATMAP_BATCH]])
        maps.append(explainer.heatmaps(images, given[start : start + HEATMAP_BATCH]))
        views.append(explainer.view(images))
    panels = dict(zip(flat, zip(np.concatenate(views), np.concatenate(maps), strict=True), strict=True)) if flat else {}
    grid = []
    for genre, row in enumerate(rows):
        shown = []
        for index in row:
            top, truth = int(evaluation.predictions[index]), int(evaluation.labels[index])
            caption = f"{genres[top]} {evaluation.probabilities[index, top]:.0%}"
            if top != truth:
                caption += f" ({genres[truth]} {evaluation.probabilities[index, truth]:.0%})"
            shown.append((*panels[index], caption))
        grid.append((genres[genre], shown))
    return grid


def read_covers(explainer: Explainer, pack: Covers, evaluation: Scored, genres: list[str], asked: Asked) -> Readings:
    """The heatmap grids, the map and the neighbours of the split (pure but for the network's forward passes)."""
    right = ranked(evaluation, len(genres), asked.heatmaps, right=True) if asked.heatmaps else []
    mistakes = ranked(evaluation, len(genres), asked.heatmaps, right=False) if asked.heatmaps else []
    drawn = asked.cover_map != "none" and len(pack) >= 3
    points = thumbnails = None
    neighbours: list[tuple[np.ndarray, str, list[NeighbourPanel]]] = []
    if drawn or (asked.neighbours and len(pack) > 1):
        features = np.concatenate(
            [
                explainer.embed(np.ascontiguousarray(pack.images[start : start + asked.batch_size]))[0]
                for start in range(0, len(pack), asked.batch_size)
            ]
        )
        if drawn:
            points = project(features, asked.cover_map)
            if len(pack) <= MAP_THUMBNAILS:
                thumbnails = np.asarray(pack.images[:])
        if asked.neighbours and len(pack) > 1:
            queries = spread(ranked(evaluation, len(genres), len(pack), right=True), asked.neighbours)
            found, similarity = nearest_neighbours(features, queries, NEIGHBOURS_SHOWN)
            labels = pack.labels
            for query, near, close in zip(queries, found, similarity, strict=True):
                panels = [
                    (pack.images[i], f"{genres[labels[i]]} {value:.2f}") for i, value in zip(near, close, strict=True)
                ]
                neighbours.append((pack.images[query], f"{genres[labels[query]]}", panels))
    return Readings(
        layer=explainer.layers.maps,
        genres=list(genres),
        labels=np.asarray(pack.labels),
        right=heatmap_rows(explainer, pack, evaluation, genres, right) if right else [],
        mistakes=heatmap_rows(explainer, pack, evaluation, genres, mistakes) if mistakes else [],
        method=asked.cover_map,
        points=points,
        thumbnails=thumbnails,
        neighbours=neighbours,
    )


def spread(rows: list[list[int]], count: int) -> list[int]:
    """`count` indices taken from the rows in turn (one per genre, then the next of each), as far as they go."""
    chosen: list[int] = []
    for rank in range(max((len(row) for row in rows), default=0)):
        chosen += [row[rank] for row in rows if rank < len(row)]
    return chosen[:count]
