"""Build the trackers a spec enables."""

from __future__ import annotations

from collections.abc import Callable

from ..spec import SweepSpec
from .base import FanOut, Tracker, TrackerUnavailable

__all__ = ["build_trackers"]


def build_trackers(spec: SweepSpec, warn: Callable[[str], None]) -> FanOut:
    trackers: list[Tracker] = []
    if spec.tracking.mlflow.enabled:
        from .mlflow_backend import MlflowTracker

        try:
            trackers.append(MlflowTracker(spec))
        except TrackerUnavailable as err:
            warn(f"MLflow tracking is off for this run: {err}")
    return FanOut(trackers, warn)
