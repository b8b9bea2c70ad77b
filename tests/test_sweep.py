"""The study loop through the Python API: grid enumeration, failure and retry, other samplers."""

from __future__ import annotations

import optuna
import pytest

import expander_sweeps
from conftest import tiny_spec_dict
from expander_sweeps import sweep
from expander_sweeps.spec import SweepSpec, spec_from_dict


def _spec(tmp_path, mnist_dir, **sections) -> SweepSpec:
    sections.setdefault("tracking", {"mlflow": {"enabled": False}})
    return spec_from_dict(tiny_spec_dict(tmp_path / "run", mnist_dir, **sections))


def test_grid_plans_per_schedule():
    each = SweepSpec(name="a", masks={"remaining": [1.0, 0.5, 0.1]})
    plans = sweep.grid_plans(each)
    assert len(plans) == 5  # the all-dense point once, not once per layer
    assert plans[0].remaining == {"W_xh": 1.0, "W_hh": 1.0}
    tied = SweepSpec(name="a", masks={"remaining": [1.0, 0.5], "schedule": "tied"})
    assert [p.remaining for p in sweep.grid_plans(tied)] == [{"W_xh": 1.0, "W_hh": 1.0}, {"W_xh": 0.5, "W_hh": 0.5}]
    independent = SweepSpec(name="a", masks={"remaining": [1.0, 0.5], "schedule": "independent"},
                            noise={"at_training": True, "variances": [0.0, 0.3]})
    assert len(sweep.grid_plans(independent)) == 4 * 2


@pytest.mark.slow
def test_a_failed_trial_is_recorded_and_rerun_at_the_next_launch(tmp_path, mnist_dir, monkeypatch):
    spec = _spec(tmp_path, mnist_dir, masks={"remaining": [1.0, 0.2]}, training={"epochs": 1})
    real_run_trial = sweep.run_trial
    calls = {"n": 0}

    def fail_second_trial(*args, **kwargs):  # fault injection: the 2nd trial dies mid-way
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash")
        return real_run_trial(*args, **kwargs)

    monkeypatch.setattr(sweep, "run_trial", fail_second_trial)
    first = expander_sweeps.launch(spec)
    assert (first.ran, first.failed) == (3, 1)
    states = [t.state for t in first.study.trials]
    assert states.count(optuna.trial.TrialState.FAIL) == 1
    failed = next(t for t in first.study.trials if t.state == optuna.trial.TrialState.FAIL)
    assert "simulated crash" in failed.user_attrs["error"]

    monkeypatch.setattr(sweep, "run_trial", real_run_trial)
    second = expander_sweeps.launch(spec)
    assert (second.ran, second.failed) == (1, 0)  # only the failed point
    complete = second.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 3
    assert sorted(t.params.get("remaining") for t in complete) == [0.2, 0.2, 1.0]


@pytest.mark.slow
def test_tpe_sampler_with_a_range_and_two_objectives(tmp_path, mnist_dir):
    spec = _spec(tmp_path, mnist_dir, study={"sampler": "tpe", "n_trials": 3,
                                             "objectives": ["accuracy", "remaining_edges"]},
                 masks={"remaining": {"low": 0.05, "high": 1.0}, "schedule": "tied"},
                 training={"epochs": 1})
    result = expander_sweeps.launch(spec)
    assert result.ran == 3
    study = result.study
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    for t in study.trials:
        assert 0.05 <= t.params["remaining"] <= 1.0
        assert t.values[1] == pytest.approx(t.params["remaining"])
    assert expander_sweeps.launch(spec).ran == 0  # n_trials is the total, finished ones count
    rep = expander_sweeps.report(spec)
    assert set(rep.crossings["pruned"]) == {"W_xh+W_hh (tied)"}
