"""Network features for the scikit-learn baselines: what the output layer reads, from the weights given."""

from __future__ import annotations

from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from genre.cli import main
from genre.command_config import BaselineConfig
from genre.errors import ConfigError
from genre.models.features import FeatureExtractor
from genre.models.networks import NetworkSpec
from tests.models.test_zoo import SIZE, SMALL, imagenet_weights


def images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, SIZE, SIZE, 3), dtype=np.uint8)


def test_features_are_what_the_output_layer_reads(tmp_path: Path) -> None:
    path = tmp_path / "convnet.params"
    spec = NetworkSpec(conv_filters="4,8", dense_units="24", dropout=0.5)
    extractor = FeatureExtractor(spec, SIZE, mx.cpu())
    extractor.net.save_parameters(str(path))
    batch = images(70)  # more than one feature batch

    features = extractor(batch)

    from genre.models.inputs import network_input

    expected = extractor.net.features(network_input(mx.nd.array(batch, dtype="uint8"))).asnumpy()
    assert features.shape == (70, 24)
    # No dropout outside training; the hybridized graph may sum in another order, so the tolerance is on the scale
    # of the features (a few units), not on each element's relative error near ReLU's zero.
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4)
    from_file = NetworkSpec(conv_filters="4,8", dense_units="24", pretrained_params=str(path))
    again = FeatureExtractor(from_file, SIZE, mx.cpu())
    np.testing.assert_allclose(again(batch), features, rtol=1e-4, atol=1e-4)


def test_zoo_features_come_from_the_pretrained_file(tmp_path: Path) -> None:
    first, second = tmp_path / "a.params", tmp_path / "b.params"
    mx.random.seed(1)
    imagenet_weights(SMALL, first)
    mx.random.seed(2)
    imagenet_weights(SMALL, second)
    batch = images(3)

    a = FeatureExtractor(NetworkSpec(model=SMALL, pretrained_params=str(first)), SIZE, mx.cpu())(batch)
    a_again = FeatureExtractor(NetworkSpec(model=SMALL, pretrained_params=str(first)), SIZE, mx.cpu())(batch)
    b = FeatureExtractor(NetworkSpec(model=SMALL, pretrained_params=str(second)), SIZE, mx.cpu())(batch)

    assert a.shape == (3, 256)  # mobilenet0.25's pooled features
    np.testing.assert_allclose(a, a_again, rtol=1e-5)
    assert not np.allclose(a, b)


def test_network_features_without_weights_are_refused() -> None:
    with pytest.raises(ConfigError, match="'features: network' needs trained weights"):
        BaselineConfig(features="network")


@pytest.mark.slow
def test_random_forest_on_network_features_of_the_digits(tracking_store: str, tmp_path: Path, capsys) -> None:
    path = tmp_path / "imagenet.params"
    mx.random.seed(0)
    imagenet_weights(SMALL, path)
    assert main(["prepare", "--quiet"]) == 0

    code = main(
        ["baseline", "-q", "--features", "network", "--network", SMALL, "--pretrained-params", str(path)]
        + ["--trees", "50", "--variant", "dev"]
    )

    assert code == 0
    assert f"({SMALL} features (256))" in capsys.readouterr().out
    client = MlflowClient(tracking_store)
    (run,) = client.search_runs(
        [client.get_experiment_by_name("genre-digits").experiment_id], "tags.`genre.stage` = 'baseline'"
    )
    assert run.data.params["feature_set"] == f"{SMALL} features (256)"
    assert run.data.params["config.network"] == SMALL
    assert run.data.metrics["test_accuracy"] > 0.3  # random-weight features still beat chance (10%) on digits


