"""Where a study lives: Optuna's storage for a `study.storage` URL, and the few operations whose
cost decides how many workers one study can serve.

Three kinds, one set of guarantees (atomic claims, heartbeats, retries of a dead worker's trial,
the settings fingerprint in the study's attributes):

- a SQLAlchemy URL (`sqlite:///...`, `postgresql+psycopg://...`): Optuna's RDBStorage;
- `journal:///path/study.log`: Optuna's JournalStorage on a file, for clusters that allow no
  database server (the file on a shared filesystem: NFS, Lustre, GPFS). A relative path
  (`journal://runs/study.log`) is relative to the working folder, as SQLite's are;
- `redis://host:6379/0` (`rediss://` with TLS): the same journal kept in Redis; `?prefix=NAME`
  keeps it under keys of its own, so that one Redis database holds several independent journals.

Optuna's journal has no heartbeats, and heartbeats are what bring a killed worker's trial back:
`HeartbeatJournal` records them as a trial system attribute (`heartbeat`, seconds since the
epoch by the worker's clock: the machines' clocks must agree to well within
`study.grace_seconds`, which NTP gives), so that Optuna's own `fail_stale_trials` and retry
callback work on it unchanged.

Claims and records are the coordination cost per trial. Optuna reads a study's every unfinished
trial on each `get_trials` of an RDB study (0.25 s with 2,000 points waiting), and writes each
user attribute in its own transaction (a trial records ~100): `waiting_trial_ids` asks the
database for the ids alone, and `set_trial_user_attrs` writes a trial's attributes in one
transaction (one locked append of the journal). benchmarks/coordination.py measures both.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import random
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from filelock import FileLock
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import TrialState

from ..spec import redact_url, sqlite_file

__all__ = ["StorageError", "storage_kind", "journal_file", "dashboard_argument", "make_storage", "storage_lock",
           "waiting_trial_ids", "set_running", "fail_stale_trials", "set_trial_user_attrs", "HeartbeatJournal", "HEARTBEAT_ATTR"]

HEARTBEAT_ATTR = "heartbeat"
JOURNAL_PREFIX = "journal://"
REDIS_PREFIXES = ("redis://", "rediss://")


def storage_kind(url: str) -> str:
    """'sqlite', 'journal' (a file), 'redis' (a journal in Redis) or 'database' (any other
    SQLAlchemy URL)."""
    if url.startswith("sqlite:"):
        return "sqlite"
    if url.startswith(JOURNAL_PREFIX):
        return "journal"
    if url.startswith(REDIS_PREFIXES):
        return "redis"
    return "database"


def dashboard_argument(url: str) -> str:
    """The storage as optuna-dashboard and the `optuna` CLI take it, password masked: a journal
    file by its path (they read a file that is not a database as a journal), any URL as it is."""
    log = journal_file(url)
    return str(log) if log is not None else redact_url(url)


def journal_file(url: str) -> Path | None:
    """The log file of a journal:// URL, else None."""
    if not url.startswith(JOURNAL_PREFIX):
        return None
    return Path(url.removeprefix(JOURNAL_PREFIX))


class StorageError(RuntimeError):
    """The study's storage cannot be opened; the message says which URL and what to check."""

    @classmethod
    def about(cls, url: str, err: Exception) -> StorageError:
        reason = str(err).splitlines()[0] if str(err) else ""
        file = sqlite_file(url)
        if file is not None:  # a file on this machine: no server to check
            return cls(
                f"cannot open the Optuna study file {file}: {type(err).__name__}: {reason}. "
                + ("It is damaged (truncated or overwritten): restore it from a copy, or move it aside "
                   f"(mv {file} {file}.damaged) and launch again to rerun every trial"
                   if "malformed" in reason or "not a database" in reason else
                   "Check that its folder exists and is writable, and that the disk is not full")
            )
        log = journal_file(url)
        if log is not None:
            return cls(
                f"cannot open the Optuna journal {log}: {type(err).__name__}: {reason}. Check that its "
                "folder exists and is writable from this machine (every worker must see the same file: "
                "a shared filesystem), and that the disk is not full; a journal that is not one of "
                f"Optuna's logs must be moved aside (mv {log} {log}.damaged)")
        if storage_kind(url) == "redis":
            return cls(
                f"cannot open the Optuna journal in Redis at {redact_url(url)}: {type(err).__name__}: "
                f"{reason}. Check that the server is reachable, the database number exists and the "
                "password (in $EXPANDER_SWEEPS_STORAGE, not in the spec) is right; the redis client "
                "is the `redis` extra: pip install 'expander-sweeps[redis]'")
        return cls(
            f"cannot open the Optuna storage {redact_url(url)}: {type(err).__name__}: {reason}. "
            "Check study.storage (a SQLAlchemy URL such as postgresql+psycopg://user@host/db, "
            "journal:///shared/folder/study.log or redis://host:6379/0), "
            "that the server is reachable and the database exists"
        )


