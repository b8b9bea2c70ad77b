"""MLflow backend: a parent run per sweep, a child run per trial, and the model registry.

Embedded by default: SQLite in the run folder with a local artifact folder. Any tracking
URI (an `mlflow server`, a remote one) comes from the spec or $MLFLOW_TRACKING_URI.

Each checkpoint is an MLflow 3 LoggedModel (`search_logged_models` finds it, linked to its
trial's run as an output, with the trial's accuracies as its metrics) in the pytorch flavour's
"pickle" format with an input example and a signature: MLflow 3's default "pt2" format runs
torch.export on every trial (seconds each) and fixes the batch size to the example's, so the
loaded model could not classify a test set in one call. A pickled model needs its classes to
load: the model bundles this package's code (and a `model.factory`'s module) under `code/`, and
its requirements name only packages on PyPI, so `mlflow models serve` can restore it anywhere.
The directory is assembled from the payload the trial wrote (`mlflow_model.py`), so this
process never imports torch; a trial without one is saved from its checkpoint.
Each trial's run has its training data as a dataset input (`log_input`), named and digested
by the data's fingerprint.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from ..results import (
    ALIAS_RULES,
    choose_aliases,
    for_trackers,
    ramanujan,
    spectrum_key,
    trial_label,
)
from ..spec import SweepSpec, redact_url, sqlite_file
from .base import SweepState, TrackerUnavailable, TrialRecord, data_source

__all__ = ["MlflowTracker", "mlflow_uri", "set_registry_aliases"]

SWEEP_TAG = "expander_sweeps.sweep.loop"
TRIAL_TAG = "expander_sweeps.sweep.trial"


def mlflow_uri(spec: SweepSpec) -> str:
    """The spec's URI, else $MLFLOW_TRACKING_URI, else SQLite in the run folder."""
    if spec.tracking.mlflow.uri:
        return spec.tracking.mlflow.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(spec.run_path / 'mlflow.db').resolve()}"


def _graph_key(graph: str) -> str:
    """A report's graph name as a metric name part: `step [W_xh | W_hh] -> h_t` is `step`,
    `unrolled over k = 28 steps` is `unrolled` (the names results.py gives them)."""
    return graph.split(" ")[0] if graph.startswith(("step", "unrolled")) else graph


def registered_model_name(spec: SweepSpec) -> str:
    return spec.tracking.mlflow.registered_model or f"{spec.name}-pruned"


