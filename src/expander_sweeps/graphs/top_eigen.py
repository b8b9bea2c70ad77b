"""The top two eigenvalues of a Gram matrix, found iteratively and proven to 1e-9.

Why: LAPACK's symmetric eigensolver reduces a whole 512 x 512 Gram matrix to tridiagonal form
(~10 ms on one core) to find two numbers. Here a few dozen matrix-vector products and two
Cholesky factorisations (~2 ms each) find them, and the second factorisation proves the
answer, so no convergence heuristic decides a printed digit:

1. Lanczos on G (float64, full reorthogonalisation, 8-40 steps: it stops once y has converged
   to ~1e-8). lambda_1 is far from the rest of the spectrum, so its Ritz pair (theta_1, y)
   converges at once; theta_2 only roughly.
2. Deflation: G' = G - theta_1 y y^T. Subtracting a positive semi-definite rank-one term
   interlaces the eigenvalues, mu_1(G') >= lambda_2(G), whatever y and theta_1 >= 0 are; with
   y the top eigenvector, mu_1(G') = lambda_2(G).
3. Shift-invert Lanczos on (sigma I - G')^-1 in float32, sigma a little above theta_2. The
   spectrum's second eigenvalue sits at the edge of its bulk, where plain Lanczos needs 100+
   steps; inverted around sigma it stands alone and a dozen triangular solves find its vector.
   A float32 Cholesky factor that fails moves sigma up.
4. Rayleigh-Ritz of G on span{y, u} in float64: rho_1 <= lambda_1 and rho_2 <= lambda_2 (Cauchy
   interlacing), rho_2 accurate to about the square of u's error (~1e-14 here).
5. The proof of the upper side (`proven_second_bound`): G' is formed again with the refined
   pair (rho_1, q_1) of step 4, and a float64 Cholesky factorisation of t I - G' at
   t = rho_2 (1 + 2e-10) that runs to completion proves mu_1(G') < t + e, where e bounds the
   factorisation's backward error (|dA| <= gamma_{n+1} |R^T| |R|: Demmel; Higham, "Accuracy and
   Stability of Numerical Algorithms", Thm 10.3) and the rounding in forming t I - G'. So
   lambda_2 lies in [rho_2, t + e], accepted only when that interval is under 1e-9 rho_2.
   lambda_1 lies in [rho_1, rho_1 + |r_1|^2 / (rho_1 - t - e)] (Kato-Temple, every other
   eigenvalue being below t + e), accepted under the same width.

Every step reads G's lower triangle only (BLAS symv, LAPACK potrf), which is all that
spectral.py's syrk computes: half the products of a full Gram matrix. The bounds concern the
Gram matrix as computed, the same matrix the dense solver is given.
When any step fails (LAPACK errors included), `certified_top_two` returns None and the caller
uses the dense solver.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy.linalg import blas, lapack

from expander_sweeps.graphs.scratch import buffer

__all__ = ["certified_top_two", "proven_second_bound", "RELATIVE_TOLERANCE"]

RELATIVE_TOLERANCE = 1e-9  # the width of the proven interval around each value, relative
_EPS = np.finfo(np.float64).eps / 2  # unit roundoff
_MOST_STEPS = 40
_FIRST_CHECK = 8  # Lanczos steps before the first convergence check; then every 4


def _tridiagonal_eigen(diagonal: np.ndarray, off_diagonal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of a symmetric tridiagonal matrix: LAPACK's
    dstev directly, ~4x cheaper than scipy's checked wrapper at these sizes (k <= 40)."""
    if diagonal.size == 1:  # dstev refuses an empty off-diagonal
        return diagonal.astype(np.float64), np.ones((1, 1))
    values, vectors, info = lapack.dstev(diagonal, off_diagonal, compute_v=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"dstev did not converge (info {info})")
    return values, vectors


