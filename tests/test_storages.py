"""Every kind of study storage keeps the same guarantees: a trial is claimed by one worker only,
a dead worker's trial is retried once, a trial's results read back the same whatever wrote
them. Real SQLite files, the PostgreSQL and Redis servers on 127.0.0.1, journal files; the
results are read back with Optuna's own storages, not the tool's."""

from __future__ import annotations

import threading
import time

import optuna
import pytest
from optuna.trial import TrialState

from conftest import study_trials, tiny_spec_dict
from expander_sweeps.spec import spec_from_dict
from expander_sweeps.sweep import storages
from expander_sweeps.sweep import study as study_module
from expander_sweeps.sweep.storages import StorageError, set_trial_user_attrs, waiting_trial_ids

KINDS = ["sqlite", "postgres", "journal", "redis"]


@pytest.fixture(params=KINDS)
def storage_url(request, tmp_path):
    """One storage of each kind, empty, of this test's own."""
    kind = request.param
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'optuna.db'}"
    if kind == "journal":
        return f"journal://{tmp_path / 'shared' / 'study.log'}"
    return request.getfixturevalue("postgres_url" if kind == "postgres" else "redis_url")


def spec_for(tmp_path, url, grace=120):
    return spec_from_dict(tiny_spec_dict(tmp_path / "run", tmp_path, study={
        "storage": url, "heartbeat_seconds": 1, "grace_seconds": grace, "retries": 2}))


def enqueued_study(spec, points: int) -> optuna.Study:
    study = study_module.open_study(spec)
    for index in range(points):
        study.enqueue_trial({"remaining": 1.0 - index / (2 * points)}, skip_if_exists=False)
    return study


def test_eight_workers_claim_every_trial_exactly_once(tmp_path, storage_url):
    spec = spec_for(tmp_path, storage_url)
    enqueued_study(spec, 40)
    claimed: list[list[int]] = [[] for _ in range(8)]

    def worker(index: int) -> None:
        study = study_module.open_study(spec)  # a storage (connections, journal replay) of its own
        while (trial := study_module.claim_waiting(study, spec)) is not None:
            claimed[index].append(trial.number)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    numbers = sorted(n for mine in claimed for n in mine)
    assert numbers == list(range(40))  # none twice, none left
    trials = study_trials("tiny", storage_url)
    assert [t.state for t in trials] == [TrialState.RUNNING] * 40
    assert sum(1 for mine in claimed if mine) >= 2  # the workers really raced


def test_waiting_ids_are_the_waiting_trials_by_number(tmp_path, storage_url):
    spec = spec_for(tmp_path, storage_url)
    study = enqueued_study(spec, 10)
    taken = study_module.claim_trial(study, waiting_trial_ids(study)[3])
    assert taken is not None and taken.number == 3
    expected = [t._trial_id for t in study.get_trials(states=(TrialState.WAITING,))]
    assert waiting_trial_ids(study) == expected and len(expected) == 9
    assert waiting_trial_ids(study, limit=4) == expected[:4]
    assert study_module.claim_trial(study, taken._trial_id) is None  # RUNNING: not claimable twice
    only = study_module.claim_waiting(study, spec, {"remaining": 1.0 - 7 / 20})
    assert only is not None and only.number == 7


def test_attributes_written_at_once_read_back_as_written_one_by_one(tmp_path, storage_url):
    spec = spec_for(tmp_path, storage_url)
    study = enqueued_study(spec, 3)
    attrs = {"acc/clean": 0.9731, "W_hh/binary/delta_r": float("nan"), "remaining_W_hh": 0.25,
             "files": {"masks": "trials/00000/masks.npz"}, "param_names": ["cell", "remaining_W_hh"],
             "dense_trained": True, "n_test": 2000, "cell": "lstm"}
    at_once, one_by_one, finished = (study_module.claim_waiting(study, spec) for _ in range(3))
    at_once.set_user_attr("acc/clean", 0.5)  # a retried trial carries its failed attempt's value
    set_trial_user_attrs(study, at_once._trial_id, attrs)
    for key, value in attrs.items():
        study._storage.set_trial_user_attr(one_by_one._trial_id, key, value)
    study.tell(finished, state=TrialState.FAIL)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        set_trial_user_attrs(study, finished._trial_id, attrs)
    trials = {t.number: t for t in study_trials("tiny", storage_url)}  # read by Optuna's own storage
    first, second = trials[at_once.number].user_attrs, trials[one_by_one.number].user_attrs
    assert first.keys() == second.keys() == attrs.keys()
    nan = "W_hh/binary/delta_r"
    assert {k: v for k, v in first.items() if k != nan} == {k: v for k, v in second.items() if k != nan}
    assert first["acc/clean"] == 0.9731 and first[nan] != first[nan] and second[nan] != second[nan]
    assert trials[finished.number].user_attrs == {}


