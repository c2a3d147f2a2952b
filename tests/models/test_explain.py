"""Grad-CAM and embeddings of exported networks: the heatmap of a network that learned where a coloured patch is
lies on the patch, and every architecture the project trains can be explained."""

from __future__ import annotations

import warnings
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon, nd

from genre.models.explain import Explainer, ExplainError, find_layers
from genre.models.inputs import NetworkInput, network_input
from genre.models.networks import NetworkSpec, build_network

SIDE, PATCH = 32, 8
COLOURS = np.array([[230, 30, 30], [30, 200, 30], [30, 30, 230], [230, 230, 30]], dtype=np.uint8)


def patch_covers(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise covers whose genre is the colour of one PATCH x PATCH square at a random place: images, labels and
    each patch's top-left corner (row, column)."""
    images = rng.integers(60, 140, (count, SIDE, SIDE, 3)).astype(np.uint8)
    labels = rng.integers(0, len(COLOURS), count)
    corners = rng.integers(0, SIDE - PATCH + 1, (count, 2))
    for image, label, (row, column) in zip(images, labels, corners, strict=True):
        image[row : row + PATCH, column : column + PATCH] = COLOURS[label]
    return images, labels, corners


def exported(net: gluon.HybridBlock, folder: Path, side: int) -> tuple[mx.sym.Symbol, gluon.SymbolBlock]:
    """`net` as the pyfunc model holds it: exported, then loaded back as a symbol graph."""
    net(nd.zeros((1, 3, side, side)))  # export needs the graph of one forward pass
    net.export(str(folder / "net"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        loaded = gluon.SymbolBlock.imports(str(folder / "net-symbol.json"), ["data"], str(folder / "net-0000.params"))
    return mx.sym.load(str(folder / "net-symbol.json")), loaded


def trained_on_patches(images: np.ndarray, labels: np.ndarray) -> gluon.HybridBlock:
    mx.random.seed(0)
    spec = NetworkSpec(model="convnet", conv_filters="16,32", dense_units="32")
    net = build_network(spec, len(COLOURS), [mx.cpu()], SIDE)
    trainer = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": 0.003})
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    for _ in range(4):
        for start in range(0, len(images), 32):
            batch = network_input(nd.array(images[start : start + 32], dtype="uint8"))
            with autograd.record():
                value = loss(net(batch), nd.array(labels[start : start + 32]))
            value.backward()
            trainer.step(len(batch))
    return net


def test_the_heatmap_of_a_network_that_reads_a_coloured_patch_lies_on_the_patch(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    net = trained_on_patches(*patch_covers(800, rng)[:2])
    images, labels, corners = patch_covers(100, rng)
    symbol, loaded = exported(net, tmp_path, SIDE)
    explainer = Explainer(symbol, loaded.collect_params(), NetworkInput(SIDE))
    _, logits = explainer.embed(images)
    assert (logits.argmax(axis=1) == labels).mean() >= 0.95  # it learned the patches
    maps = explainer.heatmaps(images, labels)

    assert maps.shape == (100, SIDE, SIDE) and maps.dtype == np.float32
    assert maps.min() >= 0 and np.allclose(maps.reshape(100, -1).max(axis=1), 1)
    cell = SIDE // explainer.layers.maps_shape[-1]  # one cell of the map the heatmap is made from, in pixels
    on_patch, near_patch, peak_on_patch = [], [], []
    for heatmap, (row, column) in zip(maps, corners, strict=True):
        total = heatmap.sum()
        on_patch.append(heatmap[row : row + PATCH, column : column + PATCH].sum() / total)
        grown = heatmap[max(0, row - cell) : row + PATCH + cell, max(0, column - cell) : column + PATCH + cell]
        near_patch.append(grown.sum() / total)
        peak_row, peak_column = np.unravel_index(heatmap.argmax(), heatmap.shape)
        peak_on_patch.append(
            row - cell <= peak_row < row + PATCH + cell and column - cell <= peak_column < column + PATCH + cell
        )
    # Most of the mass lies on the patch, to within the map's resolution (one cell, 2 px; measured: median 79%), ...
    assert np.median(near_patch) > 0.5, np.median(near_patch)
    # ... the patch itself (6% of the cover) holds several times its share (measured: 46-47%), ...
    assert np.mean(on_patch) > 4 * PATCH**2 / SIDE**2, np.mean(on_patch)
    # ... and the hottest pixel is at the patch on nearly every cover.
    assert np.mean(peak_on_patch) >= 0.9, np.mean(peak_on_patch)

    # The heatmap for another genre than the patch's is not the same map.
    other = explainer.heatmaps(images[:10], (labels[:10] + 1) % len(COLOURS))
    assert not np.allclose(other, maps[:10], atol=0.05)


@pytest.mark.parametrize(
    ("model", "side", "maps_shape"),
    [
        ("convnet", 32, (128, 8, 8)),  # the last block's ReLU, before its pool
        ("mlp", 32, (3, 32, 32)),  # no spatial layer inside: the heatmap is over the input's pixels
        ("resnet18_v1b", 64, (512, 2, 2)),
        ("mobilenetv3_small", 64, (576, 2, 2)),
        ("efficientnet_lite0", 64, (1280, 2, 2)),
    ],
)
def test_every_architecture_gives_heatmaps_embeddings_and_its_own_logits(
    model: str, side: int, maps_shape: tuple[int, ...], tmp_path: Path
) -> None:
    mx.random.seed(1)
    net = build_network(NetworkSpec(model=model), 4, [mx.cpu()], side)
    symbol, loaded = exported(net, tmp_path, side)
    explainer = Explainer(symbol, loaded.collect_params(), NetworkInput(side))
    images = np.random.default_rng(1).integers(0, 256, (3, side, side, 3)).astype(np.uint8)

    embedding, logits = explainer.embed(images)
    expected = loaded(explainer.inputs(images)).asnumpy()
    assert np.allclose(logits, expected, atol=1e-4 + 0.01 * np.abs(expected).max())
    assert embedding.shape == (3, explainer.layers.embedding_size)
    assert explainer.layers.maps_shape == maps_shape
    maps = explainer.heatmaps(images, logits.argmax(axis=1))
    assert maps.shape == (3, side, side) and np.isfinite(maps).all() and maps.max() <= 1
    assert explainer.view(images).shape == (3, side, side, 3)


def test_a_layer_that_cannot_carry_a_heatmap_is_refused_by_name(tmp_path: Path) -> None:
    net = build_network(NetworkSpec(model="resnet18_v1b"), 4, [mx.cpu()], 64)
    symbol, _ = exported(net, tmp_path, 64)
    with pytest.raises(ExplainError, match="has no layer 'conv99'"):
        find_layers(symbol, 64, "conv99")
    # Inside a residual block: the shortcut passes it by, so it is not the only way to the output.
    with pytest.raises(ExplainError, match="every path to the output"):
        find_layers(symbol, 64, "resnetv1b_layers4_conv0_fwd")
    chosen = find_layers(symbol, 64, "resnetv1b_layers3_relu3_fwd")  # the end of a stage is a cut
    assert chosen.maps_shape == (256, 4, 4)


def test_the_view_is_the_centre_crop_the_network_takes() -> None:
    images = np.zeros((1, 40, 40, 3), dtype=np.uint8)
    images[0, 4:36, 4:36] = 200  # the centre 32 x 32
    net = build_network(NetworkSpec(model="convnet", conv_filters="8"), 2, [mx.cpu()], 32)
    symbol = net(mx.sym.var("data"))  # the graph, as export would write it
    explainer = Explainer(symbol, net.collect_params(), NetworkInput(32))
    assert (explainer.view(images) == 200).all()
