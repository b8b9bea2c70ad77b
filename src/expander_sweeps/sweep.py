"""The Optuna study: its storage, sampler, search space, and the loop that runs trials.

The study is the source of truth. A trial's results are written to it (user attributes)
before any tracker sees them, so a tracker that is down loses nothing.

Grid sweeps (the paper's protocol) are enumerated here, not by Optuna's GridSampler: every
grid point without a finished trial is enqueued, so relaunching a spec runs exactly the
points that are missing (failed and interrupted trials included) and never reruns a
finished one. Other samplers draw points until the study holds `n_trials` finished trials.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import os
import signal
import socket
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from filelock import FileLock
from optuna.trial import TrialState

from .spec import MASK_METHODS, RangeSpec, SweepSpec, redact_url
from .tracking import TrialRecord, build_trackers
from .trial import SweepContext, TrialHooks, TrialPlan, TrialResult, run_trial, trial_params

__all__ = ["SweepEvents", "LaunchResult", "StorageError", "open_study", "grid_plans", "launch_study"]


@contextlib.contextmanager
def _heartbeats_allowed():
    """Heartbeats are marked experimental in Optuna; they are what makes crash recovery work here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


class SweepEvents:
    """What a sweep reports as it runs; the CLI draws progress from it. Every method is a no-op here."""

    def sweep_started(self, spec: SweepSpec, to_run: int, done: int, data: str, device: str) -> None: ...

    def trial_started(self, number: int, plan: TrialPlan) -> None: ...

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


def open_study(spec: SweepSpec, create: bool = True) -> optuna.Study:
    """Open (or create) the spec's study in its storage (any SQLAlchemy URL)."""
    url = spec.storage_url
    engine_kwargs = {}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # Several local workers write to one SQLite file: wait for the lock instead of failing.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    attempts = 5
    for attempt in range(1, attempts + 1):
        try:
            with _heartbeats_allowed():
                storage = optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=spec.study.heartbeat_seconds,
                    grace_period=spec.study.grace_seconds,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=spec.study.retries
                    ),
                )
            break
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as err:
            # Workers starting together on an empty database race to create its tables; the
            # loser's next attempt finds them there. A server that is down fails every attempt.
            if attempt == attempts:
                raise StorageError.about(url, err) from None
            time.sleep(0.5 * attempt)
        except (ImportError, ValueError) as err:  # a missing driver, a malformed URL
            raise StorageError.about(url, err) from None
    if url.startswith("sqlite:///"):
        _cheap_sqlite_commits(storage.engine)
    directions = ["maximize" if o == "accuracy" else "minimize" for o in spec.study.objectives]
    if not create:
        return optuna.load_study(study_name=spec.name, storage=storage)
    return optuna.create_study(
        study_name=spec.name, storage=storage, sampler=_sampler(spec),
        directions=directions, load_if_exists=True,
    )


def _cheap_sqlite_commits(engine: sqlalchemy.engine.Engine) -> None:
    """Write-ahead log, synced at checkpoints: a trial writes ~100 results, each its own commit,
    and SQLite's default (two fsyncs a commit) made that 0.7 s a trial. A killed process still
    loses nothing committed; only a power cut can lose the last commits (their trials rerun)."""

    @sqlalchemy.event.listens_for(engine, "connect")
    def _pragmas(connection, _record) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    engine.dispose()  # connections opened before the hook get the pragmas when reopened


class StorageError(RuntimeError):
    """The study's storage cannot be opened; the message says which URL and what to check."""

    @classmethod
    def about(cls, url: str, err: Exception) -> StorageError:
        return cls(
            f"cannot open the Optuna storage {redact_url(url)}: {type(err).__name__}: {err}. "
            "Check study.storage (a SQLAlchemy URL such as postgresql+psycopg://user@host/db), "
            "that the server is reachable and the database exists"
        )


def _sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    seed = spec.study.seed
    match spec.study.sampler:
        case "tpe":
            return optuna.samplers.TPESampler(seed=seed)
        case "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
        case "qmc":
            return optuna.samplers.QMCSampler(seed=seed)
        case _:
            # Grid trials are all enqueued with fixed parameters; the sampler is never asked.
            return optuna.samplers.RandomSampler(seed=seed)


# ----------------------------------------------------------------------------- search space
# Optuna parameter names: `layer` + `remaining` (schedule each), `remaining` (tied),
# `remaining_W_xh`, `remaining_W_hh` (independent), `train_noise_variance` (noise at training),
# `mask_method` and `seed` (only when the spec lists several, so single-valued studies keep
# the parameters they always had).


