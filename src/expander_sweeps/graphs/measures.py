"""Graph measures beyond the bounds, opt-in (`spectral.measures` in a spec, `measures=` of
`expansion_table`): the scale-free spectral gap, the normalised-Laplacian gap, and the
combinatorial expansion it stands for (a sweep-cut estimate of the Cheeger constant and the two
sides of the Cheeger-Buser inequality).

Every measure is taken on the graph the bounds use: the bipartite graph of a biadjacency matrix B
(rows = outputs, columns = inputs), binary (the mask) or weighted (|W| on it), with its isolated
vertices removed (the normalised Laplacian divides by degrees, so they are left out even when
`spectral.remove_isolated` is false). With D the diagonal of (weighted) degrees and
A = [[0, B], [B^T, 0]]:

- `gap_ratio` = (lambda_1 - lambda_2) / lambda_1, lambda_i the singular values of B: the spectral
  gap divided by the largest eigenvalue, so it does not depend on the weights' scale. 1 for a
  rank-one B (a complete bipartite graph, or one edge); NaN for an empty graph.
- `nl_gap` = the second-smallest eigenvalue of L = I - D^-1/2 A D^-1/2 (0 exactly when the graph
  is disconnected; at most 2). Computed as 1 - sigma_2 of D_r^-1/2 B D_c^-1/2 (A's normalised
  eigenvalues are +-sigma_i and zeros); NaN for a graph of fewer than 2 vertices.
- `cheeger_sweep` = min over the sweep cuts of the conductance phi(S) = w(S, V \\ S) /
  min(vol S, vol V \\ S), S the first j vertices in the order of the Fiedler vector D^-1/2 u_2: an
  upper bound on the Cheeger constant h(G) = min_S phi(S), and the set an algorithm finds.
- `cheeger_lower` = nl_gap / 2 and `cheeger_upper` = sqrt(2 nl_gap): the Cheeger-Buser
  inequality nl_gap / 2 <= h(G) <= sqrt(2 nl_gap) (Chung, Spectral Graph Theory, 1997, Ch. 2).

- `imdb`: the iterative mean difference of bound (Hoang, Liu, Marculescu, Wang, ICLR 2023, who
  define it for a layer's irregular graph). The input vertices (columns) are grouped by degree
  (their number of kept edges); a group of inputs of equal degree and the outputs they reach form a
  sub-graph that is regular on its input side. Its bound is the biregular difference
  sqrt(d_in - 1) + sqrt(d_out - 1) - lambda_2 of that sub-graph (d the mean (weighted) degree of
  each side, lambda_2 its second singular value); IMDB is the mean of the bounds over the groups.
  As they rule, a group counts only when it has at least 2 inputs, their degree is at least 3
  and its outputs' mean degree exceeds 1 (smaller groups have no bound to speak of; a weighted
  group also needs both mean weighted degrees >= 1). NaN (undefined) when no group counts.
- `vertex_expansion`: min |N(S)| / |S| over sampled sets S of inputs, N(S) the outputs with an edge
  from S (the support: the same for binary and weighted graphs). The vertex expansion h_V is the
  min over every S with 1 <= |S| <= inputs / 2; VERTEX_SAMPLES sets are drawn (sizes uniform, then
  a uniform set of that size, a fixed seed), so the estimate is an upper bound on h_V, exact when
  a minimising set is drawn (Stewart, Michieli, Ozay, CVPR workshops 2023, estimate expansion by
  sampling). `vertex_expansion_se`: its sampling error, the bootstrap standard deviation of the
  min over the drawn sets (BOOTSTRAP resamples). NaN for fewer than 2 inputs.

Tested against a dense symmetric eigen-solver on the whole graph and against h(G) by brute
force over every vertex subset of graphs of up to 12 vertices (tests/test_measures.py).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["gap_ratio", "normalised_laplacian_gap", "cheeger_sweep", "cheeger_lower", "cheeger_upper", "imdb",
           "vertex_expansion", "vertex_expansion_se", "sampled_expansion", "VERTEX_SAMPLES", "BOOTSTRAP"]

VERTEX_SAMPLES = 2000  # sets drawn per graph (a 128 x 128 layer: about 20 ms)
BOOTSTRAP = 200


def _nonisolated(biadjacency: np.ndarray) -> np.ndarray:
    matrix = np.abs(np.asarray(biadjacency, dtype=np.float64))
    return matrix[matrix.sum(axis=1) > 0][:, matrix.sum(axis=0) > 0]


def gap_ratio(biadjacency: np.ndarray) -> float:
    matrix = _nonisolated(biadjacency)
    if matrix.size == 0:
        return math.nan
    sigma = np.linalg.svd(matrix, compute_uv=False)
    second = sigma[1] if len(sigma) > 1 else 0.0
    return float((sigma[0] - second) / sigma[0])


def _normalised(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, cols = matrix.sum(axis=1), matrix.sum(axis=0)
    return matrix / np.sqrt(np.outer(rows, cols)), rows, cols


def _second_eigen(matrix: np.ndarray) -> tuple[float, np.ndarray]:
    """The second-largest eigenvalue of the normalised adjacency of the bipartite graph of
    `matrix` (non-isolated), and an eigenvector of it over rows then columns."""
    scaled, _, _ = _normalised(matrix)
    r, c = scaled.shape
    u, sigma, vt = np.linalg.svd(scaled, full_matrices=True)
    if len(sigma) > 1:  # +sigma_2, eigenvector [u_2; v_2] (its zeros, if any, are no larger)
        return float(sigma[1]), np.concatenate([u[:, 1], vt[1]])
    if r + c > 2:  # rank one: the next eigenvalue is 0, with a null vector of one side
        vector = np.concatenate([u[:, 1], np.zeros(c)]) if r > 1 else np.concatenate([np.zeros(r), vt[1]])
        return 0.0, vector
    return -float(sigma[0]), np.array([1.0, -1.0])  # one edge: eigenvalues +1 and -1


def normalised_laplacian_gap(biadjacency: np.ndarray) -> float:
    matrix = _nonisolated(biadjacency)
    if sum(matrix.shape) < 2:
        return math.nan
    second, _ = _second_eigen(matrix)
    return float(max(0.0, 1.0 - second))  # rounding can put a disconnected graph's 1 - 1 below 0


def cheeger_sweep(biadjacency: np.ndarray) -> float:
    matrix = _nonisolated(biadjacency)
    r, c = matrix.shape
    if r + c < 2:
        return math.nan
    _, vector = _second_eigen(matrix)
    degrees = np.concatenate([matrix.sum(axis=1), matrix.sum(axis=0)])
    fiedler = vector / np.sqrt(degrees)
    order = np.argsort(fiedler, kind="stable")
    total = degrees.sum()
    inside = np.zeros(r + c, dtype=bool)
    cut = volume = 0.0
    best = math.inf
    for vertex in order[:-1]:  # every proper prefix S of the order
        # Adding a vertex: its edges to S leave the cut, its other edges join it.
        to_inside = matrix[vertex, inside[r:]].sum() if vertex < r else matrix[inside[:r], vertex - r].sum()
        cut += degrees[vertex] - 2.0 * to_inside
        volume += degrees[vertex]
        inside[vertex] = True
        best = min(best, max(cut, 0.0) / min(volume, total - volume))
    return float(best)


def cheeger_lower(biadjacency: np.ndarray) -> float:
    return normalised_laplacian_gap(biadjacency) / 2.0


def cheeger_upper(biadjacency: np.ndarray) -> float:
    return math.sqrt(2.0 * normalised_laplacian_gap(biadjacency))


def imdb(biadjacency: np.ndarray) -> float:
    matrix = _nonisolated(biadjacency)
    if matrix.size == 0:
        return math.nan
    support = matrix > 0
    degrees = support.sum(axis=0)
    bounds = []
    for degree in np.unique(degrees):
        group = degrees == degree
        if degree < 3 or group.sum() < 2:
            continue  # too small a group: Hoang et al. define no bound there
        reached = support[:, group].any(axis=1)
        block = matrix[reached][:, group]
        if support[:, group].sum() / reached.sum() <= 1.0:
            continue  # every output reached once: a union of stars, no bound
        d_in, d_out = block.sum() / block.shape[1], block.sum() / block.shape[0]
        if d_in < 1.0 or d_out < 1.0:
            continue
        sigma = np.linalg.svd(block, compute_uv=False)
        second = sigma[1] if len(sigma) > 1 else 0.0
        bounds.append(math.sqrt(d_in - 1.0) + math.sqrt(d_out - 1.0) - second)
    return float(np.mean(bounds)) if bounds else math.nan


def sampled_expansion(biadjacency: np.ndarray, samples: int = VERTEX_SAMPLES, seed: int = 0) -> tuple[float, float]:
    """(estimate, sampling error) of the vertex expansion of the inputs (see the module notes)."""
    support = np.asarray(biadjacency) != 0
    support = support[support.any(axis=1)][:, support.any(axis=0)]
    inputs = support.shape[1]
    if inputs < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, inputs // 2 + 1, size=samples)
    # A uniform set of each size: the first `size` of a random order of the inputs.
    order = np.argsort(rng.random((samples, inputs)), axis=1)
    chosen = np.zeros((samples, inputs), dtype=bool)
    chosen[np.arange(samples)[:, None].repeat(inputs, 1), order] = np.arange(inputs)[None, :] < sizes[:, None]
    reached = (chosen.astype(np.float64) @ support.T.astype(np.float64)) > 0
    ratios = reached.sum(axis=1) / sizes
    resampled = rng.integers(0, samples, size=(BOOTSTRAP, samples))
    return float(ratios.min()), float(ratios[resampled].min(axis=1).std(ddof=1))


def vertex_expansion(biadjacency: np.ndarray) -> float:
    return sampled_expansion(biadjacency)[0]


def vertex_expansion_se(biadjacency: np.ndarray) -> float:
    return sampled_expansion(biadjacency)[1]
