"""The Optuna study as this tool keeps it: opening its storage (WAL for SQLite, retries while
workers race to create tables), the sweep lock, the shared state trackers keep in it, atomic
claims of waiting trials, heartbeats and stale trials, and the schema of what a finished trial
records (written by `record_result`, read back by `read_result`).

The study is the source of truth: a trial's results are written here before any tracker
sees them, so a tracker that is down loses nothing.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from ..spec import SweepSpec
from .fingerprint import (
    SpecMismatch,
    differences,
    fingerprint_of,
    mismatch_message,
    result_settings,
    search_space,
)
from .space import grid_plans, params_of, point_key
from .storages import (
    StorageError,
    _heartbeats_allowed,
    claim_order,
    fail_stale_trials,
    make_storage,
    set_running,
    set_trial_user_attrs,
    storage_lock,
    waiting_trial_ids,
)

__all__ = ["StorageError", "StudyState", "TrialResults", "open_study", "sweep_lock", "enqueue_points",
           "enqueue_grid", "claim_waiting", "claim_trial", "waiting_trials", "trial_point", "heartbeat", "fail_stale", "retry_trial", "running_trials", "record_result",
           "read_result", "store_trial_artifacts", "artifact_dir", "fractions_on_log_scale", "recorded_method_choices", "check_methods", "point_key", "bind_spec", "check_spec", "SpecMismatch"]


def open_study(spec: SweepSpec, create: bool = True) -> optuna.Study:
    """Open (or create) the spec's study in its storage (storages.py: a SQLAlchemy URL, a journal
    file or Redis)."""
    study_settings = spec.study
    storage = make_storage(spec.storage_url, study_settings.heartbeat_seconds, study_settings.grace_seconds,
                           study_settings.retries, create)
    directions = ["maximize" if o == "accuracy" else "minimize" for o in spec.study.objectives]
    if not create:
        return optuna.load_study(study_name=spec.name, storage=storage)
    try:  # read first: creating writes, and on SQLite workers starting together lock one another out
        study = optuna.load_study(study_name=spec.name, storage=storage, sampler=_sampler(spec))
    except KeyError:
        study = optuna.create_study(
            study_name=spec.name, storage=storage, sampler=_sampler(spec),
            directions=directions, load_if_exists=True,
        )
    if study.metric_names is None:  # optuna-dashboard and `optuna` show the objectives by name
        names = ["acc/clean" if o == "accuracy" else "remaining_edges" for o in spec.study.objectives]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)
    return study


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


# ----------------------------------------------------------------------------- grid points
def trial_point(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    # An enqueued trial carries its point in fixed_params until its parameters are suggested.
    return {**trial.system_attrs.get("fixed_params", {}), **trial.params}


def enqueue_points(study: optuna.Study, points: list[dict[str, Any]], spec: SweepSpec) -> None:
    """Enqueue the points that no trial holds: finished, running (here or in another worker; a
    dead worker's trial comes back through the heartbeat retry) or waiting."""
    states = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    taken = {point_key(trial_point(t), spec) for t in study.get_trials(deepcopy=False, states=states)}
    for params in points:
        if point_key(params, spec) not in taken:
            study.enqueue_trial(params)
            taken.add(point_key(params, spec))


def enqueue_grid(study: optuna.Study, spec: SweepSpec) -> None:
    """Enqueue every grid point of the spec that no trial holds."""
    enqueue_points(study, [params_of(plan, spec) for plan in grid_plans(spec)], spec)


def sweep_progress(study: optuna.Study, spec: SweepSpec) -> tuple[int, int]:
    """(trials complete, trials in all) of the spec's sweep: grid points with a COMPLETE trial
    out of the grid, or COMPLETE trials out of `study.n_trials` for a sampled study."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if spec.study.sampler != "grid":
        return min(len(complete), spec.study.n_trials), spec.study.n_trials
    grid = {point_key(params_of(plan, spec), spec) for plan in grid_plans(spec)}
    return len(grid & {point_key(t.params, spec) for t in complete}), len(grid)


def trials_left(spec: SweepSpec) -> int:
    """Trials a launch of `spec` still has to run, read without creating a study or a file.
    No study yet: all of them. A storage that cannot be reached raises StorageError."""
    try:
        study = open_study(spec, create=False)
    except KeyError:
        return len(grid_plans(spec)) if spec.study.sampler == "grid" else spec.study.n_trials
    done, total = sweep_progress(study, spec)
    return total - done


@contextlib.contextmanager
def sweep_lock(study: optuna.Study, spec: SweepSpec):
    """One process at a time enqueues the grid and sets up the trackers' shared state, so that
    several workers starting together neither enqueue a point twice nor make two parent runs."""
    with storage_lock(spec.storage_url, spec.name):
        yield


# ----------------------------------------------------------------------------- what the trials ran with
_SETTINGS, _FINGERPRINT, _SPACE = "settings", "settings_fingerprint", "search_space"
_DATA = "data_fingerprint"  # a hash of the training data the study's trials ran on (data/base.py)


def bind_spec(study: optuna.Study, spec: SweepSpec, extend: bool = False,
              data_fingerprint: str | None = None) -> str | None:
    """Tie the study to the spec's result settings, search space and data: recorded by the first
    launch, compared by every later one (call under `sweep_lock`). Raises SpecMismatch when the
    settings or the data differ, or when the search space differs and `extend` is not set (with
    `extend`, the new space is recorded). Returns a note for the user, or None."""
    if data_fingerprint is not None:
        check_data(study, spec, data_fingerprint)
    attrs = study.user_attrs
    settings, space = result_settings(spec), search_space(spec)
    if _SETTINGS not in attrs:
        finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        study.set_user_attr(_SETTINGS, settings)
        study.set_user_attr(_FINGERPRINT, fingerprint_of(settings))
        study.set_user_attr(_SPACE, space)
        if finished:
            return (f"study '{spec.name}' was created before its settings were recorded; its {finished} "
                    "finished trial(s) are taken to match this spec from now on")
        return None
    check_spec(study, spec)
    check_methods(study, spec)
    changed = differences(attrs.get(_SPACE, {}), space)
    if changed and not extend:
        raise SpecMismatch(mismatch_message(spec.name, "search space (masks.remaining, masks.method, "
                                            "training.seed)", changed, extendable=True))
    if changed:
        study.set_user_attr(_SPACE, space)
        return f"search space of study '{spec.name}' extended: " + "; ".join(changed)
    return None


def check_data(study: optuna.Study, spec: SweepSpec, fingerprint: str) -> None:
    """Raise SpecMismatch when this launch's training data is not the data the study's trials
    ran on (the study's record, or, for a study begun before it was kept, what its finished
    trials recorded); record it otherwise. Other data would mix into the report unnoticed."""
    stored = study.user_attrs.get(_DATA)
    if stored is None:
        seen = {t.user_attrs.get(_DATA) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
        seen.discard(None)
        stored = next(iter(seen)) if len(seen) == 1 else None
        if len(seen) > 1:
            return  # already mixed by an older version: nothing sound to compare with
    if stored is None:
        study.set_user_attr(_DATA, fingerprint)
        return
    if stored != fingerprint:
        where = getattr(spec.data, "root", None) or getattr(spec.data, "loader", "")
        raise SpecMismatch(
            f"the training data of this launch (fingerprint {fingerprint}, from {where}) is not the data "
            f"study '{spec.name}' ran its trials on (fingerprint {stored}): its results would mix in one "
            "report. Point `data` back at the study's data, or start a new study for this data (a new "
            "`name`, `run_dir` or `study.storage`).")
    if _DATA not in study.user_attrs:
        study.set_user_attr(_DATA, fingerprint)


def check_spec(study: optuna.Study, spec: SweepSpec) -> None:
    """Raise SpecMismatch when the spec's result settings are not those the study's trials were
    run with (a study that recorded none is taken as it is)."""
    stored = study.user_attrs.get(_SETTINGS)
    if stored is None:
        return
    changed = differences(stored, result_settings(spec))
    if changed:
        raise SpecMismatch(mismatch_message(spec.name, "result settings", changed, extendable=False))


def fractions_on_log_scale(study: optuna.Study) -> bool:
    """Whether this study's remaining fractions are suggested on a log scale: yes, unless its
    trials already recorded them on a linear one (studies begun by versions before the log scale;
    Optuna refuses to change a parameter's scale within a study)."""
    for trial in study.get_trials(deepcopy=False):
        for name, distribution in trial.distributions.items():
            if name.startswith("remaining") and isinstance(distribution, optuna.distributions.FloatDistribution):
                return distribution.log
    return True


def recorded_method_choices(study: optuna.Study) -> tuple[str, ...] | None:
    """The mask-method choices this study's trials recorded (a grid's `mask_method` categorical),
    or None when none did. Optuna refuses other choices for a parameter within a study, so a
    study keeps its own: a mask method added to the tool later leaves it relaunchable."""
    for trial in study.get_trials(deepcopy=False):
        distribution = trial.distributions.get("mask_method")
        if isinstance(distribution, optuna.distributions.CategoricalDistribution):
            return tuple(distribution.choices)
    return None


def check_methods(study: optuna.Study, spec: SweepSpec) -> None:
    """Raise SpecMismatch when a grid spec asks for a mask method the study's recorded choices
    lack (a method added to the tool after the study began): it cannot join that study."""
    recorded = recorded_method_choices(study)
    missing = [m for m in spec.masks.methods if recorded is not None and m not in recorded]
    if missing and spec.study.sampler == "grid" and len(spec.masks.methods) > 1:
        raise SpecMismatch(
            f"study '{spec.name}' began before the mask method(s) {', '.join(missing)} existed: its trials "
            f"recorded the choices {', '.join(recorded)}, and Optuna refuses new choices within a study. "
            "Run the new method(s) in a new study (a new `name`, `run_dir` or `study.storage`), and compare "
            "the two with `expander-sweeps compare`")


def study_fingerprint(study: optuna.Study) -> str | None:
    return study.user_attrs.get(_FINGERPRINT)


class StudyState:
    """The sweep's shared state for trackers, in the study's user attributes (every worker sees it)."""

    def __init__(self, study: optuna.Study):
        self._study = study

    def get(self, key: str):
        return self._study.user_attrs.get(key)

    def set(self, key: str, value) -> None:
        self._study.set_user_attr(key, value)

    def failed_trials(self) -> set[int]:
        return {t.number for t in self._study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}

    def unfinished(self) -> int:
        return len(self._study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)))