def _suggest_fraction(trial: optuna.Trial, name: str, spec: SweepSpec) -> float:
    space = spec.masks.remaining
    if isinstance(space, RangeSpec):
        return trial.suggest_float(name, space.low, space.high, log=space.log)
    if spec.study.sampler == "grid":
        # Grid points arrive as fixed parameters. A fixed (0, 1] float distribution, unlike a
        # categorical one, lets a later launch add fractions to the grid of an existing study.
        return trial.suggest_float(name, 0.0, 1.0)
    return trial.suggest_categorical(name, list(space))


def suggest_plan(trial: optuna.Trial, spec: SweepSpec) -> TrialPlan:
    layers = spec.masks.layers
    if spec.masks.schedule == "each":
        pruned = trial.suggest_categorical("layer", list(layers))
        fraction = _suggest_fraction(trial, "remaining", spec)
        remaining = {name: (fraction if name == pruned else 1.0) for name in layers}
    elif spec.masks.schedule == "tied":
        fraction = _suggest_fraction(trial, "remaining", spec)
        remaining = dict.fromkeys(layers, fraction)
    else:
        remaining = {name: _suggest_fraction(trial, f"remaining_{name}", spec) for name in layers}
    grid = spec.study.sampler == "grid"
    variance = 0.0
    if spec.noise.at_training and grid:
        variance = trial.suggest_float("train_noise_variance", 0.0, max(1.0, *spec.noise.variances))
    elif spec.noise.at_training:
        variance = trial.suggest_categorical("train_noise_variance", list(spec.noise.variances))
    methods, seeds = spec.masks.methods, spec.training.seeds
    method = methods[0]
    if len(methods) > 1:
        # Grid: every known method as a choice, so a later launch may add one to the study.
        method = trial.suggest_categorical("mask_method", list(MASK_METHODS) if grid else methods)
    seed = seeds[0]
    if len(seeds) > 1:
        seed = (trial.suggest_int("seed", -(2**31), 2**31 - 1) if grid
                else trial.suggest_categorical("seed", seeds))
    return TrialPlan(remaining, variance, method, seed)


def _params_of(plan: TrialPlan, spec: SweepSpec) -> dict[str, Any]:
    """The Optuna parameters that make `suggest_plan` return `plan`."""
    layers = spec.masks.layers
    if spec.masks.schedule == "each":
        pruned = plan.pruned_layers or [layers[0]]  # the dense point is shared by every layer
        params: dict[str, Any] = {"layer": pruned[0], "remaining": plan.remaining[pruned[0]]}
    elif spec.masks.schedule == "tied":
        params = {"remaining": plan.remaining[layers[0]]}
    else:
        params = {f"remaining_{n}": plan.remaining[n] for n in layers}
    if spec.noise.at_training:
        params["train_noise_variance"] = plan.train_variance
    if len(spec.masks.methods) > 1:
        params["mask_method"] = plan.mask_method
    if len(spec.training.seeds) > 1:
        params["seed"] = plan.seed
    return params


def grid_plans(spec: SweepSpec) -> list[TrialPlan]:
    """Every distinct trial of a grid sweep, densest first."""
    fractions = sorted(spec.masks.remaining, reverse=True)
    layers = spec.masks.layers
    if spec.masks.schedule == "each":
        remainings = [{n: (f if n == pruned else 1.0) for n in layers} for pruned in layers for f in fractions]
    elif spec.masks.schedule == "tied":
        remainings = [dict.fromkeys(layers, f) for f in fractions]
    else:
        remainings = [dict(zip(layers, combo, strict=True))
                      for combo in itertools.product(fractions, repeat=len(layers))]
    variances = list(spec.noise.variances) if spec.noise.at_training else [0.0]
    methods = spec.masks.methods
    plans, seen = [], set()
    for seed in spec.training.seeds:
        for variance in variances:
            for remaining in remainings:
                for method in methods:
                    # The all-dense point is one trial: it appears once per layer with `each`, and
                    # no mask method changes a layer that keeps every edge.
                    if all(r >= 1.0 for r in remaining.values()):
                        method = methods[0]
                    key = (tuple(remaining.items()), variance, method, seed)
                    if key not in seen:
                        seen.add(key)
                        plans.append(TrialPlan(remaining, variance, method, seed))
    return plans


def _point_key(params: dict) -> tuple:
    return tuple(sorted((k, float(v) if isinstance(v, (int, float)) else v) for k, v in params.items()))


def _enqueue_points(study: optuna.Study, points: list[dict[str, Any]]) -> None:
    """Enqueue the points that no trial holds: finished, running (here or in another worker; a
    dead worker's trial comes back through the heartbeat retry) or waiting."""
    taken = set()
    states = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    for t in study.get_trials(deepcopy=False, states=states):
        # An enqueued trial carries its point in fixed_params until its parameters are suggested.
        taken.add(_point_key({**t.system_attrs.get("fixed_params", {}), **t.params}))
    for params in points:
        if _point_key(params) not in taken:
            study.enqueue_trial(params)
            taken.add(_point_key(params))


