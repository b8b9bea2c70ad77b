"""Training pauses when the trackers fall too far behind it.

The tracker process runs on idle CPU time only (SCHED_IDLE, see tracking/process.py), so
tracking costs training almost nothing; but when training leaves no core idle for long, the
trackers get almost no time and their backlog grows (MLflow's and W&B's pages would lag ever
further behind the study). So once the oldest call waiting for them is older than
`tracking.max_lag_seconds`, training pauses (between batches) until they are back within half
of it. Pausing, unlike taking a thread away from training, changes no number.

In one process the lag comes from the tracker process itself. The workers of `launch
--workers N` have no tracker (their launch logs their trials from the study, `TrialRelay`):
the launch writes its trackers' lag to a small file whose path the workers get in
$EXPANDER_SWEEPS_TRACKER_LAG_FILE, and they read it (`lag_from_file`).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["Pacer", "LAG_FILE_VARIABLE", "lag_from_file", "write_lag"]

LAG_FILE_VARIABLE = "EXPANDER_SWEEPS_TRACKER_LAG_FILE"
_STALE_SECONDS = 30.0  # a lag file not refreshed for this long is from a launch that is gone


class Pacer:
    """Called between batches: returns at once while `lag()` (seconds) is within `limit`;
    past it, waits until the lag is at most half the limit. `lag` is asked at most every
    `check_every` seconds (it may read a file). The first pause is explained in full; later
    ones are summed up at most every `SUMMARY_SECONDS`, so that a sweep that pauses after
    every trial does not say so after every trial."""

    SUMMARY_SECONDS = 600.0

    def __init__(self, lag: Callable[[], float], limit: float, say: Callable[[str], None],
                 check_every: float = 1.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self._lag, self._limit, self._say = lag, limit, say
        self._check_every, self._sleep, self._clock = check_every, sleep, clock
        self._next_check = -math.inf
        self._pauses, self._paused = 0, 0.0  # since the last time this was said
        self._said_at: float | None = None

    def __call__(self) -> None:
        now = self._clock()
        if now < self._next_check:
            return
        self._next_check = now + self._check_every
        lag = self._lag()
        if lag <= self._limit:
            return
        if self._said_at is None:
            self._say(f"training pauses for the trackers: their oldest call has waited {lag:.1f} s "
                      f"(tracking.max_lag_seconds = {self._limit:g}); they run on idle CPU time only, "
                      "and training left them none")
            self._said_at = now
        while self._lag() > self._limit / 2:
            self._sleep(0.2)
        self._pauses += 1
        self._paused += self._clock() - now
        if self._clock() - self._said_at >= self.SUMMARY_SECONDS:
            self._say(f"training paused for the trackers {self._pauses} time(s), {self._paused:.0f} s in all, "
                      f"in the last {self._clock() - self._said_at:.0f} s")
            self._pauses, self._paused, self._said_at = 0, 0.0, self._clock()


def write_lag(path: Path, lag: float) -> None:
    """The launch's side: the trackers' lag for its workers (removed when it is 0)."""
    if lag <= 0:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(f"{lag:.3f}\n")
    os.replace(temporary, path)  # a reader never sees half a number


def lag_from_file(path: Path) -> float:
    """A worker's side: the lag its launch wrote; 0 when there is none, or when the file is
    stale (the launch was killed) or unreadable: a worker never waits on a launch that is gone."""
    try:
        if time.time() - path.stat().st_mtime > _STALE_SECONDS:
            return 0.0
        return float(path.read_text())
    except (OSError, ValueError):
        return 0.0