# ----------------------------------------------------------------------------- claims and heartbeats
def claim_waiting(study: optuna.Study, spec: SweepSpec, only: dict[str, Any] | None = None) -> optuna.Trial | None:
    """Take one WAITING trial (with the point `only`, if given) for this process."""
    if only is not None:
        wanted = point_key(only, spec)
        for frozen in waiting_trials(study):
            if point_key(trial_point(frozen), spec) == wanted:
                trial = claim_trial(study, frozen._trial_id)
                if trial is not None:
                    return trial
        return None
    # The ids alone, then a claim: reading the waiting trials themselves costs a read of every
    # one of them (storages.waiting_trial_ids). Lost races are retried on a fresh list.
    for _ in range(1000):  # rounds of lost races; each round's list is fresh
        ids = waiting_trial_ids(study)
        if not ids:
            return None
        for trial_id in claim_order(ids):
            trial = claim_trial(study, trial_id)
            if trial is not None:
                return trial
    return None


def claim_trial(study: optuna.Study, trial_id: int) -> optuna.Trial | None:
    """Take the WAITING trial `trial_id` for this process, or None when another took it first.
    The storage's conditional update makes the claim atomic: of several workers reaching for the
    same trial, exactly one gets it."""
    # Heartbeat first, claim second: a worker killed between the two leaves a WAITING trial,
    # never a RUNNING one without a heartbeat (which no one would ever find stale).
    with contextlib.suppress(Exception):  # two workers racing to insert the same heartbeat row
        study._storage.record_heartbeat(trial_id)
    try:
        if set_running(study, trial_id):
            return optuna.Trial(study, trial_id)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass
    return None


