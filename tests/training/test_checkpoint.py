"""Checkpoints on a disk that fills up or cannot be written: one line naming the file and what to do, the last
complete checkpoint intact, and the run continues from it once there is room."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import mxnet as mx
import pytest
from mlflow.tracking import MlflowClient
from mxnet import gluon

from genre.cli import main
from genre.data.config import PrepareConfig
from genre.data.prepare import prepare
from genre.errors import DiskError
from genre.training.checkpoint import CheckpointError, CheckpointStore, TrainingState
from genre.training.config import TrainConfig
from genre.training.train import train

SMALL = {"epochs": 3, "batch_size": 32, "conv_filters": "8,16", "dense_units": "32"}
EPOCH_ONE_FILES = {"best.params", "epoch-0001.params", "epoch-0001.states", "state.json"}


@pytest.fixture
def digits16(tracking_store: str, tmp_path: Path) -> Path:
    """The bundled digits packed at 16x16: small enough to train in seconds."""
    return prepare(PrepareConfig(out=str(tmp_path / "digits16"), image_size=16), progress=False).root


def assert_epoch_one_intact(folder: Path) -> None:
    assert {path.name for path in folder.iterdir()} == EPOCH_ONE_FILES  # no partial file of epoch 2 left
    assert json.loads((folder / "state.json").read_text())["epoch"] == 1
    assert len(mx.nd.load(str(folder / "epoch-0001.params"))) == len(mx.nd.load(str(folder / "best.params")))


@pytest.mark.parametrize(
    ("failing_file", "cause"),
    [
        ("epoch-0002.states.tmp", "no space left on device writing"),  # the trainer's state: Python's writer
        ("epoch-0002.params.tmp", "cannot write"),  # MXNet's writer, which loses a small failed write silently
    ],
)
@pytest.mark.slow
def test_a_failed_checkpoint_write_is_one_line_and_keeps_the_last_checkpoint(
    digits16: Path, tmp_path: Path, failing_file: str, cause: str
) -> None:
    store = CheckpointStore(tmp_path / "checkpoints" / "run")

    def fill_the_disk(epoch: int, metrics: dict[str, float]) -> None:
        if epoch == 1:  # every write to /dev/full fails with ENOSPC, as on a full disk
            (store.folder / failing_file).symlink_to("/dev/full")

    config = TrainConfig(data=str(digits16), **SMALL)
    with pytest.raises(DiskError) as caught:
        train(config, [mx.cpu()], store, on_epoch_end=fill_the_disk)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{cause} {store.folder / failing_file}")
    assert message.endswith(
        f"the checkpoint of epoch 1 in {store.folder} is intact: free some space, then continue with "
        f"`genre train --resume run --checkpoint-dir {store.folder.parent}`"
    )
    assert_epoch_one_intact(store.folder)

    resumed = train(config, [mx.cpu()], store)
    assert resumed is not None and resumed.state.epoch == 3
    assert [row["epoch"] for row in resumed.state.history] == [1, 2, 3]


def test_a_parameters_file_mxnet_could_not_finish_is_not_taken_for_a_checkpoint(tmp_path: Path) -> None:
    # MXNet's writer reports a failed write only once its buffer fills: a file smaller than that is lost without a
    # word, and would have been renamed into place as epoch 2's parameters.
    net = gluon.nn.Dense(2, in_units=2)
    net.initialize()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})
    store = CheckpointStore(tmp_path / "run")
    store.save(net, trainer, TrainingState(epoch=1), is_best=True)
    (store.folder / "epoch-0002.params.tmp").symlink_to("/dev/full")
    with pytest.raises(DiskError) as caught:
        store.save(net, trainer, TrainingState(epoch=2), is_best=False)
    assert str(caught.value).startswith(f"cannot write {store.folder / 'epoch-0002.params.tmp'} (")
    assert_epoch_one_intact(store.folder)


def test_a_read_only_checkpoint_folder_fails_before_any_epoch_or_run(
    digits16: Path, tracking_store: str, read_only_folder: Path, capsys
) -> None:
    flags = ["--epochs", "3", "--batch-size", "32", "--conv-filters", "8,16", "--dense-units", "32", "-q"]
    folder = read_only_folder / "checkpoints"
    assert main(["train", *flags, "--data", str(digits16), "--checkpoint-dir", str(folder)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"genre train: error: checkpoint folder {folder} is not writable (")
    assert error.endswith("make it writable or choose another with --checkpoint-dir\n") and error.count("\n") == 1
    assert not Path("mlflow.db").exists()  # no run was opened


@pytest.mark.slow
def test_a_disk_that_fills_up_mid_run_keeps_the_checkpoint_and_the_printed_resume_finishes_the_run(
    digits16: Path, tracking_store: str, small_disk, capsys
) -> None:
    # 1.2 MB holds one checkpoint of this net (three files of 0.28 MB), not the next one beside it.
    disk = small_disk(1200)
    flags = ["--epochs", "3", "--batch-size", "32", "--conv-filters", "8,16", "--dense-units", "256", "-q"]
    assert main(["train", *flags, "--data", str(digits16), "--checkpoint-dir", str(disk)]) == 2
    output = capsys.readouterr().err
    error = output.strip().splitlines()[-1]  # MLflow's own INFO lines come first
    assert "Traceback" not in output and error.startswith("genre train: error: no space left on device writing ")
    (folder,) = disk.iterdir()
    assert_epoch_one_intact(folder)
    client = MlflowClient(tracking_store)
    assert client.get_run(folder.name).info.status == "FAILED"

    subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)  # the user frees some space
    resume = error.split("`")[1].split()
    assert resume == ["genre", "train", "--resume", folder.name, "--checkpoint-dir", str(disk)]
    assert main([*resume[1:], "-q"]) == 0
    run = client.get_run(folder.name)
    assert run.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(folder.name, "epoch_seconds")) == [1, 2, 3]


def finished_folder(folder: Path, epoch: int, best_epoch: int) -> CheckpointStore:
    """A checkpoint folder as training leaves it after `epoch` epochs: the last epoch's parameters and trainer
    state, the best epoch's parameters, state.json and a temporary a killed save left."""
    store = CheckpointStore(folder)
    folder.mkdir(parents=True)
    store.params_path(epoch).write_bytes(b"p" * 3000)
    store.states_path(epoch).write_bytes(b"s" * 2000)
    store.best_params_path.write_bytes(b"p" * 3000)
    (folder / "epoch-0009.params.tmp").write_bytes(b"t" * 500)
    (folder / "state.json").write_text(json.dumps({"epoch": epoch, "best_epoch": best_epoch, "history": []}))
    return store


def test_a_finished_run_keeps_the_best_and_the_last_parameters_only(tmp_path: Path) -> None:
    store = finished_folder(tmp_path / "earlier-best", epoch=3, best_epoch=2)
    assert store.keep_best_and_last() == 2000 + 500  # the trainer state and the leftover
    assert {path.name for path in store.folder.iterdir()} == {"best.params", "epoch-0003.params", "state.json"}
    assert store.read_state().finished and store.read_state().best_epoch == 2

    store = finished_folder(tmp_path / "last-best", epoch=3, best_epoch=3)
    assert store.keep_best_and_last() == 3000 + 2000 + 500  # the last epoch is the best: one file, two names
    assert store.params_path(3).samefile(store.best_params_path) and store.params_path(3).read_bytes() == b"p" * 3000
    with pytest.raises(CheckpointError, match="finished training at epoch 3; .* nothing to resume"):
        store.restore(None, None, store.read_state())  # type: ignore[arg-type]
