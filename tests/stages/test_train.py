"""`genre train --resume`: the run continues with the settings it started with."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import mxnet as mx
import pytest

from genre.cli import main
from genre.data.config import PrepareConfig
from genre.data.prepare import prepare
from genre.errors import ConfigError
from genre.stages.train import resume_config
from genre.training.checkpoint import CheckpointStore
from genre.training.config import TrainConfig
from genre.training.train import train


def test_resume_with_other_settings_is_refused_naming_them_before_any_work(tracking_store: str, capsys) -> None:
    assert main(["train", "--resume", "0123abcd", "--epochs", "30", "--learning-rate", "0.1"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("genre train: error: --resume 0123abcd continues the run with the settings it started")
    assert "drop --epochs, --learning-rate" in error and error.count("\n") == 1
    assert not Path("mlflow.db").exists() and not Path("checkpoints").exists()


def test_resume_with_a_named_experiment_is_refused(tracking_store: str, tmp_path: Path, capsys) -> None:
    named = tmp_path / "wide.yaml"
    named.write_text("conv_filters: '64,128'\n")
    assert main(["train", "--experiment", str(named), "--resume", "0123abcd"]) == 2
    assert f"drop the named config {named}" in capsys.readouterr().err


def test_resume_takes_the_checkpoints_settings_and_only_the_devices_given(tmp_path: Path) -> None:
    data = prepare(PrepareConfig(out=str(tmp_path / "digits16"), image_size=16), progress=False).root
    started = TrainConfig(data=str(data), epochs=3, conv_filters="8", dense_units="", cpu_contexts=2, seed=5)
    store = CheckpointStore(tmp_path / "checkpoints" / "run1")
    train(dataclasses.replace(started, epochs=1), [mx.cpu(0), mx.cpu(1)], store)  # a run killed after epoch 1
    asked = TrainConfig(resume="run1", checkpoint_dir=str(tmp_path / "checkpoints"))

    kept, completed = resume_config(asked, given={"resume", "checkpoint_dir"})
    moved, _ = resume_config(TrainConfig(resume="run1", checkpoint_dir=asked.checkpoint_dir, cpu_contexts=1),
                             given={"resume", "checkpoint_dir", "cpu_contexts"})  # fmt: skip

    assert completed == 1 and (kept.epochs, kept.seed, kept.conv_filters) == (1, 5, "8")
    assert kept.cpu_contexts == 2 and moved.cpu_contexts == 1
    with pytest.raises(ConfigError, match="drop --seed"):
        resume_config(asked, given={"resume", "seed"})


def test_resume_refuses_a_dataset_prepared_again_with_another_split(tracking_store: str, tmp_path: Path, capsys):
    """Killed after epoch 1, the dataset re-prepared with another --seed: resuming would train epochs 2-5 on the
    first epoch's test covers and record the old digest."""
    first = prepare(PrepareConfig(out=str(tmp_path / "digits16"), image_size=16), progress=False)
    started = TrainConfig(data=str(first.root), epochs=3, conv_filters="8", dense_units="")
    checkpoints = tmp_path / "checkpoints"
    train(dataclasses.replace(started, epochs=1), [mx.cpu()], CheckpointStore(checkpoints / "run1"))
    again = prepare(PrepareConfig(out=str(first.root), image_size=16, seed=1), progress=False)
    assert again.info.digest != first.info.digest

    assert main(["train", "--resume", "run1", "--checkpoint-dir", str(checkpoints)]) == 2

    error = capsys.readouterr().err
    assert error.startswith(f"genre train: error: --resume run1: the run trained on dataset {first.info.digest}, ")
    assert f"now holds {again.info.digest} (prepared again since)" in error and error.count("\n") == 1
    assert CheckpointStore(checkpoints / "run1").read_state().epoch == 1  # nothing trained, nothing lost


@pytest.mark.slow
def test_a_finished_run_keeps_its_best_and_last_parameters_until_clean_removes_them(
    tracking_store: str, tmp_path: Path, capsys
) -> None:
    data = prepare(PrepareConfig(out=str(tmp_path / "digits16"), image_size=16), progress=False).root
    small = ["--epochs", "2", "--batch-size", "64", "--conv-filters", "8", "--dense-units", "", "-q"]
    assert main(["train", "--data", str(data), *small]) == 0
    (folder,) = Path("checkpoints").iterdir()
    state = CheckpointStore(folder).read_state()
    assert state.finished and state.epoch == 2
    assert {path.name for path in folder.iterdir()} == {"best.params", "epoch-0002.params", "state.json"}
    capsys.readouterr()

    assert main(["train", "--resume", folder.name]) == 2
    error = capsys.readouterr().err
    assert error == (
        f"genre train: error: --resume {folder.name}: that run finished training (epoch 2) and logged its model, "
        f"runs:/{folder.name}/model; there is nothing to resume\n"
    )
    assert main(["clean"]) == 0
    assert "removed the checkpoints of 1 FINISHED run(s) from checkpoints" in capsys.readouterr().out
    assert not folder.exists()