def waiting_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.WAITING,))


@contextlib.contextmanager
def heartbeat(study: optuna.Study, trial_id: int, interval: float):
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


def fail_stale(study: optuna.Study) -> None:
    with _heartbeats_allowed():
        fail_stale_trials(study)  # and re-enqueue them, up to study.retries times


def retry_trial(study: optuna.Study, trial_id: int, retries: int) -> None:
    """Enqueue a WAITING copy of the failed trial `trial_id` (its point, its place in the retry
    history), unless it has been retried `retries` times: what a dead worker's trial gets from the
    heartbeat, for a trial whose worker was told to stop. The copy does not carry the reason."""
    failed = copy.deepcopy(study._storage.get_trial(trial_id))
    failed.user_attrs = {k: v for k, v in failed.user_attrs.items() if k not in ("error", "traceback", "worker")}
    with _heartbeats_allowed():
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retries)(study, failed)


def running_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


# ----------------------------------------------------------------------------- what a trial records
@dataclass
class TrialResults:
    """A finished trial's results as the study holds them."""

    number: int
    params: dict[str, Any]  # flat, human-readable (remaining_W_xh, cell, init, ...)
    metrics: dict[str, float]  # accuracies, spectra, kept fractions (names of results.py)
    files: dict[str, str] = field(default_factory=dict)  # masks, checkpoint, spectra, history, ...
    dense_trained: bool = False
    seconds: float = 0.0