def _client(uri: str):
    _configure_mlflow()
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _configure_mlflow() -> None:
    """Import MLflow (or say how to get it) and set how it behaves here, before any store opens."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise TrackerUnavailable(
            "the mlflow package is not installed; pip install mlflow, or set tracking.mlflow.enabled=false"
        ) from None
    # A server that is down must cost seconds, not the minutes of MLflow's default retries;
    # the study keeps the results and `sync` pushes them later.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    # MLflow 3's usage telemetry runs a client thread beside the training; off here.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # Our own lines report progress; MLflow would print a run URL and download bars per trial.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # The embedded store announces its table migrations at INFO on every first use, and the
    # pickle format (chosen on purpose, see the module's docstring) warns on every model.
    # Registration and "View run at ..." notes come at INFO after each trial; our own lines say it.
    for name in ("mlflow", "mlflow.store.db.utils", "mlflow.tracking", "mlflow.store.model_registry"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)


def _ramanujan_tags(metrics: dict[str, float], layers: list[str]) -> dict[str, str]:
    """Per layer: 'true' while both bounds of its binary layer graph are positive, 'false' when
    not, 'undefined' for a degenerate graph (never 'true' for one)."""
    tags = {}
    for layer in layers:
        if spectrum_key(layer, "binary", "delta_r") in metrics:
            verdict = ramanujan(metrics, layer)
            tags[f"ramanujan_{layer}"] = "undefined" if verdict is None else str(verdict).lower()
    return tags


class MlflowTracker:
    name = "mlflow"

    def __init__(self, spec: SweepSpec):
        self.uri = mlflow_uri(spec)
        database = sqlite_file(self.uri)
        if database is None:
            self._client = _client(self.uri)
        else:
            database.parent.mkdir(parents=True, exist_ok=True)
            # Two launches on a new spec would both create mlflow.db's tables, and one would die
            # ("table ... already exists"): the first to take the lock creates them.
            from filelock import FileLock

            self._moved_from: list[Path] = []
            with FileLock(str(database) + ".create.lock"):
                if not database.exists():
                    _configure_mlflow()
                    from .mlflow_store import create_from_template

                    create_from_template(database)  # else MLflow migrates the new store itself
                elif self._embedded(spec, database):
                    from .mlflow_store import relocate

                    # A run folder moved or copied: its store's absolute paths point back into it.
                    self._moved_from = relocate(database, spec.run_path)
                self._client = _client(self.uri)
                self._client.search_experiments(max_results=1)
        self._spec = spec
        self._experiment_name = spec.tracking.mlflow.experiment or spec.name
        # Embedded store: artifacts beside the database, not in ./mlruns of whatever folder we run in.
        self._artifact_location = (
            (spec.run_path / "mlartifacts").resolve().as_uri() if self.uri.startswith("sqlite:") else None
        )
        self._model_name = registered_model_name(spec)
        self._experiment_id: str | None = None
        self._parent_id: str | None = None
        self._state: SweepState | None = None
        self._run_id: str | None = None
        self._number: int | None = None
        # Trial numbers with a run in the store (read at start_sweep): only those can have left
        # a partial attempt to remove, so the others skip two searches a trial.
        self._numbers_in_store: set[int] | None = None
        self._registered_model_exists = False

    @staticmethod
    def _embedded(spec: SweepSpec, database: Path | None) -> bool:
        """Whether the store is the run folder's own (mlflow.db in it): it moves with the folder."""
        return database is not None and database.resolve() == (spec.run_path / "mlflow.db").resolve()

    def _parent_keys(self) -> list[str]:
        """Where the study keeps the sweep's parent run id, newest first. The run folder's own
        store is named by no path (the folder may move); a server by its redacted URI (the study,
        served by optuna-dashboard, never holds a password). Older versions named the embedded store
        by its absolute path: that key is read too, at this folder and where it was moved from."""
        if not self._embedded(self._spec, sqlite_file(self.uri)):
            return [f"mlflow_parent_run:{redact_url(self.uri)}:{self._experiment_name}"]
        older = [self.uri, *(f"sqlite:///{folder / 'mlflow.db'}" for folder in getattr(self, "_moved_from", []))]
        return [f"mlflow_parent_run:run_folder:{self._experiment_name}",
                *(f"mlflow_parent_run:{uri}:{self._experiment_name}" for uri in older)]

    # ------------------------------------------------------------------ sweep
    def start_sweep(self, sweep: str, config: dict[str, Any], state: SweepState) -> None:
        existing = self._client.get_experiment_by_name(self._experiment_name)
        if existing is not None:
            self._experiment_id = existing.experiment_id
        else:
            self._experiment_id = self._client.create_experiment(
                self._experiment_name, artifact_location=self._artifact_location
            )
        # The parent run id lives in the study, so workers in other processes attach to it.
        keys = self._parent_keys()
        key = keys[0]
        for candidate in keys:
            parent = state.get(candidate)
            if parent is None:
                continue
            try:
                if self._client.get_run(parent).info.lifecycle_stage == "active":
                    self._parent_id = parent
                    if candidate != key:
                        state.set(key, parent)  # found under an older name: kept under the new one
                    break
            except Exception:  # deleted, or another server: make a new one
                self._parent_id = None
        if self._parent_id is None:
            from mlflow.entities import Param

            run = self._client.create_run(self._experiment_id, run_name=sweep,
                                          tags={SWEEP_TAG: sweep, "expander_sweeps.role": "sweep"})
            self._parent_id = run.info.run_id
            flat = _flatten(config)
            self._client.log_batch(self._parent_id, params=[Param(k, _short(v)) for k, v in flat.items()])
            state.set(key, self._parent_id)
        elif self._client.get_run(self._parent_id).info.status != "RUNNING":
            self._client.update_run(self._parent_id, status="RUNNING")  # a relaunch continues the sweep
        self._state = state
        self._end_orphans(state)

    def _end_orphans(self, state: SweepState) -> None:
        """A trial whose worker was killed left its run RUNNING; once the study holds the trial
        as failed (its retry has a new number), the run is ended as KILLED."""
        failed = state.failed_trials()
        runs = self._trial_runs()
        self._numbers_in_store = {int(run.data.tags[TRIAL_TAG]) for run in runs}
        for run in runs:
            if run.info.status == "RUNNING" and int(run.data.tags[TRIAL_TAG]) in failed:
                self._client.set_terminated(run.info.run_id, status="KILLED")

    def publish(self, study, rows: list[dict]) -> dict[str, str]:
        """The registry aliases (dense, best, sparsest-ramanujan) onto model versions, when models are logged."""
        return set_registry_aliases(self._spec, rows) if self._spec.tracking.mlflow.log_models else {}

    def end_sweep(self, report_files: list[str]) -> None:
        if self._run_id is not None:  # a trial interrupted mid-way
            self.end_trial("KILLED")
        for path in report_files:
            if Path(path).exists():
                self._client.log_artifact(self._parent_id, path, artifact_path="report")
        if self._state is not None and self._parent_id is not None:
            self._end_orphans(self._state)  # trials found stale during this launch
            # The last process to leave a study with nothing left to run ends the sweep's run; a
            # relaunch sets it RUNNING again.
            if self._state.unfinished() == 0:
                self._client.set_terminated(self._parent_id, status="FINISHED")
        crossings = next((p for p in report_files if p.endswith("crossings.json") and Path(p).exists()), None)
        if crossings is not None and self._parent_id is not None:
            self._log_crossings(Path(crossings))

    def _log_crossings(self, path: Path) -> None:
        """Each bound's crossing as a metric of the sweep's run, so sweeps can be charted against
        each other in the UI: `crossing_pct/<mask>/<pruned layer>/<graph>/<weighting>/<bound>`
        (`/train_var_<v>` added with training noise; characters MLflow refuses become `_`), in %
        of kept edges. Only bounds that
        crossed: 'never' or 'already negative' has no number (crossings.json on the run says which)."""
        from mlflow.entities import Metric
        from mlflow.utils.time import get_current_time_millis

        now = get_current_time_millis()
        metrics = []
        for row in json.loads(path.read_text()).get("crossings", []):
            if row.get("status") != "crossed" or row.get("crossing_pct") is None:
                continue
            key = (f"crossing_pct/{row['mask_method']}/{row['pruned'].split(' ')[0]}/{_graph_key(row['graph'])}/"
                   f"{row['weighting']}/{row['bound']}")
            # MLflow names take letters, digits and _ - . / only: a tied sweep's `W_xh+W_hh` -> `W_xh_W_hh`.
            key = re.sub(r"[^A-Za-z0-9_\-./]", "_", key)
            if row.get("train_noise_variance"):
                key += f"/train_var_{float(row['train_noise_variance']):g}"
            metrics.append(Metric(key, float(row["crossing_pct"]), now, 0))
        for start in range(0, len(metrics), 1000):
            self._client.log_batch(self._parent_id, metrics=metrics[start : start + 1000])

    # ------------------------------------------------------------------ trials
    def start_trial(self, number: int, params: dict[str, Any], started: float | None = None) -> None:
        from mlflow.entities import Param

        self._drop_partial(number)
        label = trial_label(number, params)
        run = self._client.create_run(
            self._experiment_id,
            run_name=label,  # what the trial is: "trial 3: W_hh 10% magnitude, seed 0"
            # When the trial began, not when this call came (a relay logs trials after they end).
            start_time=_millis(started),
            tags={SWEEP_TAG: self._spec.name, TRIAL_TAG: str(number), "mlflow.parentRunId": self._parent_id,
                  "mlflow.note.content": f"Sweep {self._spec.name}, {label}. Parameters, per-epoch curves, "
                                         "accuracies and spectra of the fine-tuned pruned network; the masks, "
                                         "spectra and checkpoint are artifacts."},
        )
        self._run_id, self._number = run.info.run_id, number
        self._client.log_batch(self._run_id, params=[Param(k, _short(v)) for k, v in params.items()])
        self._client.log_inputs(self._run_id, datasets=[_dataset_input(self._spec, params.get("data_fingerprint"))])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric
        from mlflow.utils.time import get_current_time_millis

        now = get_current_time_millis()
        # Every key in every run; an unbounded or undefined bound is NaN (results.for_trackers).
        batch = [Metric(k, v, now, step or 0) for k, v in for_trackers(metrics).items()]
        for start in range(0, len(batch), 1000):  # log_batch takes at most 1000 metrics a call
            self._client.log_batch(self._run_id, metrics=batch[start : start + 1000])

    def log_history(self, steps: list[tuple[dict[str, float], int]]) -> None:
        """Every epoch's metrics of a trial (so far) in one request (1000 metrics a request)."""
        from mlflow.entities import Metric
        from mlflow.utils.time import get_current_time_millis

        now = get_current_time_millis()
        batch = [Metric(k, v, now, step) for metrics, step in steps for k, v in for_trackers(metrics).items()]
        for start in range(0, len(batch), 1000):
            self._client.log_batch(self._run_id, metrics=batch[start : start + 1000])

    def log_artifact(self, path: str, folder: str | None = None) -> None:
        if Path(path).exists():
            self._client.log_artifact(self._run_id, path, artifact_path=folder)

    def log_model(self, record: TrialRecord) -> None:
        if not self._spec.tracking.mlflow.log_models or "checkpoint" not in record.files:
            return
        import tempfile

        from mlflow.entities import LoggedModelOutput, Metric
        from mlflow.models import Model
        from mlflow.utils.time import get_current_time_millis

        # The steps of MLflow 3's log_model, through this client (no fluent active run: global
        # state shared with the caller's thread): a LoggedModel, its files, READY, the run's output.
        logged = self._client.create_logged_model(
            # Named by its trial: the experiment's models table lists many, "model" told none apart.
            self._experiment_id, name=f"trial-{record.number}", source_run_id=self._run_id, model_type="pruned-recurrent-classifier",
            params={k: _short(v) for k, v in record.params.items()},
            tags={TRIAL_TAG: str(record.number), SWEEP_TAG: self._spec.name})
        with tempfile.TemporaryDirectory() as folder:
            def described() -> Model:
                return Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id,
                             run_id=self._run_id, model_id=logged.model_id)

            _save_model(record, Path(folder) / "model", described)
            self._client.log_model_artifacts(logged.model_id, f"{folder}/model")
        self._client.finalize_logged_model(logged.model_id, "READY")
        self._client.log_outputs(self._run_id, [LoggedModelOutput(logged.model_id, step=0)])
        # The model's metrics (the models table of the UI, `search_logged_models` filters).
        now = get_current_time_millis()
        self._client.log_batch(self._run_id, metrics=[
            Metric(k, v, now, 0, run_id=self._run_id, model_id=logged.model_id)
            for k, v in for_trackers(record.metrics).items() if k.startswith("acc/")])
        self._ensure_registered_model()
        version = self._client.create_model_version(
            self._model_name, _version_source(self.uri, logged), run_id=self._run_id,
            tags=self._version_tags(record), model_id=logged.model_id,
        )
        self._client.set_tag(self._run_id, "expander_sweeps.model_version", version.version)

    def _ensure_registered_model(self) -> None:
        """The sweep's registered model, looked up (or made) once per tracker."""
        if self._registered_model_exists:
            return
        from mlflow.exceptions import MlflowException

        try:
            self._client.get_registered_model(self._model_name)
            self._registered_model_exists = True
            return
        except MlflowException:
            pass
        try:
            self._client.create_registered_model(
                self._model_name, tags={SWEEP_TAG: self._spec.name},
                description=f"Pruned, fine-tuned checkpoints of the sweep '{self._spec.name}', one version per trial.",
            )
        except MlflowException as err:  # another worker created it first
            if "RESOURCE_ALREADY_EXISTS" not in str(err) and "already exists" not in str(err):
                raise
        self._registered_model_exists = True

    def _version_tags(self, record: TrialRecord) -> dict[str, str]:
        """A few tags to tell versions apart on the registry's page (what the trial pruned, how
        far, its clean accuracy, whether its layers are Ramanujan); the rest is on the version's
        run and LoggedModel. Thirty tags a version made the page 9,900 px tall for 13 versions."""
        m = record.metrics
        tags = {TRIAL_TAG: str(record.number), SWEEP_TAG: self._spec.name}
        for key in ("pruned_layers", "mask_method", *(k for k in record.params if k.startswith("remaining_"))):
            if key in record.params:
                tags[key] = str(record.params[key])
        if "acc/clean" in m:
            tags["acc/clean"] = f"{m['acc/clean']:.6g}"
        layers = [k.removeprefix("remaining_") for k in record.params if k.startswith("remaining_")]
        tags.update(_ramanujan_tags(m, layers))
        edges = sum(m.get(f"{layer}/binary/edges", 0.0) for layer in layers)
        tags["remaining_edges"] = str(int(edges))
        return tags

    def end_trial(self, status: str, ended: float | None = None) -> None:
        if self._run_id is not None:
            self._client.set_terminated(self._run_id, status=status, end_time=_millis(ended))
            self._run_id = None

    # ------------------------------------------------------------------ sync
    def _trial_runs(self, number: int | None = None) -> list:
        query = f"tags.`{SWEEP_TAG}` = '{self._spec.name}' and tags.`{TRIAL_TAG}` != ''"
        if number is not None:
            query = f"tags.`{SWEEP_TAG}` = '{self._spec.name}' and tags.`{TRIAL_TAG}` = '{number}'"
        return self._client.search_runs([self._experiment_id], query, max_results=50000)

    def logged_trials(self) -> set[int]:
        return {int(r.data.tags[TRIAL_TAG]) for r in self._trial_runs() if r.info.status == "FINISHED"}

    def _drop_partial(self, number: int) -> None:
        """Before (re)logging a trial: remove what a broken earlier attempt left (no duplicates)."""
        if self._numbers_in_store is not None and number not in self._numbers_in_store:
            self._numbers_in_store.add(number)  # no attempt of it in the store: its run comes next
            return
        for run in self._trial_runs(number):
            self._client.delete_run(run.info.run_id)
        from mlflow.exceptions import MlflowException

        try:  # this trial's versions only (all of them would make a sweep quadratic in its trials)
            versions = self._client.search_model_versions(
                f"name = '{self._model_name}' and tags.`{TRIAL_TAG}` = '{number}'")
        except MlflowException:
            return
        for version in versions:
            if version.tags.get(TRIAL_TAG) == str(number) and version.tags.get(SWEEP_TAG) == self._spec.name:
                self._client.delete_model_version(self._model_name, version.version)


