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


@pytest.mark.slow
def test_seeds_and_mask_methods_in_one_sweep_and_the_claim_report(tmp_path, mnist_dir):
    spec = _spec(tmp_path, mnist_dir, training={"seed": [0, 1]},
                 masks={"remaining": [1.0, 0.3, 0.05], "method": ["magnitude", "regular"], "layers": ["W_hh"]},
                 spectral={"graphs": ["layer", "unrolled"], "weighted": False})
    result = expander_sweeps.launch(spec)
    frame = expander_sweeps.report(spec).trials
    assert result.failed == 0 and len(frame) == 2 * (1 + 2 * 2)
    assert set(zip(frame["seed"], frame["mask_method"], strict=True)) >= {(0, "regular"), (1, "magnitude")}
    # Different seeds train different dense models (the cache key holds the seed).
    dense = frame[frame["remaining_W_hh"] == 1.0].sort_values("seed")
    assert dense["dense/acc/clean"].nunique() == 2
    regular = frame[(frame["mask_method"] == "regular") & (frame["remaining_W_hh"] < 1.0)]
    assert (regular["W_hh/binary/d_left"] == regular["W_hh/binary/d_left"].round()).all()  # equal row degrees
    assert (frame["unrolled/binary/steps"] == 28).all()
    rep = expander_sweeps.report(spec)
    claim = rep.claim
    assert set(claim["mask_method"]) == {"magnitude", "regular"}
    assert set(claim["noise"]) == {"clean", "noise var 0.3"}
    # The drop is measured against the dense trial of the same seed: recompute one by hand.
    row = frame[(frame["mask_method"] == "magnitude") & (frame["remaining_W_hh"] == 0.05) & (frame["seed"] == 0)].iloc[0]
    base = dense[dense["seed"] == 0].iloc[0]["acc/clean"]
    panel = [p for p in expander_sweeps.reporting._panels(frame, spec) if p.method == "magnitude"][0]
    assert panel.drops("acc/clean")[row.name] == pytest.approx(base - row["acc/clean"])
    markdown = (spec.run_path / "report" / "report.md").read_text()
    assert "## The claim, tested" in markdown and "## Mask methods side by side" in markdown
    # 2 methods x 2 seeds x 2 fractions = 8 masked trials: the partial-correlation test runs.
    tests = rep.expansion_test
    clean = tests[(tests["noise"] == "clean") & (tests["bound"] == "Delta_R")].iloc[0]
    assert clean["n"] == 8 and clean["verdict"] in {"supported", "contradicted", "inconclusive"}
    assert "## Does expansion matter beyond density?" in markdown
    assert (frame["n_test"] == 300).all()
    assert (spec.run_path / "report" / "claim.csv").stat().st_size > 0
    figure = spec.run_path / "report" / "figure_W_hh.png"
    assert figure.read_bytes()[:4] == b"\x89PNG"


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


@pytest.mark.slow
@pytest.mark.parametrize("lend", [False, True])
def test_training_lends_the_tracker_process_a_thread_only_when_the_spec_says_so(tmp_path, mnist_dir, lend):
    """The tracker process is busy for its first seconds (importing MLflow, creating the store),
    which a tiny sweep's training overlaps: with `tracking.lend_thread` some batches run on one
    thread fewer; without it every batch runs on all of them (bit-for-bit reproducible)."""
    import torch

    class ThreadsPerBatch(sweep.SweepEvents):
        def __init__(self):
            self.seen: set[int] = set()

        def batch_done(self) -> None:
            self.seen.add(torch.get_num_threads())

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        spec = spec_from_dict(tiny_spec_dict(tmp_path / "run", mnist_dir, tracking={"lend_thread": lend}))
        events = ThreadsPerBatch()
        result = sweep.launch_study(spec, events)
        assert result.ran == 5 and result.failed == 0
        assert torch.get_num_threads() == 2  # given back when the sweep ended
    finally:
        torch.set_num_threads(before)
    assert events.seen == ({1, 2} if lend else {2})
    # How each trial ran is recorded with it: the thread count, or that it varied.
    assert {t.user_attrs["cpu_threads"] for t in result.study.trials} == (
        {"varied (tracking.lend_thread)"} if lend else {2})
