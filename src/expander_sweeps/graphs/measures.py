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

Tested against a dense symmetric eigen-solver on the whole graph and against h(G) by brute
force over every vertex subset of graphs of up to 12 vertices (tests/test_measures.py).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["gap_ratio", "normalised_laplacian_gap", "cheeger_sweep", "cheeger_lower", "cheeger_upper"]


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
