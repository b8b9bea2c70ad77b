"""Tracker backends as plug-ins: one registry of the experiment trackers a sweep can log to.

A backend is one `Backend`: its name, the label its messages use, whether a spec enables it, and
the function that builds its `Tracker` (base.py's protocol) for a sweep. Optional hooks: a library
to import before any tracker is built, what to write beside a trial's checkpoint in the trial's own
process (MLflow's model payload: the tracker process never imports torch), the lines `launch`
prints under "open next" and after publishing, and a one-line diagnosis of a failure. Nothing else in the package names
a backend: the factory, `sync`, the report and the CLI ask this registry.

A new tracker (TensorBoard, say) is one module with a Tracker class and one registration,

    register_backend(Backend("tensorboard", "TensorBoard", make=TensorBoardTracker))

named under `plugins:` in the spec and enabled by `tracking.extra: {tensorboard: {...}}` (its
settings, which the tracker reads from `spec.tracking.extra["tensorboard"]`). A tracker may also
define `publish(study, rows) -> {alias: version}`: called with the report's trial rows before
`end_sweep`, where a registry-like tracker sets its aliases (the default is to do nothing).

Standard library only at import time (the spec checks `tracking.extra` against it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..registry import Registry

__all__ = ["Backend", "register_backend", "unregister_backend", "backend_names", "enabled_backends", "any_enabled",
           "trial_file_hooks"]


def _named_in_extra(name: str) -> Callable[[Any], bool]:
    return lambda spec: name in spec.tracking.extra


@dataclass(frozen=True)
class Backend:
    """name: the tracker's name (warnings, `sync`'s counts, `tracking.extra`'s key); label: how
    messages write it; make: spec -> Tracker (raises base.TrackerUnavailable, with how to fix it,
    when it cannot start); enabled: spec -> bool (default: named in `tracking.extra`);
    import_first: imports run before any tracker is built (order matters for some SDKs);
    preload: spec -> None, the rest of what a tracker process imports at start, creating nothing;
    trial_files: (spec, files, example input, trial folder) -> more files, in the trial's process;
    open_next: spec -> lines for the launch's "open next"; after_publish: spec -> a line printed
    once the report is on the trackers (W&B's offline runs: how to upload them); explain_failure: (spec, error) -> one
    line saying what failed and what to do, or None when the error is not this backend's."""

    name: str
    label: str
    make: Callable[[Any], Any]
    enabled: Callable[[Any], bool] | None = None
    import_first: Callable[[], None] | None = None
    preload: Callable[[Any], None] | None = None
    trial_files: Callable[[Any, dict[str, str], Any, Path], dict[str, str]] | None = None
    open_next: Callable[[Any], list[str]] | None = None
    after_publish: Callable[[Any], str | None] | None = None
    explain_failure: Callable[[Any, Exception], str | None] | None = None

    def is_enabled(self, spec: Any) -> bool:
        return (self.enabled or _named_in_extra(self.name))(spec)


_REGISTRY: Registry[Backend] = Registry("tracker backend", "it names the tracker in messages and in tracking.extra")


def register_backend(backend: Backend, replace: bool = False) -> Backend:
    return _REGISTRY.add(backend.name, backend, replace)


def unregister_backend(name: str) -> None:
    _REGISTRY.remove(name)


def backend_names() -> tuple[str, ...]:
    return _REGISTRY.names()


def enabled_backends(spec: Any) -> list[Backend]:
    """The backends `spec` enables, in registration order (the built-in ones first)."""
    return [b for b in _REGISTRY.items() if b.is_enabled(spec)]


def any_enabled(spec: Any) -> bool:
    return bool(enabled_backends(spec))


def trial_file_hooks(spec: Any) -> list[Callable[[Any, dict[str, str], Any, Path], dict[str, str]]]:
    """What the enabled backends write beside each trial's checkpoint (installed on the sweep's
    context, so trial.py imports nothing from tracking/)."""
    return [b.trial_files for b in enabled_backends(spec) if b.trial_files is not None]


# ----------------------------------------------------------------------------- built-in backends
# Each imports its module (and SDK) when used, never here.
def _make_mlflow(spec):
    from .mlflow_backend import MlflowTracker

    return MlflowTracker(spec)


def _make_wandb(spec):
    from .wandb_backend import WandbTracker

    return WandbTracker(spec)


def _import_wandb_first() -> None:
    """Import W&B's SDK, with the public API a run's artifacts use, before MLflow's. Pydantic
    finds each W&B model's field docstrings through `inspect.getmodule`, which walks every loaded
    module; after MLflow, SQLAlchemy and Optuna (about 2,000 modules more) that costs more CPU in
    the tracker process (benchmarks/README.md has the figures)."""
    import contextlib

    with contextlib.suppress(ImportError):  # no W&B: its tracker says so when it is built
        import wandb.apis.public  # noqa: F401


def _mlflow_payload(spec, files: dict[str, str], example, trial_dir: Path) -> dict[str, str]:
    """MLflow's model payload, written by the trial (what the tracker process would need torch for)."""
    from . import mlflow_model

    if not mlflow_model.wanted(spec):
        return {}
    folder = str(mlflow_model.payload_folder(trial_dir))
    mlflow_model.write_payload(files["checkpoint"], example, folder)
    return {"mlflow_model": folder}


def _mlflow_preload(spec) -> None:
    from .mlflow_backend import _configure_mlflow, mlflow_uri

    _configure_mlflow()  # imports MLflow, sets how it behaves (environment, log levels)
    from mlflow.tracking import MlflowClient  # noqa: F401

    if not mlflow_uri(spec).startswith(("http:", "https:", "databricks")):  # a database store
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401


def _mlflow_open_next(spec) -> list[str]:
    from ..spec import redact_url
    from .mlflow_backend import mlflow_uri

    uri = mlflow_uri(spec)
    return [f"mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite:") else f"MLflow UI:       {redact_url(uri)}"]


def _mlflow_failure(spec, err: Exception) -> str | None:
    from ..spec import redact_url, sqlite_file
    from .mlflow_backend import mlflow_uri

    uri = mlflow_uri(spec)
    file = sqlite_file(uri)
    if file is not None and ("malformed" in str(err) or "not a database" in str(err)):
        return (f"the MLflow store {file} is damaged ({type(err).__name__}: {(str(err).splitlines() or [''])[0]}). "
                f"The study holds every result: move the file aside (mv {file} {file}.damaged) and run "
                "`expander-sweeps sync` again to log every trial into a new store")
    if file is None and any(word in str(err) for word in ("Connection refused", "Max retries", "timed out",
                                                          "Name or service not known", "API request")):
        return (f"the MLflow server {redact_url(uri)} does not answer ({type(err).__name__}). Start it, or "
                "point tracking.mlflow.uri / $MLFLOW_TRACKING_URI at a running one, then run "
                "`expander-sweeps sync` again; nothing is lost (the study holds every result)")
    return None


def _wandb_after_publish(spec) -> str | None:
    from .wandb_backend import sync_command, wandb_mode

    return f"W&B runs are offline; upload them with: {sync_command(spec)}" if wandb_mode(spec) == "offline" else None


register_backend(Backend("mlflow", "MLflow", _make_mlflow, enabled=lambda spec: spec.tracking.mlflow.enabled,
                         preload=_mlflow_preload, trial_files=_mlflow_payload,
                         open_next=_mlflow_open_next, explain_failure=_mlflow_failure))
register_backend(Backend("wandb", "W&B", _make_wandb, enabled=lambda spec: spec.tracking.wandb.enabled,
                         import_first=_import_wandb_first, after_publish=_wandb_after_publish))
