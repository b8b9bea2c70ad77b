"""A new embedded MLflow store (SQLite), copied from a template MLflow migrated once per version.

Why: MLflow builds a new SQLite store by running its whole chain of schema migrations, about
1.4 s of CPU that the tracker process spends next to training at the start of every sweep (and
every test that opens a store). The result is the same file each time for one MLflow version,
so it is made once, by MLflow itself, and kept in the user's cache
(`$XDG_CACHE_HOME/expander-sweeps`, else `~/.cache/expander-sweeps`), one file per MLflow version.

The template holds MLflow's tables at the head schema revision and nothing else: its `Default`
experiment is deleted, so MLflow creates it when the copy is first opened, with the artifact
location of that store, exactly as on a store it migrated itself. MLflow checks the copy's schema
revision when it opens it. Anything that goes wrong here (no writable cache, a full disk) only
means MLflow migrates the new store itself, as it would without this module.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

__all__ = ["cache_folder", "template_path", "create_from_template", "relocate"]

_DEFAULT_EXPERIMENT_ID = 0  # MLflow creates experiment 0, "Default", when it opens a store without one


def cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "expander-sweeps"


def template_path() -> Path:
    import mlflow

    return cache_folder() / f"mlflow-{mlflow.__version__}-empty-store.db"


def _write_template(template: Path) -> None:
    """MLflow migrates a new store in a temporary file; its Default experiment is removed, then
    the file takes the template's name in one rename (a reader never sees half a template)."""
    from mlflow.tracking import MlflowClient

    template.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=template.parent, prefix=".mlflow-store-", suffix=".db")
    os.close(handle)
    os.unlink(temporary)  # MLflow creates the tables only in a file that is not there yet
    try:
        MlflowClient(tracking_uri=f"sqlite:///{temporary}").search_experiments(max_results=1)
        with contextlib.closing(sqlite3.connect(temporary)) as db, db:
            db.execute("DELETE FROM experiment_tags WHERE experiment_id = ?", (_DEFAULT_EXPERIMENT_ID,))
            db.execute("DELETE FROM experiments WHERE experiment_id = ?", (_DEFAULT_EXPERIMENT_ID,))
        os.replace(temporary, template)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def create_from_template(database: Path) -> bool:
    """Create the store `database` (which must not exist yet) from the template, making the
    template first if this MLflow version has none. Returns False, leaving nothing behind,
    when that fails for any reason: MLflow then creates the store itself."""
    temporary = None
    try:
        template = template_path()
        if not template.is_file():
            _write_template(template)
        handle, temporary = tempfile.mkstemp(dir=database.parent, prefix=".mlflow-", suffix=".db")
        os.close(handle)
        shutil.copyfile(template, temporary)
        os.replace(temporary, database)
        return True
    except Exception:  # noqa: BLE001 - any failure: MLflow migrates the store itself, as before
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        return False


def _recorded_run_folders(db: sqlite3.Connection) -> set[Path]:
    """The run folders the store's experiments keep their artifacts in (`<run folder>/mlartifacts`)."""
    folders = set()
    for (location,) in db.execute("SELECT artifact_location FROM experiments"):
        if not location or not location.startswith("file://"):
            continue
        path = unquote(urlparse(location).path)
        if "/mlartifacts" in path:
            folders.add(Path(path[: path.index("/mlartifacts")]))
    return folders


def relocate(database: Path, run_dir: Path) -> list[Path]:
    """Make an embedded store that was moved or copied with its run folder point into it again.

    MLflow records absolute artifact locations: the experiment's, every run's artifact URI, every
    logged model's and model version's source. A store whose experiments keep their artifacts in
    another folder's `mlartifacts` (the folder it was copied from) has every such path under that
    folder rewritten to `run_dir`, in every text column of every table, the `file://` URI form and
    the plain path form alike. Returns the folders it was relocated from (none: nothing to do)."""
    new = run_dir.resolve()
    with contextlib.closing(sqlite3.connect(database, timeout=60)) as db, db:
        old_folders = [folder for folder in _recorded_run_folders(db) if folder != new]
        if not old_folders:
            return []
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        columns = {table: [row[1] for row in db.execute(f'PRAGMA table_info("{table}")')
                           if not row[2] or any(t in row[2].upper() for t in ("CHAR", "TEXT", "CLOB"))]
                   for table in tables}
        for old in old_folders:
            # The URI form first (percent-encoded), then the plain path; both end in '/', so that
            # /runs/a never matches /runs/ab.
            for before, after in ((old.as_uri() + "/", new.as_uri() + "/"), (f"{old}/", f"{new}/")):
                for table, names in columns.items():
                    for column in names:
                        db.execute(f'UPDATE "{table}" SET "{column}" = REPLACE("{column}", ?, ?) '
                                   f'WHERE instr("{column}", ?) > 0', (before, after, before))
    return old_folders
