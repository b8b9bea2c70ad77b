import math

import numpy as np
import pytest

from expander_sweeps.graphs.crossings import find_crossing
from expander_sweeps.graphs.spectral import layer_spectrum, step_biadjacency


def test_complete_bipartite_has_sqrt_mn_and_zero_second_eigenvalue():
    s = layer_spectrum(np.ones((6, 4)))
    assert s.lambda_1 == pytest.approx(math.sqrt(24))
    assert s.lambda_2 == 0.0
    assert s.d_avg == pytest.approx(2 * 24 / 10)
    assert (s.d_left, s.d_right) == (4, 6)
    # lambda_2 = 0: the ratio bounds are unbounded, reported as +inf, never a huge finite number.
    assert s.delta_r == math.inf and s.delta_s == math.inf
    assert s.biregular == pytest.approx(math.sqrt(3) + math.sqrt(5))


def test_disjoint_union_repeats_lambda_1_and_is_no_expander():
    block = np.ones((3, 3))
    union = np.block([[block, np.zeros((3, 3))], [np.zeros((3, 3)), block]])
    s = layer_spectrum(union)
    assert s.lambda_1 == pytest.approx(3.0)
    assert s.lambda_2 == pytest.approx(3.0)  # one copy of lambda_1 per component
    assert s.delta_r < 0 and s.delta_s < 0 and s.biregular < 0


def test_eigenvalues_match_the_full_adjacency_matrix():
    rng = np.random.default_rng(1)
    mask = (rng.random((20, 12)) < 0.3).astype(float)
    mask[0, :] = 1  # keep it free of isolated vertices
    mask[:, 0] = 1
    adjacency = np.block([[np.zeros((20, 20)), mask], [mask.T, np.zeros((12, 12))]])
    eig = np.sort(np.linalg.eigvalsh(adjacency))[::-1]
    s = layer_spectrum(mask)
    assert s.lambda_1 == pytest.approx(eig[0], rel=1e-10)
    assert s.lambda_2 == pytest.approx(eig[1], rel=1e-10)


def _random_biregular(n: int, d: int, rng) -> np.ndarray:
    """Union of d edge-disjoint random perfect matchings on n + n vertices (each redrawn until disjoint)."""
    m = np.zeros((n, n))
    for _ in range(d):
        while True:
            matching = rng.permutation(n)
            if not m[np.arange(n), matching].any():
                break
        m[np.arange(n), matching] = 1
    return m


def test_random_regular_bipartite_graph_is_near_ramanujan():
    rng = np.random.default_rng(0)
    d = 8
    s = layer_spectrum(_random_biregular(200, d, rng))
    assert s.lambda_1 == pytest.approx(d)
    assert s.d_avg == pytest.approx(d)
    # Friedman / Marcus-Spielman-Srivastava: lambda_2 close to 2 sqrt(d - 1) for random regular graphs.
    assert s.lambda_2 <= 2 * math.sqrt(d - 1) * 1.08
    assert s.delta_r > -0.08 and s.delta_s > -0.08


def test_isolated_vertices_are_removed_and_counted():
    m = np.zeros((5, 4))
    m[:3, :2] = 1  # K_{3,2}; rows 3-4 and columns 2-3 isolated
    removed = layer_spectrum(m, remove_isolated=True)
    kept = layer_spectrum(m, remove_isolated=False)
    assert (removed.isolated_rows, removed.isolated_cols) == (2, 2)
    assert (removed.rows, removed.cols) == (3, 2)
    assert removed.d_avg == pytest.approx(2 * 6 / 5)
    assert kept.d_avg == pytest.approx(2 * 6 / 9)  # isolated vertices dilute the degree
    assert removed.lambda_1 == pytest.approx(kept.lambda_1) == pytest.approx(math.sqrt(6))


def test_weighted_graph_uses_absolute_weights_normalised_to_mean_one():
    w = np.array([[-2.0, 0.0], [0.0, 3.0]])
    s = layer_spectrum(w)
    # Mean |w| over the 2 kept edges is 2.5: the graph's weights are 0.8 and 1.2.
    assert (s.lambda_1, s.lambda_2) == (pytest.approx(1.2), pytest.approx(0.8))
    assert s.d_avg == pytest.approx(2 * 2 / 4)  # total weight = number of edges
    assert s.components == 2 and s.largest_component == pytest.approx(0.5)