def record_result(trial: optuna.Trial, params: dict[str, Any], metrics: dict[str, float], files: dict[str, str],
                  dense_trained: bool, seconds: float, run_dir: Path) -> None:
    """Store a finished trial's results on it (user attributes), with the list of which names are
    parameters; metrics are known by their names (`is_metric_name`), not listed on every trial:
    that list (6,000 characters) made each trial's page in optuna-dashboard 8,500 px wide. Files
    inside the run folder are stored relative to it, so a moved or copied run folder (or one
    opened from another working folder) still finds them."""
    files = {key: _relative_to(path, run_dir) for key, path in files.items()}
    attrs = {**params, **metrics, "param_names": sorted(params), "files": files,
             "dense_trained": dense_trained, "seconds": round(seconds, 3)}
    fingerprint = study_fingerprint(trial.study)
    if fingerprint:
        attrs[_FINGERPRINT] = fingerprint
    set_trial_user_attrs(trial.study, trial._trial_id, attrs)  # at once: one transaction


# Files optuna-dashboard shows on a trial's page (pictures and text it can preview).
_DASHBOARD_FILES = ("mask_picture_", "spectra", "history")


def artifact_dir(run_dir: Path) -> Path:
    """Where the study's Optuna artifacts live: `optuna-dashboard STORAGE --artifact-dir` this."""
    return Path(run_dir) / "optuna-artifacts"


def store_trial_artifacts(trial: optuna.Trial, files: dict[str, str], run_dir: Path) -> None:
    """The trial's mask pictures, spectra and curves as Optuna artifacts (copies in the run
    folder's artifact store, listed on the trial), so optuna-dashboard shows them with the trial."""
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    folder = artifact_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(str(folder))
    for key, path in files.items():
        if key.startswith(_DASHBOARD_FILES) and Path(path).is_file():
            upload_artifact(artifact_store=store, file_path=path, study_or_trial=trial)


def _relative_to(path: str, run_dir: Path) -> str:
    resolved, root = Path(path).resolve(), Path(run_dir).resolve()
    return resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else str(resolved)


def read_result(trial: optuna.trial.FrozenTrial, run_dir: Path) -> TrialResults:
    """What `record_result` stored, with file paths resolved against the run folder (absolute
    ones, from files outside it or from older versions, are kept). Files that no longer exist
    are left out. Metrics: the trial's `metric_names` where an older version listed them, else
    every numeric attribute that `is_metric_name`."""
    attrs = trial.user_attrs
    params = {name: attrs[name] for name in attrs.get("param_names", []) if name in attrs}
    names = attrs.get("metric_names") or [k for k, v in attrs.items() if is_metric_name(k) and _number(v)]
    metrics = {name: float(attrs[name]) for name in names if _number(attrs.get(name))}
    files = {key: str(Path(run_dir) / path) for key, path in attrs.get("files", {}).items()}
    files = {key: path for key, path in files.items() if Path(path).exists()}
    return TrialResults(trial.number, params, metrics, files, bool(attrs.get("dense_trained")),
                        float(attrs.get("seconds", 0.0)))


# The metrics whose names have no '/' (every other metric name has one: acc/clean, W_hh/binary/delta_r).
_PLAIN_METRICS = ("n_test", "n_train")


def is_metric_name(name: str) -> bool:
    """Whether a trial user attribute of this name is a metric (results.py's names)."""
    return "/" in name or name in _PLAIN_METRICS


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
