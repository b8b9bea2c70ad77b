"""The whole unrolled graph: known spectra, and the structured solver against a dense one."""

import math

import numpy as np
import pytest
import scipy.linalg

from expander_sweeps.graphs.spectral import (
    layer_spectrum,
    merge_gates,
    step_biadjacency,
    unrolled_adjacency,
    unrolled_spectrum,
    unrolled_top_eigenvalues,
)


def dense_top_two(m_xh, m_hh, steps):
    eig = scipy.linalg.eigvalsh(unrolled_adjacency(m_xh, m_hh, steps).toarray())
    return eig[-1], eig[-2]


def test_one_step_is_the_step_graph():
    # k = 1: h_1 fed by x_1 and h_0 is exactly the per-step graph [M_xh | M_hh] -> h_t.
    rng = np.random.default_rng(3)
    m_xh = (rng.random((12, 5)) < 0.4).astype(float)
    m_hh = (rng.random((12, 12)) < 0.3).astype(float)
    unrolled = unrolled_spectrum(m_xh, m_hh, 1)
    step = layer_spectrum(step_biadjacency(m_xh, m_hh))
    assert unrolled.lambda_1 == pytest.approx(step.lambda_1, rel=1e-12)
    assert unrolled.lambda_2 == pytest.approx(step.lambda_2, rel=1e-12)
    assert unrolled.d_avg == pytest.approx(step.d_avg)
    assert unrolled.edges == step.edges


@pytest.mark.parametrize("steps", [3, 40])
def test_permutation_recurrence_without_inputs_is_a_union_of_paths(steps):
    # M_hh a permutation, no input edges: H disjoint paths of k + 1 vertices, whose top
    # eigenvalue 2 cos(pi / (k + 2)) appears H times (so lambda_2 = lambda_1: no expander).
    hidden = 40  # (k + 1) * H > the dense limit at k = 40: the structured solver runs
    m_hh = np.eye(hidden)[np.random.default_rng(0).permutation(hidden)]
    s = unrolled_spectrum(np.zeros((hidden, 3)), m_hh, steps)
    expected = 2 * math.cos(math.pi / (steps + 2))
    assert s.lambda_1 == pytest.approx(expected, rel=1e-9)
    assert s.lambda_2 == pytest.approx(expected, rel=1e-9)
    assert s.isolated_rows + s.isolated_cols == 3 * steps  # every x_t vertex is isolated
    assert s.delta_r < 0 and s.delta_s < 0


def test_complete_layers_match_their_quotient_path():
    # Complete M_xh and M_hh: every h_t vertex (and every x_t vertex) is alike, so the nonzero
    # eigenvalues are those of the weighted quotient: h_{t-1} - h_t with weight H, h_t - x_t
    # with weight sqrt(H I).
    hidden, inputs, steps = 30, 7, 60
    size = 2 * steps + 1
    quotient = np.zeros((size, size))  # h_0..h_k then x_1..x_k
    for t in range(1, steps + 1):
        quotient[t, t - 1] = quotient[t - 1, t] = hidden
        x = steps + t
        quotient[t, x] = quotient[x, t] = math.sqrt(hidden * inputs)
    expected = np.sort(np.linalg.eigvalsh(quotient))[::-1]
    l1, l2 = unrolled_top_eigenvalues(np.ones((hidden, inputs)), np.ones((hidden, hidden)), steps)
    assert l1 == pytest.approx(expected[0], rel=1e-10)
    assert l2 == pytest.approx(expected[1], rel=1e-10)


@pytest.mark.parametrize("density,steps", [(0.3, 50), (0.05, 80), (0.6, 70)])
def test_structured_solver_matches_a_dense_eigensolver(density, steps):
    rng = np.random.default_rng(int(density * 100) + steps)
    hidden, inputs = 24, 6
    m_xh = (rng.random((hidden, inputs)) < density) * rng.random((hidden, inputs))  # weighted
    m_hh = (rng.random((hidden, hidden)) < density).astype(float)
    assert unrolled_adjacency(m_xh, m_hh, steps).shape[0] > 1500  # past the dense shortcut
    l1, l2 = unrolled_top_eigenvalues(m_xh, m_hh, steps)
    d1, d2 = dense_top_two(m_xh, m_hh, steps)
    assert l1 == pytest.approx(d1, rel=1e-9)
    assert l2 == pytest.approx(d2, rel=1e-9)


def test_unrolled_degrees_count_every_step():
    m_xh, m_hh = np.ones((2, 1)), np.ones((2, 2))
    s = unrolled_spectrum(m_xh, m_hh, 2)
    # edges per step: 2 (x) + 4 (h) -> 12; vertices: h_0..h_2 (6) + x_1, x_2 (2) = 8
    assert s.edges == 12
    assert s.d_avg == pytest.approx(2 * 12 / 8)
    assert s.rows + s.cols == 8
    # colour classes: {h_0, h_2, x_1} (5 vertices) and {h_1, x_2} (3)
    assert {s.rows, s.cols} == {5, 3}
    assert sorted([s.d_left, s.d_right]) == pytest.approx([12 / 5, 12 / 3])


def test_merge_gates_sums_the_stacked_blocks():
    stacked = np.arange(4 * 3 * 2, dtype=float).reshape(12, 2)
    merged = merge_gates(stacked, 4)
    assert merged.shape == (3, 2)
    assert merged[0, 0] == stacked[0, 0] + stacked[3, 0] + stacked[6, 0] + stacked[9, 0]
    with pytest.raises(ValueError, match="gate blocks"):
        merge_gates(np.ones((10, 2)), 4)


