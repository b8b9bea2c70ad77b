"""Tracker plumbing with fake trackers: a failing tracker is isolated and reported once, and a
tracker child process that dies is reported once while the sweep's calls go on returning."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from expander_sweeps.spec import SweepSpec
from expander_sweeps.tracking import FanOut, TrialRecord


class Recorder:
    def __init__(self, name: str, fail_in: str | None = None):
        self.name, self.fail_in, self.calls = name, fail_in, []

    def __getattr__(self, method):
        def call(*args):
            self.calls.append(method)
            if method == self.fail_in:
                raise ConnectionError("server went away")
        return call


def test_a_failing_tracker_is_reported_once_and_the_others_get_every_call():
    good, bad, warnings = Recorder("good"), Recorder("bad", fail_in="log_metrics"), []
    fan = FanOut([bad, good], warnings.append, background=False)
    record = TrialRecord(3, {"remaining_W_hh": 0.5}, {"acc/clean": 0.9},
                         history=[{"phase": "dense", "epoch": 1, "loss": 1.0, "train_accuracy": 0.5}])
    fan.log_trial(record)
    fan.log_trial(record)
    assert good.calls == ["start_trial", "log_history", "log_metrics", "log_model", "end_trial"] * 2
    assert bad.calls == ["start_trial", "log_history", "log_metrics"]  # nothing after its failure
    assert len(warnings) == 1 and "tracker 'bad' failed in log_metrics (ConnectionError" in warnings[0]
    assert "expander-sweeps sync" in warnings[0]
    assert fan.names == ["good"]


class Steps:
    """A tracker that keeps what log_history and log_metrics were given."""

    name = "steps"

    def __init__(self):
        self.calls = []

    def __getattr__(self, method):
        return lambda *args: self.calls.append((method, args))


def test_epoch_metrics_reach_a_tracker_in_one_call_per_trial_and_periodically_in_long_trials():
    tracker = Steps()
    fan = FanOut([tracker], print, background=False)
    fan.start_trial(0, {})
    for epoch in range(1, 6):
        fan.log_epoch("finetune", epoch, 1.0 / epoch, 0.5)
    assert [c[0] for c in tracker.calls] == ["start_trial"]  # held while the trial runs
    fan.finish_trial(TrialRecord(0, {}, {"acc/clean": 0.9}))
    names = [c[0] for c in tracker.calls]
    assert names == ["start_trial", "log_history", "log_metrics", "log_model", "end_trial"]
    (steps,) = tracker.calls[1][1]
    assert [step for _, step in steps] == [1, 2, 3, 4, 5] and steps[2][0]["finetune/loss"] == pytest.approx(1 / 3)
    # A long trial: whatever is held goes out once HISTORY_FLUSH_SECONDS have passed.
    tracker.calls.clear()
    fan.HISTORY_FLUSH_SECONDS = 0.0
    fan.start_trial(1, {})
    fan.log_epoch("dense", 1, 2.0, 0.1)
    fan.log_epoch("dense", 2, 1.0, 0.2)
    fan.end_trial("FAILED")
    assert [c[0] for c in tracker.calls] == ["start_trial", "log_history", "log_history", "end_trial"]


def test_a_dead_tracker_process_is_reported_once_and_calls_return():
    from expander_sweeps.tracking.process import TrackerProcess

    spec = SweepSpec(name="t", tracking={"mlflow": {"enabled": False}})
    warnings = []
    process = TrackerProcess(spec, warnings.append)
    os.kill(process._process.pid, signal.SIGKILL)
    process._process.join(timeout=30)
    started = time.monotonic()
    for _ in range(3):
        process.log_metrics({"acc/clean": 0.5})
    process.close()
    assert time.monotonic() - started < 10
    stopped = [w for w in warnings if "tracker process stopped" in w]
    assert len(stopped) == 1 and "exit code -9" in stopped[0] and "sync" in stopped[0]


def test_a_tracker_process_started_after_loading_a_logged_model_imports_this_package(tmp_path, monkeypatch):
    """Loading a logged model puts its code/ folder (a copy of a few modules of this package)
    first on sys.path, as MLflow does: the tracker child must still import the real package."""
    from expander_sweeps.tracking.process import TrackerProcess

    bundled = tmp_path / "code" / "expander_sweeps"
    bundled.mkdir(parents=True)
    for name in ("__init__.py", "models.py", "spec.py"):
        (bundled / name).write_text("")
    monkeypatch.setattr(sys, "path", [str(bundled.parent), *sys.path])  # mlflow rebinds sys.path
    warnings = []
    process = TrackerProcess(SweepSpec(name="t", tracking={"mlflow": {"enabled": False}}), warnings.append)
    process.log_metrics({"acc/clean": 0.5})
    process.close()
    assert process._process.exitcode == 0 and warnings == []
    assert sys.path[0] == str(bundled.parent)  # this process's path is left as it was


def test_a_tracker_process_that_cannot_start_says_why_and_lists_the_trials_it_missed(tmp_path):
    from expander_sweeps.tracking.process import TrackerProcess

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # mlflow.db would have to live inside a file: it cannot be opened
    spec = SweepSpec(name="t", run_dir=str(tmp_path / "run"),
                     tracking={"mlflow": {"uri": f"sqlite:///{blocker}/mlflow.db"}})
    warnings = []
    process = TrackerProcess(spec, warnings.append)
    # It fails while building the MLflow tracker, at its first call: the trials it never
    # started, queued before it died or sent after, are both listed.
    for number in (0, 1):
        process.start_trial(number, {"remaining_W_hh": 0.5})
        process.finish_trial(TrialRecord(number, {}, {"acc/clean": 0.5}))
    process.close()
    text = "\n".join(warnings)
    assert "Traceback" not in text
    stopped = [w for w in warnings if "tracker process stopped" in w]
    assert len(stopped) == 1 and "exit code" not in stopped[0], warnings  # the reason, not a code
    assert any("trial(s) 0, 1 reached no tracker" in w and "sync" in w for w in warnings), warnings


def _open_mlflow_store(run_dir: str, ready) -> str:
    import mlflow  # noqa: F401 - imported before the barrier, so the three start in step

    from expander_sweeps.tracking.mlflow_backend import MlflowTracker

    spec = SweepSpec(name="race", run_dir=run_dir)
    ready.wait(timeout=120)  # a barrier: the three reach the empty store together
    try:
        MlflowTracker(spec)._client.search_experiments()
        return "ok"
    except Exception as err:  # what the race used to give: "table ... already exists"
        return f"{type(err).__name__}: {err}"


@pytest.mark.slow
def test_launches_racing_on_a_new_mlflow_db_all_open_it(tmp_path):
    """Reproduced before the fix: one of three processes died with "table ... already exists"."""
    import concurrent.futures
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        ready = manager.Barrier(3)
        with concurrent.futures.ProcessPoolExecutor(3, mp_context=context) as pool:
            futures = [pool.submit(_open_mlflow_store, str(tmp_path / "run"), ready) for _ in range(3)]
            results = [f.result(timeout=300) for f in futures]
    assert results == ["ok"] * 3, results


@pytest.mark.slow
def test_training_lends_the_busy_tracker_process_a_thread_and_takes_it_back(tmp_path):
    """While the child has work (here its first: importing MLflow and creating the store), the
    training loop's between_batches() runs torch with one thread fewer; once the child is idle,
    the thread comes back; close() gives it back too."""
    import torch

    from expander_sweeps.tracking.process import TrackerProcess

    def poll(process, until, what: str) -> list[int]:
        seen, deadline = [], time.monotonic() + 120
        while time.monotonic() < deadline:
            process.between_batches()  # what the training loop calls after every batch
            seen.append(torch.get_num_threads())
            if until(seen):
                return seen
            time.sleep(0.01)
        raise AssertionError(f"timed out waiting for {what}: thread counts seen {sorted(set(seen))}")

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        spec = SweepSpec(name="lend", run_dir=str(tmp_path / "run"))  # MLflow's embedded store
        process = TrackerProcess(spec, print)
        poll(process, lambda seen: seen[-1] == 1, "the busy child to get a thread")
        poll(process, lambda seen: seen[-1] == 2, "the idle child to give it back")
        process.close()
        assert torch.get_num_threads() == 2

        process = TrackerProcess(SweepSpec(name="lend2", run_dir=str(tmp_path / "run2")), print)
        poll(process, lambda seen: seen[-1] == 1, "the busy child to get a thread")
        process.close()  # the sweep ended while the thread was lent
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_the_tracker_process_publishes_the_report_and_a_dead_one_leaves_it_to_this_process(tmp_path, mnist_dir,
                                                                                         monkeypatch):
    """After a sweep, the launch's tracker process (libraries loaded, store open) publishes the
    report once it has logged every trial; if it has died, this process publishes it instead."""
    from mlflow.tracking import MlflowClient

    from conftest import tiny_spec_dict
    from expander_sweeps.reporting import write_report
    from expander_sweeps.sweep.loop import launch_study
    from expander_sweeps.tracking.base import TrackerCalls
    from expander_sweeps.tracking.mlflow_backend import mlflow_uri
    from expander_sweeps.tracking.process import TrackerProcess

    spec = SweepSpec.model_validate(tiny_spec_dict(tmp_path / "run", mnist_dir))
    result = launch_study(spec, drain_later=True)
    assert result.draining is not None  # still open: the caller closes it
    report = write_report(spec, result.study)
    calls_here = []
    in_process = TrackerCalls.publish
    monkeypatch.setattr(TrackerCalls, "publish", lambda self, *a: calls_here.append(a) or in_process(self, *a))

    aliases = result.draining.publish(spec, result.study, report, print)
    result.draining.close()
    assert calls_here == []  # published by the child
    client = MlflowClient(tracking_uri=mlflow_uri(spec))
    assert set(aliases) == set(client.get_registered_model("tiny-pruned").aliases) == {
        "dense", "best", "sparsest-ramanujan"}
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    parent = next(r for r in runs if r.data.tags.get("expander_sweeps.role") == "sweep")
    report_files = {f.path for f in client.list_artifacts(parent.info.run_id, "report")}
    assert "report/crossings.csv" in report_files

    warnings = []
    dead = TrackerProcess(spec, warnings.append)
    dead.begin(spec, result.study)
    os.kill(dead._process.pid, signal.SIGKILL)
    dead._process.join(timeout=30)
    assert dead.publish(spec, result.study, report, warnings.append) == aliases  # published here
    dead.close()
    assert len(calls_here) == 1 and any("tracker process stopped" in w for w in warnings), warnings


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's; elsewhere the child runs at nice 10")
def test_the_tracker_process_runs_on_idle_cpu_time_and_says_how_far_behind_it_is(tmp_path):
    """The child (and so every thread and process it starts) is under SCHED_IDLE, as the
    kernel reports it from outside. A call sent while the child is still importing its
    libraries waits, and lag_seconds says for how long; once the child has run every call (at
    close), the lag is 0."""
    from expander_sweeps.tracking.process import TrackerProcess

    process = TrackerProcess(SweepSpec(name="idle", run_dir=str(tmp_path / "run")), print)
    assert process.lag_seconds() == 0.0  # nothing sent yet
    deadline = time.monotonic() + 60
    while process.priority is None and time.monotonic() < deadline:  # its first words
        process._pump(block_for=0.1)
    assert process.priority == "SCHED_IDLE"
    assert os.sched_getscheduler(process._process.pid) == os.SCHED_IDLE
    process.log_metrics({"acc/clean": 0.5})  # queued behind the child's start (MLflow's import)
    time.sleep(0.3)
    if process._ran.value == 0:  # still importing, as it is for about a second here
        assert process.lag_seconds() >= 0.3
    process.close()
    assert process._ran.value == 2 and process.lag_seconds() == 0.0  # log_metrics and close
