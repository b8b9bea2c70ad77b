"""The unrolled graph of a stacked recurrent network (model.layers > 1): every layer over k steps.

Vertices: x_1..x_k (I each) and h^l_0..h^l_k for every layer l (H each; h^l_0 are initial
states). Edges, at every step t = 1..k, for every kept entry: x_t - h^0_t (M_xh of layer 0),
h^{l-1}_t - h^l_t (M_xh_l: layer l's input is layer l-1's hidden state) and h^l_{t-1} - h^l_t
(M_hh_l). With one layer this is spectral.unrolled_adjacency's graph. It is bipartite: colour
h^l_t by the parity of t + l and x_t by the opposite of t's, so the same quantities apply with
the two colour classes as the two sides.

lambda_1 and lambda_2 are found as for one layer: below DENSE_LIMIT vertices by a dense symmetric
solver, above it by unrolled_solver.py's shift-invert Lanczos (blocks of L x H along time).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.csgraph
import scipy.sparse.linalg

from .spectral import ZERO_TOL, LayerSpectrum, _bounds, _one_blas_thread
from .unrolled_solver import shift_invert_top_two, within_step

__all__ = ["stacked_unrolled_adjacency", "stacked_unrolled_top_eigenvalues", "stacked_unrolled_spectrum"]

DENSE_LIMIT = 1500  # vertices below which a dense symmetric solver is exact and fast enough


def _checked(layers: list[tuple[np.ndarray, np.ndarray]], steps: int) -> list[tuple[np.ndarray, np.ndarray]]:
    if not layers:
        raise ValueError("the unrolled graph needs at least one layer")
    if steps < 1:
        raise ValueError(f"the unrolled graph needs at least one step, but got k = {steps}")
    out = []
    hidden = None
    for depth, (m_xh, m_hh) in enumerate(layers):
        m_xh, m_hh = np.abs(np.asarray(m_xh, dtype=np.float64)), np.abs(np.asarray(m_hh, dtype=np.float64))
        hidden = hidden or m_hh.shape[0]
        if m_hh.shape != (hidden, hidden):
            raise ValueError(f"layer {depth}'s W_hh must be {hidden} x {hidden}, but got {m_hh.shape}")
        if m_xh.shape[0] != hidden or (depth and m_xh.shape[1] != hidden):
            raise ValueError(f"layer {depth}'s W_xh must be {hidden} x {'I' if depth == 0 else hidden}, "
                             f"but got {m_xh.shape}")
        out.append((m_xh, m_hh))
    return out


def stacked_unrolled_adjacency(layers: list[tuple[np.ndarray, np.ndarray]], steps: int) -> scipy.sparse.csr_matrix:
    """Symmetric sparse adjacency; vertices H_0..H_k (H_t = h^0_t..h^{L-1}_t, L H each), then x_1..x_k."""
    layers = _checked(layers, steps)
    hidden, inputs, depth = layers[0][1].shape[0], layers[0][0].shape[1], len(layers)
    block = depth * hidden
    h_count = (steps + 1) * block
    recurrent = scipy.sparse.coo_matrix(scipy.linalg.block_diag(*[m_hh for _, m_hh in layers]))
    within = scipy.sparse.coo_matrix(np.tril(within_step(layers)))  # each edge once (row: the deeper layer)
    xh = scipy.sparse.coo_matrix(layers[0][0])
    t = np.arange(1, steps + 1)[:, None]
    rows = np.concatenate([(t * block + recurrent.row).ravel(), (t * block + within.row).ravel(),
                           (t * block + xh.row).ravel()])
    cols = np.concatenate([((t - 1) * block + recurrent.col).ravel(), (t * block + within.col).ravel(),
                           (h_count + (t - 1) * inputs + xh.col).ravel()])
    values = np.concatenate([np.tile(recurrent.data, steps), np.tile(within.data, steps), np.tile(xh.data, steps)])
    size = h_count + steps * inputs
    lower = scipy.sparse.coo_matrix((values, (rows, cols)), shape=(size, size)).tocsr()
    return (lower + lower.T).tocsr()


def stacked_unrolled_top_eigenvalues(layers: list[tuple[np.ndarray, np.ndarray]], steps: int,
                                     dense_limit: int = DENSE_LIMIT) -> tuple[float, float]:
    """lambda_1 and lambda_2 of the stacked unrolled graph's adjacency (see the module notes)."""
    layers = _checked(layers, steps)
    adjacency = stacked_unrolled_adjacency(layers, steps)
    size = adjacency.shape[0]
    if adjacency.nnz == 0:
        return 0.0, 0.0
    with _one_blas_thread():
        if size <= dense_limit:
            values = scipy.linalg.eigvalsh(adjacency.toarray(), subset_by_index=[size - 2, size - 1])
            return float(values[1]), float(values[0])
        return shift_invert_top_two(adjacency, layers, steps)


def stacked_unrolled_spectrum(layers: list[tuple[np.ndarray, np.ndarray]], steps: int,
                              remove_isolated: bool = True) -> LayerSpectrum:
    """Spectrum and bounds of the stacked unrolled graph; `rows` and `cols` are its two colour
    classes (see the module notes), weights scale-free as for one layer (divided by one mean over
    the kept edges of every matrix)."""
    layers = _checked(layers, steps)
    kept = int(sum(np.count_nonzero(a) + np.count_nonzero(b) for a, b in layers))
    if kept:
        mean = sum(float(a.sum() + b.sum()) for a, b in layers) / kept
        layers = [(a / mean, b / mean) for a, b in layers]
    adjacency = stacked_unrolled_adjacency(layers, steps)
    hidden, inputs, depth = layers[0][1].shape[0], layers[0][0].shape[1], len(layers)
    time = np.repeat(np.arange(steps + 1), depth * hidden)
    level = np.tile(np.repeat(np.arange(depth), hidden), steps + 1)
    colour = np.concatenate([(time + level) % 2, np.repeat(np.arange(1, steps + 1) + 1, inputs) % 2])
    live = adjacency.getnnz(axis=1) > 0
    even_all, odd_all = int((colour == 0).sum()), int((colour == 1).sum())
    even_live, odd_live = int(((colour == 0) & live).sum()), int(((colour == 1) & live).sum())
    lambda_1, lambda_2 = stacked_unrolled_top_eigenvalues(layers, steps)
    if lambda_2 <= ZERO_TOL * max(lambda_1, 1.0):
        lambda_2 = 0.0
    graph = adjacency[live][:, live] if remove_isolated else adjacency
    count, labels = scipy.sparse.csgraph.connected_components(graph, directed=False)
    vertices = graph.shape[0]
    return _bounds(
        rows=even_live if remove_isolated else even_all, cols=odd_live if remove_isolated else odd_all,
        isolated_rows=even_all - even_live, isolated_cols=odd_all - odd_live,
        edges=steps * kept, total=float(adjacency.sum()) / 2.0,
        lambda_1=lambda_1, lambda_2=lambda_2, components=int(count),
        largest_component=float(np.bincount(labels).max()) / vertices if vertices else 0.0,
        isolated_share=(even_all + odd_all - even_live - odd_live) / (even_all + odd_all),
    )
