"""Build the trackers a spec enables."""

from __future__ import annotations

import os
from collections.abc import Callable

from ..spec import SweepSpec
from .base import FanOut, Tracker, TrackerUnavailable

__all__ = ["build_trackers", "enabled_trackers"]


def enabled_trackers(spec: SweepSpec, warn: Callable[[str], None]) -> list[Tracker]:
    """Each enabled tracker; one that cannot start is reported (with how to fix it) and skipped."""
    trackers: list[Tracker] = []
    if spec.tracking.mlflow.enabled:
        from .mlflow_backend import MlflowTracker

        try:
            trackers.append(MlflowTracker(spec))
        except TrackerUnavailable as err:
            warn(f"MLflow tracking is off for this run: {err}")
    if spec.tracking.wandb.enabled:
        from .wandb_backend import WandbTracker

        try:
            trackers.append(WandbTracker(spec))
        except TrackerUnavailable as err:
            warn(f"W&B tracking is off for this run: {err}")
    return trackers


def build_trackers(spec: SweepSpec, warn: Callable[[str], None]):
    """The trackers of a running sweep: in a low-priority child process (see `process.py`), or
    nothing at all when the spec enables none. EXPANDER_SWEEPS_TRACKERS=thread keeps them on a
    background thread of this process instead (for debugging a backend); =off (set by `launch
    --workers N` for its workers, whose trials it logs itself) turns them off."""
    if not (spec.tracking.mlflow.enabled or spec.tracking.wandb.enabled):
        return FanOut([], warn)
    if os.environ.get("EXPANDER_SWEEPS_TRACKERS") == "off":  # a local worker: its launch tracks (syncing.TrialRelay)
        return FanOut([], warn)
    if os.environ.get("EXPANDER_SWEEPS_TRACKERS", "process") == "thread":
        return FanOut(enabled_trackers(spec, warn), warn, background=True)
    from .process import TrackerProcess

    return TrackerProcess(spec, warn)