def _save_model(record: TrialRecord, path: Path, described) -> None:
    """The trial's MLflow model directory at `path`: assembled from the payload its trial wrote
    (no torch in this process, see mlflow_model.py), or, for a trial without one (a sweep run
    with MLflow off, then `sync`ed; an older version's trial), saved from its checkpoint by
    `mlflow.pytorch.save_model`. `described()` is a new MLmodel description with the ids."""
    from .mlflow_model import PayloadUnusable, assemble

    payload = record.files.get("mlflow_model")
    if payload is not None:
        try:
            assemble(payload, record.files["example"], path, described(), list(model_requirements()))
            return
        except PayloadUnusable:
            import shutil

            shutil.rmtree(path, ignore_errors=True)
    import mlflow.pytorch
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    from ..results import load_checkpoint
    from .model_code import code_sources, model_code_paths

    model, _ = load_checkpoint(record.files["checkpoint"])
    example = np.load(record.files["example"])
    with torch.no_grad():
        signature = infer_signature(example, model(torch.from_numpy(example)).numpy())
    mlflow.pytorch.save_model(
        model, str(path), input_example=example, signature=signature,
        serialization_format="pickle", pip_requirements=list(model_requirements()),
        code_paths=model_code_paths(code_sources(model), path.parent / "code"), mlflow_model=described(),
    )


