"""Shared fixtures: the real data in ../shared/data, and tiny specs written as real YAML files."""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EXPANDER_SWEEPS_SHARED_DATA", REPO.parent / "shared" / "data"))
MNIST_DIR = SHARED_DATA / "mnist"
CLI = [str(Path(sys.executable).parent / "expander-sweeps")]  # the real command, as a user runs it


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"the real MNIST test set is not at {MNIST_DIR} (set EXPANDER_SWEEPS_SHARED_DATA)")
    return MNIST_DIR


def tiny_spec_dict(run_dir: Path, mnist: Path, **sections) -> dict:
    """A sweep small enough for seconds on a CPU, on the real MNIST files."""
    spec = {
        "name": "tiny",
        "run_dir": str(run_dir),
        "data": {"root": str(mnist), "download": False, "limit_train": 600, "limit_test": 300},
        "model": {"cell": "rnn", "hidden": 16},
        "training": {"epochs": 2, "finetune_epochs": 1, "batch_size": 64},
        "masks": {"remaining": [1.0, 0.3, 0.05]},
        "noise": {"variances": [0.3]},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


# ----------------------------------------------------------------------------- workers and crashes
def grid_spec(tmp_path, mnist_dir, storage: str | None, fractions, **sections) -> Path:
    """A tied grid of trials of about a second each (long enough to kill one), written as a spec."""
    spec = tiny_spec_dict(
        tmp_path / "run", mnist_dir,
        study={"storage": storage, "heartbeat_seconds": 1, "grace_seconds": 4, "retries": 2},
        data={"limit_train": 1500, "limit_test": 200},
        model={"cell": "rnn", "hidden": 32},
        # trials of ~1 s, one at a time (per trial): long enough to kill one in the middle
        training={"epochs": 1, "finetune_epochs": 8, "batch_size": 32, "engine": "per_trial",
                  **sections.pop("training", {})},
        masks={"schedule": "tied", "remaining": fractions},
        **{"tracking": {"mlflow": {"enabled": False}}, **sections},
    )
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def wait_for(condition, timeout: float, what: str):
    """condition()'s first true value, polled every 50 ms; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


STORAGES: dict[str, optuna.storages.RDBStorage] = {}


def study_trials(study_name: str, url: str, states=None):
    """The study's trials, or none while no worker has created the study (or its tables) yet.
    The poller never creates tables itself: that would race the workers creating them. Read with
    Optuna's own storages, not the tool's."""
    if url.startswith(("journal://", "redis://")):
        return journal_trials(study_name, url, states)
    try:
        storage = STORAGES.get(url) or STORAGES.setdefault(
            url, optuna.storages.RDBStorage(url, skip_table_creation=True, skip_compatibility_check=True))
        return optuna.load_study(study_name=study_name, storage=storage).get_trials(states=states)
    except (KeyError, sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError):
        return []



def journal_trials(study_name: str, url: str, states=None):
    """The trials of a journal:// or redis:// study, read by a plain Optuna JournalStorage."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalRedisBackend

    from expander_sweeps.sweep.storages import journal_file, redis_address

    log = journal_file(url)
    if log is not None and not log.exists():
        return []
    if log is not None:
        backend = JournalFileBackend(str(log))
    else:
        address, prefix = redis_address(url)
        backend = JournalRedisBackend(address, prefix=prefix)
    try:
        return optuna.load_study(study_name=study_name, storage=JournalStorage(backend)).get_trials(states=states)
    except KeyError:
        return []


PG_ADMIN = os.environ.get("EXPANDER_SWEEPS_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("EXPANDER_SWEEPS_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture
def postgres_url():
    """A database of this test's own on the PostgreSQL server at 127.0.0.1, dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as err:
        pytest.skip(f"no PostgreSQL server at {PG_ADMIN}: {err}")
    name = f"es_test_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{base}/{name}"
    finally:
        for url in [u for u in STORAGES if u.endswith(f"/{name}")]:
            STORAGES.pop(url).engine.dispose()
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def redis_url():
    """A journal of this test's own in the Redis server at 127.0.0.1 (keys under a prefix of its
    own), deleted afterwards."""
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as err:
        pytest.skip(f"no Redis server at {REDIS}: {err}")
    prefix = f"es_test_{uuid.uuid4().hex[:10]}:"
    try:
        yield f"{REDIS}?prefix={prefix}"
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def write_spec(tmp_path):
    def write(data: dict | str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
        return path

    return write


@pytest.fixture(autouse=True)
def _tracking_uri_untouched():
    """`mlflow.set_tracking_uri` also sets $MLFLOW_TRACKING_URI in this process; a test that
    calls it must not send later tests' subprocesses to its (by then stopped) server."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture(autouse=True)
def _import_path_untouched():
    """Loading a logged model (`mlflow.pyfunc.load_model`, `mlflow.pytorch.load_model`) puts the
    model's code/ folder, a partial copy of this package, first on sys.path for good. Processes
    that later tests spawn get that path (a ProcessPoolExecutor's children re-import the test
    module from it and fail), so each test leaves the path as it found it."""
    before = list(sys.path)
    yield
    sys.path[:] = before


def pytest_configure(config):
    """Launches in tests run in one process unless a test asks otherwise: a tiny sweep is done
    before a second worker has imported torch. The CPU default (one worker per core) has its
    own end-to-end test (tests/test_cli.py), which removes this variable for its launch."""
    os.environ["EXPANDER_SWEEPS_WORKERS"] = "1"


def pytest_collection_modifyitems(config, items):
    """Fast tests first, the end-to-end (slow) ones after: a broken definition fails in seconds."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is not None)