def test_weighted_bounds_do_not_depend_on_the_weights_scale():
    rng = np.random.default_rng(3)
    w = (rng.random((64, 28)) < 0.3) * rng.standard_normal((64, 28))
    reference = layer_spectrum(w)
    for scale in (0.05, 1.0, 5.0):
        scaled = layer_spectrum(scale * w)
        for quantity in ("lambda_1", "lambda_2", "d_avg", "delta_r", "delta_s", "biregular"):
            assert getattr(scaled, quantity) == pytest.approx(getattr(reference, quantity), rel=1e-12)


def test_step_graph_concatenates_inputs_and_hidden_columns():
    m_xh, m_hh = np.ones((4, 2)), np.eye(4)
    assert step_biadjacency(m_xh, m_hh).shape == (4, 6)
    with pytest.raises(ValueError, match="same rows"):
        step_biadjacency(np.ones((3, 2)), np.eye(4))


def test_crossing_interpolates_in_log_fraction_between_grid_points():
    c = find_crossing([1.0, 0.5, 0.25, 0.1], [math.inf, 0.4, 0.2, -0.2])
    assert c.status == "crossed"
    assert (c.upper, c.lower) == (0.25, 0.1)
    # Halfway between 0.2 and -0.2, on the figures' log axis: the geometric mean sqrt(0.25 * 0.1).
    assert c.remaining == pytest.approx(math.sqrt(0.025))
    assert c.stays_negative == 0.1


def test_crossing_from_infinity_lands_on_the_negative_point():
    c = find_crossing([1.0, 0.5], [math.inf, -1.0])
    assert c.status == "crossed" and c.remaining == 0.5


def test_crossing_never_and_negative_at_start_and_unordered_input():
    never = find_crossing([0.1, 1.0, 0.5], [0.1, math.inf, 0.3])
    assert never.status == "never" and never.remaining is None and never.lower == 0.1
    assert "never" in never.describe()
    start = find_crossing([0.5, 0.2], [-0.1, -0.3])
    assert start.status == "negative_at_start" and start.remaining is None and start.lower == 0.5
    assert "predicts nothing" in start.describe()
    assert find_crossing([], []).status == "no_data"


def test_one_unbounded_seed_does_not_hide_negative_seeds():
    # The audit's case: at 50% one seed is +inf, the other -0.2; the mean used to be +inf (-> 25%).
    c = find_crossing([1, 1, .5, .5, .25, .25], [math.inf, math.inf, -.2, math.inf, -.3, -.3])
    assert c.status == "crossed" and c.lower == 0.5 and c.remaining == 0.5


def test_exactly_zero_does_not_have_the_property():
    c = find_crossing([1.0, 0.5, 0.25], [0.5, 0.0, 0.1])
    assert c.status == "crossed" and c.lower == 0.5 and c.remaining == pytest.approx(0.5)


def test_float32_nan_and_undefined_points_are_left_out_and_listed():
    values = np.array([1.0, 0.5, np.nan, -0.5], dtype=np.float32)
    c = find_crossing([1.0, 0.5, 0.25, 0.1], list(values))
    assert c.status == "crossed" and (c.upper, c.lower) == (0.5, 0.1)
    assert c.undefined == (0.25,)
    assert "undefined" in c.describe() and "25%" in c.describe()


def test_a_curve_that_turns_positive_again_says_where_it_stays_negative():
    c = find_crossing([1.0, 0.5, 0.2, 0.1, 0.05, 0.02], [1.0, 0.2, -0.1, 0.05, -0.2, -0.3])
    assert c.status == "crossed" and c.lower == 0.2 and c.stays_negative == 0.05
    assert "stays negative only from 5%" in c.describe()
    again = find_crossing([1.0, 0.5, 0.2], [1.0, -0.2, 0.1])
    assert again.stays_negative is None and "positive again" in again.describe()