def _enqueue_missing(study: optuna.Study, spec: SweepSpec) -> None:
    _enqueue_points(study, [_params_of(plan, spec) for plan in grid_plans(spec)])


def tracker_config(spec: SweepSpec) -> dict:
    """The spec as trackers record it: URLs without their passwords."""
    config = spec.model_dump(mode="json")
    if config["study"]["storage"]:
        config["study"]["storage"] = redact_url(config["study"]["storage"])
    if config["tracking"]["mlflow"]["uri"]:
        config["tracking"]["mlflow"]["uri"] = redact_url(config["tracking"]["mlflow"]["uri"])
    return config


class StudyState:
    """The sweep's shared state for trackers, in the study's user attributes (every worker sees it)."""

    def __init__(self, study: optuna.Study):
        self._study = study

    def get(self, key: str):
        return self._study.user_attrs.get(key)

    def set(self, key: str, value) -> None:
        self._study.set_user_attr(key, value)


def _record(trial: optuna.Trial, result: TrialResult) -> None:
    """Store everything on the trial first: the study is the source of truth."""
    storage, trial_id = trial.study._storage, trial._trial_id
    for key, value in {**result.params, **result.metrics}.items():
        storage.set_trial_user_attr(trial_id, key, value)
    storage.set_trial_user_attr(trial_id, "param_names", sorted(result.params))
    storage.set_trial_user_attr(trial_id, "files", result.files)
    storage.set_trial_user_attr(trial_id, "dense_trained", result.dense_trained)
    storage.set_trial_user_attr(trial_id, "seconds", round(result.seconds, 3))


def _objective_values(spec: SweepSpec, result: TrialResult, plan: TrialPlan) -> list[float]:
    values = []
    for objective in spec.study.objectives:
        if objective == "accuracy":
            values.append(result.metrics["acc/clean"])
        else:
            values.append(sum(plan.remaining.values()) / len(plan.remaining))
    return values


