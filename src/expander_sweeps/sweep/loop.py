"""The loop that runs a sweep: a short function of named steps over the study (`study.py`), the
search space (`space.py`), one trial (`trial.py`) and the trackers (`tracking/`).

Grid sweeps (the paper's protocol) are enumerated by the search space, not by Optuna's
GridSampler: every grid point without a finished trial is enqueued, so relaunching a spec
runs exactly the points that are missing (failed and interrupted trials included) and never
reruns a finished one. Other samplers draw points until the study holds `n_trials` trials.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from ..results import CORRECT_ATTR, PHASE_SECONDS_ATTR, timing_metrics
from ..spec import SweepSpec
from ..tracking import TrialRecord, build_trackers
from ..tracking.backends import trial_file_hooks
from ..tracking.base import TrackerCalls
from .pacing import LAG_FILE_VARIABLE, Pacer, lag_from_file
from .space import TrialPlan, plan_of, suggest_plan
from .study import (
    SpecMismatch,
    StorageError,
    bind_spec,
    claim_trial,
    claim_waiting,
    enqueue_grid,
    enqueue_points,
    fail_stale,
    fractions_on_log_scale,
    heartbeat,
    open_study,
    record_result,
    recorded_method_choices,
    retry_trial,
    running_trials,
    store_trial_artifacts,
    sweep_lock,
    trial_point,
    waiting_trials,
)
from .trial import SweepContext, TrialHooks, TrialResult, run_trial, trial_params
from .trial_group import choose_engine, group_key, group_limit, run_group

__all__ = ["SweepEvents", "LaunchResult", "StorageError", "SpecMismatch", "open_study", "launch_study", "describe_failure"]


class SweepEvents:
    """What a sweep reports as it runs; the CLI draws progress from it. Every method is a no-op here."""

    def sweep_started(self, spec: SweepSpec, to_run: int, done: int, data: str, device: str,
                      running: int = 0, engine: str = "") -> None:
        """`to_run` trials wait for a worker; `running` more are RUNNING elsewhere (a live worker's,
        or a dead one's that this process reruns once its heartbeat is stale). `engine`: how
        trials are fine-tuned, and why (trial_group.choose_engine)."""

    def trial_started(self, number: int, plan: TrialPlan) -> None: ...

    def group_started(self, numbers: list[int], plans: list[TrialPlan]) -> None:
        """Trials `numbers` start together, fine-tuned as one batch (the batched engine)."""

    def phase_started(self, phase: str, epochs: int, batches: int) -> None: ...

    def batch_done(self) -> None: ...

    def epoch_done(self, stats: Any) -> None: ...

    def trial_finished(self, number: int, plan: TrialPlan, result: TrialResult) -> None: ...

    def trial_failed(self, number: int, plan: TrialPlan | None, error: BaseException) -> None: ...

    def warn(self, message: str) -> None: ...


@dataclass
class LaunchResult:
    study: optuna.Study
    ran: int
    failed: int
    tracker_seconds: dict[str, float] = field(default_factory=dict)  # per tracker and call
    # With launch_study(..., drain_later=True): the trackers, still logging the last trials;
    # the caller calls its close() (which waits for them) when it has done its own work.
    draining: TrackerCalls | None = None


def launch_study(spec: SweepSpec, events: SweepEvents | None = None, context: SweepContext | None = None,
                 point: dict[str, Any] | None = None, extend: bool = False,
                 drain_later: bool = False) -> LaunchResult:
    """Run trials until the study has every one it needs, recording each in the study, then in
    the trackers. Any number of processes may run this on the same study at once.

    With `point` (Optuna parameters, as a `wandb agent` passes them), run that one point only
    (unless the study already has it). A spec whose settings differ from the study's is
    refused (SpecMismatch); a changed search space only with `extend`.

    The trackers lag behind training by the last trial or two. `drain_later`: once every trial
    has run, return without waiting for them, in `LaunchResult.draining`, so that the caller
    writes the report meanwhile (on another core) and closes them after; an interrupted sweep
    still waits for them here."""
    events = events or SweepEvents()
    # A tracker process starts first: importing its libraries (seconds of CPU) overlaps loading
    # the data, on a core that would otherwise idle. It creates nothing (no store, no run) before
    # its first call, `begin`, so a missing or broken dataset is still reported before anything is.
    trackers = build_trackers(spec, events.warn)  # a FanOut, or the same calls served by a child process
    try:
        ctx = context or SweepContext(spec)
        ctx.trial_file_hooks = trial_file_hooks(spec)  # MLflow's model payload, say: see tracking/backends.py
        study = open_study(spec)
        fail_stale(study)
        _enqueue(study, spec, point, extend, events, ctx.data_fingerprint)
        study.set_user_attr("provenance", ctx.provenance)  # of the latest launch; each trial has its own
        to_run = 1 if point is not None else _to_run(study, spec)
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        # Grid points held RUNNING by another process are work too: a dead worker's come back
        # as WAITING once their heartbeat is stale, and this process runs them then.
        running = len(running_trials(study)) if point is None and spec.study.sampler == "grid" else 0
    except BaseException:
        trackers.abandon()
        raise
    if to_run == 0 and not running:
        trackers.abandon()
        events.sweep_started(spec, 0, done, "", "")
        return LaunchResult(study, 0, 0)

    engine = choose_engine(spec, ctx.device, point is not None)
    events.sweep_started(spec, to_run, done, ctx.description, str(ctx.device), running, engine.why)
    trackers.begin(spec, study)
    pace = _pacer(spec, trackers, events)
    ran = failed = 0
    # How this study's trials recorded the space (Optuna refuses a change within a study).
    encoding = (fractions_on_log_scale(study), recorded_method_choices(study))
    every_trial_ran = False
    try:
        with _terminate_as_interrupt():
            for trial in _claimed_trials(study, spec, point, events):
                group = [trial]
                if engine.engine == "batched":
                    group += _claim_partners(study, spec, ctx, trial)
                with contextlib.ExitStack() as beating:
                    for member in group:  # each trial keeps its own heartbeat
                        beating.enter_context(heartbeat(study, member._trial_id, spec.study.heartbeat_seconds))
                    if len(group) == 1:
                        completed = [_run_one(trial, spec, ctx, trackers, events, encoding, pace)]
                    else:
                        completed = _run_group(group, spec, ctx, trackers, events, encoding, pace)
                ran += len(group)
                failed += completed.count(False)
        every_trial_ran = True
    finally:
        trackers.end_sweep()
        if not (drain_later and every_trial_ran):
            trackers.close()  # wait for the trackers' queue to drain
    if drain_later:
        return LaunchResult(study, ran, failed, draining=trackers)
    return LaunchResult(study, ran, failed, trackers.seconds)


def _enqueue(study: optuna.Study, spec: SweepSpec, point: dict[str, Any] | None, extend: bool,
             events: SweepEvents, data_fingerprint: str | None = None) -> None:
    """Check the spec against the study, then put the points this launch runs into the study
    as WAITING trials (one process at a time)."""
    with sweep_lock(study, spec):
        note = bind_spec(study, spec, extend, data_fingerprint)
        if note:
            events.warn(note)
        if point is None and spec.study.sampler != "grid":
            return  # sampled trials are asked for one at a time
        if point is not None:
            enqueue_points(study, [point], spec)
        else:
            enqueue_grid(study, spec)


def _to_run(study: optuna.Study, spec: SweepSpec) -> int:
    if spec.study.sampler == "grid":
        return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    started = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
    return max(0, spec.study.n_trials - len(started))


def _next_trial(study: optuna.Study, spec: SweepSpec, point: dict[str, Any] | None) -> optuna.Trial | None:
    if point is not None:
        return claim_waiting(study, spec, point)
    if spec.study.sampler == "grid":
        return claim_waiting(study, spec)
    started = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
    if len(started) >= spec.study.n_trials:
        return None
    return study.ask()  # pops a retried (WAITING) trial first, else samples a new one


def _claimed_trials(study: optuna.Study, spec: SweepSpec, point: dict[str, Any] | None,
                    events: SweepEvents) -> Iterator[optuna.Trial]:
    """Trials claimed for this process until the study needs no more. Trials still RUNNING
    elsewhere may belong to a dead worker: wait until they finish, or go stale and come back
    as WAITING, before calling the study done (but not forever)."""
    patience = spec.study.grace_seconds + 2 * spec.study.heartbeat_seconds
    idle_since = None
    while True:
        fail_stale(study)
        trial = _next_trial(study, spec, point)
        if trial is not None:
            idle_since = None
            yield trial
            continue
        if not running_trials(study) or spec.study.sampler != "grid" or point is not None:
            return
        idle_since = idle_since or time.monotonic()
        if time.monotonic() - idle_since > patience:
            events.warn(f"trials {[t.number for t in running_trials(study)]} are still RUNNING "
                        "elsewhere; leaving them to their workers")
            return
        time.sleep(min(1.0, spec.study.heartbeat_seconds))


def _pacer(spec: SweepSpec, trackers: TrackerCalls, events: SweepEvents) -> Pacer:
    """What pauses training when the trackers fall too far behind (pacing.py): this process's
    own tracker process, or in a worker of `launch --workers N`, its launch's (the file it names)."""
    lag_file = os.environ.get(LAG_FILE_VARIABLE)
    lag = (lambda: lag_from_file(Path(lag_file))) if lag_file else trackers.lag_seconds
    return Pacer(lag, spec.tracking.max_lag_seconds, events.warn)


def _run_one(trial: optuna.Trial, spec: SweepSpec, ctx: SweepContext, trackers: TrackerCalls, events: SweepEvents,
             encoding: tuple, pace: Pacer) -> bool:
    """One trial, told to the study as COMPLETE or FAIL (with the reason), then to the trackers.
    True if it completed."""
    plan = None
    started = time.time()
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    try:
        plan = suggest_plan(trial, spec, *encoding)
        events.trial_started(trial.number, plan)
        trackers.start_trial(trial.number, _start_params(spec, ctx, plan, "per_trial", 1), started)
        learning_curve = len(trial.study.directions) == 1  # Optuna keeps intermediate values for one objective

        def on_epoch(stats) -> None:
            events.epoch_done(stats)
            _log_epoch(trial, trackers, stats, learning_curve)

        on_batch = _batch_callback(spec, ctx, trackers, events, pace)
        hooks = TrialHooks(on_phase=events.phase_started, on_batch=on_batch, on_epoch=on_epoch)
        result = run_trial(ctx, plan, spec.run_path / "trials" / f"{trial.number:05d}", hooks)
    except Exception as err:
        _record_failure(trial, trackers, events, plan, err)
        return False
    except KeyboardInterrupt:
        _record_interrupt(trial, spec)
        trackers.end_trial("KILLED")
        raise
    _record_success(trial, spec, ctx, trackers, events, plan, result, "per_trial", 1, started)
    return True


def _claim_partners(study: optuna.Study, spec: SweepSpec, ctx: SweepContext, trial: optuna.Trial) -> list[optuna.Trial]:
    """WAITING trials that share `trial`'s dense model, claimed for this process to fine-tune with
    it (trial_group.group_limit says how many)."""
    key = group_key(plan_of(trial_point(study._storage.get_trial(trial._trial_id)), spec))
    if key is None:  # a trial that starts at initialisation runs alone
        return []
    partners = [f for f in waiting_trials(study) if group_key(plan_of(trial_point(f), spec)) == key]
    limit = group_limit(spec, ctx, len(partners) + 1)
    claimed = []
    for frozen in partners:
        if len(claimed) >= limit - 1:
            break
        member = claim_trial(study, frozen._trial_id)
        if member is not None:
            claimed.append(member)
    return claimed


def _run_group(trials: list[optuna.Trial], spec: SweepSpec, ctx: SweepContext, trackers: TrackerCalls, events: SweepEvents,
               encoding: tuple, pace: Pacer) -> list[bool]:
    """Trials of one dense model fine-tuned together (trial_group.run_group); each is then told to
    the study and the trackers exactly as `_run_one` tells it. Per trial, whether it completed."""
    worker = f"{socket.gethostname()}:{os.getpid()}"
    plans: dict[int, TrialPlan] = {}
    completed = [False] * len(trials)
    for index, trial in enumerate(trials):
        trial.set_user_attr("worker", worker)
        try:
            plans[index] = suggest_plan(trial, spec, *encoding)
        except Exception as err:  # a point this spec cannot read fails alone
            trackers.start_trial(trial.number, {})
            _record_failure(trial, trackers, events, None, err)
    members = sorted(plans)
    if not members:
        return completed
    events.group_started([trials[i].number for i in members], [plans[i] for i in members])
    hooks = TrialHooks(on_phase=events.phase_started, on_batch=_batch_callback(spec, ctx, trackers, events, pace),
                       on_epoch=events.epoch_done)
    folders = [spec.run_path / "trials" / f"{trials[i].number:05d}" for i in members]
    started = time.time()
    try:
        outcomes = run_group(ctx, [plans[i] for i in members], folders, hooks)
    except Exception as err:  # the dense model could not be had: every trial of the group fails
        outcomes = [err] * len(members)
    except KeyboardInterrupt:
        for index in members:
            _record_interrupt(trials[index], spec)
        raise
    size = len(members)
    for index, outcome in zip(members, outcomes, strict=True):
        trial, plan = trials[index], plans[index]
        trackers.start_trial(trial.number, _start_params(spec, ctx, plan, "batched", size), started)
        if isinstance(outcome, Exception):
            _record_failure(trial, trackers, events, plan, outcome)
            continue
        # The curves the per-trial engine logs as it trains, logged now that training is over.
        learning_curve = len(trial.study.directions) == 1
        for stats in outcome.dense_history + outcome.history:
            _log_epoch(trial, trackers, SimpleNamespace(**stats), learning_curve)
        _record_success(trial, spec, ctx, trackers, events, plan, outcome, "batched", size, started)
        completed[index] = True
    return completed


def _start_params(spec: SweepSpec, ctx: SweepContext, plan: TrialPlan, engine: str, group_size: int) -> dict:
    """A trial's parameters as the trackers get them when it starts (and the study when it ends)."""
    return {**trial_params(spec, plan), **ctx.provenance, "engine": engine, "group_size": group_size}


def _log_epoch(trial: optuna.Trial, trackers: TrackerCalls, stats, learning_curve: bool) -> None:
    trackers.log_epoch(stats.phase, stats.epoch, stats.loss, stats.train_accuracy)
    if learning_curve and stats.phase == "finetune":
        # optuna-dashboard's learning curve: the fine-tuning train accuracy per epoch.
        trial.report(stats.train_accuracy, stats.epoch)


def _batch_callback(spec: SweepSpec, ctx: SweepContext, trackers: TrackerCalls, events: SweepEvents, pace: Pacer):
    # Off by default: a thread count that follows the trackers' timing makes the numbers too.
    lends_threads = spec.tracking.lend_thread and ctx.device.type == "cpu"

    def on_batch() -> None:
        events.batch_done()
        pace()
        if lends_threads:
            trackers.between_batches()

    return on_batch


def _record_failure(trial: optuna.Trial, trackers: TrackerCalls, events: SweepEvents, plan: TrialPlan | None,
                    err: Exception) -> None:
    trial.set_user_attr("error", describe_failure(err))
    trial.set_user_attr("traceback", "".join(traceback.format_exception(err)))
    trial.study.tell(trial, state=TrialState.FAIL)
    trackers.end_trial("FAILED", time.time())
    events.trial_failed(trial.number, plan, err)


def _record_interrupt(trial: optuna.Trial, spec: SweepSpec) -> None:
    """Ctrl-C, or SIGTERM (a scheduler's cancel, preemption, time limit): the trial fails and a
    copy of it waits for the study's other workers (or the next launch), up to `study.retries`."""
    if threading.current_thread() is threading.main_thread():
        # A second SIGTERM (scancel sends one more, a user cancels twice) must not cut this short
        # between the failure and the copy: the point would be lost until the next launch.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    trial.set_user_attr("error", "interrupted (Ctrl-C or SIGTERM); retried by another worker or the next launch")
    trial.study.tell(trial, state=TrialState.FAIL)
    retry_trial(trial.study, trial._trial_id, spec.study.retries)


def _record_success(trial: optuna.Trial, spec: SweepSpec, ctx: SweepContext, trackers: TrackerCalls, events: SweepEvents,
                    plan: TrialPlan, result: TrialResult, engine: str, group_size: int, started: float) -> None:
    """A finished trial: the study has it all first; the trackers get it on their own thread or process."""
    if ctx.device.type == "cpu":  # the numbers depend on it (README, "Same spec, same numbers?")
        lends_threads = spec.tracking.lend_thread
        trial.set_user_attr("cpu_threads", "varied (tracking.lend_thread)" if lends_threads
                            else torch.get_num_threads())
    result.params.update(engine=engine, group_size=group_size)
    record_result(trial, result.params, result.metrics, result.files, result.dense_trained, result.seconds,
                  spec.run_path)
    if result.correct:  # which test examples were right: the report's paired standard errors
        trial.set_user_attr(CORRECT_ATTR, result.correct)
    trial.set_user_attr(PHASE_SECONDS_ATTR, result.phase_seconds)
    store_trial_artifacts(trial, result.files, spec.run_path)
    trial.study.tell(trial, _objective_values(spec, result, plan))
    ended = time.time()
    metrics = {**result.metrics, **timing_metrics(result.phase_seconds, started, ended)}
    trackers.finish_trial(TrialRecord(trial.number, result.params, metrics, files=result.files,
                                      started=started, ended=ended))
    events.trial_finished(trial.number, plan, result)


def _objective_values(spec: SweepSpec, result: TrialResult, plan: TrialPlan) -> list[float]:
    values = []
    for objective in spec.study.objectives:
        if objective == "accuracy":
            values.append(result.metrics["acc/clean"])
        else:
            values.append(sum(plan.remaining.values()) / len(plan.remaining))
    return values


@contextmanager
def _terminate_as_interrupt():
    """SIGTERM (docker stop, a scheduler) ends the current trial cleanly, as Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        # The first SIGTERM stops the trial; later ones (scancel sends more) are ignored, so that
        # the failure and the trial's queued copy are written whole.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def describe_failure(error: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(error), error)).strip()
