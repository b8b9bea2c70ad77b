"""The Tracker protocol, and the fan-out that runs every tracker off the training path."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["Tracker", "TrackerCalls", "ReportSession", "FanOut", "TrackerUnavailable", "SweepState", "TrialRecord",
           "data_source"]


class TrackerUnavailable(RuntimeError):
    """A tracker cannot start (SDK missing, server unreachable); the message says how to fix it."""


class SweepState(Protocol):
    """Small shared state of a sweep, kept in the study so every worker sees it (MLflow's parent run id)."""

    def get(self, key: str) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...

    def failed_trials(self) -> set[int]:
        """Numbers of trials the study holds as failed (a killed worker's trial, once found stale)."""
        ...

    def unfinished(self) -> int:
        """Trials still waiting or running anywhere."""
        ...


@dataclass
class TrialRecord:
    """Everything a tracker logs for one finished trial; built live or, for `sync`, from the study."""

    number: int
    params: dict[str, Any]
    metrics: dict[str, float]
    history: list[dict] = field(default_factory=list)  # per-epoch {phase, epoch, loss, train_accuracy}
    files: dict[str, str] = field(default_factory=dict)
    # Unix seconds when the trial began and ended: the trackers' run times, whenever they log it
    # (a relay or `sync` logs a trial after it ended; a batched group's after the group).
    started: float | None = None
    ended: float | None = None


@runtime_checkable
class Tracker(Protocol):
    name: str

    def start_sweep(self, sweep: str, config: dict[str, Any], state: SweepState) -> None: ...

    def start_trial(self, number: int, params: dict[str, Any], started: float | None = None) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...

    def log_history(self, steps: list[tuple[dict[str, float], int]]) -> None: ...

    def log_artifact(self, path: str, folder: str | None = None) -> None: ...

    def log_model(self, record: TrialRecord) -> None: ...

    def end_trial(self, status: str, ended: float | None = None) -> None: ...

    def end_sweep(self, report_files: list[str]) -> None: ...

    def logged_trials(self) -> set[int]: ...


class ReportSession(Protocol):
    """What holds a sweep's trackers once its trials have run: the report goes on top, then it
    closes (waiting for what it still has to log). FanOut and TrackerProcess (a launch's own
    trackers, both TrackerCalls) and syncing.TrialRelay (a local multi-worker launch's) are this."""

    def publish(self, spec: Any, study: Any, report: Any, warn: Callable[[str], None]) -> dict: ...

    def close(self) -> None: ...


class TrackerCalls:
    """The per-trial calls of a running sweep (the session a sweep's training loop talks to), each handed to `_each(method, *args)`: FanOut runs
    them here (or on its thread), TrackerProcess queues them to its child process.

    Per-epoch metrics are batched: held here and handed on as one `log_history` call when the
    trial ends, or every HISTORY_FLUSH_SECONDS during a long trial (so its curves still grow
    live). One call per trial instead of one per epoch is what keeps tracking cheap."""

    HISTORY_FLUSH_SECONDS = 30.0
    _history: list[tuple[dict[str, float], int]] | None = None
    _flushed_at = 0.0

    def _each(self, method: str, *args: Any) -> None:
        raise NotImplementedError

    def between_batches(self) -> None:
        """Called by the training loop after every batch: trackers that share the training's
        cores may ask for one here (TrackerProcess). Nothing by default."""

    def abandon(self) -> None:
        """The sweep stopped before its first call (bad data, nothing to run): let the trackers
        go. A TrackerProcess, which has created nothing yet, is stopped without waiting for it."""
        self.close()

    def lag_seconds(self) -> float:
        """How long the oldest call not yet run has waited (0 when none): how far the trackers
        are behind training. Only a TrackerProcess, which runs on idle CPU time, falls behind
        for long; the others say 0."""
        return 0.0

    def start_trial(self, number: int, params: dict[str, Any], started: float | None = None) -> None:
        """`started`: Unix seconds when the trial began (None: now, when the tracker gets the call)."""
        self._history, self._flushed_at = [], time.monotonic()
        self._each("start_trial", number, params, started)

    def log_history(self, steps: list[tuple[dict[str, float], int]]) -> None:
        self._each("log_history", list(steps))

    def _flush_history(self) -> None:
        if self._history:
            self.log_history(self._history)
            self._history.clear()
        self._flushed_at = time.monotonic()

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._each("log_metrics", dict(metrics), step)

    def log_artifact(self, path: str, folder: str | None = None) -> None:
        self._each("log_artifact", path, folder)

    def log_model(self, record: TrialRecord) -> None:
        self._each("log_model", record)

    def end_trial(self, status: str, ended: float | None = None) -> None:
        self._flush_history()  # a failed trial's curves too
        self._each("end_trial", status, ended)

    def end_sweep(self, report_files: list[str] | None = None) -> None:
        self._each("end_sweep", list(report_files or []))

    def log_epoch(self, phase: str, epoch: int, loss: float, train_accuracy: float) -> None:
        if self._history is None:
            self._history = []
        self._history.append(({f"{phase}/loss": loss, f"{phase}/train_accuracy": train_accuracy}, epoch))
        if time.monotonic() - self._flushed_at > self.HISTORY_FLUSH_SECONDS:
            self._flush_history()

    def finish_trial(self, record: TrialRecord, status: str = "FINISHED") -> None:
        """The end of a trial whose run was started: its curves, final metrics, files, model, status."""
        self._flush_history()
        self.log_metrics(record.metrics)
        for key, path in record.files.items():
            # The example and the MLflow payload go into the logged model; the shared dense
            # model is lineage only.
            if key not in ("example", "dense_checkpoint", "mlflow_model"):
                self.log_artifact(path, "trial")
        self.log_model(record)
        self.end_trial(status, record.ended)

    def publish(self, spec, study, report, warn: Callable[[str], None]) -> dict:
        """Publish the sweep's report (publishing.publish_files) once every call made before has
        run; returns the registry aliases set."""
        from .publishing import publish_files

        self.close()
        return publish_files(spec, study, report.published_files(), report.trials.to_dict(orient="records"), warn)

    def log_trial(self, record: TrialRecord, status: str = "FINISHED") -> None:
        """A whole finished trial at once (for `sync`): params, per-epoch history, the rest."""
        self.start_trial(record.number, record.params, record.started)
        for entry in record.history:
            self.log_epoch(entry["phase"], entry["epoch"], entry["loss"], entry["train_accuracy"])
        self.finish_trial(record, status)


class FanOut(TrackerCalls):
    """Sends each call to every live tracker, in order, on a background thread.

    Training never waits for a tracker (a W&B run takes seconds to start, a model upload
    longer): calls are queued and `close()` waits for the queue to drain. A tracker that
    raises is reported once, with the reason, and left out of every later call; the results
    are safe in the study, and `expander-sweeps sync` pushes them later.
    """

    name = "fan-out"

    def __init__(self, trackers: list[Tracker], warn: Callable[[str], None], background: bool = True):
        self._trackers = list(trackers)
        self._warn = warn
        self.seconds: dict[str, float] = {}  # time spent per tracker and call, for benchmarks
        self._queue: queue.Queue | None = queue.Queue() if background and trackers else None
        self._thread = None
        if self._queue is not None:
            self._thread = threading.Thread(target=self._drain, name="trackers", daemon=True)
            self._thread.start()

    @property
    def names(self) -> list[str]:
        return [t.name for t in self._trackers]

    def _call(self, method: str, args: tuple) -> None:
        for tracker in list(self._trackers):
            started = time.perf_counter()
            try:
                getattr(tracker, method)(*args)
            except Exception as err:  # a tracker must never take a trial down with it
                self._trackers.remove(tracker)
                self._warn(
                    f"tracker '{tracker.name}' failed in {method} ({type(err).__name__}: {err}); it is off "
                    "for the rest of this run. The results are safe in the Optuna study; "
                    "`expander-sweeps sync SPEC` pushes them when the tracker is back."
                )
            finally:
                key = f"{tracker.name}.{method}"
                self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - started

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            self._call(*item)

    def _each(self, method: str, *args: Any) -> None:
        if self._queue is not None:
            self._queue.put((method, args))
        else:
            self._call(method, args)

    def start_sweep(self, sweep: str, config: dict[str, Any], state: SweepState) -> None:
        # Synchronous: the caller holds the study's lock, so that parallel workers agree on one
        # parent run.
        self._call("start_sweep", (sweep, config, state))

    def begin(self, spec, study) -> None:
        """Start the sweep in every tracker under the study's sweep lock (parallel workers then
        agree on one parent run). TrackerProcess has the same method; its child takes the lock."""
        if not self._trackers:
            return
        from ..sweep.study import StudyState, sweep_lock

        with sweep_lock(study, spec):
            self.start_sweep(spec.name, tracker_config(spec), StudyState(study))

    def close(self) -> None:
        """Wait until every queued call has run."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None


def tracker_config(spec) -> dict:
    """The spec as trackers record it: URLs without their passwords."""
    from ..spec import redact_url

    config = spec.model_dump(mode="json")
    if config["study"]["storage"]:
        config["study"]["storage"] = redact_url(config["study"]["storage"])
    if config["tracking"]["mlflow"]["uri"]:
        config["tracking"]["mlflow"]["uri"] = redact_url(config["tracking"]["mlflow"]["uri"])
    return config


def data_source(spec) -> str:
    """Where a sweep's data comes from, as trackers record it (JSON): the data folder's URI, or
    a custom loader with its arguments."""
    import json
    from pathlib import Path

    data = spec.data
    if getattr(data, "loader", None):
        return json.dumps({"loader": data.loader, "args": data.args}, default=str)
    return json.dumps({"uri": Path(data.root).expanduser().resolve().as_uri()})