def _lanczos(apply, start: np.ndarray, most_steps: int,
             wanted: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lanczos with full reorthogonalisation on the symmetric operator `apply`, in the dtype of
    `start`: Ritz values (descending), Ritz vectors (columns, same order) and their residual
    norms. Stops once the top Ritz vector's residual is under `wanted` times the gap to the next
    Ritz value (its error is about that ratio), or after `most_steps`."""
    basis = np.empty((most_steps + 1, start.size), dtype=start.dtype)
    alpha = np.empty(most_steps)
    beta = np.empty(most_steps)
    basis[0] = start / np.linalg.norm(start)
    used = most_steps
    for j in range(most_steps):
        w = apply(basis[j])
        alpha[j] = basis[j] @ w
        # Full reorthogonalisation, twice ("twice is enough"): at these sizes it is cheaper than
        # the lost orthogonality, which would show up as spurious copies of the top value.
        w -= basis[: j + 1].T @ (basis[: j + 1] @ w)
        w -= basis[: j + 1].T @ (basis[: j + 1] @ w)
        beta[j] = float(np.linalg.norm(w))
        if not beta[j] > 1e-12 * abs(alpha[j]):
            used = j + 1  # an invariant subspace: the Ritz values are eigenvalues
            beta[j] = 0.0
            break
        basis[j + 1] = w / beta[j]
        steps = j + 1
        if steps >= _FIRST_CHECK and steps % 4 == 0 and steps < most_steps:
            values, vectors = _tridiagonal_eigen(alpha[:steps], beta[: steps - 1])
            if beta[j] * abs(vectors[-1, -1]) < wanted * (values[-1] - values[-2]):
                used = steps
                break
    values, vectors = _tridiagonal_eigen(alpha[:used], beta[: used - 1])
    ritz_vectors = basis[:used].T.astype(np.float64) @ vectors[:, ::-1]
    return values[::-1], ritz_vectors, float(beta[used - 1]) * np.abs(vectors[-1, ::-1])


def _cholesky_succeeds(symmetric: np.ndarray) -> tuple[bool, np.ndarray]:
    """LAPACK's Cholesky factorisation in place. The transpose is the same symmetric matrix in
    Fortran order, so LAPACK needs no copy (a C-ordered array costs a transposed copy, ~1 ms)."""
    potrf = lapack.spotrf if symmetric.dtype == np.float32 else lapack.dpotrf
    factor, info = potrf(symmetric.T, lower=0, clean=0, overwrite_a=1)
    return info == 0, factor


@functools.lru_cache(maxsize=8)
def _start_vector(size: int, seed: int) -> np.ndarray:
    """A fixed random start vector: the same matrix gives the same digits every time. Cached,
    since seeding a generator costs more than a Lanczos step."""
    vector = np.random.default_rng(seed).standard_normal(size)
    vector.flags.writeable = False
    return vector


def _symmetric_2x2_eigen(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors (columns) of a symmetric 2 x 2 matrix, in closed
    form by one Jacobi rotation (numpy's general solver costs ~0.1 ms of overhead here)."""
    a, b, d = float(matrix[0, 0]), 0.5 * float(matrix[0, 1] + matrix[1, 0]), float(matrix[1, 1])
    if b == 0.0:
        order = [0, 1] if a <= d else [1, 0]
        return np.array([a, d])[order], np.eye(2)[:, order]
    zeta = (d - a) / (2.0 * b)
    tangent = math.copysign(1.0, zeta) / (abs(zeta) + math.hypot(1.0, zeta))
    cosine = 1.0 / math.hypot(1.0, tangent)
    sine = tangent * cosine
    # The rotation [[c, s], [-s, c]] zeroes b: the values are a - t b and d + t b.
    values = np.array([a - tangent * b, d + tangent * b])
    vectors = np.array([[cosine, sine], [-sine, cosine]])
    order = np.argsort(values)
    return values[order], vectors[:, order]


def _orthonormal_pair(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """An orthonormal basis of span{first, second} as two columns (Gram-Schmidt, twice)."""
    basis = np.empty((first.size, 2))
    basis[:, 0] = first / np.linalg.norm(first)
    rest = second - basis[:, 0] * (basis[:, 0] @ second)
    rest -= basis[:, 0] * (basis[:, 0] @ rest)
    basis[:, 1] = rest / np.linalg.norm(rest)
    return basis


def proven_second_bound(gram: np.ndarray, top: np.ndarray, weight: float, upper: float) -> float | None:
    """An upper bound on lambda_2 of `gram` proven by one Cholesky factorisation, or None.

    When the factorisation of upper I - (G - weight y y^T) runs to completion, lambda_2(G) <=
    mu_1(G - weight y y^T) < upper + e, valid for any y and any weight >= 0 (interlacing), tight
    when y is the top eigenvector and weight lambda_1. e covers the factorisation's backward
    error and the rounding in forming the matrix; upper + e is returned. None means the
    factorisation failed: upper may be below lambda_2, or y too far from the top eigenvector.
    Reads the lower triangle of `gram` only, as `certified_top_two` does. Uses the buffer of
    `certified_top_two`'s G'."""
    size = gram.shape[0]
    matrix = buffer("top_eigen.deflated", gram.shape, np.float64)
    np.negative(gram, out=matrix)
    blas.dger(weight, top, top, a=matrix.T, overwrite_a=1)
    trace = float(np.trace(matrix)) + size * upper
    matrix.flat[:: size + 1] += upper
    ok, _ = _cholesky_succeeds(matrix)
    if not ok:
        return None
    gamma = (size + 1) * _EPS / (1.0 - (size + 1) * _EPS)
    backward = gamma * trace / (1.0 - gamma)  # ||dA||_2 <= gamma ||R||_F^2 = gamma tr(R^T R)
    # ||G||_F <= sqrt(2) ||lower triangle||_F, which bounds it whether the strict upper triangle
    # holds zeros or the mirror image.
    frobenius = math.sqrt(2.0) * float(np.linalg.norm(gram))
    forming = 3.0 * _EPS * (weight * float(top @ top) + frobenius + upper * math.sqrt(size))
    return upper + backward + forming


def certified_top_two(gram: np.ndarray, seed: int = 1) -> tuple[float, float] | None:
    """lambda_1 and lambda_2 of the symmetric positive semi-definite `gram`, each proven to lie
    within RELATIVE_TOLERANCE of the value returned; None when the proof fails (see the module
    notes). `gram` is float64, C-ordered, and is not modified. Only its lower triangle is read
    as the matrix; the strict upper one must hold zeros or the mirror image (what syrk leaves
    there, zeroed, or a full symmetric matrix)."""
    try:
        return _certified_top_two(gram, seed)
    except np.linalg.LinAlgError:  # a LAPACK routine did not converge: the dense solver decides
        return None


def _certified_top_two(gram: np.ndarray, seed: int) -> tuple[float, float] | None:
    size = gram.shape[0]
    if size < 3 or not math.isfinite(float(gram.sum())):  # one NaN or infinity makes the sum so
        return None
    # The top Ritz vector to ~1e-8: deflating with it leaves lambda_2 on top to ~1e-16 relative.
    def product(vector: np.ndarray) -> np.ndarray:  # G vector from G's lower triangle
        return blas.dsymv(1.0, gram.T, vector, lower=0)

    theta, ritz_vectors, residuals = _lanczos(product, _start_vector(size, seed),
                                              min(_MOST_STEPS, size - 1), wanted=1e-8)
    if len(theta) < 2 or not theta[1] > 0.0:
        return None
    top = ritz_vectors[:, 0]
    deflated_negative = buffer("top_eigen.deflated", gram.shape, np.float64)
    np.negative(gram, out=deflated_negative)  # then + theta_1 y y^T in place: -G'
    blas.dger(theta[0], top, top, a=deflated_negative.T, overwrite_a=1)
    # sigma I - G' must be positive definite (sigma > mu_1(G')); theta_2 <= lambda_2 always, so
    # start a little above it. The shift-invert step needs sigma close, not tight.
    step = max(float(residuals[1]), 0.03 * float(theta[1]))
    sigma = float(theta[1]) + step
    for attempt in range(6):
        shifted = buffer("top_eigen.shifted", gram.shape, np.float32)
        np.copyto(shifted, deflated_negative, casting="same_kind")
        shifted.flat[:: size + 1] += np.float32(sigma)
        ok, factor = _cholesky_succeeds(shifted)
        if ok:
            break
        sigma += step * 2.0**attempt
    else:
        return None

    def inverse(vector: np.ndarray) -> np.ndarray:  # (R^T R)^-1 vector, two triangular solves
        return blas.strsv(factor, blas.strsv(factor, vector, trans=1), trans=0)

    # Its vector to ~1e-6 (float32's limit here) puts rho_2 within ~1e-12 of lambda_2.
    _, inverse_vectors, _ = _lanczos(inverse, _start_vector(size, seed + 1).astype(np.float32),
                                     min(_MOST_STEPS, size - 1), wanted=1e-6)
    vector = inverse_vectors[:, 0]
    # Rayleigh-Ritz of G on span{y, u}: both values are lower bounds (Cauchy interlacing).
    basis = _orthonormal_pair(top, vector)
    image = np.column_stack([product(basis[:, 0]), product(basis[:, 1])])
    values, vectors = _symmetric_2x2_eigen(basis.T @ image)
    rho_2, rho_1 = float(values[0]), float(values[1])
    if not rho_2 > 0.0:
        return None
    # The proof deflates with the refined pair (rho_1, q_1): better than Lanczos' own when
    # lambda_1 and lambda_2 are close. It reuses the buffer of G', no longer needed.
    top_refined = basis @ vectors[:, 1]
    bound = proven_second_bound(gram, top_refined, rho_1, rho_2 * (1.0 + 0.2 * RELATIVE_TOLERANCE))
    if bound is None:
        return None
    rounding = 4.0 * size * _EPS * rho_1  # the Ritz values' own rounding, lambda_1's scale
    lambda_2_bound = bound + rounding
    if lambda_2_bound - rho_2 > RELATIVE_TOLERANCE * rho_2:
        return None
    residual = image @ vectors[:, 1] - rho_1 * (basis @ vectors[:, 1])
    if not rho_1 > lambda_2_bound:
        return None
    lambda_1_width = float(residual @ residual) / (rho_1 - lambda_2_bound) + rounding
    if lambda_1_width > RELATIVE_TOLERANCE * rho_1:
        return None
    return rho_1, rho_2
