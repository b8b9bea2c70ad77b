"""Weights & Biases backend: one run per trial, grouped by sweep, ready for parallel coordinates.

Config and summary keys are flat scalars with the same names as the MLflow params and
metrics (`remaining_W_xh`, `acc/clean`, `W_xh/binary/delta_r`, ...), so the
parallel-coordinates panel picks them up without setup. Offline by default when no API key
is configured; `wandb sync <run_dir>/wandb/offline-run-*` uploads later. The API key is never
passed to or logged by this module: wandb reads it from its own environment or netrc.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import secrets
from pathlib import Path
from typing import Any

from ..results import ALIAS_RULES, for_trackers, trial_label
from ..spec import SweepSpec
from .base import SweepState, TrackerUnavailable, TrialRecord, data_source
from .mlflow_backend import registered_model_name

__all__ = ["WandbTracker", "wandb_mode", "sync_command"]

_LEDGER = "expander_sweeps_logged.json"  # trials whose offline run finished (for `sync`)
_TOKEN = "wandb_run_token"  # study attribute: the sweep's part of every W&B run id


def wandb_mode(spec: SweepSpec) -> str:
    mode = spec.tracking.wandb.mode
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def sync_command(spec: SweepSpec) -> str:
    return f"wandb sync {spec.run_path / 'wandb'}/offline-run-*"


class WandbTracker:
    name = "wandb"

    def __init__(self, spec: SweepSpec):
        try:
            import wandb
        except ImportError:
            raise TrackerUnavailable(
                "the wandb package is not installed; pip install 'expander-sweeps[wandb]', or set tracking.wandb.enabled=false"
            ) from None
        self._wandb = wandb
        self._spec = spec
        self._mode = wandb_mode(spec)
        self._project = spec.tracking.wandb.project or spec.name
        self._folder = spec.run_path
        self._folder.mkdir(parents=True, exist_ok=True)
        self._run = None
        self._number: int | None = None
        self._pending: list[Path] = []
        self._lineage: dict[str, str] = {}  # metadata of the trial's model artifact (log_model)
        self._aliases: tuple[dict, dict[int, str]] = ({}, {})  # published by end_sweep (set_aliases)
        self._config: dict[str, Any] = {}
        self._id_prefix = spec.name.replace(".", "-")  # until start_sweep reads the study's token

    def settings(self):
        """A trial's run is short: no console capture, git or code snapshot, and no pip freeze
        per run (they cost CPU next to the training); system metrics only on request. The tracker
        process runs on idle CPU time, and training makes room for it only once its backlog is
        tracking.max_lag_seconds old (pacing.py): `wandb.init` may wait that long for a core, on
        top of W&B's own 90 s."""
        return self._wandb.Settings(silent=True, console="off", init_timeout=90.0 + self._spec.tracking.max_lag_seconds,
                                    x_disable_stats=not self._spec.tracking.wandb.system_metrics,
                                    x_disable_meta=True, x_disable_machine_info=True, disable_code=True,
                                    disable_git=True, x_save_requirements=False, x_disable_viewer=True)

    def _init(self, **kwargs):
        return self._wandb.init(
            project=self._project, entity=self._spec.tracking.wandb.entity, group=self._spec.name,
            dir=str(self._folder), mode=self._mode, reinit="create_new", settings=self.settings(), **kwargs,
        )

    def start_sweep(self, sweep: str, config: dict[str, Any], state: SweepState) -> None:
        """Runs are grouped by the sweep's name. Their ids carry a token drawn once per study and
        kept in it, so a new sweep of the same name never resumes an old sweep's runs, while every
        launch, relaunch, worker and `sync` of this one writes to the same runs."""
        self._config = config
        token = state.get(_TOKEN)
        if token is None:
            token = secrets.token_hex(4)
            state.set(_TOKEN, token)
        self._id_prefix = f"{self._spec.name.replace('.', '-')}-{token}"

    def start_trial(self, number: int, params: dict[str, Any], started: float | None = None) -> None:
        # W&B sets a run's start itself (no API to give it): the trial's real duration is its
        # `seconds/trial` metric.
        self._number = number
        # Under `wandb agent` the agent owns the run's id; elsewhere a fixed id per trial.
        identity = {} if os.environ.get("WANDB_SWEEP_ID") else {"id": f"{self._id_prefix}-trial-{number}",
                                                                 "resume": "allow"}
        label = trial_label(number, params)
        pruned = params.get("pruned_layers", "")
        # Tags to filter by in the W&B UI (each under 64 characters); the notes say what the run is.
        tags = [f"sweep:{self._spec.name}"[:64], f"pruned:{pruned or 'none'}"[:64],
                f"mask:{params.get('mask_method', '')}"[:64], f"seed:{params.get('seed', '')}"]
        self._run = self._init(name=label, job_type="trial", config={"trial": number, **params}, tags=tags,
                               notes=f"Sweep {self._spec.name}, {label}.", **identity)
        # Each phase's curves against its own epoch axis (fine-tuning starts at its epoch 1,
        # not at the step where dense training ended).
        for phase in ("dense", "finetune"):
            self._run.define_metric(f"{phase}/epoch")
            self._run.define_metric(f"{phase}/*", step_metric=f"{phase}/epoch")

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if step is not None:  # per-epoch history: each phase has its own epoch axis
            phase = next(iter(metrics)).split("/")[0]
            self._run.log({**metrics, f"{phase}/epoch": step})
        else:
            # Final numbers: flat summary keys, every key in every run (results.for_trackers).
            # Logged as one history row, whose last values make the summary: W&B keeps a NaN
            # logged so, but drops one written with summary.update (it serialises it as null).
            self._run.log(for_trackers(metrics))

    def log_history(self, steps: list[tuple[dict[str, float], int]]) -> None:
        for metrics, step in steps:  # local writes to the run's file: one per epoch costs little
            self.log_metrics(metrics, step)

    def log_artifact(self, path: str, folder: str | None = None) -> None:
        if Path(path).exists():
            self._pending.append(Path(path))  # uploaded as two artifacts when the trial ends

    def _log_pending(self) -> None:
        """The trial's files as two artifacts: the checkpoint (type `model`) and the rest (`masks`)."""
        model_files = [p for p in self._pending if p.suffix == ".pt"]
        other_files = [p for p in self._pending if p.suffix != ".pt"]
        with self._staging_in_run_folder():
            for kind, files in (("model", model_files), ("masks", other_files)):
                if files:
                    artifact = self._wandb.Artifact(f"{self._spec.name}-trial-{self._number}-{kind}", type=kind,
                                                    metadata=self._lineage if kind == "model" else None)
                    for file in files:
                        artifact.add_file(str(file))
                    self._run.log_artifact(artifact)
        self._pending, self._lineage = [], {}

    @contextlib.contextmanager
    def _staging_in_run_folder(self):
        """W&B copies an artifact's files to a staging folder until they are uploaded (offline:
        until `wandb sync`). By default that is ~/.local/share/wandb, outside the run folder, so a
        run folder copied elsewhere to sync would lose them: stage in <run_dir>/wandb/staging."""
        before = os.environ.get("WANDB_DATA_DIR")
        os.environ["WANDB_DATA_DIR"] = str((self._folder / "wandb" / "staging").resolve())
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("WANDB_DATA_DIR", None)
            else:
                os.environ["WANDB_DATA_DIR"] = before

    def log_model(self, record: TrialRecord) -> None:
        """The checkpoint itself goes up as an artifact of type `model` (log_artifact); here its
        lineage, as that artifact's metadata: the training data (its fingerprint and source) and
        the dense checkpoint it was pruned from. (W&B refuses `use_artifact` in offline mode,
        this tool's default, with "Cannot use artifact when in offline mode".)"""
        self._lineage = {"data_dataset": self._spec.data.dataset, "data_source": data_source(self._spec),
                         "data_fingerprint": str(record.params.get("data_fingerprint", "unknown"))}
        dense = record.files.get("dense_checkpoint")
        if dense:
            self._lineage["dense_checkpoint"] = Path(dense).name  # dense-<hash of its training setup>.pt

    def end_trial(self, status: str, ended: float | None = None) -> None:
        if self._run is None:
            return
        self._log_pending()
        self._run.finish(exit_code=0 if status == "FINISHED" else 1)
        self._run = None
        if status == "FINISHED" and self._mode == "offline":
            ledger = self._folder / "wandb" / _LEDGER
            done = set(json.loads(ledger.read_text())) if ledger.exists() else set()
            ledger.write_text(json.dumps(sorted(done | {self._number})))

    def publish(self, study, rows: list[dict]) -> dict[str, str]:
        """Registry-style aliases, logged by `end_sweep` on the summary run (MLflow's are the ones returned)."""
        from .publishing import aliases_and_checkpoints

        self.set_aliases(*aliases_and_checkpoints(self._spec, study, rows))
        return {}

    def set_aliases(self, chosen: dict[str, dict[str, Any]], checkpoints: dict[int, str]) -> None:
        """The registry aliases (results.choose_aliases: alias -> trial row) and each trial's
        checkpoint, published by the next `end_sweep` as versions of one `<name>-pruned` model
        artifact carrying those aliases, as MLflow's registry carries them."""
        self._aliases = (chosen, checkpoints)

    def _log_aliases(self, run) -> None:
        chosen, checkpoints = self._aliases
        by_trial: dict[int, list[str]] = {}
        for alias, row in chosen.items():
            by_trial.setdefault(int(row["trial"]), []).append(alias)
        points = f"{100 * self._spec.report.drop_threshold:g}"
        with self._staging_in_run_folder():
            for number, aliases in sorted(by_trial.items()):
                if number not in checkpoints or not Path(checkpoints[number]).is_file():
                    continue
                metadata = {"trial": number, **{f"alias.{a}": ALIAS_RULES[a].format(points=points) for a in aliases}}
                # One collection, as MLflow's registered model: W&B keeps one version per distinct
                # checkpoint, and the aliases move to the version logged with them last.
                artifact = self._wandb.Artifact(registered_model_name(self._spec), type="model", metadata=metadata)
                artifact.add_file(checkpoints[number], name="model.pt")
                run.log_artifact(artifact, aliases=aliases)

    def end_sweep(self, report_files: list[str]) -> None:
        if self._run is not None:
            self.end_trial("KILLED")
        crossings = next((p for p in report_files if p.endswith("crossings.csv")), None)
        if crossings is None:
            return
        # One summary run per sweep (a fixed id, resumed): a relaunch or `sync` updates it.
        run = self._init(name=f"{self._spec.name}-summary", job_type="summary", id=f"{self._id_prefix}-summary",
                         resume="allow", config=self._config)
        with open(crossings, newline="") as handle:
            rows = list(csv.reader(handle))
        run.log({"crossings": self._wandb.Table(columns=rows[0], data=rows[1:])})
        for path in report_files:
            if path.endswith(".png"):
                run.log({f"figure/{Path(path).stem}": self._wandb.Image(path)})
        self._log_aliases(run)
        run.finish()

    def logged_trials(self) -> set[int]:
        if self._mode == "offline":
            ledger = self._folder / "wandb" / _LEDGER
            return set(json.loads(ledger.read_text())) if ledger.exists() else set()
        api = self._wandb.Api()
        path = f"{self._spec.tracking.wandb.entity + '/' if self._spec.tracking.wandb.entity else ''}{self._project}"
        runs = api.runs(path, filters={"group": self._spec.name, "jobType": "trial", "state": "finished"})
        return {int(r.config["trial"]) for r in runs if "trial" in r.config}

