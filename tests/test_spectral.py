import math

import numpy as np
import pytest

from expander_sweeps.spectral import find_crossing, layer_spectrum, step_biadjacency


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


def test_weighted_graph_uses_absolute_weights():
    w = np.array([[-2.0, 0.0], [0.0, 3.0]])
    s = layer_spectrum(w)
    assert (s.lambda_1, s.lambda_2) == (pytest.approx(3.0), pytest.approx(2.0))
    assert s.d_avg == pytest.approx(2 * 5 / 4)


def test_step_graph_concatenates_inputs_and_hidden_columns():
    m_xh, m_hh = np.ones((4, 2)), np.eye(4)
    assert step_biadjacency(m_xh, m_hh).shape == (4, 6)
    with pytest.raises(ValueError, match="same rows"):
        step_biadjacency(np.ones((3, 2)), np.eye(4))


def test_crossing_interpolates_between_grid_points():
    c = find_crossing([1.0, 0.5, 0.25, 0.1], [math.inf, 0.4, 0.2, -0.2])
    assert c.status == "crossed"
    assert (c.upper, c.lower) == (0.25, 0.1)
    assert c.remaining == pytest.approx(0.25 + (0.1 - 0.25) * 0.2 / 0.4)  # halfway: 0.175


def test_crossing_from_infinity_lands_on_the_negative_point():
    c = find_crossing([1.0, 0.5], [math.inf, -1.0])
    assert c.status == "crossed" and c.remaining == 0.5


def test_crossing_never_and_negative_at_start_and_unordered_input():
    never = find_crossing([0.1, 1.0, 0.5], [0.1, math.inf, 0.3])
    assert never.status == "never" and never.remaining is None and never.lower == 0.1
    assert "never" in never.describe()
    start = find_crossing([0.5, 0.2], [-0.1, -0.3])
    assert start.status == "negative_at_start" and start.remaining == 0.5
    assert find_crossing([], []).status == "no_data"


def test_crossing_averages_repeated_fractions():
    c = find_crossing([1.0, 1.0, 0.5, 0.5], [1.0, 1.0, 0.2, -0.6])  # mean at 0.5 is -0.2
    assert c.status == "crossed" and c.lower == 0.5


@pytest.mark.parametrize("shape", [(1, 7), (7, 1), (2, 9), (128, 28), (40, 300), (300, 300)])
def test_top_singular_values_match_lapack_svd_on_every_shape(shape):
    rng = np.random.default_rng(sum(shape))
    weighted = (rng.random(shape) < 0.2) * rng.standard_normal(shape)
    s = layer_spectrum(weighted, remove_isolated=False)
    values = np.linalg.svd(np.abs(weighted), compute_uv=False)
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