# ----------------------------------------------------------------------------- the journal, with heartbeats
class HeartbeatJournal(JournalStorage, BaseHeartbeat):
    """Optuna's JournalStorage with heartbeats (a trial system attribute) and a batched write of a
    trial's user attributes. Every record it writes is an ordinary journal operation: Optuna,
    optuna-dashboard and the `optuna` CLI read the log as any other."""

    def __init__(self, backend, heartbeat_interval: int, grace_period: int, stale_trial_callback) -> None:
        super().__init__(backend)
        self._heartbeat_interval = heartbeat_interval
        self._grace_period = grace_period
        self._stale_trial_callback = stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = trial.system_attrs.get(HEARTBEAT_ATTR)
            if beat is None:  # claimed by a version without journal heartbeats: its start counts
                beat = trial.datetime_start.timestamp() if trial.datetime_start else now
            if now - beat > self._grace_period:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat_interval

    def get_heartbeat_stale_trial_callback(self):
        return self._stale_trial_callback

    def set_trial_user_attrs(self, trial_id: int, attrs: dict[str, Any]) -> None:
        """Every attribute an operation of its own (the journal's format), all appended at once:
        one lock and one fsync of the shared file instead of one per attribute."""
        from optuna.storages.journal._storage import JournalOperation

        with self._thread_lock:
            worker = self._replay_result.worker_id
            self._backend.append_logs([
                {"op_code": JournalOperation.SET_TRIAL_USER_ATTR, "worker_id": worker,
                 "trial_id": trial_id, "user_attr": {key: value}}
                for key, value in attrs.items()])
            self._sync_with_backend()


def _redis_journal_class():
    from optuna.storages.journal import JournalRedisBackend

    class BatchedRedisJournal(JournalRedisBackend):
        """Optuna's Redis journal, read and appended in batches: its own backend reads each log
        entry with a GET of its own and appends each with a script call of its own, and every
        worker reads every entry (a trial writes ~270): at 64 workers, ~17,000 round trips per
        trial. The keys and values are Optuna's (`<prefix>:log_number`, `<prefix>:log:<n>`), so
        Optuna's own backend, optuna-dashboard and the `optuna` CLI read the same journal."""

        # Numbered from 0, as Optuna's backend numbers them (it starts the counter at -1).
        _APPEND = ("redis.call('setnx', ARGV[1] .. ':log_number', -1) "
                   "local n = 0 for i = 2, #ARGV do n = redis.call('incr', ARGV[1] .. ':log_number') "
                   "redis.call('set', ARGV[1] .. ':log:' .. n, ARGV[i]) end return n")
        _CHUNK = 1000

        def read_logs(self, log_number_from: int):
            last = self._redis.get(f"{self._prefix}:log_number")
            if last is None:
                return
            last = int(last)
            for first in range(log_number_from, last + 1, self._CHUNK):
                numbers = range(first, min(first + self._CHUNK, last + 1))
                for log in self._redis.mget([self._key_log_id(n) for n in numbers]):
                    if log is None:  # numbered but not yet written (cannot happen: one script writes both)
                        return
                    yield json.loads(log)

        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            # One script: the entries numbered and written together, atomically, in order.
            self._redis.eval(self._APPEND, 0, self._prefix, *[json.dumps(log) for log in logs])

    return BatchedRedisJournal


def _journal_backend(url: str, create: bool):
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    log = journal_file(url)
    if log is not None:
        if not create and not log.exists():
            raise KeyError(url)  # no study there; opening it would create an empty journal
        log.parent.mkdir(parents=True, exist_ok=True)
        # The open(O_EXCL) lock that Optuna documents for NFSv3 and later (and local disks).
        return JournalFileBackend(str(log), lock_obj=JournalFileOpenLock(str(log)))
    address, prefix = redis_address(url)
    with _heartbeats_allowed():  # Optuna marks its Redis journal experimental, as it does heartbeats
        return _redis_journal_class()(address, prefix=prefix)


