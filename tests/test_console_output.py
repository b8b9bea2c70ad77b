"""Output in a batch job: wide lines, a progress line at a steady interval, -q and -v; the real
CLI with its stdout a pipe (as under nohup, sbatch or tee)."""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from conftest import CLI, tiny_spec_dict
from expander_sweeps.console_output import ProgressLines, duration, progress_interval


def test_progress_line_says_where_the_phase_is_and_how_long_is_left():
    now = {"t": 100.0}
    said = []
    lines = ProgressLines(said.append, 10.0, "[w0] ", clock=lambda: now["t"])
    lines.sweep_started(13)
    lines.trial_started("trial 4 (W_hh 10%, seed 0)")
    lines.phase_started("dense", 20, 50)  # 1,000 batches
    for batch in range(250):
        now["t"] += 0.04  # 250 batches in 10 s: 750 left at that pace, 30 s
        if batch == 49:
            lines.epoch_done(1, 0.8123)
        lines.batch_done()
    assert said == ["[w0] progress: trial 4 (W_hh 10%, seed 0) | dense epoch 2/20, loss 0.812 | 25% of the "
                    "phase in 10s, about 30s left | trials done 0/13"]
    assert duration(59.6) == "1m00s" and duration(3725) == "1h02m" and duration(4) == "4s"


def test_progress_interval_is_off_on_a_terminal_unless_asked(monkeypatch):
    monkeypatch.delenv("EXPANDER_SWEEPS_PROGRESS_SECONDS", raising=False)
    assert progress_interval(on_terminal=True) is None and progress_interval(on_terminal=False) == 30.0
    monkeypatch.setenv("EXPANDER_SWEEPS_PROGRESS_SECONDS", "0")
    assert progress_interval(on_terminal=False) is None
    monkeypatch.setenv("EXPANDER_SWEEPS_PROGRESS_SECONDS", "5")
    assert progress_interval(on_terminal=True) == 5.0


def _launch(tmp_path, mnist_dir, *flags, workers="1"):
    tmp_path.mkdir(exist_ok=True)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_dict(tmp_path / "run", mnist_dir, tracking={"mlflow": {"enabled": False}},
                                                  training={"epochs": 3, "finetune_epochs": 2})))
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["EXPANDER_SWEEPS_PROGRESS_SECONDS"] = "0.3"
    done = subprocess.run([*CLI, *flags, "launch", str(spec), "--workers", workers], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.slow
def test_a_batch_job_log_is_wide_and_says_how_far_training_is(tmp_path, mnist_dir):
    out = _launch(tmp_path, mnist_dir)
    progress = [line for line in out.splitlines() if "progress: " in line]
    assert any("| dense epoch" in line for line in progress), out
    assert all("left | trials done" in line for line in progress)
    assert "…" not in out  # nothing cut to 80 columns: the crossing table's cells are whole
    assert max(len(line) for line in out.splitlines()) > 80
    assert "trial   0 |" in out


@pytest.mark.slow
def test_quiet_and_verbose(tmp_path, mnist_dir):
    quiet = _launch(tmp_path / "q", mnist_dir, "-q", workers="2")
    assert "trial   0 |" not in quiet and "progress: " not in quiet and "Kept edges" not in quiet
    assert "ran 5 trial(s)" in quiet and "report:" in quiet
    verbose = _launch(tmp_path / "v", mnist_dir, "-v")
    assert "dense epoch 3/3 loss" in verbose and "finetune epoch 2/2 loss" in verbose
    both = subprocess.run([*CLI, "-q", "-v", "schema"], capture_output=True, text=True)
    assert both.returncode == 2 and "contradict" in both.stderr


@pytest.mark.slow
def test_a_log_file_gets_every_line_as_plain_text(tmp_path, mnist_dir):
    log = tmp_path / "sweep.log"
    out = _launch(tmp_path / "l", mnist_dir, "--log-file", str(log), workers="2")
    text = log.read_text()
    assert "\x1b[" not in text  # no colour or cursor codes
    for line in ("ran 5 trial(s)", "trial   0 |", "progress: ", "started 2 workers", "report:"):
        assert line in text, line
    assert [line for line in out.splitlines() if "| dense" in line] == [
        line for line in text.splitlines() if "| dense" in line]  # the same lines as on the screen
    bad = subprocess.run([*CLI, "--log-file", str(tmp_path / "no" / "such" / "x.log"), "schema"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--log-file" in bad.stderr and "Traceback" not in bad.stderr


def test_shell_completion_completes_commands_as_the_readme_says():
    env = {**os.environ, "_EXPANDER_SWEEPS_COMPLETE": "bash_complete", "COMP_WORDS": "expander-sweeps lau",
           "COMP_CWORD": "1"}
    done = subprocess.run(CLI, capture_output=True, text=True, env=env)
    assert "launch" in done.stdout, done.stdout + done.stderr
    source = subprocess.run(CLI, capture_output=True, text=True,
                            env={**os.environ, "_EXPANDER_SWEEPS_COMPLETE": "bash_source"})
    assert "complete " in source.stdout and "_expander_sweeps_completion" in source.stdout
