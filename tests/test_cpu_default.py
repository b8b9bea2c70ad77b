"""How many workers `launch` starts by default, and how a CPU launch shares the cores."""

from __future__ import annotations

import pytest

from expander_sweeps.spec import SweepSpec
from expander_sweeps.sweep.workers import (
    SHARE_VARIABLE,
    WORKERS_VARIABLE,
    default_worker_plan,
    default_workers,
    dense_threads,
    gpu_worker_plan,
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


def test_several_workers_share_a_gpu_as_cores_memory_and_trials_allow():
    # The measured case (one H200, 16 cores): 8 workers beat 4 and 16.
    assert gpu_worker_plan(1, 16, [139 * 2**30], 100) == (
        8, "8 per GPU (16 cores / 1 GPU(s) at 2 per worker: 8; 139 GiB free holds 69)")
    assert gpu_worker_plan(1, 64, None, 100)[0] == 8  # capped per GPU
    assert gpu_worker_plan(2, 16, None, 100)[0] == 8  # 4 per GPU on 8 cores each
    assert gpu_worker_plan(4, 2, None, 100)[0] == 4  # at least one per GPU
    count, why = gpu_worker_plan(1, 16, [5 * 2**30], 100)
    assert count == 2 and "5 GiB free holds 2" in why  # memory decides
    count, why = gpu_worker_plan(2, 32, None, 3)
    assert count == 3 and "3 trial(s) left" in why  # never more than the trials left


def test_visible_gpus_get_the_plan_and_the_environment_still_decides(monkeypatch):
    monkeypatch.delenv(WORKERS_VARIABLE, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-abc,GPU-def")  # UUIDs: no free-memory query
    count, why = default_worker_plan(100)
    assert count == gpu_worker_plan(2, usable_cores(), None, 100)[0] and "per GPU" in why
    assert default_workers(1) == 1
    monkeypatch.setenv(WORKERS_VARIABLE, "5")
    assert default_worker_plan(100) == (5, "$EXPANDER_SWEEPS_WORKERS")


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
