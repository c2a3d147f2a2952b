"""GluonCV zoo classifiers: built by name with our class count, started from weight files, frozen, refused clearly.

No network here: the "pretrained" weights are files the tests write from the same GluonCV architectures, saved with
1000 classes as GluonCV's ImageNet weights are.
"""

from __future__ import annotations

import logging
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

from genre.errors import ConfigError, GenreError
from genre.models import zoo
from genre.models.networks import NetworkSpec, build_network

SIZE = 32
ONE = [mx.cpu(0)]
TWO = [mx.cpu(0), mx.cpu(1)]
SMALL = "mobilenet0.25"  # 0.2M parameters: builds and runs at 32x32 in a few milliseconds


def imagenet_weights(name: str, path: Path) -> dict[str, np.ndarray]:
    """Save a 1000-class `name`, as GluonCV's ImageNet weights are shaped, to `path`; returns what was saved."""
    reference = zoo.build_classifier(name, 1000)
    reference.initialize(mx.init.Uniform(1.0))
    reference(mx.nd.zeros((1, 3, SIZE, SIZE)))  # finish shape inference, so every tensor exists
    reference.save_parameters(str(path))
    return {key: value.asnumpy() for key, value in mx.nd.load(str(path)).items()}


@pytest.mark.parametrize("contexts", [ONE, TWO], ids=["one-cpu", "two-cpus"])
@pytest.mark.parametrize("name", [SMALL, "resnet18_v1b", "mobilenetv3_small"])
def test_zoo_model_by_name_gives_logits_for_our_classes(name: str, contexts: list[mx.Context]) -> None:
    net = build_network(NetworkSpec(model=name), classes=10, contexts=contexts, image_size=SIZE)

    for ctx in contexts:
        assert net(mx.nd.ones((4, 3, SIZE, SIZE), ctx=ctx)).shape == (4, 10)
    for param in net.collect_params().values():
        assert [copy.context for copy in param.list_data()] == contexts


@pytest.mark.parametrize(
    ("name", "output"),
    [
        ("resnet18_v1b", ("fc",)),
        ("resnet18_v1", ("output",)),
        (SMALL, ("output",)),
        ("mobilenetv3_small", ("output.0",)),
        ("squeezenet1.1", ("output.0",)),  # a 1x1 convolution, not a Dense layer
        ("hrnet_w18_small_v1_c", ("classifier",)),  # takes `num_classes`, not `classes`
        ("nasnet_4_1056", ("out.3", "out_aux.6")),  # an auxiliary head as well
    ],
)
def test_output_layer_is_found_in_every_family(name: str, output: tuple[str, ...]) -> None:
    net = zoo.build_classifier(name, 10)

    assert zoo.output_prefixes(net, name, 10) == output
    backbone, head = zoo.split_parameters(net, output)
    assert head and backbone
    assert all(param.shape[0] == 10 for param in head.values() if param.name.endswith("weight"))


def test_classifier_names_are_the_zoo_classifiers_only() -> None:
    names = zoo.classifier_names()

    assert {"resnet18_v1b", "mobilenetv3_small", SMALL, "hrnet_w18_small_v1_c"} <= set(names)
    assert not any(name.startswith(("ssd_", "yolo3_", "faster_rcnn", "deeplab", "simple_pose")) for name in names)
    assert not any(name.endswith(("_int8", "_kinetics400")) or name == "hrnet_w48_s" for name in names)


def test_backbone_starts_from_a_file_and_the_output_layer_fresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / f"{SMALL}-imagenet.params"
    saved = imagenet_weights(SMALL, path)

    with caplog.at_level(logging.INFO, logger="genre.models.zoo"):
        net = build_network(NetworkSpec(model=SMALL, pretrained_params=str(path)), 10, TWO, SIZE)

    backbone, output = zoo.split_parameters(net, ("output",))
    assert set(output) == {"output.weight", "output.bias"}
    for key, param in backbone.items():
        for copy in param.list_data():
            np.testing.assert_array_equal(copy.asnumpy(), saved[key], err_msg=key)
    assert output["output.weight"].shape[0] == 10 and saved["output.weight"].shape[0] == 1000
    assert net(mx.nd.ones((2, 3, SIZE, SIZE))).shape == (2, 10)
    assert f"loaded {len(backbone)} of {len(backbone)} backbone tensors" in caplog.text