def redis_address(url: str) -> tuple[str, str]:
    """(the Redis URL without the `prefix` option, the prefix) of a redis:// URL."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    options = parse_qsl(parts.query, keep_blank_values=True)
    prefix = "".join(value for key, value in options if key == "prefix")
    rest = urlencode([(key, value) for key, value in options if key != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


# ----------------------------------------------------------------------------- opening a storage
def make_storage(url: str, heartbeat_seconds: int, grace_seconds: int, retries: int,
                 create: bool = True) -> BaseStorage:
    """Optuna's storage for `url`, with heartbeats and the retry of stale trials. KeyError when
    `create` is false and there is no study file; StorageError when it cannot be opened."""
    with _heartbeats_allowed():
        callback = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retries)
    if storage_kind(url) in ("journal", "redis"):
        try:
            return HeartbeatJournal(_journal_backend(url, create), heartbeat_seconds, grace_seconds, callback)
        except KeyError:
            raise
        except Exception as err:  # OSError, a redis ConnectionError, a log that is not JSON
            raise StorageError.about(url, err) from None
    return _database_storage(url, heartbeat_seconds, grace_seconds, callback, create)


def _database_storage(url, heartbeat_seconds, grace_seconds, callback, create) -> BaseStorage:
    engine_kwargs = {}
    database = sqlite_file(url)
    if database is not None:
        if not create and not database.exists():
            raise KeyError(url)  # no study there; opening it would create an empty database
        database.parent.mkdir(parents=True, exist_ok=True)
        # Several local workers write to one SQLite file: wait for the lock instead of failing.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    attempts = 5
    for attempt in range(1, attempts + 1):
        try:
            with _heartbeats_allowed():
                storage = optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_seconds,
                    grace_period=grace_seconds, heartbeat_stale_trial_callback=callback)
            break
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as err:
            # Workers starting together on an empty database race to create its tables; the
            # loser's next attempt finds them there. A server that is down fails every attempt.
            if attempt == attempts:
                raise StorageError.about(url, err) from None
            time.sleep(0.5 * attempt)
        except (ImportError, ValueError) as err:  # a missing driver, a malformed URL
            raise StorageError.about(url, err) from None
    if database is not None:
        _cheap_sqlite_commits(storage.engine)
    return storage


@contextlib.contextmanager
def _heartbeats_allowed():
    """Heartbeats are marked experimental in Optuna; they are what makes crash recovery work here."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def _cheap_sqlite_commits(engine: sqlalchemy.engine.Engine) -> None:
    """Write-ahead log, synced at checkpoints: a trial writes ~100 results, and SQLite's default
    (two fsyncs a commit) made that 0.7 s a trial. A killed process still loses nothing
    committed; only a power cut can lose the last commits (their trials rerun)."""

    @sqlalchemy.event.listens_for(engine, "connect")
    def _pragmas(connection, _record) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    engine.dispose()  # connections opened before the hook get the pragmas when reopened


# ----------------------------------------------------------------------------- one process at a time
@contextlib.contextmanager
def storage_lock(url: str, name: str) -> Iterator[None]:
    """A lock over every worker of the study `name` in `url`, on any machine: a file lock beside
    a SQLite file or a journal (fcntl: NFSv4, Lustre, GPFS), an advisory lock in PostgreSQL, a
    lock key in Redis. Released when the holder exits or dies."""
    file = sqlite_file(url) or journal_file(url)
    kind = storage_kind(url)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(file) + ".enqueue.lock"):
            yield
    elif url.startswith("postgresql"):
        key = int(hashlib.sha256(f"expander-sweeps:{name}".encode()).hexdigest()[:15], 16)
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
    elif kind == "redis":
        import redis

        address, prefix = redis_address(url)
        client = redis.Redis.from_url(address)
        # Expires after 10 minutes if its holder dies: enqueueing a grid takes seconds.
        try:
            with client.lock(f"{prefix}expander-sweeps:lock:{name}", timeout=600, blocking_timeout=900):
                yield
        finally:
            client.close()
    else:  # other databases: start one worker first, then the rest
        yield


# ----------------------------------------------------------------------------- claims and records
_WAITING_IDS = sqlalchemy.text(
    "SELECT trial_id FROM trials WHERE study_id = :study AND state = 'WAITING' ORDER BY number LIMIT :n")


def waiting_trial_ids(study: optuna.Study, limit: int = 64) -> list[int]:
    """Ids of the study's first `limit` WAITING trials, by number, read without reading the trials
    (an RDB study's `get_trials` re-reads every unfinished trial: all 2,000 of a new grid)."""
    backend = getattr(study._storage, "_backend", study._storage)
    if isinstance(backend, optuna.storages.RDBStorage):
        with backend.engine.connect() as connection:
            rows = connection.execute(_WAITING_IDS, {"study": study._study_id, "n": limit})
            return [row[0] for row in rows]
    waiting = study._storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.WAITING,))
    return [trial._trial_id for trial in waiting[:limit]]