def test_a_dead_workers_trial_is_retried_once_however_many_workers_find_it(tmp_path, storage_url):
    spec = spec_for(tmp_path, storage_url, grace=2)
    study = enqueued_study(spec, 2)
    dead = study_module.claim_waiting(study, spec)  # claimed with a heartbeat, then never again
    alive = study_module.claim_waiting(study, spec)
    finders = [study_module.open_study(spec) for _ in range(4)]
    # Past the 2 s grace by more than a second: SQLite's clock (CURRENT_TIMESTAMP) counts whole
    # seconds, and 2.6 s once read as 2 in CI.
    deadline = time.monotonic() + 3.6
    while time.monotonic() < deadline:  # the live worker keeps beating
        study._storage.record_heartbeat(alive._trial_id)
        time.sleep(0.3)
    threads = [threading.Thread(target=study_module.fail_stale, args=(finder,)) for finder in finders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    trials = study_trials("tiny", storage_url)
    by_number = {t.number: t for t in trials}
    assert by_number[dead.number].state == TrialState.FAIL
    assert by_number[alive.number].state == TrialState.RUNNING
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retries) == 1 and retries[0].state == TrialState.WAITING
    assert study_module.trial_point(retries[0]) == study_module.trial_point(by_number[dead.number])
    assert len(trials) == 3


def test_a_journal_nobody_can_write_is_one_clear_error(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    spec = spec_for(tmp_path, f"journal://{blocker / 'study.log'}")
    with pytest.raises(StorageError) as error:
        study_module.open_study(spec)
    message = str(error.value)
    assert f"cannot open the Optuna journal {blocker / 'study.log'}" in message
    assert "shared filesystem" in message and "\n" not in message
    with pytest.raises(KeyError):  # reading a study that is not there creates nothing
        study_module.open_study(spec_for(tmp_path, f"journal://{tmp_path / 'none.log'}"), create=False)
    assert not (tmp_path / "none.log").exists()


def test_a_redis_that_is_down_is_one_clear_error_without_its_password(tmp_path):
    pytest.importorskip("redis")
    spec = spec_for(tmp_path, "redis://:hunter2@127.0.0.1:1/0")  # nothing listens on port 1
    with pytest.raises(StorageError) as error:
        study_module.open_study(spec)
    message = str(error.value)
    assert message.startswith("cannot open the Optuna journal in Redis at redis://:***@127.0.0.1:1/0")
    assert "hunter2" not in message and "\n" not in message


def test_storage_urls_are_told_apart_and_shown_as_optuna_dashboard_takes_them():
    assert storages.storage_kind("sqlite:///a.db") == "sqlite"
    assert storages.storage_kind("postgresql+psycopg://u@h/db") == "database"
    assert storages.storage_kind("journal:///shared/s.log") == "journal"
    assert storages.storage_kind("rediss://h:6380/2") == "redis"
    assert str(storages.journal_file("journal:///shared/s.log")) == "/shared/s.log"
    assert str(storages.journal_file("journal://runs/s.log")) == "runs/s.log"  # relative to the working folder
    assert storages.dashboard_argument("journal:///shared/s.log") == "/shared/s.log"
    assert storages.dashboard_argument("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert storages.redis_address("redis://h:6379/1?prefix=lab:&socket_timeout=5") == (
        "redis://h:6379/1?socket_timeout=5", "lab:")


@pytest.mark.parametrize(("storage", "says"), [
    ("journal://", "names no file"),
    ("journal:/shared/study.log", "is not a journal URL"),
    ("/shared/study.log", "is not a storage URL"),
])
def test_a_storage_url_of_the_wrong_shape_is_one_spec_error_that_says_how_to_write_it(write_spec, tmp_path, storage, says):
    import subprocess

    from conftest import CLI

    spec = write_spec(tiny_spec_dict(tmp_path / "run", tmp_path, study={"storage": storage}))
    result = subprocess.run([*CLI, "validate", str(spec)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert says in result.stderr and "study.storage" in result.stderr and "Traceback" not in result.stderr


def test_the_optuna_cli_reads_a_journal_the_tool_wrote(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    log = tmp_path / "shared" / "study.log"
    spec = spec_for(tmp_path, f"journal://{log}")
    study = enqueued_study(spec, 2)
    trial = study_module.claim_waiting(study, spec)
    study_module.record_result(trial, {"remaining_W_hh": 0.5}, {"acc/clean": 0.91, "W_hh/binary/delta_r": 0.25},
                               {}, False, 1.5, tmp_path)
    study.tell(trial, [0.91])
    optuna_cli = Path(sys.executable).parent / "optuna"
    result = subprocess.run([str(optuna_cli), "trials", "--storage", str(log), "--storage-class", "JournalFileBackend",
                             "--study-name", "tiny", "-f", "json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    (told,) = [t for t in json.loads(result.stdout) if t["state"] == "COMPLETE"]
    assert told["user_attrs"]["acc/clean"] == 0.91 and told["user_attrs"]["W_hh/binary/delta_r"] == 0.25
    assert told["user_attrs"]["remaining_W_hh"] == 0.5 and told["user_attrs"]["param_names"] == ["remaining_W_hh"]

