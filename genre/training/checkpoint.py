"""Checkpoints: everything needed to continue a killed run and end where an uninterrupted one would.

A checkpoint is the network's parameters, the trainer's state (momentum, update count) and `state.json`
(completed epoch, best epoch, metric history, the resolved config). Randomness needs no saving: every
epoch reseeds from (seed, epoch). Files are written under new names and `state.json` is replaced last,
so a kill at any moment leaves the previous complete checkpoint. A finished run keeps only its best and last
parameters (`keep_best_and_last`); `genre clean` removes the folders of FINISHED runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from genre import disk
from genre.errors import DiskError, GenreError

if TYPE_CHECKING:
    from mxnet import gluon

DEFAULT_CHECKPOINT_DIR = "checkpoints"  # <dir>/<run id>/ per run, for train and for each tuning trial
STATE_FILE = "state.json"
RUN_FOLDER = re.compile(r"[0-9a-f]{32}")  # an MLflow run id


class CheckpointError(GenreError):
    """A checkpoint folder that cannot be resumed from."""


@dataclass
class TrainingState:
    """Where training stands after `epoch` completed epochs."""

    epoch: int = 0
    best_epoch: int = 0
    best_val_accuracy: float = -1.0
    history: list[dict[str, float]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    finished: bool = False  # training ended: only the best and the last parameters are kept (`keep_best_and_last`)
    dataset_digest: str = ""  # the packs it trains on (`DatasetInfo.digest`): a resume must find the same ones


def _parameter_bytes(net: gluon.Block) -> int:
    """About the size of `net`'s parameters file: its tensors' bytes."""
    return sum(int(np.prod(p.shape)) * np.dtype(p.dtype).itemsize for p in net.collect_params().values())


def _save_parameters(net: gluon.Block, path: str) -> None:
    """`net.save_parameters`, then read back: MXNet's writer drops a failed write's last buffer without a word
    (an unchecked `fclose`), so a full disk could otherwise leave a truncated file that looks saved."""
    import mxnet as mx  # here, not above: `TrainConfig` reads this module's default folder without MXNet

    net.save_parameters(path)
    mx.nd.load(path)


def folder_bytes(folder: Path) -> int:
    """The bytes of the files under `folder`, a hard-linked file once."""
    seen: dict[tuple[int, int], int] = {}
    for path in folder.rglob("*"):
        if path.is_file():
            stat = path.stat()
            seen[stat.st_dev, stat.st_ino] = stat.st_size
    return sum(seen.values())


def run_folders(root: Path) -> list[Path]:
    """The run checkpoint folders in `root` (`<run id>/`: 32 hex digits, as MLflow names runs), sorted."""
    if not root.is_dir():
        return []
    return sorted(path for path in root.iterdir() if path.is_dir() and RUN_FOLDER.fullmatch(path.name))


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


class CheckpointStore:
    """A run's checkpoint folder (`checkpoints/<run id>/` by default)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def params_path(self, epoch: int) -> Path:
        return self.folder / f"epoch-{epoch:04d}.params"

    def states_path(self, epoch: int) -> Path:
        return self.folder / f"epoch-{epoch:04d}.states"

    @property
    def best_params_path(self) -> Path:
        return self.folder / "best.params"

    def exists(self) -> bool:
        return (self.folder / STATE_FILE).exists()

    def save(self, net: gluon.Block, trainer: gluon.Trainer, state: TrainingState, is_best: bool) -> None:
        """Write epoch `state.epoch`'s checkpoint, then drop the previous epoch's files.

        A full or read-only disk raises a one-line `DiskError` naming the file and the checkpoint still intact;
        this epoch's partial files are removed.
        """
        from mxnet.base import MXNetError

        params, states = self.params_path(state.epoch), self.states_path(state.epoch)
        writing = self.folder
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            for path, save in ((params, lambda tmp: _save_parameters(net, tmp)), (states, trainer.save_states)):
                writing = path.with_name(path.name + ".tmp")
                save(str(writing))
                writing.replace(path)
            if is_best:
                writing = self.best_params_path.with_name("best.params.tmp")
                _save_parameters(net, str(writing))
                writing.replace(self.best_params_path)
            writing = self.folder / STATE_FILE
            _atomic_write_text(writing, json.dumps(asdict(state), indent=1))
        except (OSError, MXNetError) as error:
            if not isinstance(error, OSError):  # before the discard frees space: a full disk is told by what is left
                error = disk.failed_write(writing, _parameter_bytes(net), str(error).strip().splitlines()[-1])
            message = self._failure(error, writing)
            with contextlib.suppress(OSError):
                self._discard(state.epoch)
            raise DiskError(message) from None
        for old in self.folder.glob("epoch-*"):
            if old.name not in (params.name, states.name):
                old.unlink(missing_ok=True)

    def _discard(self, epoch: int) -> None:
        """Remove what a failed save of `epoch` left (its temporary files, and its own files unless `state.json`
        already names it), so the folder holds the previous checkpoint and nothing else."""
        for leftover in self.folder.glob("*.tmp"):
            leftover.unlink(missing_ok=True)
        kept = self.read_state().epoch if self.exists() else 0
        if kept != epoch:
            for path in (self.params_path(epoch), self.states_path(epoch)):
                path.unlink(missing_ok=True)

    def _failure(self, error: OSError, path: Path) -> str:
        """One line: what went wrong writing `path`, the checkpoint that is intact and how to continue."""
        cause = disk.describe(error, path) or f"cannot write {path} ({error.strerror or error})"
        kept = self.read_state().epoch if self.exists() else 0
        if not kept:
            return f"{cause}; no epoch was checkpointed yet: free some space (or pick --checkpoint-dir) and start again"
        return (
            f"{cause}; the checkpoint of epoch {kept} in {self.folder} is intact: free some space, then continue "
            f"with `genre train --resume {self.folder.name} --checkpoint-dir {self.folder.parent}`"
        )

    def read_state(self) -> TrainingState:
        path = self.folder / STATE_FILE
        if not path.exists():
            raise CheckpointError(
                f"no checkpoint in {self.folder}; a run can be resumed once it has finished its first epoch"
            )
        try:
            return TrainingState(**json.loads(path.read_text()))
        except (ValueError, TypeError) as error:
            raise CheckpointError(f"checkpoint {path} is unreadable ({error}); start a new run") from error

    def keep_best_and_last(self) -> int:
        """Once training has finished: keep the best and the last epoch's parameters and `state.json` (marked
        finished), and drop the trainer state (momentum and the like: only continuing a run needs it) and any
        leftovers. When the best epoch is the last, its two files become one (a hard link). Returns the bytes freed.
        """
        if not self.exists():
            return 0
        state = self.read_state()
        state.finished = True  # first: from here on the folder is no longer one to resume from
        _atomic_write_text(self.folder / STATE_FILE, json.dumps(asdict(state), indent=1))
        before = folder_bytes(self.folder)
        last = self.params_path(state.epoch)
        for path in self.folder.iterdir():
            if path.is_file() and path.name not in (STATE_FILE, self.best_params_path.name, last.name):
                path.unlink(missing_ok=True)
        if state.best_epoch == state.epoch and self.best_params_path.exists() and last.exists():
            linked = last.with_name(last.name + ".tmp")
            with contextlib.suppress(OSError):  # a file system without hard links keeps both copies
                os.link(self.best_params_path, linked)
                linked.replace(last)
            linked.unlink(missing_ok=True)
        return before - folder_bytes(self.folder)

    def restore(self, net: gluon.Block, trainer: gluon.Trainer, state: TrainingState) -> None:
        """Load the parameters and trainer state of `state.epoch` into `net` and `trainer`."""
        if state.finished:
            raise CheckpointError(
                f"run {self.folder.name} finished training at epoch {state.epoch}; its checkpoint keeps only the best "
                "and the last parameters, and there is nothing to resume"
            )
        params, states = self.params_path(state.epoch), self.states_path(state.epoch)
        for path in (params, states):
            if not path.exists():
                raise CheckpointError(f"checkpoint file {path} is missing; start a new run")
        net.load_parameters(str(params), ctx=trainer._contexts)  # noqa: SLF001 - the trainer's own contexts
        trainer.load_states(str(states))

    def restore_best(self, net: gluon.Block, contexts: list) -> None:
        if self.best_params_path.exists():
            net.load_parameters(str(self.best_params_path), ctx=contexts)
