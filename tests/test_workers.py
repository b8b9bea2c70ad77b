"""Scale-out and faults: workers on a real PostgreSQL study, SIGKILL, a killed launch, NaN."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import pytest
from optuna.trial import TrialState

import expander_sweeps
from conftest import CLI, grid_spec, study_trials, tiny_spec_dict, wait_for
from expander_sweeps.spec import spec_from_dict
from expander_sweeps.sweep import trial as trial_module

pytestmark = pytest.mark.slow


@pytest.fixture(params=["postgres", "journal", "redis"])
def shared_study(request, tmp_path):
    """A study every worker shares: PostgreSQL, a journal file, a journal in Redis."""
    if request.param == "journal":
        return f"journal://{tmp_path / 'shared' / 'study.log'}"
    return request.getfixturevalue(f"{request.param}_url")


def test_three_workers_on_a_shared_study_survive_a_sigkilled_worker(tmp_path, mnist_dir, shared_study):
    fractions = [round(1.0 - i * 0.1, 2) for i in range(6)]  # 6 grid points, 1.0 .. 0.5
    spec = grid_spec(tmp_path, mnist_dir, shared_study, fractions)
    started = time.monotonic()
    # One thread each, as `launch --workers` gives its workers and as the README tells users who
    # start several by hand on one CPU: three workers of torch's one-thread-per-core on 2 cores
    # ran a 1 s trial in 28 s here.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen([*CLI, "worker", str(spec)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env) for _ in range(3)]
    victim = workers[0]

    def victim_mid_trial():
        # Once the dense model exists (a trial completed), catch the victim inside a trial.
        trials = study_trials("tiny", shared_study)
        if not any(t.state == TrialState.COMPLETE for t in trials):
            return None
        # Its point known: a worker marks a claimed trial as its own just before suggesting the point.
        return next((t for t in trials if t.state == TrialState.RUNNING and t.params
                     and t.user_attrs.get("worker", "").endswith(f":{victim.pid}")), None)

    try:
        killed = wait_for(victim_mid_trial, 180, "the victim worker to be inside a trial")
    except AssertionError:
        for w in workers:
            w.kill()
        raise AssertionError("\n".join(w.communicate()[0][-3000:] for w in workers)) from None
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    outputs = [w.communicate(timeout=300)[0] for w in workers[1:]]
    assert all(w.returncode == 0 for w in workers[1:]), outputs
    elapsed = time.monotonic() - started

    trials = study_trials("tiny", shared_study)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6, "\n".join(
        f"{t.number} {t.state.name} {t.params} {t.system_attrs.get('failed_trial')} {t.user_attrs.get('worker')}"
        for t in trials) + "\n" + "\n".join(outputs)
    assert sorted(t.params["remaining"] for t in complete) == sorted(fractions)  # 6 distinct points
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    dead = next(t for t in trials if t.number == killed.number)
    assert dead.state == TrialState.FAIL
    retry = [t for t in complete if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retry) == 1 and retry[0].params == killed.params
    assert not retry[0].user_attrs["worker"].endswith(f":{victim.pid}")
    print(f"3 workers, 6 points, trial {killed.number} killed and retried as trial "
          f"{retry[0].number}; {elapsed:.1f}s")


def test_killed_launch_is_continued_by_the_next_launch(tmp_path, mnist_dir):
    spec = grid_spec(tmp_path, mnist_dir, None, [1.0, 0.6, 0.3, 0.1],
                      tracking={"mlflow": {"enabled": True, "log_models": False}})
    storage = f"sqlite:///{tmp_path / 'run' / 'optuna.db'}"
    launch = subprocess.Popen([*CLI, "launch", str(spec)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: (tmp_path / "run" / "optuna.db").exists() and len(study_trials("tiny", storage, (TrialState.COMPLETE,))) >= 2, 180, "two finished trials")
    launch.send_signal(signal.SIGKILL)
    launch.wait()
    before = {t.number: t.params for t in study_trials("tiny", storage, (TrialState.COMPLETE,))}

    again = subprocess.run([*CLI, "launch", str(spec)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    trials = study_trials("tiny", storage)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4
    assert sorted(t.params["remaining"] for t in complete) == [0.1, 0.3, 0.6, 1.0]
    for number in before:  # finished trials were kept, not rerun
        assert next(t for t in trials if t.number == number).state == TrialState.COMPLETE
    # Every MLflow run the killed launch started has ended: the killed trial's as KILLED, the
    # sweep's parent as FINISHED once nothing is left to run.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    statuses = {(r.data.tags.get("expander_sweeps.sweep.trial", "parent"), r.info.status) for r in runs}
    assert not [s for s in statuses if s[1] == "RUNNING"], statuses
    killed = {t.number for t in trials if t.state == TrialState.FAIL}
    assert {int(n) for n, status in statuses if status == "KILLED"} <= killed
    assert ("parent", "FINISHED") in statuses
    # A tied sweep's crossings reach the sweep's run too, under names MLflow accepts.
    (parent,) = [r for r in runs if "expander_sweeps.sweep.trial" not in r.data.tags]
    assert any(k.startswith("crossing_pct/magnitude/W_xh_W_hh/") for k in parent.data.metrics), parent.data.metrics
    print(f"MLflow runs after a SIGKILL and a relaunch: {sorted(statuses)}")
    assert not [t for t in trials if t.state == TrialState.RUNNING]


def test_a_sigterm_mid_trial_queues_the_trial_again_and_the_next_launch_runs_it_once(tmp_path, mnist_dir):
    # A scheduler's cancel, preemption or time limit: SIGTERM. Here on a journal-file study.
    journal = f"journal://{tmp_path / 'shared' / 'study.log'}"
    fractions = [1.0, 0.6, 0.3, 0.1]
    spec = grid_spec(tmp_path, mnist_dir, journal, fractions)
    worker = subprocess.Popen([*CLI, "worker", str(spec)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def mid_trial():
        trials = study_trials("tiny", journal)
        return any(t.state == TrialState.COMPLETE for t in trials) and next(
            (t for t in trials if t.state == TrialState.RUNNING and t.params), None)

    stopped = wait_for(mid_trial, 180, "the worker to be inside its second trial")
    worker.send_signal(signal.SIGTERM)
    output = worker.communicate(timeout=60)[0]
    assert worker.returncode == 130 and "queued again" in output, output
    trials = study_trials("tiny", journal)
    failed = next(t for t in trials if t.number == stopped.number)
    assert failed.state == TrialState.FAIL and failed.user_attrs["error"].startswith("interrupted"), failed.user_attrs
    (copy,) = [t for t in trials if t.system_attrs.get("failed_trial") == stopped.number]
    assert copy.state == TrialState.WAITING and "error" not in copy.user_attrs

    again = subprocess.run([*CLI, "launch", str(spec), "--no-report"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    trials = study_trials("tiny", journal)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["remaining"] for t in complete) == sorted(fractions)  # each point once
    assert next(t for t in trials if t.number == copy.number).state == TrialState.COMPLETE
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_a_nan_in_one_trial_fails_it_with_the_reason_and_the_report_lists_it(tmp_path, mnist_dir, monkeypatch):
    # Per trial: the NaN is injected into train.fit (the batched engine's: test_batched.py).
    spec = spec_from_dict(tiny_spec_dict(tmp_path / "run", mnist_dir, masks={"remaining": [1.0, 0.5, 0.2]},
                                         training={"engine": "per_trial"}, tracking={"mlflow": {"enabled": False}}))
    real_fit = trial_module.fit
    calls = {"finetune": 0}

    def fit_with_a_nan_in_the_second_finetuning(model, *args, **kwargs):  # fault injection
        if kwargs.get("phase") == "finetune":
            calls["finetune"] += 1
            if calls["finetune"] == 2:
                with __import__("torch").no_grad():
                    model.matrices()["W_hy"][0, 0] = math.nan
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(trial_module, "fit", fit_with_a_nan_in_the_second_finetuning)
    result = expander_sweeps.launch(spec)
    assert (result.ran, result.failed) == (5, 1)
    failed = [t for t in result.study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and "loss became nan" in failed[0].user_attrs["error"]
    assert len(result.study.get_trials(states=(TrialState.COMPLETE,))) == 4
    report = expander_sweeps.report(spec)
    assert [row["trial"] for row in report.failed] == [failed[0].number]
    assert "## Failed trials" in report.markdown and "loss became nan" in report.markdown



# In a fresh interpreter: the launching process counts GPUs before it starts any worker.
COUNT_GPUS = """
import sys
from expander_sweeps.sweep.workers import visible_gpus
print(visible_gpus(), "torch" in sys.modules)
import torch
print(torch.cuda.device_count())
"""


def test_a_machine_without_a_gpu_driver_is_known_to_have_no_gpu_without_importing_torch():
    from expander_sweeps.sweep.workers import _GPU_DRIVER_PATHS, _no_gpu_driver

    if not _no_gpu_driver():
        pytest.skip(f"this machine has a GPU driver (one of {', '.join(_GPU_DRIVER_PATHS)}): torch is asked")
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    out = subprocess.run([sys.executable, "-c", COUNT_GPUS], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    # No GPU, as torch itself then finds, and torch was not imported to say so.
    assert out.stdout.split("\n")[:2] == ["[] False", "0"]


def test_a_slow_progress_poll_is_repeated_only_as_often_as_its_cost_allows():
    from expander_sweeps.sweep.workers import throttled

    now = [0.0]
    polls = []

    def poll(cost: float) -> tuple[int, int]:
        polls.append(now[0])
        now[0] += cost  # the poll itself takes `cost` seconds of the clock
        return len(polls), 100

    # A poll of 0.5 s with a 5 % budget: the next one no sooner than 10 s after the first began.
    progress = throttled(lambda: poll(0.5), share=0.05, clock=lambda: now[0])
    answers = []
    for _ in range(25):  # the launcher's one-second ticks
        answers.append(progress())
        now[0] += 1.0
    # Polled at 0 (due again at 10): the ticks at 1.5 ... 9.5 reuse its answer, 10.5 polls
    # (due at 20.5), and so on.
    assert polls == [0.0, 10.5, 21.0]
    assert answers[:10] == [(1, 100)] * 10 and answers[10] == (2, 100)
    # A poll of 1 ms is due again 20 ms later: every one-second tick polls.
    polls.clear()
    now[0] = 0.0
    progress = throttled(lambda: poll(0.001), share=0.05, clock=lambda: now[0])
    for _ in range(5):
        progress()
        now[0] += 1.0
    assert len(polls) == 5
