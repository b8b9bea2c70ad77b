"""Build the trackers a spec enables."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

from ..spec import SweepSpec
from .base import FanOut, Tracker, TrackerUnavailable

__all__ = ["build_trackers", "enabled_trackers", "preload_libraries"]


def enabled_trackers(spec: SweepSpec, warn: Callable[[str], None]) -> list[Tracker]:
    """Each enabled tracker; one that cannot start is reported (with how to fix it) and skipped."""
    trackers: list[Tracker] = []
    if spec.tracking.wandb.enabled:
        _import_wandb_first()
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


def preload_libraries(spec: SweepSpec) -> None:
    """Import what the enabled trackers will use (most of a tracker process's start-up CPU),
    creating nothing: no store, no run, no folder. A library that is missing is left for
    `enabled_trackers` to report."""
    if spec.tracking.wandb.enabled:
        _import_wandb_first()
    if spec.tracking.mlflow.enabled:
        from .mlflow_backend import _configure_mlflow, mlflow_uri

        with contextlib.suppress(TrackerUnavailable, ImportError):
            _configure_mlflow()  # imports MLflow, sets how it behaves (environment, log levels)
            from mlflow.tracking import MlflowClient  # noqa: F401

            if not mlflow_uri(spec).startswith(("http:", "https:", "databricks")):  # a database store
                import mlflow.store.tracking.sqlalchemy_store  # noqa: F401


def _import_wandb_first() -> None:
    """Import W&B's SDK, with the public API a run's artifacts use, before MLflow's. Pydantic
    finds each W&B model's field docstrings through `inspect.getmodule`, which walks every loaded
    module; after MLflow, SQLAlchemy and Optuna (about 2,000 modules more) that cost more CPU in
    the tracker process: replaying the quickstart's 13 trials into MLflow + W&B took 8.0 s of
    CPU with W&B imported after MLflow, 7.3 s with it first (medians of 3 alternating pairs)."""
    with contextlib.suppress(ImportError):  # no W&B: its tracker says so when it is built
        import wandb.apis.public  # noqa: F401


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