def test_degenerate_graphs_are_undefined_never_expanders():
    empty = layer_spectrum(np.zeros((128, 28)))
    assert empty.status == "undefined" and empty.bounds_defined == 0
    assert all(math.isnan(v) for v in (empty.delta_r, empty.delta_s, empty.biregular))
    assert "no edges" in empty.describe_status()
    one = np.zeros((128, 28))
    one[5, 7] = 1.0
    single = layer_spectrum(one)
    # Two vertices and one edge: the adjacency's eigenvalues are 1 and -1.
    assert (single.lambda_1, single.lambda_2) == (1.0, -1.0)
    assert single.status == "undefined" and math.isnan(single.delta_r)
    assert single.isolated_share == pytest.approx(154 / 156)
    star = np.zeros((10, 6))
    star[:, 2] = 1.0
    assert layer_spectrum(star).status == "undefined"
    block = np.zeros((128, 28))
    block[:40, :10] = 1.0  # one complete sub-block: "complete" once the isolated vertices are gone
    sub = layer_spectrum(block)
    assert sub.lambda_2 == 0.0 and sub.status == "undefined"
    assert "K_{40,10}" in sub.describe_status()
    # The dense layer itself is the one complete graph whose bounds are unbounded.
    assert layer_spectrum(np.ones((128, 28))).status == "unbounded"
    assert layer_spectrum(np.ones((1, 1))).status == "unbounded"


def test_a_disconnected_graph_can_have_positive_bounds():
    # The audit's case: a 127 x 27 random half-dense block plus one separate edge.
    rng = np.random.default_rng(0)
    m = np.zeros((128, 28))
    m[:127, :27] = rng.random((127, 27)) < 0.5
    m[127, 27] = 1.0
    s = layer_spectrum(m)
    assert s.components == 2
    assert s.largest_component == pytest.approx(154 / 156)
    block = m[:127, :27]
    values = np.linalg.svd(block, compute_uv=False)
    assert s.lambda_2 == pytest.approx(values[1], rel=1e-10)  # the block's, not a repeated lambda_1
    assert s.delta_r > 0


def test_crossing_averages_repeated_fractions():
    c = find_crossing([1.0, 1.0, 0.5, 0.5], [1.0, 1.0, 0.2, -0.6])  # mean at 0.5 is -0.2
    assert c.status == "crossed" and c.lower == 0.5


@pytest.mark.parametrize("shape", [(1, 7), (7, 1), (2, 9), (128, 28), (40, 300), (300, 300)])
def test_top_singular_values_match_lapack_svd_on_every_shape(shape):
    rng = np.random.default_rng(sum(shape))
    weighted = (rng.random(shape) < 0.2) * rng.standard_normal(shape)
    weighted.flat[-1] = 1.5  # at least one edge (the 1 x 7 and 7 x 1 draws had none)
    s = layer_spectrum(weighted, remove_isolated=False)
    normalised = np.abs(weighted) / np.abs(weighted[weighted != 0]).mean()
    values = np.linalg.svd(normalised, compute_uv=False)
    assert s.lambda_1 == pytest.approx(values[0], rel=1e-12)
    if min(shape) > 1:
        assert s.lambda_2 == pytest.approx(values[1], rel=1e-10)


def test_a_tiny_second_singular_value_is_kept_not_rounded_away():
    # Rank one plus a small perturbation: squaring (the Gram route) would lose sigma_2's digits.
    u, v = np.ones((30, 1)), np.ones((1, 20))
    matrix = u @ v
    matrix[0, 0] += 1e-4
    values = np.linalg.svd(matrix, compute_uv=False)
    s = layer_spectrum(matrix)
    assert 0 < values[1] < 1e-4
    assert s.lambda_2 == pytest.approx(values[1], rel=1e-6)


