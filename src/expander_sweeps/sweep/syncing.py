"""The study -> trackers direction: the report on the sweep's parent run, registry aliases,
and `sync`, which pushes every finished trial a tracker lacks (twice is the same as once)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from ..spec import SweepSpec
from ..tracking import build_trackers, enabled_trackers, tracker_config
from ..tracking.backends import enabled_backends
from ..tracking.base import ReportSession
from ..tracking.publishing import publish_files, push_missing, trial_record
from .pacing import write_lag
from .study import StudyState

if TYPE_CHECKING:  # not imported at run time: a tracker process publishes without plotting libraries
    from ..reporting import Report

__all__ = ["publish_report", "publish_files", "sync_trackers", "trial_record", "TrialRelay", "tracker_failure"]


def publish_report(spec: SweepSpec, study: optuna.Study, report: Report, warn: Callable[[str], None],
                   trackers: ReportSession | None = None) -> dict:
    """Report files onto the sweep's parent run (MLflow) and a summary run (W&B); registry aliases.
    With the launch's `trackers` (still open), they publish it, after every trial they log."""
    if trackers is not None:
        return trackers.publish(spec, study, report, warn)
    return publish_files(spec, study, report.published_files(),
                         report.trials.to_dict(orient="records"), warn)


def sync_trackers(spec: SweepSpec, study: optuna.Study, warn: Callable[[str], None],
                  say: Callable[[str], None]) -> dict[str, int]:
    """Log every finished trial of `study` that a tracker lacks; returns tracker -> trials pushed."""

    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    pushed = {}
    for tracker in enabled_trackers(spec, warn):
        tracker.start_sweep(spec.name, tracker_config(spec), StudyState(study))
        pushed[tracker.name] = push_missing(tracker, spec, study, warn, say, finished)
    return pushed


def tracker_failure(spec: SweepSpec, err: Exception) -> str:
    """One line for a tracker store that cannot be used (a damaged mlflow.db, a server that does
    not answer): which store, the reason, what to do. The study keeps every result, so sync can
    always run again."""

    reason = (str(err).splitlines() or [""])[0]
    for backend in enabled_backends(spec):
        explained = backend.explain_failure(spec, err) if backend.explain_failure else None
        if explained:
            return explained
    return (f"a tracker failed ({type(err).__name__}: {reason}); the study holds every result: fix the tracker "
            "and run `expander-sweeps sync` again")


class TrialRelay:
    """The trackers of a `launch --workers N` on one machine, fed from the study by the launching
    process: each trial is logged when it has finished (curves, metrics, files, model).

    Why not in each worker: a tracker process costs about 7 s of CPU before its first call
    (importing MLflow and torch, opening the store), and with every core busy training, N of
    them made a 2-worker sweep slower than one process. One tracker process for the launch,
    idle between trials, costs that once. Trials finished before this launch are left alone
    (`sync` pushes any a tracker lacks)."""

    def __init__(self, spec: SweepSpec, warn: Callable[[str], None], finished_before: set[int],
                 lag_file: Path | None = None):
        self._spec, self._warn = spec, warn
        self._seen = set(finished_before)
        # Started now, before the workers: the tracker process imports its libraries while this
        # process and the workers start up, and creates nothing before `begin`, once the
        # workers have checked the data and created the study.
        self._trackers = build_trackers(spec, warn)
        self._begun = False
        self._finished = False
        # Where the workers read how far behind the trackers are (pacing.py): they pause
        # training when it passes tracking.max_lag_seconds.
        self._lag_file = lag_file

    def push_finished(self, study: optuna.Study) -> None:
        if not self._begun:
            self._begun = True
            self._trackers.begin(self._spec, study)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
            if trial.number in self._seen:
                continue
            self._seen.add(trial.number)
            try:
                if trial.state == TrialState.COMPLETE:
                    self._trackers.log_trial(trial_record(trial, self._spec.run_path))
                else:
                    self._trackers.start_trial(trial.number, {**trial.params, "error": trial.user_attrs.get("error", "")})
                    self._trackers.end_trial("FAILED")
            except Exception as err:  # a trial's files gone: the others still go
                self._warn(f"trial {trial.number} could not be sent to the trackers ({type(err).__name__}: {err}); "
                           "`expander-sweeps sync SPEC` retries")
        self._tell_workers_the_lag()

    def _tell_workers_the_lag(self, over: bool = False) -> None:
        """The trackers' lag into the workers' file while it is past half the limit (the workers
        pause past the limit, resume within half of it); no file otherwise, or once `over`."""
        if self._lag_file is None:
            return
        lag = 0.0 if over else self._trackers.lag_seconds()
        try:
            write_lag(self._lag_file, lag if lag > self._spec.tracking.max_lag_seconds / 2 else 0.0)
        except OSError as err:  # a full disk: the workers then simply do not pause
            self._warn(f"could not write the trackers' lag for the workers ({err})")
            self._lag_file = None

    def publish(self, spec: SweepSpec, study: optuna.Study, report: Report, warn: Callable[[str], None]) -> dict:
        """The report onto the trackers: by the launch's tracker process once it has logged every
        trial, or here if no trial was sent to it."""
        self.finish(study)
        return publish_report(spec, study, report, warn, self._trackers if self._begun else None)

    def finish(self, study: optuna.Study | None) -> None:
        """Push what finished last and end the sweep in the trackers, without waiting for them
        (the launch writes the report meanwhile; `close` waits)."""
        if self._finished:
            return
        self._finished = True
        if study is not None:
            self.push_finished(study)
        self._tell_workers_the_lag(over=True)  # the workers are done or stopping
        if self._begun:
            self._trackers.end_sweep()

    def close(self, study: optuna.Study | None = None) -> None:
        """`finish` (if not done yet), then wait until the trackers have logged everything."""
        self.finish(study)
        if self._begun:
            self._trackers.close()
        else:  # no study came to be (the workers stopped at the data): nothing was sent
            self._trackers.abandon()
