"""Build the trackers a spec enables."""

from __future__ import annotations

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


def build_trackers(spec: SweepSpec, warn: Callable[[str], None], background: bool = True) -> FanOut:
    return FanOut(enabled_trackers(spec, warn), warn, background)