def _version_source(uri: str, logged) -> str:
    """Where a registry version points. A server resolves `models:/<model_id>` itself; MLflow's
    local registry store resolves it through the process-wide tracking URI, not this client's
    (it would not find a model of the embedded store), so a local version points at the
    LoggedModel's files, as MLflow's own registration of a local model records them."""
    if uri.split(":", 1)[0] in ("http", "https", "databricks"):
        return f"models:/{logged.model_id}"
    return logged.artifact_location


@functools.lru_cache(maxsize=1)  # reading package metadata costs ~20 ms: once per process
def model_requirements() -> tuple[str, ...]:
    """What a logged model needs from PyPI, pinned to what made it: torch, and what unpickling
    the bundled package imports (cloudpickle for MLflow's pickle format; numpy, pydantic and
    PyYAML for this package's models and spec). Never `expander-sweeps` itself, which no index
    has: its code travels in the model (`model_code.model_code_paths`)."""
    from importlib.metadata import version

    names = ("torch", "cloudpickle", "numpy", "pydantic", "PyYAML")
    return tuple(f"{name}=={version(name).split('+')[0]}" for name in names)


def _dataset_input(spec: SweepSpec, fingerprint: str | None):
    """The trial's training data as an MLflow dataset input: the dataset's name, where it was
    read from, and the data's own fingerprint as its digest."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(name=spec.data.dataset, digest=(fingerprint or "unknown")[:36], source_type="local",
                      source=data_source(spec))
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "train")])


def _flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."  # MLflow's param value limit


def set_registry_aliases(spec: SweepSpec, trials: list[dict]) -> dict[str, str]:
    """Point `dense`, `best` and `sparsest-ramanujan` at model versions; returns alias -> version.

    `trials` are finished trials' user attributes (with "trial"). The rules are ALIAS_RULES,
    also tagged on each chosen version (`alias.<name>`).
    """
    client = _client(mlflow_uri(spec))
    name = registered_model_name(spec)
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return {}
    by_trial = {int(v.tags[TRIAL_TAG]): v for v in versions
                if v.tags.get(SWEEP_TAG) == spec.name and TRIAL_TAG in v.tags}
    rows = [t for t in trials if int(t["trial"]) in by_trial]
    if not rows:
        return {}
    chosen = choose_aliases(rows, spec.masks.layers, spec.report.drop_threshold)
    tolerance = spec.report.drop_threshold
    result = {}
    for alias, trial in chosen.items():
        version = by_trial[int(trial["trial"])].version
        client.set_registered_model_alias(name, alias, version)
        client.set_model_version_tag(name, version, f"alias.{alias}", ALIAS_RULES[alias].format(
            points=f"{100 * tolerance:g}"))
        result[alias] = version
    return result


def _millis(seconds: float | None) -> int | None:
    """Unix seconds as MLflow's milliseconds (None: MLflow takes the time of the call)."""
    return None if seconds is None else int(round(seconds * 1000))
