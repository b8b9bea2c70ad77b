"""The opt-in graph measures (graphs/measures.py) against independent computations: a dense
symmetric eigen-solver on the whole bipartite graph, the Cheeger constant by brute force over every
vertex subset (graphs of up to 12 vertices), and cases computed by hand."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from expander_sweeps.graphs.measures import (
    cheeger_lower,
    cheeger_sweep,
    cheeger_upper,
    gap_ratio,
    imdb,
    normalised_laplacian_gap,
    sampled_expansion,
)


def _adjacency(biadjacency: np.ndarray) -> np.ndarray:
    b = np.abs(biadjacency.astype(np.float64))
    b = b[b.sum(axis=1) > 0][:, b.sum(axis=0) > 0]
    r, c = b.shape
    a = np.zeros((r + c, r + c))
    a[:r, r:], a[r:, :r] = b, b.T
    return a


def _eigen_gap(biadjacency: np.ndarray) -> float:
    a = _adjacency(biadjacency)
    inv = 1.0 / np.sqrt(a.sum(axis=1))
    laplacian = np.eye(len(a)) - inv[:, None] * a * inv[None, :]
    return float(np.sort(np.linalg.eigvalsh(laplacian))[1])


def _cheeger_brute_force(biadjacency: np.ndarray) -> float:
    a = _adjacency(biadjacency)
    n, degrees = len(a), a.sum(axis=1)
    total, best = degrees.sum(), math.inf
    for size in range(1, n):
        for subset in itertools.combinations(range(n), size):
            inside = np.zeros(n, dtype=bool)
            inside[list(subset)] = True
            cut = a[inside][:, ~inside].sum()
            best = min(best, cut / min(degrees[inside].sum(), total - degrees[inside].sum()))
    return float(best)


def _random_graphs(count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    made = 0
    while made < count:
        rows, cols = rng.integers(1, 7), rng.integers(1, 7)
        if rows + cols > 12:
            continue
        mask = rng.random((rows, cols)) < rng.uniform(0.3, 0.9)
        if not mask.any():
            continue
        weighted = rng.random() < 0.5
        yield mask * (rng.uniform(0.1, 3.0, (rows, cols)) if weighted else 1.0)
        made += 1


@pytest.mark.parametrize("graph", list(_random_graphs(40)), ids=lambda g: f"{g.shape[0]}x{g.shape[1]}")
def test_the_measures_agree_with_a_dense_eigen_solver_and_brute_force(graph):
    if sum(_adjacency(graph).shape) // 2 < 2:
        pytest.skip("one vertex")
    gap = normalised_laplacian_gap(graph)
    assert gap == pytest.approx(_eigen_gap(graph), abs=1e-9)
    h = _cheeger_brute_force(graph)
    sweep = cheeger_sweep(graph)
    # Cheeger-Buser, and the sweep cut is a cut: no smaller than the best one.
    assert cheeger_lower(graph) <= h + 1e-9 and h <= sweep + 1e-9 and sweep <= cheeger_upper(graph) + 1e-9
    assert cheeger_lower(graph) == pytest.approx(gap / 2) and cheeger_upper(graph) == pytest.approx(math.sqrt(2 * gap))


def test_hand_computed_cases():
    # Complete bipartite K_{2,3}: the normalised adjacency has rank one, so every other eigenvalue
    # of the Laplacian is 1 (and 2); gap_ratio is 1; every cut is worse than half the volume's edges.
    k23 = np.ones((2, 3))
    assert normalised_laplacian_gap(k23) == pytest.approx(1.0)
    assert gap_ratio(k23) == pytest.approx(1.0)
    # Two disjoint edges: disconnected, gap 0 and a cut of conductance 0 (one edge on each side).
    two = np.eye(2)
    assert normalised_laplacian_gap(two) == pytest.approx(0.0, abs=1e-12)
    assert cheeger_sweep(two) == pytest.approx(0.0, abs=1e-12)
    # A path a-b-c-d as a 2 x 2 biadjacency [[1, 0], [1, 1]]: singular values (1 +- sqrt5)/2 ... of B;
    # gap_ratio = (s1 - s2) / s1 with s1, s2 = sqrt((3 +- sqrt5) / 2).
    path = np.array([[1.0, 0.0], [1.0, 1.0]])
    s1, s2 = math.sqrt((3 + math.sqrt(5)) / 2), math.sqrt((3 - math.sqrt(5)) / 2)
    assert gap_ratio(path) == pytest.approx((s1 - s2) / s1)
    # Its best cut splits it in the middle: one edge of weight 1 over a volume of 3 (degrees 1 + 2).
    assert cheeger_sweep(path) == pytest.approx(1 / 3)
    # Scale-free: multiplying the weights changes none of them.
    w = np.array([[0.5, 2.0, 0.0], [1.0, 0.0, 3.0]])
    for f in (gap_ratio, normalised_laplacian_gap, cheeger_sweep):
        assert f(7.5 * w) == pytest.approx(f(w))
    # Undefined is NaN, never a convenient number.
    assert math.isnan(gap_ratio(np.zeros((3, 3)))) and math.isnan(normalised_laplacian_gap(np.zeros((3, 3))))


def _vertex_expansion_brute_force(biadjacency: np.ndarray) -> float:
    """min |N(S)| / |S| over every set S of at most half the (non-isolated) inputs."""
    support = biadjacency != 0
    support = support[support.any(axis=1)][:, support.any(axis=0)]
    inputs = support.shape[1]
    return min(support[:, list(s)].any(axis=1).sum() / len(s)
               for size in range(1, inputs // 2 + 1) for s in itertools.combinations(range(inputs), size))


@pytest.mark.parametrize("graph", [g for g in _random_graphs(40, seed=1) if g.shape[1] >= 2][:20],
                         ids=lambda g: f"{g.shape[0]}x{g.shape[1]}")
def test_sampled_vertex_expansion_bounds_the_brute_force_minimum_and_finds_it(graph):
    exact = _vertex_expansion_brute_force(graph)
    few, few_se = sampled_expansion(graph, samples=3, seed=5)
    assert few >= exact - 1e-12 and few_se >= 0.0  # a sample's minimum is never below the true one
    # Inputs <= 11: at most 462 sets of one size; 20,000 draws see every one of them.
    many, _ = sampled_expansion(graph, samples=20_000)
    assert many == pytest.approx(exact, abs=1e-12)


def test_imdb_by_hand_groups_too_small_and_an_independent_weighted_block():
    b = np.zeros((12, 10))
    b[0:3, 0:3] = 1.0  # inputs 0-2, degree 3: K_{3,3} (lambda_2 = 0), bound 2 sqrt(2)
    b[3:7, 3:7] = 1.0  # inputs 3-6, degree 4: K_{4,4}, bound 2 sqrt(3)
    b[7:12, 7] = 1.0  # input 7, degree 5: a group of one, left out
    b[0:2, 8], b[5:7, 9] = 1.0, 1.0  # inputs 8 and 9, degree 2 (< 3): left out
    assert imdb(b) == pytest.approx((2 * math.sqrt(2) + 2 * math.sqrt(3)) / 2, rel=1e-12)
    assert math.isnan(imdb(b[:, 7:]))  # no group counts: undefined, not 0
    assert math.isnan(imdb(np.eye(5)))  # degree 1 everywhere
    # A weighted graph with one group of 3 inputs of degree 3: lambda_2 from the whole bipartite
    # adjacency's eigenvalues (dense symmetric solver), the degrees from the weights.
    rng = np.random.default_rng(2)
    w = np.zeros((5, 3))
    for col in range(3):
        w[rng.choice(5, 3, replace=False), col] = rng.uniform(0.5, 2.0, 3)
    eigenvalues = np.sort(np.linalg.eigvalsh(_adjacency(w)))[::-1]
    rows = (w > 0).any(axis=1).sum()
    expected = math.sqrt(w.sum() / 3 - 1) + math.sqrt(w.sum() / rows - 1) - eigenvalues[1]
    assert imdb(w) == pytest.approx(expected, rel=1e-10)


def test_a_spec_asks_for_measures_and_expansion_table_takes_them(tmp_path):
    import torch

    from expander_sweeps import expansion_table
    from expander_sweeps.spec import SpecError, spec_from_dict

    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 6)
    table = expansion_table(layer, measures=("nl_gap", "cheeger_sweep"))
    row = table[table.weighting == "weighted"].iloc[0]
    weights = layer.weight.detach().abs().numpy()
    assert row["nl_gap"] == pytest.approx(_eigen_gap(weights), abs=1e-9)
    assert "gap_ratio" not in table  # opt-in: only what was asked for
    with pytest.raises(ValueError, match="not opt-in graph measures"):
        expansion_table(layer, measures=("cheeger",))
    with pytest.raises(SpecError, match="spectral.measures.0.*not an opt-in graph measure; known: gap_ratio"):
        spec_from_dict({"name": "x", "spectral": {"measures": ["cheeger"]}})
    assert spec_from_dict({"name": "x", "spectral": {"measures": ["nl_gap"]}}).spectral.measures == ["nl_gap"]