@pytest.mark.slow
def test_a_second_baseline_on_the_same_features_reads_them_from_the_cache(
    tracking_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "imagenet.params"
    mx.random.seed(0)
    imagenet_weights(SMALL, path)
    assert main(["prepare", "--quiet"]) == 0
    common = ["--features", "network", "--network", SMALL, "--pretrained-params", str(path), "--variant", "dev"]
    assert main(["baseline", "-q", "--model", "logreg", *common]) == 0
    cached = sorted(p.name for p in (Path("data/prepared/digits-32/features")).glob("*/*.npy"))
    assert cached == ["dev-test.npy", "dev-train.npy", "dev-val.npy"]

    def no_network(*args, **kwargs):
        raise AssertionError("the network ran although its features were cached")

    monkeypatch.setattr("genre.stages.baseline.network_describer", no_network)
    assert main(["baseline", "-q", "--model", "svm", *common]) == 0
    client = MlflowClient(tracking_store)
    found = client.search_runs(
        [client.get_experiment_by_name("genre-digits").experiment_id], "tags.`genre.stage` = 'baseline'"
    )
    by_model = {run.data.params["config.model"]: run for run in found}
    assert set(by_model) == {"logreg", "svm"}
    assert by_model["logreg"].data.metrics["test_accuracy"] > 0.3  # a linear probe on random-weight features


# Style statistics: EfficientNet-Lite0 with its ImageNet weights (a regular dependency) on small covers.
LITE0 = NetworkSpec(model="efficientnet_lite0", pretrained=True)


def test_the_blocks_of_lite0_are_its_sixteen_inverted_residuals() -> None:
    from genre.models.features import block_positions
    from genre.models.networks import build_network, feature_block

    features = feature_block(build_network(LITE0, 2, [mx.cpu()], 64))

    assert block_positions(features) == list(range(3, 19))  # after the stem's conv, batch norm and activation


def last_two_block_maps(describer, pixels: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """The maps of Lite0's last two blocks (positions 17 and 18) for `pixels`, and the pooled vector, computed
    layer by layer outside the describer's graph: the reference its statistics are checked against."""
    from genre.models.inputs import NetworkInput, network_input

    side = pixels.shape[1]
    lite = NetworkInput(side, describer.mean.data().asnumpy().ravel(), describer.std.data().asnumpy().ravel())
    x = network_input(mx.nd.array(pixels, dtype="uint8"), lite)
    maps = []
    for index in range(len(describer.features)):
        x = describer.features[index](x)
        if index in (17, 18):
            maps.append(x.asnumpy())
    return maps, x.asnumpy()


def test_style_statistics_are_each_block_map_s_channel_mean_and_standard_deviation() -> None:
    from genre.models.features import build_describer
    from genre.models.style import STATS_EPSILON

    pixels = np.random.default_rng(3).integers(0, 256, size=(4, 72, 72, 3), dtype=np.uint8)
    describer, layout = build_describer(LITE0, 72, mx.cpu(), last_blocks=2)

    described = describer(mx.nd.array(pixels.transpose(0, 3, 1, 2) / 255.0)).asnumpy()

    maps, pooled = last_two_block_maps(describer, pixels)
    expected = [pooled]
    for block in maps:
        expected += [block.mean(axis=(2, 3)), np.sqrt(block.var(axis=(2, 3)) + STATS_EPSILON)]
    assert layout.blocks == (192, 320) and layout.pooled == 1280 and described.shape == (4, layout.width)
    np.testing.assert_allclose(described, np.concatenate(expected, axis=1), rtol=1e-3, atol=1e-4)


def test_a_network_trained_with_style_blocks_reads_what_the_style_probe_reads() -> None:
    """LP-FT from the style probe: the fine-tuned network's output layer must see the describer's columns, in order."""
    import dataclasses

    from genre.models.features import build_describer
    from genre.models.inputs import NetworkInput, network_input
    from genre.models.networks import build_network, feature_block, output_input

    pixels = np.random.default_rng(5).integers(0, 256, size=(3, 72, 72, 3), dtype=np.uint8)
    describer, layout = build_describer(LITE0, 72, mx.cpu(), last_blocks=3)
    net = build_network(dataclasses.replace(LITE0, style_blocks="3"), 4, [mx.cpu()], 72)

    lite = NetworkInput(72, describer.mean.data().asnumpy().ravel(), describer.std.data().asnumpy().ravel())
    read = output_input(net)(mx.nd, network_input(mx.nd.array(pixels, dtype="uint8"), lite)).asnumpy()

    expected = describer(mx.nd.array(pixels.transpose(0, 3, 1, 2) / 255.0)).asnumpy()
    assert feature_block(net) is None  # `features` alone is no longer what the output layer reads
    assert net.output.weight.shape == (4, layout.width) and read.shape == expected.shape
    np.testing.assert_allclose(read, expected, rtol=1e-3, atol=1e-4)


def test_style_blocks_are_refused_for_a_network_without_lite_blocks() -> None:
    with pytest.raises(ConfigError, match="'style_blocks' reads the blocks of efficientnet_lite0"):
        NetworkSpec(model="convnet", style_blocks="all")
    with pytest.raises(ConfigError, match="'style_blocks' must be none, all or a number"):
        NetworkSpec(model="efficientnet_lite0", pretrained=True, style_blocks="some")


def test_the_describer_crops_the_centre_as_evaluation_does_and_mirror_averages_the_two_views() -> None:
    from genre.data.transforms import fit_to_side
    from genre.models.features import CoverDescriber, build_describer
    from genre.models.inputs import NetworkInput, to_float_nchw

    pixels = np.random.default_rng(4).integers(0, 256, size=(3, 80, 80, 3), dtype=np.uint8)
    plain, _ = build_describer(LITE0, 64, mx.cpu(), last_blocks=1)
    cropping = CoverDescriber(plain.features, NetworkInput(64, (0.5,) * 3, (0.5,) * 3), 80, tuple(plain.taps))
    cropping.params.initialize(ctx=mx.cpu())
    centre = fit_to_side(to_float_nchw(mx.nd.array(pixels, dtype="uint8")), 64)
    own = CoverDescriber(plain.features, NetworkInput(64, (0.5,) * 3, (0.5,) * 3), 64, tuple(plain.taps))
    own.params.initialize(ctx=mx.cpu())
    np.testing.assert_allclose(cropping(to_float_nchw(mx.nd.array(pixels, dtype="uint8"))).asnumpy(),
                               own(centre).asnumpy(), rtol=1e-5, atol=1e-5)  # fmt: skip

    mirrored, _ = build_describer(LITE0, 64, mx.cpu(), last_blocks=1, mirror=True)
    small = to_float_nchw(mx.nd.array(pixels[:, :64, :64], dtype="uint8"))
    both = (plain(small) + plain(small.flip(axis=3))) / 2
    np.testing.assert_allclose(mirrored(small).asnumpy(), both.asnumpy(), rtol=1e-4, atol=1e-5)


def test_a_layout_keeps_the_pooled_vector_and_the_last_blocks_statistics() -> None:
    from genre.models.baselines import FeatureLayout

    layout = FeatureLayout(pooled=4, blocks=(2, 3))  # columns: 4 pooled, 2 + 2 of the first block, 3 + 3 of the last

    assert layout.width == 14
    assert list(layout.columns(0)) == [0, 1, 2, 3]
    assert list(layout.columns(1)) == [0, 1, 2, 3, 8, 9, 10, 11, 12, 13]
    assert list(layout.columns(5)) == list(range(14))
    assert FeatureLayout.from_json(layout.to_json()) == layout


def test_a_layout_with_correlations_keeps_those_of_the_last_blocks_after_all_statistics() -> None:
    from genre.models.baselines import FeatureLayout

    layout = FeatureLayout(pooled=2, blocks=(2, 3), mixtures=3)  # 2 pooled, 4 + 6 statistics, then 3 + 3 correlations

    assert layout.width == 18
    assert list(layout.columns(1)) == [0, 1, 6, 7, 8, 9, 10, 11, 15, 16, 17]
    assert list(layout.columns(2)) == list(range(18))
    assert FeatureLayout.from_json(layout.to_json()) == layout
    assert FeatureLayout.from_json({"pooled": 2, "blocks": [2, 3]}).mixtures == 0  # a cache noted before


def test_the_gram_summary_is_the_correlation_of_fixed_channel_mixtures_over_each_block_map() -> None:
    from genre.models.features import build_describer
    from genre.models.style import gram_projection

    pixels = np.random.default_rng(4).integers(0, 256, size=(3, 72, 72, 3), dtype=np.uint8)
    plain, _ = build_describer(LITE0, 72, mx.cpu(), last_blocks=2)
    describer, layout = build_describer(LITE0, 72, mx.cpu(), last_blocks=2, mixtures=4)

    inputs = mx.nd.array(pixels.transpose(0, 3, 1, 2) / 255.0)
    described = describer(inputs).asnumpy()

    expected = []
    for block in last_two_block_maps(describer, pixels)[0]:
        mixed = np.einsum("kc,nchw->nkhw", gram_projection(block.shape[1], 4)[:, :, 0, 0], block)
        for cover in mixed.reshape(len(block), 4, -1):
            expected.append(np.corrcoef(cover)[np.triu_indices(4, k=1)])
    expected = np.stack(expected).reshape(2, 3, 6).transpose(1, 0, 2).reshape(3, 12)  # per cover, block by block
    assert layout.mixtures == 4 and described.shape == (3, layout.width) == (3, 1280 + 2 * (192 + 320) + 12)
    np.testing.assert_allclose(described[:, : plain(inputs).shape[1]], plain(inputs).asnumpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(described[:, -12:], expected, rtol=1e-3, atol=2e-3)