def test_bad_shapes_are_refused_with_the_shapes():
    with pytest.raises(ValueError, match="square"):
        unrolled_spectrum(np.ones((3, 2)), np.ones((3, 2)), 4)
    with pytest.raises(ValueError, match="H x I"):
        unrolled_spectrum(np.ones((4, 2)), np.ones((3, 3)), 4)
    with pytest.raises(ValueError, match="at least one step"):
        unrolled_spectrum(np.ones((3, 2)), np.ones((3, 3)), 0)


# ----------------------------------------------------------------------------- stacked layers
def _stacked_by_hand(layers, steps):
    """The stacked unrolled graph built edge by edge (networkx-free, loops only): an independent
    check of unrolled_stack's vectorised construction. Vertex names -> dense adjacency."""
    hidden, inputs = layers[0][1].shape[0], layers[0][0].shape[1]
    names = [("h", level, t, i) for t in range(steps + 1) for level in range(len(layers)) for i in range(hidden)]
    names += [("x", 0, t, j) for t in range(1, steps + 1) for j in range(inputs)]
    index = {name: n for n, name in enumerate(names)}
    a = np.zeros((len(names), len(names)))

    def edge(u, v, w):
        a[index[u], index[v]] += w
        a[index[v], index[u]] += w

    for t in range(1, steps + 1):
        for level, (m_xh, m_hh) in enumerate(layers):
            for i, j in zip(*np.nonzero(m_hh), strict=True):
                edge(("h", level, t, i), ("h", level, t - 1, j), m_hh[i, j])
            for i, j in zip(*np.nonzero(m_xh), strict=True):
                source = ("x", 0, t, j) if level == 0 else ("h", level - 1, t, j)
                edge(("h", level, t, i), source, m_xh[i, j])
    colour = np.array([(t + level) % 2 if kind == "h" else (t + 1) % 2 for kind, level, t, _ in names])
    return a, colour


def _stacked_layers(rng, hidden, inputs, depth, density=0.3):
    layers = [((rng.random((hidden, inputs)) < density) * rng.uniform(0.2, 2, (hidden, inputs)),
               (rng.random((hidden, hidden)) < density) * rng.uniform(0.2, 2, (hidden, hidden)))]
    for _ in range(1, depth):
        layers.append(((rng.random((hidden, hidden)) < density) * 1.0, (rng.random((hidden, hidden)) < density) * 1.0))
    return layers


@pytest.mark.parametrize("depth", [2, 3])
def test_the_stacked_unrolled_graph_is_the_network_built_edge_by_edge_and_bipartite(depth):
    from expander_sweeps.graphs.unrolled_stack import (
        stacked_unrolled_adjacency,
        stacked_unrolled_spectrum,
    )

    layers = _stacked_layers(np.random.default_rng(depth), 5, 3, depth)
    by_hand, colour = _stacked_by_hand(layers, 4)
    np.testing.assert_allclose(stacked_unrolled_adjacency(layers, 4).toarray(), by_hand, atol=0)
    assert not by_hand[np.ix_(colour == 0, colour == 0)].any() and not by_hand[np.ix_(colour == 1, colour == 1)].any()
    spectrum = stacked_unrolled_spectrum(layers, 4, remove_isolated=False)
    assert (spectrum.rows, spectrum.cols) == (int((colour == 0).sum()), int((colour == 1).sum()))
    eigenvalues = np.sort(np.linalg.eigvalsh(by_hand / (by_hand.sum() / np.count_nonzero(by_hand))))[::-1]
    assert spectrum.lambda_1 == pytest.approx(eigenvalues[0], rel=1e-10)
    assert spectrum.lambda_2 == pytest.approx(eigenvalues[1], rel=1e-10)


def test_one_stacked_layer_is_the_single_layer_unrolled_graph():
    from expander_sweeps.graphs.unrolled_stack import stacked_unrolled_spectrum

    rng = np.random.default_rng(7)
    m_xh, m_hh = (rng.random((6, 4)) < 0.5) * 1.0, (rng.random((6, 6)) < 0.3) * 1.0
    assert stacked_unrolled_spectrum([(m_xh, m_hh)], 5) == unrolled_spectrum(m_xh, m_hh, 5)


@pytest.mark.parametrize("disconnected", [False, True])
def test_the_stacked_shift_invert_solver_matches_a_dense_solver_past_its_limit(disconnected):
    from expander_sweeps.graphs.unrolled_stack import (
        stacked_unrolled_adjacency,
        stacked_unrolled_top_eigenvalues,
    )

    layers = _stacked_layers(np.random.default_rng(11), 16, 6, 2, density=0.25)
    if disconnected:  # no input and no edge between the layers, the same W_hh in both: two equal
        # components, so lambda_1 is repeated (a Krylov solver sees one copy; the deflation finds both)
        layers = [(np.zeros((16, 6)), layers[0][1]), (np.zeros((16, 16)), layers[0][1].copy())]
    dense = np.sort(np.linalg.eigvalsh(stacked_unrolled_adjacency(layers, 25).toarray()))[::-1]
    lambda_1, lambda_2 = stacked_unrolled_top_eigenvalues(layers, 25, dense_limit=10)
    assert lambda_1 == pytest.approx(dense[0], rel=1e-9) and lambda_2 == pytest.approx(dense[1], rel=1e-9)
    if disconnected:
        assert lambda_2 == pytest.approx(lambda_1, rel=1e-9)  # the two layers' identical recurrences
