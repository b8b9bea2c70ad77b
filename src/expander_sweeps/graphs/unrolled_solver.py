"""lambda_1 and lambda_2 of an unrolled recurrent graph (one layer or a stack) by Lanczos on the
shift-inverted operator (sigma I - A)^-1, applied through an exact block factorisation along time.

The top of this spectrum is tightly clustered (the time axis is a path of k steps: relative gaps
~ 1/k^2, about 1e-4 at k = 400), where plain Lanczos needs thousands of products; the shift with
sigma just above lambda_1 spreads the top eigenvalues apart. The x_t vertices are eliminated in
closed form, leaving a system block tridiagonal in time whose blocks hold every layer's hidden
units at one step (L x H): the diagonal block sigma I - S - E (S: the edges between consecutive
layers within a step, E: M_xh M_xh^T / sigma on the first layer's block, neither at t = 0, the
initial states) and the coupling blockdiag(M_hh_l) between steps, one Cholesky factor per step.
A failing Cholesky factor proves sigma <= lambda_1 (Sylvester's inertia) and moves sigma up.
Layers: [(M_xh, M_hh), (M_xh_l1, M_hh_l1), ...], nonnegative; the vertex order is h_0..h_k
(L x H each, layer by layer), then x_1..x_k (spectral.unrolled_adjacency, unrolled_stack.py).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg

__all__ = ["within_step", "shift_invert_top_two"]


def within_step(layers: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """S: the symmetric (L H x L H) adjacency of one step's edges between consecutive layers."""
    hidden, depth = layers[0][1].shape[0], len(layers)
    within = np.zeros((depth * hidden, depth * hidden))
    for level in range(1, depth):
        rows, cols = slice(level * hidden, (level + 1) * hidden), slice((level - 1) * hidden, level * hidden)
        within[rows, cols] = layers[level][0]
        within[cols, rows] = layers[level][0].T
    return within


def _block_factors(layers, steps: int, sigma: float):
    """Inverses of the block pivots N_t of sigma I - A (x eliminated) and the couplings
    C_t = M N_{t-1}^-1 (M = blockdiag(M_hh_l)), or None when a pivot is not positive definite
    (exactly when sigma <= lambda_1). N_0 = sigma I (initial states: no within-step edges);
    N_t = sigma I - S - E - C_t M^T."""
    hidden, depth = layers[0][1].shape[0], len(layers)
    block = depth * hidden
    identity = np.eye(block)
    recurrent = scipy.linalg.block_diag(*[m_hh for _, m_hh in layers])
    base = sigma * identity - within_step(layers)
    base[:hidden, :hidden] -= layers[0][0] @ layers[0][0].T / sigma
    inverses = np.empty((steps + 1, block, block))
    pivot, factor = sigma * identity, None
    for t in range(steps + 1):
        if t:
            # M N^-1 M^T = Y^T Y with Y = R^-T M^T, where N = R^T R.
            y = scipy.linalg.solve_triangular(factor, recurrent.T, trans="T", check_finite=False)
            pivot = base - y.T @ y
        try:
            factor = scipy.linalg.cholesky(pivot, check_finite=False)
        except np.linalg.LinAlgError:
            return None
        factor_inverse = scipy.linalg.solve_triangular(factor, identity, check_finite=False)
        inverses[t] = factor_inverse @ factor_inverse.T
    couplings = np.empty_like(inverses)
    couplings[1:] = recurrent @ inverses[:-1]  # couplings[0] is never used
    return inverses, couplings


def shift_invert_top_two(adjacency, layers, steps: int) -> tuple[float, float]:
    m_xh = layers[0][0]
    hidden, inputs = m_xh.shape
    block = len(layers) * hidden
    size, h_count = adjacency.shape[0], (steps + 1) * block
    start = np.random.default_rng(1).standard_normal(size)  # seeded: the same graph, the same digits
    # A Ritz value never exceeds lambda_1: a loose Lanczos estimate is a lower bound to shift from.
    estimate = float(scipy.sparse.linalg.eigsh(adjacency, k=1, which="LA", tol=1e-3, ncv=20, v0=start,
                                               return_eigenvectors=False)[0])
    for attempt in range(40):
        sigma = estimate * (1.0 + 1e-4 * 4.0**attempt) + 1e-12
        factors = _block_factors(layers, steps, sigma)
        if factors is not None:
            break
    else:  # pragma: no cover - sigma grows geometrically past any finite lambda_1
        raise RuntimeError("no shift above lambda_1 was found for the stacked unrolled graph")
    inverses, couplings = factors

    def solve(b: np.ndarray) -> np.ndarray:
        """(sigma I - A)^-1 b: x eliminated, block forward and back substitution along time."""
        b = np.asarray(b, dtype=np.float64).ravel()
        b_h = b[:h_count].reshape(steps + 1, block)
        b_x = b[h_count:].reshape(steps, inputs)
        y = b_h.copy()
        y[1:, :hidden] += (b_x @ m_xh.T) / sigma  # x_t = (b_x + M_xh^T h^0_t) / sigma
        for t in range(1, steps + 1):
            y[t] += couplings[t] @ y[t - 1]
        h = np.einsum("tij,tj->ti", inverses, y)
        for t in range(steps - 1, -1, -1):
            h[t] += couplings[t + 1].T @ h[t + 1]
        x = (b_x + h[1:, :hidden] @ m_xh) / sigma
        return np.concatenate([h.ravel(), x.ravel()])

    operator = scipy.sparse.linalg.LinearOperator((size, size), matvec=solve, dtype=np.float64)
    rng = np.random.default_rng(0)
    mu_1, vectors = scipy.sparse.linalg.eigsh(operator, k=1, which="LA", tol=1e-13, ncv=24,
                                              v0=rng.standard_normal(size))
    first = vectors[:, 0]

    def deflated(b: np.ndarray) -> np.ndarray:  # a repeated lambda_1 (disconnected) is found here
        b = np.asarray(b, dtype=np.float64).ravel()
        b = b - first * (first @ b)
        out = solve(b)
        return out - first * (first @ out)

    rest = scipy.sparse.linalg.LinearOperator((size, size), matvec=deflated, dtype=np.float64)
    mu_rest = scipy.sparse.linalg.eigsh(rest, k=2, which="LA", tol=1e-13, ncv=24,
                                        v0=rng.standard_normal(size), return_eigenvectors=False)
    return float(sigma - 1.0 / mu_1[0]), float(sigma - 1.0 / max(mu_rest))