@pytest.mark.parametrize("shape", [(120, 90), (300, 300), (600, 400)])
def test_near_rank_one_weighted_layers_keep_lambda_2_to_1e_12(shape):
    """A rank-one layer plus small positive noise (sigma_2 / sigma_1 ~ 1e-3): the Gram matrix's
    eigenvalues would give lambda_2 to ~1e-10; the SVD of the layer itself answers instead."""
    rng = np.random.default_rng(7)
    u, v = rng.random(shape[0]) + 0.5, rng.random(shape[1]) + 0.5
    layer = np.outer(u, v) + 1e-3 * rng.random(shape)
    spectrum = layer_spectrum(layer)
    reference = np.linalg.svd(layer / layer.mean(), compute_uv=False)  # weights normalised to mean 1
    assert reference[1] / reference[0] < 1e-2
    assert spectrum.lambda_1 == pytest.approx(reference[0], rel=1e-12)
    assert spectrum.lambda_2 == pytest.approx(reference[1], rel=1e-12)


def test_a_dense_binary_layer_is_answered_in_closed_form():
    spectrum = layer_spectrum(np.ones((512, 300)))
    assert spectrum.lambda_1 == math.sqrt(512 * 300) and spectrum.lambda_2 == 0.0
    assert spectrum.status == "unbounded"


def test_without_a_proof_the_layer_s_own_singular_values_answer(monkeypatch):
    from expander_sweeps.graphs import spectral

    monkeypatch.setattr(spectral, "certified_top_two", lambda gram: None)  # the proof fails
    mask = (np.random.default_rng(3).random((300, 280)) < 0.1).astype(float)
    reference = np.linalg.svd(mask, compute_uv=False)
    spectrum = layer_spectrum(mask)
    assert spectrum.lambda_1 == pytest.approx(reference[0], rel=1e-13)
    assert spectrum.lambda_2 == pytest.approx(reference[1], rel=1e-13)


def test_graphs_with_an_average_side_degree_below_3_are_flagged_low_degree():
    """Hoang et al. define no bound below average degree 3: such graphs keep their numbers and
    carry the flag. A 2-regular cycle-like 8 x 8 mask, a 3-regular one, and 12 x 4 where the
    12 outputs have degree 1 (d_left 1) and the 4 inputs degree 3."""
    two = np.zeros((8, 8))
    three = np.zeros((8, 8))
    for i in range(8):
        two[i, [i, (i + 1) % 8]] = 1
        three[i, [i, (i + 1) % 8, (i + 3) % 8]] = 1
    unbalanced = np.zeros((12, 4))
    unbalanced[np.arange(12), np.arange(12) % 4] = 1
    for mask, d_left, d_right, low in ((two, 2, 2, 1), (three, 3, 3, 0), (unbalanced, 1, 3, 1)):
        spectrum = layer_spectrum(mask)
        assert (spectrum.d_left, spectrum.d_right, spectrum.low_degree) == (d_left, d_right, low)
        if low and spectrum.bounds_defined:
            assert spectrum.status == "low_degree" and "below 3" in spectrum.describe_status()
    assert layer_spectrum(three).status == "defined"
    assert layer_spectrum(np.ones((2, 2))).status == "unbounded"  # a dense layer stays unbounded


def test_crossings_are_also_given_without_low_degree_points():
    import pandas as pd

    from expander_sweeps.reporting import crossing_rows
    from expander_sweeps.spec import SweepSpec

    spec = SweepSpec(name="s", masks={"layers": ["W_hh"], "remaining": [1.0, 0.5, 0.2, 0.05]},
                     noise={"variances": []}, report={"bounds": ["delta_s"]})
    # Delta_S negative at 0.2, positive again at 0.05 where the graph has degree < 3.
    frame = pd.DataFrame([{"trial": i, "remaining_W_hh": r, "mask_method": "magnitude", "seed": 0,
                           "train_noise_variance": 0.0, "acc/clean": 0.9, "W_hh/kept_fraction": r,
                           "W_hh/binary/delta_s": b, "W_hh/binary/low_degree": low}
                          for i, (r, b, low) in enumerate([(1.0, math.inf, 0), (0.5, 0.2, 0), (0.2, -0.1, 0),
                                                           (0.05, 0.3, 1)])])
    row = crossing_rows(frame, spec).iloc[0]
    assert row["low_degree_at_pct"] == "5"
    assert row["where"] == "27.14% (between 20% and 50%); positive again further down, never stays negative"
    # Without the low-degree point the bound stays negative from 20 %: no "positive again" tail.
    assert row["without_low_degree"] == "27.14% (between 20% and 50%)"
