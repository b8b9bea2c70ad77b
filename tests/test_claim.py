"""The claim statistics and the definitions behind them, on synthetic sweep frames whose right
answer is known in advance, and one real trial whose spectra are recomputed from its checkpoint."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import tiny_spec_dict
from expander_sweeps.graphs.spectral import layer_spectrum
from expander_sweeps.reporting import (
    claim_rows,
    crossing_rows,
    drop_points,
    expansion_test_rows,
)
from expander_sweeps.reporting.analysis import _panels as panels_of
from expander_sweeps.spec import SweepSpec, spec_from_dict


def _frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["trial"] = range(len(frame))
    frame["train_noise_variance"] = 0.0
    frame["n_test"] = 2000.0
    return frame


def test_drop_counts_only_beyond_test_set_noise_and_the_crossing_is_in_kept_edges():
    spec = SweepSpec(name="s", masks={"layers": ["W_hh"], "remaining": [1.0, 0.5, 0.25, 0.1, 0.05], "method": "regular"},
                     noise={"variances": []}, report={"bounds": ["delta_r"]})
    # Asked 0.5 / 0.25 / 0.1 / 0.05, kept 0.5 / 0.2 / 0.08 / 0.04 (as a regular mask rounds). Drops:
    # 0.5 and 1.5 points (above the 1-point threshold, but within 1.96 SE at n = 2000), then 5 and
    # 10 points: a drop that stays, over two fractions.
    accuracy = {1.0: 0.90, 0.5: 0.895, 0.25: 0.885, 0.1: 0.85, 0.05: 0.80}
    kept = {1.0: 1.0, 0.5: 0.5, 0.25: 0.2, 0.1: 0.08, 0.05: 0.04}
    delta_r = {1.0: math.inf, 0.5: 0.3, 0.25: -0.1, 0.1: -0.4, 0.05: -0.6}
    frame = _frame([{"remaining_W_hh": r, "mask_method": "regular", "seed": 0, "acc/clean": a,
                     "W_hh/kept_fraction": kept[r], "W_hh/binary/delta_r": delta_r[r]} for r, a in accuracy.items()])
    panel = panels_of(frame, spec)[0]
    points = drop_points(panel, "acc/clean", spec.report.drop_threshold)
    se_15 = math.sqrt((0.9 * 0.1 + 0.885 * 0.115) / 2000)  # 0.0099
    assert points.loc[0.25, "se"] == pytest.approx(se_15)
    assert points.loc[0.25, "drop"] == pytest.approx(0.015)
    assert not points.loc[0.25, "dropped"]  # 1.5 points < 1.96 x 0.99: test-set noise
    assert points.loc[0.1, "dropped"]
    claim = claim_rows(frame, spec)
    row = claim.iloc[0]
    # Drop crossing between kept 0.2 (margin - drop > 0) and 0.08, interpolated in log(kept).
    v0 = 1.959963984540054 * se_15 - 0.015
    se_50 = math.sqrt((0.9 * 0.1 + 0.85 * 0.15) / 2000)
    v1 = 1.959963984540054 * se_50 - 0.05
    expected = math.exp(math.log(0.2) + (math.log(0.08) - math.log(0.2)) * v0 / (v0 - v1))
    assert row["drop_crossing_pct"] == pytest.approx(100 * expected, abs=1e-3)
    # The bound crosses between kept 0.5 and 0.2, also in log(kept): 0.3 -> -0.1 is 3/4 of the way.
    bound = math.exp(math.log(0.5) + (math.log(0.2) - math.log(0.5)) * 0.75)
    assert row["bound_crossing_pct"] == pytest.approx(100 * bound, abs=1e-3)
    assert row["held_beyond_crossing_pts"] == pytest.approx(100 * (bound - expected), abs=2e-3)
    crossing = crossing_rows(frame, spec).iloc[0]
    assert crossing["crossing_pct"] == pytest.approx(100 * bound, abs=1e-3)


def test_a_bound_negative_from_the_start_predicts_nothing():
    spec = SweepSpec(name="s", masks={"layers": ["W_hh"], "remaining": [1.0, 0.5, 0.1]},
                     noise={"variances": []}, report={"bounds": ["delta_r"]})
    frame = _frame([{"remaining_W_hh": r, "mask_method": "magnitude", "seed": 0, "acc/clean": a,
                     "W_hh/kept_fraction": r, "W_hh/binary/delta_r": b}
                    for r, a, b in [(1.0, 0.9, -0.5), (0.5, 0.9, -0.6), (0.1, 0.5, -0.9)]])
    row = claim_rows(frame, spec).iloc[0]
    assert row["bound_status"] == "negative_at_start"
    assert row["bound_crossing_pct"] is None and row["held_beyond_crossing_pts"] is None
    assert "predicts nothing" in row["verdict"]


def test_tied_layers_compare_every_pruned_layer_with_the_drop():
    spec = SweepSpec(name="s", masks={"schedule": "tied", "remaining": [1.0, 0.5, 0.1]},
                     noise={"variances": []}, report={"bounds": ["delta_r"]})
    frame = _frame([{"remaining_W_xh": r, "remaining_W_hh": r, "mask_method": "magnitude", "seed": 0,
                     "acc/clean": a, "W_xh/kept_fraction": r, "W_hh/kept_fraction": r,
                     "W_xh/binary/delta_r": b, "W_hh/binary/delta_r": b + 0.2}
                    for r, a, b in [(1.0, 0.9, math.inf), (0.5, 0.88, 0.1), (0.1, 0.5, -0.3)]])
    claim = claim_rows(frame, spec)
    assert set(claim["graph"]) == {"W_xh", "W_hh"}
    assert set(expansion_test_rows(frame, spec)["graph"]) == {"W_xh", "W_hh"}


def test_undefined_seeds_stay_out_of_the_mean_and_the_table_says_so():
    spec = SweepSpec(name="s", training={"seed": [0, 1]},
                     masks={"layers": ["W_hh"], "remaining": [1.0, 0.5, 0.01]},
                     noise={"variances": []}, report={"bounds": ["delta_r"]})
    rows = []
    for seed in (0, 1):
        rows += [{"remaining_W_hh": 1.0, "mask_method": "magnitude", "seed": seed, "acc/clean": 0.9,
                  "W_hh/kept_fraction": 1.0, "W_hh/binary/delta_r": math.inf},
                 {"remaining_W_hh": 0.5, "mask_method": "magnitude", "seed": seed, "acc/clean": 0.9,
                  "W_hh/kept_fraction": 0.5, "W_hh/binary/delta_r": 0.2 if seed else 0.4},
                 {"remaining_W_hh": 0.01, "mask_method": "magnitude", "seed": seed, "acc/clean": 0.2,
                  "W_hh/kept_fraction": 0.01, "W_hh/binary/delta_r": math.nan}]
    frame = _frame(rows)
    panel = panels_of(frame, spec)[0]
    curve = panel.curve("W_hh/binary/delta_r")
    assert curve.loc[0.5, "mean"] == pytest.approx(0.3)
    assert curve.loc[1.0, "mean"] == math.inf and curve.loc[0.01, "n"] == 0
    crossing = crossing_rows(frame, spec).iloc[0]
    assert crossing["status"] == "never" and crossing["undefined_at_pct"] == "1"
    assert "undefined" in crossing["where"]


@pytest.mark.slow
def test_trial_spectra_are_those_of_the_evaluated_checkpoint(tmp_path, mnist_dir):
    from expander_sweeps.sweep.trial import SweepContext, TrialPlan, run_trial

    spec = spec_from_dict(tiny_spec_dict(tmp_path / "run", mnist_dir, spectral={"graphs": ["layer"]},
                                         masks={"remaining": [1.0, 0.1], "layers": ["W_hh"]}))
    result = run_trial(SweepContext(spec), TrialPlan({"W_hh": 0.1}), tmp_path / "trial")
    checkpoint = torch.load(result.files["checkpoint"])
    mask = np.load(result.files["masks"])["W_hh"]
    weights = checkpoint["state_dict"]["recurrent.weight_hh_l0"].numpy().astype(np.float64)
    assert ((weights != 0) <= (mask != 0)).all()  # the mask was held
    recomputed = layer_spectrum(np.abs(weights) * mask)
    assert result.metrics["W_hh/weighted/lambda_1"] == pytest.approx(recomputed.lambda_1, rel=1e-9)
    assert result.metrics["W_hh/weighted/delta_r"] == pytest.approx(recomputed.delta_r, rel=1e-9)
    # The at-mask values are kept, labelled, and differ after fine-tuning.
    assert result.metrics["W_hh/weighted_at_mask/lambda_1"] != pytest.approx(recomputed.lambda_1, rel=1e-6)
    assert result.metrics["W_hh/binary/components"] >= 1
    assert 0 < result.metrics["W_hh/binary/largest_component"] <= 1
    assert result.spectra["W_hh/binary"]["status"] == layer_spectrum(mask).describe_status()


def test_compare_shows_each_seed_s_crossing_as_a_range():
    from expander_sweeps.reporting.analysis import _seed_spread

    spec = SweepSpec(name="s", training={"seed": [0, 1]}, masks={"layers": ["W_hh"], "remaining": [1.0, 0.5, 0.25]},
                     noise={"variances": []}, report={"bounds": ["delta_r"]})
    rows = []
    for seed, (b50, b25) in {0: (0.2, -0.2), 1: (-0.1, -0.3)}.items():  # seed 0 crosses between 0.5 and 0.25
        rows += [{"remaining_W_hh": r, "mask_method": "magnitude", "seed": seed, "acc/clean": 0.9,
                  "W_hh/kept_fraction": r, "W_hh/binary/delta_r": b}
                 for r, b in [(1.0, math.inf), (0.5, b50), (0.25, b25)]]
    spread = _seed_spread(_frame(rows), spec)
    seed0 = 100 * math.exp(math.log(0.5) + (math.log(0.25) - math.log(0.5)) * 0.5)  # halfway in log(kept)
    assert spread[("W_hh", "binary", "Delta_R", "magnitude")] == f"seeds {seed0:.2f}-50.00%"


@pytest.mark.slow
def test_a_trial_records_its_split_sizes_and_hits_that_give_its_accuracies(tmp_path, mnist_dir):
    """n_train / n_test are the sizes the trial really ran on (the tiny spec's 600 / 300), the
    report header prints them, and the stored per-image hits reproduce every accuracy exactly."""
    from expander_sweeps.reporting.claim_stats import unpack_correct
    from expander_sweeps.reporting.markdown import _split_sizes
    from expander_sweeps.sweep.trial import SweepContext, TrialPlan, run_trial

    spec = spec_from_dict(tiny_spec_dict(tmp_path / "run", mnist_dir, spectral={"graphs": ["layer"]},
                                         masks={"remaining": [1.0, 0.3], "layers": ["W_hh"]}))
    result = run_trial(SweepContext(spec), TrialPlan({"W_hh": 0.3}), tmp_path / "trial")
    assert (result.metrics["n_train"], result.metrics["n_test"]) == (600.0, 300.0)
    assert set(result.correct) == {"acc/clean", "acc/var_0.3"}
    for name, packed in result.correct.items():
        assert unpack_correct(packed, 300).mean() == result.metrics[name]
    frame = pd.DataFrame([{"n_train": 600.0, "n_test": 300.0}, {"n_train": 600.0, "n_test": 300.0}])
    assert _split_sizes(frame) == "trials ran on 600 training / 300 test examples"
    assert _split_sizes(pd.DataFrame([{"n_test": 300.0}])) == "trials ran on training size not recorded / 300 test examples"
