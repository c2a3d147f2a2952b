"""What a person watching a training run sees: a bar per epoch on a terminal, one line per finished epoch, and how
long the run has left.

`train` drives a `TrainingProgress` the stage hands it (none with `-q`, none on a distributed worker other than 0):
`epoch_started`, then `batch_done` after every batch (the loop's per-batch callback), then `epoch_ended`. The bar
(batches, with the running loss, images/s and the run's ETA) goes to stderr and only when stderr is a terminal; the
epoch lines go to stdout either way, beside the stage's other progress lines, so a log file or CI output gets one
plain line per epoch. The per-batch cost is a function call and a clock read: the loss it shows is the one the loop
already synchronises every `SYNC_EVERY` batches.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from tqdm import tqdm

POSTFIX_EVERY = 0.5  # seconds between updates of the bar's loss, images/s and ETA
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} batches [{elapsed}<{remaining}{postfix}]"


def duration(seconds: float) -> str:
    """`seconds` the way a person reads a wait: `45s`, `1m50s`, `2h05m`."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def epoch_line(epoch: int, epochs: int, metrics: dict[str, float], left: float | None, took: float) -> str:
    """`epoch 3/15: loss 0.412, train 87.1%, val 93.2% (loss 0.301), 812 img/s, ETA 1m50s`: one finished epoch's
    figures (the keys of `genre.training.train.epoch_metrics`); `left` is the run's ETA in seconds, None after the
    last epoch, when the line says how long the epochs took instead."""
    when = f"ETA {duration(left)}" if left is not None else f"epochs took {duration(took)}"
    return (
        f"epoch {epoch}/{epochs}: loss {metrics['train_loss']:.3f}, train {metrics['train_accuracy']:.1%}, "
        f"val {metrics['val_accuracy']:.1%} (loss {metrics['val_loss']:.3f}), "
        f"{metrics['images_per_second']:.0f} img/s, {when}"
    )


class TrainingProgress:
    """The progress of one training run: a bar per epoch on `bars` (None: no bars) and a line per epoch on `lines`.

    The ETA is the epochs left times the mean wall time of the epochs this process ran (training, validation,
    checkpoint and logging, from the first epoch's start); within the first epoch, the batches left at this epoch's
    rate. A resumed run counts only the epochs it runs itself. `label` starts every line and bar (`trial-3: `).
    """

    def __init__(self, lines: TextIO, bars: TextIO | None = None, label: str = "") -> None:
        self.lines = lines
        self.bars = bars
        self.label = label
        self.epochs_run = 0
        self._first_start: float | None = None
        self._epoch_start = 0.0
        self._epoch, self._epochs, self._batches = 0, 0, 0
        self._bar: tqdm | None = None
        self._postfix_at = 0.0
        self._loss: float | None = None

    @classmethod
    def for_terminal(cls, label: str = "") -> TrainingProgress:
        """Lines on stdout; bars on stderr when it is a terminal (a log file or CI output gets the lines only)."""
        stderr = sys.stderr
        return cls(sys.stdout, stderr if _is_terminal(stderr) else None, label)

    def epoch_started(self, epoch: int, epochs: int, batches: int) -> None:
        now = time.perf_counter()
        self._first_start = now if self._first_start is None else self._first_start
        self._epoch_start, self._postfix_at, self._loss = now, now, None
        self._epoch, self._epochs, self._batches = epoch, epochs, batches
        if self.bars is not None:
            from tqdm import tqdm  # 80 ms: only for a terminal

            self._bar = tqdm(
                total=batches, desc=f"{self.label}epoch {epoch}/{epochs}", file=self.bars, leave=False,
                bar_format=BAR_FORMAT, dynamic_ncols=True,
            )  # fmt: skip

    def batch_done(self, batches: int, images: int, loss: float | None) -> None:
        """After `batches` of this epoch, `images` trained; `loss` is the mean training loss at the loop's last host
        sync (None before the first). The loop's per-batch callback (`genre.training.loop.BatchCallback`)."""
        bar = self._bar
        if bar is None:
            return
        bar.update(batches - bar.n)
        self._loss = loss if loss is not None else self._loss
        now = time.perf_counter()
        if now - self._postfix_at >= POSTFIX_EVERY or batches == self._batches:
            self._postfix_at = now
            elapsed = now - self._epoch_start
            epoch_seconds = elapsed / batches * self._batches
            parts = [f"loss {self._loss:.3f}"] if self._loss is not None else []
            parts.append(f"{images / elapsed:.0f} img/s")
            parts.append(f"ETA {duration(self.seconds_left(epoch_seconds - elapsed, epoch_seconds))}")
            if batches == self._batches:
                parts.append("validating")
            bar.set_postfix_str(", ".join(parts), refresh=False)

    def epoch_ended(self, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        """Close the epoch's bar and write its line (figures from `metrics`, the run's ETA)."""
        self.close()
        self.epochs_run += 1
        took = time.perf_counter() - (self._epoch_start if self._first_start is None else self._first_start)
        left = (epochs - epoch) * took / self.epochs_run if epoch < epochs else None
        print(self.label + epoch_line(epoch, epochs, metrics, left, took), file=self.lines, flush=True)

    def seconds_left(self, epoch_left: float, epoch_seconds: float) -> float:
        """The run's ETA during an epoch: what is left of it, then the epochs after it at the mean epoch time so far
        (this epoch's estimated `epoch_seconds` until one has finished)."""
        mean = epoch_seconds
        if self.epochs_run and self._first_start is not None:
            mean = (self._epoch_start - self._first_start) / self.epochs_run
        return max(0.0, epoch_left) + (self._epochs - self._epoch) * mean

    def close(self) -> None:
        """Take the open bar (if any) off the terminal: at the end of an epoch, or when training stops inside one."""
        if self._bar is not None:
            self._bar.refresh()  # its last state: every batch of the epoch counted
            self._bar.close()
            self._bar = None


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False
