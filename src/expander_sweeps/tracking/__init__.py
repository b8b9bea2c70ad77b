"""Experiment trackers behind one small protocol; the Optuna study stays the source of truth.

Backends import their SDK in their own constructor, so a missing SDK only matters when the
spec enables that tracker. `FanOut` sends each call to every backend and isolates failures:
a tracker that fails is reported once, with the reason, and the trial goes on.
"""

from __future__ import annotations

from .base import FanOut, SweepState, Tracker, TrackerUnavailable, TrialRecord, tracker_config
from .factory import build_trackers, enabled_trackers

__all__ = ["Tracker", "FanOut", "TrackerUnavailable", "SweepState", "TrialRecord", "tracker_config", "build_trackers",
           "enabled_trackers"]