_spread = random.Random()


def claim_order(ids: list[int]) -> list[int]:
    """The order in which a worker tries to claim `ids`: the first, then the others from a random
    place. Workers that lose the race for the first spread out instead of all reaching for the
    next one (with 256 workers, a claim in number order cost each worker dozens of lost tries)."""
    if len(ids) <= 2:
        return ids
    start = _spread.randrange(1, len(ids))
    return [ids[0], *ids[start:], *ids[1:start]]


def set_running(study: optuna.Study, trial_id: int) -> bool:
    """Mark the WAITING trial `trial_id` RUNNING for this worker; False when another worker took it
    first. In a database, one conditional UPDATE: Optuna's own claim reads the trial's state, then
    writes it, and on SQLite (whose driver begins a transaction only at the write) two workers
    both read WAITING and both claimed the trial (seen here: 8 workers, 40 trials, 26 claimed
    twice). A journal orders every claim in its log: the first one wins."""
    storage = study._storage
    backend = getattr(storage, "_backend", storage)
    if not isinstance(backend, optuna.storages.RDBStorage):
        return storage.set_trial_state_values(trial_id, state=TrialState.RUNNING)
    return _update_if(backend, trial_id, TrialState.WAITING, state=TrialState.RUNNING,
                      datetime_start=datetime.now())  # the clock Optuna's own claim uses


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the RUNNING trials whose heartbeat is older than the grace period and retry each once
    (the storage's stale-trial callback), as Optuna's `fail_stale_trials` does, but with a claim
    that holds on SQLite too: of several workers that find the same stale trial, one fails it and
    enqueues its retry (Optuna's read-then-write let two on SQLite, and the point ran twice)."""
    storage = study._storage
    if not isinstance(storage, BaseHeartbeat) or storage.get_heartbeat_interval() is None:
        return
    backend = getattr(storage, "_backend", storage)
    failed = []
    for trial_id in storage._get_stale_trial_ids(study._study_id):
        if isinstance(backend, optuna.storages.RDBStorage):
            if _update_if(backend, trial_id, TrialState.RUNNING, state=TrialState.FAIL,
                          datetime_complete=datetime.now()):
                failed.append(trial_id)
            continue
        try:  # the journal orders the workers' updates: the second one is refused
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                failed.append(trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
    callback = storage.get_heartbeat_stale_trial_callback()
    for trial_id in failed:
        if callback is not None:
            callback(study, copy.deepcopy(storage.get_trial(trial_id)))


def _update_if(backend: optuna.storages.RDBStorage, trial_id: int, current: TrialState, **values) -> bool:
    """Set `values` on the trial's row if its state is `current`, in one statement; whether it did."""
    from optuna.storages._rdb import models

    table = models.TrialModel.__table__
    with backend.engine.begin() as connection:
        updated = connection.execute(
            table.update().where(table.c.trial_id == trial_id, table.c.state == current).values(**values))
        return updated.rowcount == 1


def set_trial_user_attrs(study: optuna.Study, trial_id: int, attrs: dict[str, Any]) -> None:
    """Store `attrs` on the running trial, all at once where the storage allows: one transaction
    for a database (Optuna commits each attribute on its own: 100 commits a trial), one append
    for a journal. What is stored is what `set_trial_user_attr` would store, key by key."""
    storage = study._storage
    backend = getattr(storage, "_backend", storage)
    if isinstance(backend, optuna.storages.RDBStorage):
        _database_user_attrs(backend, trial_id, attrs)
    elif isinstance(storage, HeartbeatJournal):
        storage.set_trial_user_attrs(trial_id, attrs)
    else:
        for key, value in attrs.items():
            storage.set_trial_user_attr(trial_id, key, value)


def _database_user_attrs(backend: optuna.storages.RDBStorage, trial_id: int, attrs: dict[str, Any]) -> None:
    from optuna.storages._rdb import models

    rows = [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)} for key, value in attrs.items()]
    table = models.TrialUserAttributeModel.__table__
    with backend.engine.begin() as connection:
        # The trial's row locked (PostgreSQL, MySQL; SQLite locks the database for the write)
        # while it is checked to be unfinished, as Optuna's own update does.
        state = connection.execute(
            sqlalchemy.select(models.TrialModel.state).where(models.TrialModel.trial_id == trial_id)
            .with_for_update()).scalar_one()
        backend.check_trial_is_updatable(trial_id, state)
        # A retried trial carries its failed attempt's attributes: replaced, as one by one would.
        connection.execute(table.delete().where(table.c.trial_id == trial_id, table.c.key.in_(list(attrs))))
        if rows:
            connection.execute(table.insert(), rows)

