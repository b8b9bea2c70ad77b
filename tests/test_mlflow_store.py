"""A new embedded MLflow store copied from the migrated template (tracking/mlflow_store.py) is
the store MLflow would have built itself; without a usable cache MLflow builds it as before."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from expander_sweeps.tracking import mlflow_store


def _schema(database: Path) -> tuple[dict, list[tuple]]:
    """Each table's columns, foreign keys and indexes (with their columns), and the schema
    revision. Compared as sets, not as CREATE statements: MLflow's SQLite migrations rebuild
    tables and write their constraint clauses in an order that differs from one run to the next."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        schema = {}
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            indexes = {(name, unique, tuple(c[2] for c in db.execute(f'PRAGMA index_info("{name}")')))
                       for _, name, unique, *_ in db.execute(f'PRAGMA index_list("{table}")')}
            schema[table] = (set(db.execute(f'PRAGMA table_info("{table}")')),
                             {row[2:] for row in db.execute(f'PRAGMA foreign_key_list("{table}")')}, indexes)
        revision = db.execute("SELECT version_num FROM alembic_version").fetchall()
    return schema, revision


def _default_experiment(database: Path) -> tuple[str, str]:
    experiment = MlflowClient(tracking_uri=f"sqlite:///{database}").get_experiment("0")
    return experiment.name, experiment.artifact_location


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "expander-sweeps"


def test_store_from_template_is_the_store_mlflow_migrates(tmp_path, cache, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow puts a store's Default experiment under ./mlruns
    migrated = tmp_path / "migrated" / "mlflow.db"
    migrated.parent.mkdir()
    MlflowClient(tracking_uri=f"sqlite:///{migrated}").search_experiments()  # MLflow's own migrations
    copied = tmp_path / "copied" / "mlflow.db"
    copied.parent.mkdir()

    assert mlflow_store.create_from_template(copied)
    assert mlflow_store.template_path().parent == cache and mlflow_store.template_path().is_file()
    assert _schema(copied) == _schema(migrated)  # every table, index and the head revision
    # The template has no experiment; MLflow creates Default on first open, for this store.
    with contextlib.closing(sqlite3.connect(copied)) as db:
        assert db.execute("SELECT COUNT(*) FROM experiments").fetchone() == (0,)
    assert _default_experiment(copied) == _default_experiment(migrated) == ("Default", str(tmp_path / "mlruns" / "0"))
    client = MlflowClient(tracking_uri=f"sqlite:///{copied}")
    run = client.create_run(client.create_experiment("e"))
    client.log_metric(run.info.run_id, "acc", 0.5)
    assert client.get_run(run.info.run_id).data.metrics == {"acc": 0.5}


def test_template_is_made_once_per_mlflow_version(tmp_path, cache):
    assert mlflow_store.create_from_template(tmp_path / "a.db")
    template = mlflow_store.template_path()
    made = template.stat()
    assert mlflow_store.create_from_template(tmp_path / "b.db")
    assert (template.stat().st_ino, template.stat().st_mtime_ns) == (made.st_ino, made.st_mtime_ns)
    import mlflow

    assert template.name == f"mlflow-{mlflow.__version__}-empty-store.db"
    assert sorted(p.name for p in cache.iterdir()) == [template.name]  # no temporary file left


def test_without_a_usable_cache_mlflow_migrates_the_store_itself(tmp_path, monkeypatch, mnist_dir):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    database = tmp_path / "run" / "mlflow.db"
    database.parent.mkdir()
    assert not mlflow_store.create_from_template(database)
    assert sorted(p.name for p in database.parent.iterdir()) == []  # nothing half-made

    from conftest import tiny_spec_dict
    from expander_sweeps.spec import SweepSpec
    from expander_sweeps.tracking.mlflow_backend import MlflowTracker

    spec = SweepSpec.model_validate(tiny_spec_dict(tmp_path / "run", mnist_dir))
    tracker = MlflowTracker(spec)  # the tracker's own path: template refused, MLflow migrates
    assert database.is_file() and _schema(database)[1]
    assert tracker._client.get_experiment("0").name == "Default"