def _claim_waiting(study: optuna.Study, only: dict[str, Any] | None = None) -> optuna.Trial | None:
    """Take one WAITING trial (with the parameters `only`, if given) for this process. The
    storage's conditional update makes the claim atomic: of several workers reaching for the
    same trial, exactly one gets it."""
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if only is not None and _point_key(frozen.system_attrs.get("fixed_params", frozen.params)) != _point_key(only):
            continue
        # Heartbeat first, claim second: a worker killed between the two leaves a WAITING trial,
        # never a RUNNING one without a heartbeat (which no one would ever find stale).
        with contextlib.suppress(Exception):  # two workers racing to insert the same heartbeat row
            study._storage.record_heartbeat(frozen._trial_id)
        try:
            if study._storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING):
                return optuna.Trial(study, frozen._trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def _next_trial(study: optuna.Study, spec: SweepSpec) -> optuna.Trial | None:
    if spec.study.sampler == "grid":
        return _claim_waiting(study)
    started = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
    if len(started) >= spec.study.n_trials:
        return None
    return study.ask()  # pops a retried (WAITING) trial first, else samples a new one


@contextlib.contextmanager
def _heartbeat(study: optuna.Study, trial_id: int, interval: float):
    """Record a heartbeat now and every `interval` seconds while the trial runs: a worker that
    dies (SIGKILL, power loss) stops beating, and the others fail and retry its trial."""
    storage = study._storage
    storage.record_heartbeat(trial_id)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                storage.record_heartbeat(trial_id)
            except Exception:  # a missed beat is retried at the next interval
                pass

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def sweep_lock(study: optuna.Study, spec: SweepSpec):
    """One process at a time enqueues the grid and sets up the trackers' shared state, so that
    several workers starting together neither enqueue a point twice nor make two parent runs."""
    url = spec.storage_url
    if url.startswith("sqlite:///"):
        with FileLock(url.removeprefix("sqlite:///") + ".enqueue.lock"):
            yield
    elif url.startswith("postgresql"):
        key = int(hashlib.sha256(f"expander-sweeps:{spec.name}".encode()).hexdigest()[:15], 16)
        # A session-level advisory lock, on a connection of its own, released on exit (or when
        # the connection drops, if this process dies while holding it).
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
                try:
                    yield
                finally:
                    connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
        finally:
            engine.dispose()
    else:  # other databases: start one worker first, then the rest
        yield


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM (docker stop, a scheduler) ends the current trial cleanly, as Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _to_run(study: optuna.Study, spec: SweepSpec) -> int:
    if spec.study.sampler == "grid":
        return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    started = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
    return max(0, spec.study.n_trials - len(started))


def _fail_stale(study: optuna.Study) -> None:
    with _heartbeats_allowed():
        optuna.storages.fail_stale_trials(study)  # and re-enqueue them, up to study.retries times


def launch_study(spec: SweepSpec, events: SweepEvents | None = None, context: SweepContext | None = None,
                 point: dict[str, Any] | None = None) -> LaunchResult:
    """Run trials until the study has every one it needs, recording each in the study, then in
    the trackers. Any number of processes may run this on the same study at once.

    With `point` (Optuna parameters, as a `wandb agent` passes them), run that one point only
    (unless the study already has it)."""
    events = events or SweepEvents()
    study = open_study(spec)
    _fail_stale(study)
    if point is not None:
        with sweep_lock(study, spec):
            _enqueue_points(study, [point])
        next_trial = functools.partial(_claim_waiting, study, point)
    else:
        if spec.study.sampler == "grid":
            with sweep_lock(study, spec):
                _enqueue_missing(study, spec)
        next_trial = functools.partial(_next_trial, study, spec)
    to_run = 1 if point is not None else _to_run(study, spec)
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if to_run == 0 and not _running(study):
        events.sweep_started(spec, 0, done, "", "")
        return LaunchResult(study, 0, 0)

    ctx = context or SweepContext(spec)
    events.sweep_started(spec, to_run, done, ctx.description, str(ctx.device))
    trackers = build_trackers(spec, events.warn)  # a FanOut, or the same calls served by a child process
    if getattr(trackers, "locks_the_study", False):
        trackers.start_sweep(spec.name, tracker_config(spec))  # returns at once; the child locks
    else:
        with sweep_lock(study, spec):
            trackers.start_sweep(spec.name, tracker_config(spec), StudyState(study))
    hooks = TrialHooks(on_phase=events.phase_started, on_batch=events.batch_done, on_epoch=None)
    ran = failed = 0

    def run_one(trial: optuna.Trial) -> bool:
        """One trial, told to the study as COMPLETE or FAIL (with the reason). True if it completed."""
        plan = None
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        try:
            plan = suggest_plan(trial, spec)
            events.trial_started(trial.number, plan)
            trackers.start_trial(trial.number, trial_params(spec, plan))

            def on_epoch(stats) -> None:
                events.epoch_done(stats)
                trackers.log_metrics({f"{stats.phase}/loss": stats.loss,
                                      f"{stats.phase}/train_accuracy": stats.train_accuracy}, step=stats.epoch)

            hooks.on_epoch = on_epoch
            result = run_trial(ctx, plan, spec.run_path / "trials" / f"{trial.number:05d}", hooks)
        except Exception as err:
            trial.set_user_attr("error", describe_failure(err))
            trial.set_user_attr("traceback", "".join(traceback.format_exception(err)))
            study.tell(trial, state=TrialState.FAIL)
            trackers.end_trial("FAILED")
            events.trial_failed(trial.number, plan, err)
            return False
        except KeyboardInterrupt:
            trial.set_user_attr("error", "interrupted (Ctrl-C or SIGTERM); rerun at the next launch")
            study.tell(trial, state=TrialState.FAIL)
            trackers.end_trial("KILLED")
            raise
        _record(trial, result)
        study.tell(trial, _objective_values(spec, result, plan))
        # The study has it all now; the trackers get it on their own thread.
        trackers.log_metrics(result.metrics)
        for key, path in result.files.items():
            if key != "example":
                trackers.log_artifact(path, "trial")
        trackers.log_model(TrialRecord(trial.number, result.params, result.metrics, files=result.files))
        trackers.end_trial("FINISHED")
        events.trial_finished(trial.number, plan, result)
        return True

    idle_since = None
    try:
        with _terminate_as_interrupt():
            while True:
                _fail_stale(study)
                trial = next_trial()
                if trial is None:
                    # Trials still RUNNING elsewhere may belong to a dead worker: wait until they
                    # finish, or go stale and come back as WAITING, before calling the study done.
                    if not _running(study) or spec.study.sampler != "grid" or point is not None:
                        break
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since > spec.study.grace_seconds + 2 * spec.study.heartbeat_seconds:
                        events.warn(f"trials {[t.number for t in _running(study)]} are still RUNNING "
                                    "elsewhere; leaving them to their workers")
                        break
                    time.sleep(min(1.0, spec.study.heartbeat_seconds))
                    continue
                idle_since = None
                with _heartbeat(study, trial._trial_id, spec.study.heartbeat_seconds):
                    completed = run_one(trial)
                ran += 1
                failed += not completed
    finally:
        trackers.end_sweep()
        trackers.close()  # wait for the trackers' queue to drain
    return LaunchResult(study, ran, failed, trackers.seconds)


def _running(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def describe_failure(error: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(error), error)).strip()
