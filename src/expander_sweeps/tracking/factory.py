"""Build the trackers a spec enables (tracking/backends.py's registry says which and how)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

from ..spec import SweepSpec
from .backends import any_enabled, enabled_backends
from .base import FanOut, Tracker, TrackerUnavailable

__all__ = ["build_trackers", "enabled_trackers", "preload_libraries"]


def enabled_trackers(spec: SweepSpec, warn: Callable[[str], None]) -> list[Tracker]:
    """Each enabled tracker; one that cannot start is reported (with how to fix it) and skipped."""
    backends = enabled_backends(spec)
    for backend in backends:
        if backend.import_first is not None:
            backend.import_first()
    trackers: list[Tracker] = []
    for backend in backends:
        try:
            trackers.append(backend.make(spec))
        except TrackerUnavailable as err:
            warn(f"{backend.label} tracking is off for this run: {err}")
    return trackers


def preload_libraries(spec: SweepSpec) -> None:
    """Import what the enabled trackers will use (most of a tracker process's start-up CPU),
    creating nothing: no store, no run, no folder. A library that is missing is left for
    `enabled_trackers` to report."""
    backends = enabled_backends(spec)
    for backend in backends:
        if backend.import_first is not None:
            backend.import_first()
    for backend in backends:
        if backend.preload is not None:
            with contextlib.suppress(TrackerUnavailable, ImportError):
                backend.preload(spec)


def build_trackers(spec: SweepSpec, warn: Callable[[str], None]):
    """The trackers of a running sweep: in a low-priority child process (see `process.py`), or
    nothing at all when the spec enables none. EXPANDER_SWEEPS_TRACKERS=thread keeps them on a
    background thread of this process instead (for debugging a backend); =off (set by `launch
    --workers N` for its workers, whose trials it logs itself) turns them off."""
    if not any_enabled(spec):
        return FanOut([], warn)
    if os.environ.get("EXPANDER_SWEEPS_TRACKERS") == "off":  # a local worker: its launch tracks (syncing.TrialRelay)
        return FanOut([], warn)
    if os.environ.get("EXPANDER_SWEEPS_TRACKERS", "process") == "thread":
        return FanOut(enabled_trackers(spec, warn), warn, background=True)
    from .process import TrackerProcess

    return TrackerProcess(spec, warn)
