"""After a crash the next launch finishes the job: a kill in the last trial, trials the trackers
never got, a full disk. Real processes (kill -9 of a launch's process group), real files, a real
tmpfs."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess

import pytest
import yaml
from optuna.trial import TrialState

from conftest import CLI, grid_spec, study_trials, tiny_spec_dict, wait_for

pytestmark = pytest.mark.slow


def _states(database) -> list[str]:
    """The trials' states in trial order, read straight from the SQLite study ([] before it exists)."""
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1) as connection:
            return [state for (state,) in connection.execute("SELECT state FROM trials ORDER BY number")]
    except sqlite3.Error:
        return []


def test_a_relaunch_after_a_kill_in_the_last_trial_reruns_it_and_finishes(tmp_path, mnist_dir):
    """Every unfinished grid point held RUNNING by a dead launch: the relaunch counts it as work,
    says so, waits for its heartbeat to go stale and reruns it (it used to print "nothing to run",
    then crash with KeyError when the stale trial came back)."""
    spec = grid_spec(tmp_path, mnist_dir, None, [1.0, 0.5])
    data = yaml.safe_load(spec.read_text())
    data["study"]["grace_seconds"] = 20  # the relaunch starts while the dead trial is still RUNNING
    spec.write_text(yaml.safe_dump(data))
    storage = f"sqlite:///{tmp_path / 'run' / 'optuna.db'}"
    launch = subprocess.Popen([*CLI, "launch", str(spec), "--workers", "1"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    # Polled with plain SQL (milliseconds), so the last trial's second or so RUNNING is not missed.
    wait_for(lambda: _states(tmp_path / "run" / "optuna.db") == ["COMPLETE", "RUNNING"], 180,
             "the last trial to be running")
    os.killpg(launch.pid, signal.SIGKILL)
    launch.wait()
    again = subprocess.run([*CLI, "launch", str(spec), "--workers", "1"], capture_output=True, text=True, timeout=300)
    output = again.stdout + again.stderr
    assert again.returncode == 0, output
    assert "1 RUNNING in another process" in output and "nothing to run" not in output
    trials = study_trials("tiny", storage)
    complete = sorted(t.params["remaining"] for t in trials if t.state == TrialState.COMPLETE)
    assert complete == [0.5, 1.0]
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    print(output.splitlines()[0])


def test_trials_a_killed_launch_never_logged_reach_mlflow_at_the_next_launch(tmp_path, mnist_dir):
    """What kill -9 leaves in MLflow, made exactly: one finished trial with no run at all (it
    ended before the relay sent it) and one whose run stayed RUNNING half-logged. The next launch,
    with nothing left to run, logs both; no run stays RUNNING and no trial has two runs."""
    from mlflow.tracking import MlflowClient

    spec = grid_spec(tmp_path, mnist_dir, None, [1.0, 0.6, 0.3],
                      tracking={"mlflow": {"enabled": True, "log_models": False}})
    first = subprocess.run([*CLI, "launch", str(spec), "--workers", "2", "--no-report"], capture_output=True,
                           text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny").experiment_id

    def trial_runs():
        runs = client.search_runs([experiment], "tags.`expander_sweeps.sweep.trial` != ''")
        return sorted((int(r.data.tags["expander_sweeps.sweep.trial"]), r.info.status) for r in runs)

    assert trial_runs() == [(0, "FINISHED"), (1, "FINISHED"), (2, "FINISHED")]
    by_number = {int(r.data.tags["expander_sweeps.sweep.trial"]): r for r in client.search_runs(
        [experiment], "tags.`expander_sweeps.sweep.trial` != ''")}
    client.delete_run(by_number[1].info.run_id)
    client.update_run(by_number[2].info.run_id, status="RUNNING")
    again = subprocess.run([*CLI, "launch", str(spec), "--workers", "2"], capture_output=True, text=True, timeout=300)
    output = again.stdout + again.stderr
    assert again.returncode == 0, output
    assert "mlflow lacked 2 finished trial(s)" in output, output
    assert trial_runs() == [(0, "FINISHED"), (1, "FINISHED"), (2, "FINISHED")]


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs (mounting needs root; skipped with the reason where it is refused)."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_full_disk_is_one_line_and_the_next_launch_finishes_the_study(tmp_path, mnist_dir, small_disk):
    spec = tiny_spec_dict(small_disk / "run", mnist_dir, masks={"remaining": [1.0, 0.5, 0.3, 0.2, 0.1, 0.05]},
                          study={"heartbeat_seconds": 1, "grace_seconds": 3},
                          tracking={"mlflow": {"enabled": False}})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    full = subprocess.run([*CLI, "launch", str(path), "--workers", "1"], capture_output=True, text=True, timeout=300)
    output = full.stdout + full.stderr
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert full.returncode == 2 and "Traceback" not in output and len(errors) == 1, output
    assert f"the disk that holds {small_disk / 'run'} is full" in errors[0]
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    again = subprocess.run([*CLI, "launch", str(path), "--workers", "1"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    trials = study_trials("tiny", f"sqlite:///{small_disk / 'run' / 'optuna.db'}")
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 11  # every grid point of `each`


def test_a_kill_in_the_middle_of_a_batched_group_loses_and_duplicates_nothing(tmp_path, mnist_dir):
    """kill -9 while a group of trials is fine-tuned together: every trial of the group is RUNNING
    with its own heartbeat, goes stale, and the relaunch runs each point exactly once more."""
    spec = grid_spec(tmp_path, mnist_dir, None, [1.0, 0.5, 0.2, 0.1], training={
        "epochs": 1, "finetune_epochs": 30, "batch_size": 32, "engine": "batched"})
    database = tmp_path / "run" / "optuna.db"
    launch = subprocess.Popen([*CLI, "launch", str(spec), "--workers", "1"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for(lambda: _states(database).count("RUNNING") == 4, 180, "a group of four trials to be running")
    os.killpg(launch.pid, signal.SIGKILL)
    launch.wait()
    again = subprocess.run([*CLI, "launch", str(spec), "--workers", "1"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    trials = study_trials("tiny", f"sqlite:///{database}")
    complete = sorted(t.params["remaining"] for t in trials if t.state == TrialState.COMPLETE)
    assert complete == [0.1, 0.2, 0.5, 1.0]  # each point once: nothing lost, nothing twice
    assert {t.user_attrs["engine"] for t in trials if t.state == TrialState.COMPLETE} == {"batched"}
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
