"""Checkpoints: everything needed to continue a killed run and end where an uninterrupted one would.

A checkpoint is the network's parameters, the trainer's state (momentum, update count) and `state.json`
(completed epoch, best epoch, metric history, the resolved config). Randomness needs no saving: every
epoch reseeds from (seed, epoch). Files are written under new names and `state.json` is replaced last,
so a kill at any moment leaves the previous complete checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mxnet as mx
import numpy as np
from mxnet import gluon
from mxnet.base import MXNetError

from genre import disk
from genre.errors import DiskError, GenreError

DEFAULT_CHECKPOINT_DIR = "checkpoints"  # <dir>/<run id>/ per run, for train and for each tuning trial
STATE_FILE = "state.json"


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


def _parameter_bytes(net: gluon.Block) -> int:
    """About the size of `net`'s parameters file: its tensors' bytes."""
    return sum(int(np.prod(p.shape)) * np.dtype(p.dtype).itemsize for p in net.collect_params().values())


def _save_parameters(net: gluon.Block, path: str) -> None:
    """`net.save_parameters`, then read back: MXNet's writer drops a failed write's last buffer without a word
    (an unchecked `fclose`), so a full disk could otherwise leave a truncated file that looks saved."""
    net.save_parameters(path)
    mx.nd.load(path)


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

    def restore(self, net: gluon.Block, trainer: gluon.Trainer, state: TrainingState) -> None:
        """Load the parameters and trainer state of `state.epoch` into `net` and `trainer`."""
        params, states = self.params_path(state.epoch), self.states_path(state.epoch)
        for path in (params, states):
            if not path.exists():
                raise CheckpointError(f"checkpoint file {path} is missing; start a new run")
        net.load_parameters(str(params), ctx=trainer._contexts)  # noqa: SLF001 - the trainer's own contexts
        trainer.load_states(str(states))

    def restore_best(self, net: gluon.Block, contexts: list) -> None:
        if self.best_params_path.exists():
            net.load_parameters(str(self.best_params_path), ctx=contexts)
