"""Learning-rate schedules as a pure function of the update count, and MXNet's adapter to it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from mxnet import lr_scheduler

from genre.errors import ConfigError


@dataclass(frozen=True)
class Schedule:
    """`kind`: constant, step (multiply by `factor` at each epoch in `steps`) or cosine (to 0 at the end),
    after a linear warm-up from 0 over `warmup_epochs`."""

    kind: str
    base_lr: float
    epochs: int
    updates_per_epoch: int
    steps: tuple[int, ...] = ()
    factor: float = 0.1
    warmup_epochs: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("constant", "step", "cosine"):
            raise ConfigError(f"--lr-schedule must be constant, step or cosine, got {self.kind!r}")
        if self.warmup_epochs >= max(self.epochs, 1) and self.warmup_epochs:
            raise ConfigError(f"--warmup-epochs {self.warmup_epochs} must be fewer than --epochs {self.epochs}")

    def learning_rate(self, update: int) -> float:
        """The learning rate for the `update`-th optimiser step (0-based)."""
        per_epoch = max(self.updates_per_epoch, 1)
        epoch_position = update / per_epoch
        warmup = self.warmup_epochs * per_epoch
        if update < warmup:
            return self.base_lr * (update + 1) / warmup
        if self.kind == "step":
            passed = sum(1 for step in self.steps if epoch_position >= step)
            return self.base_lr * self.factor**passed
        if self.kind == "cosine":
            total = max(self.epochs * per_epoch - warmup, 1)
            progress = min((update - warmup) / total, 1.0)
            return self.base_lr * 0.5 * (1 + math.cos(math.pi * progress))
        return self.base_lr


def parse_steps(text: str) -> tuple[int, ...]:
    """'10,20' -> (10, 20): the epochs at which a step schedule decays."""
    try:
        steps = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise ConfigError(f"'lr_steps' takes comma-separated epochs like '10,20', got {text!r}") from None
    if list(steps) != sorted(steps) or any(step < 1 for step in steps):
        raise ConfigError(f"'lr_steps' must be increasing epochs >= 1 like '10,20', got {text!r}")
    return steps


class ScheduleAdapter(lr_scheduler.LRScheduler):
    """Lets MXNet's optimiser call a `Schedule` (it passes the 1-based update count)."""

    def __init__(self, schedule: Schedule) -> None:
        super().__init__(base_lr=schedule.base_lr)
        self.schedule = schedule

    def __call__(self, num_update: int) -> float:
        return self.schedule.learning_rate(max(num_update - 1, 0))
