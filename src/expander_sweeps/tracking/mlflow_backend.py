"""MLflow backend: one run per trial, in an embedded SQLite store by default."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

from ..spec import SweepSpec
from .base import TrackerUnavailable

__all__ = ["MlflowTracker", "mlflow_uri"]


def mlflow_uri(spec: SweepSpec) -> str:
    """The spec's URI, else $MLFLOW_TRACKING_URI, else SQLite in the run folder."""
    if spec.tracking.mlflow.uri:
        return spec.tracking.mlflow.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(spec.run_path / 'mlflow.db').resolve()}"


class MlflowTracker:
    name = "mlflow"

    def __init__(self, spec: SweepSpec):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise TrackerUnavailable(
                "the mlflow package is not installed; pip install mlflow, or set tracking.mlflow.enabled=false"
            ) from None
        # The embedded store announces its table migrations at INFO on every first use; noise here.
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
        self.uri = mlflow_uri(spec)
        if self.uri.startswith("sqlite:///"):
            spec.run_path.mkdir(parents=True, exist_ok=True)
        self._client = MlflowClient(tracking_uri=self.uri)
        self._experiment_name = spec.tracking.mlflow.experiment or spec.name
        # Embedded store: artifacts beside the database, not in ./mlruns of whatever folder we run in.
        self._artifact_location = (
            (spec.run_path / "mlartifacts").resolve().as_uri() if self.uri.startswith("sqlite:") else None
        )
        self._experiment_id: str | None = None
        self._run_id: str | None = None
        self._sweep = spec.name

    def start_sweep(self, sweep: str, config: dict[str, Any]) -> None:
        existing = self._client.get_experiment_by_name(self._experiment_name)
        if existing is not None:
            self._experiment_id = existing.experiment_id
        else:
            self._experiment_id = self._client.create_experiment(
                self._experiment_name, artifact_location=self._artifact_location
            )

    def start_trial(self, number: int, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        run = self._client.create_run(
            self._experiment_id,
            run_name=f"{self._sweep}-trial-{number}",
            tags={"expander_sweeps.sweep": self._sweep, "expander_sweeps.trial": str(number)},
        )
        self._run_id = run.info.run_id
        self._client.log_batch(self._run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric
        from mlflow.utils.time import get_current_time_millis

        now = get_current_time_millis()
        # MLflow stores no infinities faithfully; an unbounded Delta (dense layer) is left out
        # here and stays +inf in the Optuna study and the report.
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if math.isfinite(v)]
        for start in range(0, len(batch), 1000):  # log_batch takes at most 1000 metrics a call
            self._client.log_batch(self._run_id, metrics=batch[start : start + 1000])

    def log_artifact(self, path: str, folder: str | None = None) -> None:
        if Path(path).exists():
            self._client.log_artifact(self._run_id, path, artifact_path=folder)

    def end_trial(self, status: str) -> None:
        if self._run_id is not None:
            self._client.set_terminated(self._run_id, status=status)
            self._run_id = None

    def end_sweep(self) -> None:
        if self._run_id is not None:  # a trial interrupted mid-way
            self.end_trial("KILLED")
