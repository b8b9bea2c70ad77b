"""The report onto the trackers, and trials a tracker lacks pushed to it: what a launch's own
trackers (FanOut, the tracker process's child) and `sync` call. It lives in tracking/ so that
tracking/ imports nothing from the modules that use it (syncing.py does)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ..results import PHASE_SECONDS_ATTR, timing_metrics
from ..spec import SweepSpec
from ..sweep.study import StudyState, read_result
from .base import FanOut, TrialRecord, tracker_config
from .factory import enabled_trackers

__all__ = ["trial_record", "publish_files", "push_missing", "aliases_and_checkpoints"]


def trial_record(trial: optuna.trial.FrozenTrial, run_dir: Path) -> TrialRecord:
    """A finished trial as the trackers log it, rebuilt from the study and its files."""
    result = read_result(trial, run_dir)
    files = result.files
    history = json.loads(Path(files["history"]).read_text()) if "history" in files else []
    # The run's times are the trial's own, not those of this call (a relay or sync logs it later).
    started = trial.datetime_start.timestamp() if trial.datetime_start else None
    ended = trial.datetime_complete.timestamp() if trial.datetime_complete else None
    metrics = {**result.metrics, **timing_metrics(trial.user_attrs.get(PHASE_SECONDS_ATTR), started, ended)}
    return TrialRecord(trial.number, result.params, metrics, history, files, started, ended)


def publish_files(spec: SweepSpec, study: optuna.Study, files: list[str], rows: list[dict],
                  warn: Callable[[str], None]) -> dict:
    """publish_report from the report's files and trial rows (what a tracker process is sent)."""
    aliases = {}
    try:
        trackers = enabled_trackers(spec, warn)
    except Exception as err:  # a tracker store that cannot be opened at all (a broken mlflow.db)
        warn(f"could not open the trackers to publish the report ({type(err).__name__}: {err}); "
             "`expander-sweeps sync SPEC` retries")
        return aliases
    for tracker in trackers:
        try:
            tracker.start_sweep(spec.name, tracker_config(spec), StudyState(study))
            # Trials a killed launch finished but never logged (or left half-logged) reach the
            # tracker here, at the end of the next launch, before the report goes on top.
            pushed = push_missing(tracker, spec, study, warn)
            if pushed:
                warn(f"{tracker.name} lacked {pushed} finished trial(s) (a launch stopped before logging "
                     "them); logged now")
            # A tracker's own way of publishing (registry aliases), if it has one: see backends.py.
            publish = getattr(tracker, "publish", None)
            if publish is not None and rows:
                aliases.update(publish(study, rows) or {})
            tracker.end_sweep(files)
        except Exception as err:
            warn(f"could not publish the report to {tracker.name} ({type(err).__name__}: {err}); "
                 "`expander-sweeps sync SPEC` retries")
    return aliases


def aliases_and_checkpoints(spec: SweepSpec, study: optuna.Study, rows: list[dict]) -> tuple[dict, dict[int, str]]:
    """The registry aliases' trials (results.choose_aliases) and the checkpoints of those trials."""
    from ..results import choose_aliases

    chosen = choose_aliases(rows, spec.masks.layers, spec.report.drop_threshold)
    numbers = {int(row["trial"]) for row in chosen.values()}
    checkpoints = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if trial.number in numbers:
            checkpoint = read_result(trial, spec.run_path).files.get("checkpoint")
            if checkpoint:
                checkpoints[trial.number] = checkpoint
    return chosen, checkpoints


def push_missing(tracker, spec: SweepSpec, study: optuna.Study, warn: Callable[[str], None],
                  say: Callable[[str], None] | None = None, finished: list | None = None) -> int:
    """Log every finished trial of the study that `tracker` (its sweep started) has not logged
    in full; how many were pushed (0 when the tracker failed on the way, which was reported)."""
    if finished is None:
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    logged = tracker.logged_trials()
    missing = [t for t in finished if t.number not in logged]
    if say is not None:
        say(f"{tracker.name}: {len(finished) - len(missing)} of {len(finished)} trials present, pushing {len(missing)}")
    single = FanOut([tracker], warn, background=False)
    for trial in missing:
        single.log_trial(trial_record(trial, spec.run_path))
        if tracker.name not in single.names:
            return 0  # it failed and was reported; stop pushing to it
    return len(missing)