def test_freezing_the_backbone_trains_only_the_output_layer(tmp_path: Path) -> None:
    path = tmp_path / "imagenet.params"
    imagenet_weights("resnet18_v1b", path)
    spec = NetworkSpec(model="resnet18_v1b", pretrained_params=str(path), freeze_backbone=True)
    net = build_network(spec, classes=3, contexts=ONE, image_size=SIZE)

    backbone, output = zoo.split_parameters(net, ("fc",))
    assert {param.grad_req for param in backbone.values()} == {"null"}
    assert {param.grad_req for param in output.values()} == {"write"}

    before = {key: param.data().asnumpy() for key, param in zoo.structural_parameters(net).items()}
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.5})
    with autograd.record():
        images = mx.nd.random.normal(shape=(4, 3, SIZE, SIZE))  # distinct images: batch norm sees a spread
        loss = gluon.loss.SoftmaxCrossEntropyLoss()(net(images), mx.nd.array([0, 2, 1, 0]))
    loss.backward()
    trainer.step(4)
    for key, param in zoo.structural_parameters(net).items():
        changed = not np.array_equal(param.data().asnumpy(), before[key])
        if key.endswith(("weight", "gamma", "beta")):
            assert changed == (key in output), key


def test_backbone_lr_mult_applies_to_the_backbone_only() -> None:
    net = build_network(NetworkSpec(model="mobilenetv3_small", backbone_lr_mult=0.1), 10, ONE, SIZE)

    backbone, output = zoo.split_parameters(net, ("output.0",))
    assert {param.lr_mult for param in backbone.values()} == {0.1}
    assert {param.lr_mult for param in output.values()} == {1.0}
    assert {param.grad_req for param in output.values()} == {"write"}


def test_a_file_of_another_architecture_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cifar.params"
    imagenet_weights("cifar_resnet20_v1", path)

    with pytest.raises(ConfigError, match=rf"{path}: none of its \d+ tensors matches .* different architecture"):
        build_network(NetworkSpec(model=SMALL, pretrained_params=str(path)), 10, ONE, SIZE)


def test_missing_or_unreadable_files_are_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.params"
    with pytest.raises(ConfigError, match=f"pretrained_params file {missing} does not exist"):
        build_network(NetworkSpec(model=SMALL, pretrained_params=str(missing)), 10, ONE, SIZE)

    garbage = tmp_path / "garbage.params"
    garbage.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(ConfigError, match=f"pretrained_params file {garbage} is not an MXNet parameter file"):
        build_network(NetworkSpec(model=SMALL, pretrained_params=str(garbage)), 10, ONE, SIZE)

    unnamed = tmp_path / "list.params"
    mx.nd.save(str(unnamed), [mx.nd.zeros((2,))])
    with pytest.raises(ConfigError, match="holds no named tensors"):
        build_network(NetworkSpec(model=SMALL, pretrained_params=str(unnamed)), 10, ONE, SIZE)


def test_pretrained_loads_gluoncvs_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GluonCV's own loading path, with its download replaced by a file of the same format."""
    import gluoncv.model_zoo.model_store as model_store

    path = tmp_path / f"{SMALL}-0000.params"
    saved = imagenet_weights(SMALL, path)
    requested = []

    def downloaded(name: str, *args: object, **kwargs: object) -> str:
        requested.append(name)
        return str(path)

    monkeypatch.setattr(model_store, "get_model_file", downloaded)
    net = build_network(NetworkSpec(model=SMALL, pretrained=True), 10, ONE, SIZE)

    assert requested == [SMALL]
    backbone, output = zoo.split_parameters(net, ("output",))
    for key, param in backbone.items():
        np.testing.assert_array_equal(param.data().asnumpy(), saved[key], err_msg=key)
    assert output["output.weight"].shape == (10, saved["output.weight"].shape[1])


def test_a_failed_download_suggests_a_local_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a user without network sees; the download is replaced so the test never touches the network."""
    import gluoncv.model_zoo.model_store as model_store

    def no_network(*args: object, **kwargs: object) -> str:
        raise OSError("Max retries exceeded with url (simulated: no network)")

    monkeypatch.setattr(model_store, "get_model_file", no_network)
    with pytest.raises(GenreError) as caught:
        build_network(NetworkSpec(model=SMALL, pretrained=True), 10, ONE, SIZE)

    message = str(caught.value)
    assert "could not get GluonCV's pretrained weights for 'mobilenet0.25'" in message
    assert "--pretrained-params FILE" in message and "no network" in message
    assert "\n" not in message


def test_a_model_too_deep_for_the_image_size_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"'model' squeezenet1.1 cannot take 32x32 images .*larger images"):
        build_network(NetworkSpec(model="squeezenet1.1"), 10, ONE, SIZE)


@pytest.mark.slow
def test_gluoncv_imports_beside_pytorch_2_and_keeps_truncated_images_refused() -> None:
    """GluonCV 0.10 refuses to import when torch >= 2 is installed (the benchmark extra installs 2.13)."""
    import subprocess
    import sys

    from tests.conftest import PROJECT_ROOT

    script = (
        "import sys, types\n"
        "torch = types.ModuleType('torch'); torch.__version__ = '2.13.0'; sys.modules['torch'] = torch\n"
        "from genre.models.zoo import import_gluoncv\n"
        "assert import_gluoncv().model_zoo.get_model_list()\n"
        "from PIL import ImageFile\n"
        "assert ImageFile.LOAD_TRUNCATED_IMAGES is False\n"
        "assert sys.modules['torch'] is torch\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
