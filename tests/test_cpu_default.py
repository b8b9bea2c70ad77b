"""How many workers `launch` starts by default, and how a CPU launch shares the cores."""

from __future__ import annotations

import pytest

from expander_sweeps.spec import SweepSpec
from expander_sweeps.workers import (
    SHARE_VARIABLE,
    WORKERS_VARIABLE,
    default_workers,
    dense_threads,
    usable_cores,
)


@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv(WORKERS_VARIABLE, raising=False)


def test_one_single_threaded_worker_per_core_but_not_more_than_trials(cpu_only, monkeypatch):
    cores = usable_cores()
    assert default_workers(100) == cores
    assert default_workers(1) == 1 and default_workers(0) == 1
    assert default_workers(2) == min(2, cores)
    monkeypatch.setenv(WORKERS_VARIABLE, "3")
    assert default_workers(100) == 3
    monkeypatch.setenv(WORKERS_VARIABLE, "many")
    with pytest.raises(ValueError, match="EXPANDER_SWEEPS_WORKERS must be a whole number"):
        default_workers(5)


def test_one_gpu_worker_per_visible_gpu(monkeypatch):
    monkeypatch.delenv(WORKERS_VARIABLE, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,3")
    assert default_workers(1) == 2  # GPUs decide, whatever the trial count


def test_dense_models_share_every_core_while_the_other_workers_wait(monkeypatch):
    one_seed = SweepSpec(name="a")
    three_seeds = SweepSpec(name="b", training={"seed": [0, 1, 2]})
    noisy = SweepSpec(name="c", noise={"variances": [0.1, 0.2], "at_training": True})
    assert dense_threads(one_seed) is None  # not a local CPU worker: torch's own setting
    monkeypatch.setenv(SHARE_VARIABLE, "2/2")
    assert dense_threads(one_seed) == 2  # one dense model, 2 workers on 2 cores: it gets both
    assert dense_threads(three_seeds) == 1  # two dense models train at once, one core each
    monkeypatch.setenv(SHARE_VARIABLE, "4/16")
    assert dense_threads(one_seed) == 16 and dense_threads(three_seeds) == 5 and dense_threads(noisy) == 8


def test_a_malformed_worker_count_is_one_line_and_exit_2_before_anything_runs(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from expander_sweeps.cli import main

    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: w\nrun_dir: {tmp_path / 'run'}\n")
    result = CliRunner().invoke(main, ["launch", str(spec)], env={WORKERS_VARIABLE: "many", "COLUMNS": "300"})
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == ["error: $EXPANDER_SWEEPS_WORKERS must be a whole number >= 1, but it is 'many'"]
    assert not (tmp_path / "run").exists()
