"""Checkpoints: everything needed to continue a killed run and end where an uninterrupted one would.

A checkpoint is the network's parameters, the trainer's state (momentum, update count) and `state.json`
(completed epoch, best epoch, metric history, the resolved config). Randomness needs no saving: every
epoch reseeds from (seed, epoch). Files are written under new names and `state.json` is replaced last,
so a kill at any moment leaves the previous complete checkpoint.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mxnet import gluon

from genre.errors import GenreError

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
        """Write epoch `state.epoch`'s checkpoint, then drop the previous epoch's files."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for path, save in (
            (self.params_path(state.epoch), net.save_parameters),
            (self.states_path(state.epoch), trainer.save_states),
        ):
            tmp = path.with_name(path.name + ".tmp")
            save(str(tmp))
            tmp.replace(path)
        if is_best:
            tmp = self.best_params_path.with_name("best.params.tmp")
            net.save_parameters(str(tmp))
            tmp.replace(self.best_params_path)
        _atomic_write_text(self.folder / STATE_FILE, json.dumps(asdict(state), indent=1))
        for old in self.folder.glob("epoch-*"):
            if old.name not in (self.params_path(state.epoch).name, self.states_path(state.epoch).name):
                old.unlink(missing_ok=True)

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
