"""The Tracker protocol and the fan-out over several backends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

__all__ = ["Tracker", "FanOut", "TrackerUnavailable"]


class TrackerUnavailable(RuntimeError):
    """A tracker cannot start (SDK missing, server unreachable); the message says how to fix it."""


@runtime_checkable
class Tracker(Protocol):
    name: str

    def start_sweep(self, sweep: str, config: dict[str, Any]) -> None: ...

    def start_trial(self, number: int, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...

    def log_artifact(self, path: str, folder: str | None = None) -> None: ...

    def end_trial(self, status: str) -> None: ...

    def end_sweep(self) -> None: ...


class FanOut:
    """Every call goes to every live backend; a backend that raises is reported once and dropped."""

    name = "fan-out"

    def __init__(self, trackers: list[Tracker], warn: Callable[[str], None]):
        self._trackers = list(trackers)
        self._warn = warn

    @property
    def names(self) -> list[str]:
        return [t.name for t in self._trackers]

    def _each(self, method: str, *args: Any, **kwargs: Any) -> None:
        for tracker in list(self._trackers):
            try:
                getattr(tracker, method)(*args, **kwargs)
            except Exception as err:  # a tracker must never take a trial down with it
                self._trackers.remove(tracker)
                self._warn(
                    f"tracker '{tracker.name}' failed in {method} ({type(err).__name__}: {err}); "
                    "it is off for the rest of this run. The results are safe in the Optuna study."
                )

    def start_sweep(self, sweep: str, config: dict[str, Any]) -> None:
        self._each("start_sweep", sweep, config)

    def start_trial(self, number: int, params: dict[str, Any]) -> None:
        self._each("start_trial", number, params)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._each("log_metrics", metrics, step)

    def log_artifact(self, path: str, folder: str | None = None) -> None:
        self._each("log_artifact", path, folder)

    def end_trial(self, status: str) -> None:
        self._each("end_trial", status)

    def end_sweep(self) -> None:
        self._each("end_sweep")
