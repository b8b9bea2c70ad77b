"""The study loop through the Python API: grid enumeration, failure and retry, other samplers."""

from __future__ import annotations

import optuna
import pytest

import expander_sweeps
from conftest import tiny_spec_dict
from expander_sweeps.spec import SweepSpec, spec_from_dict
from expander_sweeps.sweep import loop as sweep


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
    panel = [p for p in expander_sweeps.reporting.analysis._panels(frame, spec) if p.method == "magnitude"][0]
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
    # Per trial: the fault is injected into run_trial (a batched group's failures: test_batched.py).
    spec = _spec(tmp_path, mnist_dir, masks={"remaining": [1.0, 0.2]}, training={"epochs": 1, "engine": "per_trial"})
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


@pytest.mark.slow
def test_training_pauses_for_trackers_past_the_lag_limit_and_every_trial_reaches_them(tmp_path, mnist_dir):
    """The tracker process runs on idle CPU time and starts by importing MLflow (about a second),
    so with a limit of a millisecond the first batch already finds its first call waiting too
    long: training pauses until the trackers have caught up, says so, and every trial still
    reaches MLflow, in order."""
    from mlflow.tracking import MlflowClient

    class Said(sweep.SweepEvents):
        def __init__(self):
            self.warnings: list[str] = []

        def warn(self, message: str) -> None:
            self.warnings.append(message)

    spec = spec_from_dict(tiny_spec_dict(tmp_path / "run", mnist_dir, tracking={"max_lag_seconds": 0.001}))
    events = Said()
    result = sweep.launch_study(spec, events)
    assert result.ran == 5 and result.failed == 0
    pauses = [w for w in events.warnings if w.startswith("training pauses for the trackers")]
    assert pauses and "max_lag_seconds = 0.001" in pauses[0]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}")
    runs = client.search_runs(client.get_experiment_by_name("tiny").experiment_id,
                              filter_string="tags.`expander_sweeps.sweep.trial` != ''")
    assert sorted(int(r.data.tags["expander_sweeps.sweep.trial"]) for r in runs) == [0, 1, 2, 3, 4]
    assert {r.info.status for r in runs} == {"FINISHED"}


@pytest.mark.slow
def test_a_launch_tells_its_workers_how_far_behind_its_trackers_are(tmp_path, mnist_dir):
    """`launch --workers N` logs the workers' trials through TrialRelay, which writes its
    trackers' lag to the file the workers read (pacing.lag_from_file) while it is past half the
    limit, and removes it when the sweep ends."""
    import time

    from expander_sweeps.sweep.pacing import lag_from_file
    from expander_sweeps.sweep.syncing import TrialRelay

    finished = sweep.launch_study(spec_from_dict(tiny_spec_dict(
        tmp_path / "run", mnist_dir, tracking={"mlflow": {"enabled": False}})))
    # The launch's trackers: MLflow in a store of their own, a millisecond's patience.
    spec = spec_from_dict(tiny_spec_dict(tmp_path / "run", mnist_dir, tracking={
        "max_lag_seconds": 0.001, "mlflow": {"uri": f"sqlite:///{tmp_path / 'relay.db'}"}}))
    lag_file = tmp_path / "run" / ".trackers-lag"
    warnings: list[str] = []
    relay = TrialRelay(spec, warnings.append, set(), lag_file)
    relay.push_finished(finished.study)  # starts the tracker process, queues 5 trials
    time.sleep(0.3)
    relay.push_finished(finished.study)  # nothing new: the lag is re-read and written
    if relay._trackers._ran.value == 0:  # the child still importing MLflow, as it is here for ~1 s
        assert lag_from_file(lag_file) >= 0.3
    relay.close(finished.study)
    assert not lag_file.exists() and warnings == []
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'relay.db'}")
    runs = client.search_runs(client.get_experiment_by_name("tiny").experiment_id,
                              filter_string="tags.`expander_sweeps.sweep.trial` != ''")
    assert len(runs) == 5


def test_a_missing_dataset_is_reported_before_the_trackers_create_anything(tmp_path):
    """The tracker process starts before the data is loaded (its imports overlap the loading),
    but builds its trackers only at its first call: a sweep that stops at its data leaves no
    MLflow store, no W&B folder, and no tracker process behind, and says so at once."""
    import multiprocessing
    import time

    spec = spec_from_dict(tiny_spec_dict(tmp_path / "run", tmp_path / "no-mnist-here",
                                         tracking={"wandb": {"enabled": True, "mode": "offline"}}))
    started = time.monotonic()
    with pytest.raises(Exception) as raised:
        sweep.launch_study(spec)
    assert "no-mnist-here" in str(raised.value)
    assert time.monotonic() - started < 10  # the tracker process was stopped, not waited for
    run = tmp_path / "run"
    assert not (run / "mlflow.db").exists() and not (run / "wandb").exists()
    assert not [p for p in multiprocessing.active_children() if p.name == "expander-sweeps-trackers"]
