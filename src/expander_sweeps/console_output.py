"""How much the CLI prints, and how, on a terminal and in a batch job.

On a terminal, progress is rich's live bars. Elsewhere (nohup, sbatch, tee, CI) rich draws no
bars and wraps at 80 columns, so a batch job's log said nothing for minutes while a dense model
trained and cut tables to "…". There, the console is wide (200 columns unless $COLUMNS says
otherwise) and `ProgressLines` prints one plain line at a steady interval: the trial, phase,
epoch, loss, elapsed time and an estimate of the time left.

-q prints only warnings, errors and the closing lines; -v adds a line per epoch and the
libraries' INFO logs (Optuna's trial lines).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Verbosity", "VERBOSITY", "PROGRESS_VARIABLE", "BATCH_JOB_WIDTH", "progress_interval",
           "ProgressLines", "duration"]

PROGRESS_VARIABLE = "EXPANDER_SWEEPS_PROGRESS_SECONDS"  # the interval of progress lines; 0: none
DEFAULT_PROGRESS_SECONDS = 30.0
BATCH_JOB_WIDTH = 200  # a log file's lines are read in an editor or a pager, not an 80-column tty


@dataclass
class Verbosity:
    quiet: bool = False
    verbose: bool = False


VERBOSITY = Verbosity()  # set once by the CLI's top-level options


def progress_interval(on_terminal: bool) -> float | None:
    """Seconds between progress lines, or None for none: $EXPANDER_SWEEPS_PROGRESS_SECONDS when set
    (0 turns them off), else DEFAULT_PROGRESS_SECONDS when not on a terminal (a terminal has bars)."""
    value = os.environ.get(PROGRESS_VARIABLE, "").strip()
    if value:
        try:
            seconds = float(value)
        except ValueError:
            seconds = DEFAULT_PROGRESS_SECONDS
        return seconds if seconds > 0 else None
    return None if on_terminal else DEFAULT_PROGRESS_SECONDS


def duration(seconds: float) -> str:
    """4s, 2m05s, 1h02m."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class ProgressLines:
    """A plain progress line every `interval` seconds, from the sweep's events (cli._ConsoleEvents
    forwards them). The time left is the phase's: batches left at the phase's pace so far."""

    def __init__(self, say: Callable[[str], None], interval: float, label: str = "",
                 clock: Callable[[], float] = time.monotonic):
        self._say, self._interval, self._label, self._clock = say, interval, label, clock
        self._trial = ""
        self._trials_done, self._trials_total = 0, 0
        self._phase, self._epochs, self._batches_total = "", 0, 0
        self._batches, self._phase_started = 0, clock()
        self._epoch, self._loss = 0, None
        self._last = clock()

    def sweep_started(self, total: int) -> None:
        self._trials_total = total

    def trial_started(self, what: str) -> None:
        self._trial = what

    def trial_ended(self) -> None:
        self._trials_done += 1

    def phase_started(self, phase: str, epochs: int, batches_per_epoch: int) -> None:
        self._phase, self._epochs = phase, epochs
        self._batches_total, self._batches = max(1, epochs * batches_per_epoch), 0
        self._epoch, self._loss = 0, None
        self._phase_started = self._clock()

    def epoch_done(self, epoch: int, loss: float) -> None:
        self._epoch, self._loss = epoch, loss

    def batch_done(self) -> None:
        self._batches += 1
        now = self._clock()
        if now - self._last >= self._interval:
            self._last = now
            self._say(self.line(now))

    def line(self, now: float) -> str:
        elapsed = now - self._phase_started
        left = elapsed * (self._batches_total - self._batches) / self._batches if self._batches else None
        loss = f", loss {self._loss:.3f}" if self._loss is not None else ""
        return (f"{self._label}progress: {self._trial} | {self._phase} epoch {min(self._epoch + 1, self._epochs)}/"
                f"{self._epochs}{loss} | {100 * self._batches / self._batches_total:.0f}% of the phase in "
                f"{duration(elapsed)}, about {duration(left) if left is not None else '?'} left | trials done "
                f"{self._trials_done}/{self._trials_total}")
