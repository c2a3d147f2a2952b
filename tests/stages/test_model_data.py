"""Which data `genre evaluate` and `genre interpret` take when no --data is given, and the `genre prepare` command
that makes a model's dataset again, read from a real SQLite tracking store."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from genre.command_config import EvaluateConfig, InterpretConfig
from genre.data.config import DEFAULT_DATASET, PrepareConfig
from genre.errors import ConfigError
from genre.stages.model_data import prepare_command, trained_on_a_fold, with_model_data


def test_a_given_dataset_wins_and_an_unset_variant_is_the_full_dataset() -> None:
    chosen, taken = with_model_data(EvaluateConfig(model_uri="runs:/abc/model", data="data/prepared/mine-64"))
    assert (chosen.data, chosen.variant, taken) == ("data/prepared/mine-64", "full", "")
    chosen, _ = with_model_data(InterpretConfig(model_uri="runs:/abc/model", data="mine", variant="dev"))
    assert (chosen.data, chosen.variant) == ("mine", "dev")


def test_a_model_folder_names_no_run_so_the_default_dataset_is_taken_and_the_line_says_so(tmp_path: Path) -> None:
    folder = str(tmp_path / "model")
    chosen, taken = with_model_data(EvaluateConfig(model_uri=folder))
    assert (chosen.data, chosen.variant) == (DEFAULT_DATASET, "full")
    assert taken == f"data: {DEFAULT_DATASET} (the default: {folder} names no run; --data picks another)"


def test_no_model_and_no_data_is_the_usual_one_line_error() -> None:
    with pytest.raises(ConfigError, match="--model-uri is required"):
        with_model_data(EvaluateConfig())


def log_prepare_run(store: str, config: PrepareConfig, digest: str, config_file: str = "") -> None:
    """A finished prepare run with the params and tags `genre prepare` logs."""
    client = MlflowClient(store)
    run = client.create_run(client.create_experiment(f"genre-{config.dataset_name}-{digest}"))
    settings = dataclasses.asdict(config) | {"name": config.dataset_name, "image_size": config.size, "out": "/x/y"}
    for key, value in settings.items():
        client.log_param(run.info.run_id, f"config.{key}", "" if value is None else value)  # as `flatten` logs it
    client.log_param(run.info.run_id, "dataset_digest", digest)
    client.set_tag(run.info.run_id, "genre.stage", "prepare")
    if config_file:
        client.set_tag(run.info.run_id, "genre.config_file", config_file)
    client.set_terminated(run.info.run_id, "FINISHED")


def test_the_prepare_command_is_rebuilt_from_the_prepare_run_of_the_same_digest(tracking_store: str) -> None:
    Path("experiments").symlink_to(Path(__file__).resolve().parents[2] / "experiments")
    covers = PrepareConfig(manifest="data/dataset-links.tsv", image_size=64)
    log_prepare_run(tracking_store, covers, "c0ffee", "experiments/datasets/covers-64.yaml")
    log_prepare_run(tracking_store, dataclasses.replace(covers, seed=7, dev_size=0), "5eed")
    log_prepare_run(tracking_store, PrepareConfig(folder="my covers", train_fraction=0.7, val_fraction=0.2), "f01d")

    assert prepare_command("data/prepared/covers-64", {"dataset_digest": "c0ffee"}) == (
        "genre prepare --dataset covers-64",
        True,
    )
    assert prepare_command("elsewhere", {"dataset_digest": "c0ffee"}) == (
        "genre prepare --dataset covers-64 --out elsewhere",
        True,
    )
    assert prepare_command("data/prepared/covers-64", {"dataset_digest": "5eed"}) == (
        "genre prepare --manifest data/dataset-links.tsv --image-size 64 --seed 7 --dev-size 0",
        True,
    )
    assert prepare_command("data/prepared/my covers-350", {"dataset_digest": "f01d"}) == (
        "genre prepare --folder 'my covers' --train-fraction 0.7 --val-fraction 0.2",
        True,
    )
    # No prepare run of that digest here: the dataset's name and size, and a word on what else it needs.
    assert prepare_command("digits16", {"dataset_digest": "0ther", "dataset_name": "digits", "image_size": "16"}) == (
        "genre prepare --image-size 16 --out digits16",
        False,
    )
    mine = {"dataset_digest": "0ther", "dataset_name": "mine", "image_size": "64"}
    assert prepare_command("data/prepared/mine-64", mine) == (
        "genre prepare --folder IMAGES --name mine --image-size 64 --out data/prepared/mine-64",
        False,
    )


def test_a_model_trained_on_a_fold_is_scored_on_the_static_split_with_a_warning() -> None:
    assert trained_on_a_fold({"config.folds": "0"}) == "" and trained_on_a_fold({}) == ""
    said = trained_on_a_fold({"config.folds": "5", "config.fold": "2"})
    assert "fold 2 of a 5-fold cross-validation" in said and "predictions/test.csv" in said
