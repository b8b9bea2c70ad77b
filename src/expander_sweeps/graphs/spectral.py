"""Spectra of the bipartite graph of a pruned layer, its Ramanujan bounds, and zero crossings.

A layer with biadjacency B (rows = outputs, columns = inputs; the 0/1 mask, or |W| on the
mask for the weighted graph) is the bipartite graph with adjacency [[0, B], [B^T, 0]]. Its
eigenvalues are +-sigma_i(B) plus zeros, so lambda_1 = sigma_1(B) and lambda_2 = sigma_2(B)
(the one exception: a graph of one edge and no other vertex has eigenvalues 1 and -1 only,
so lambda_2 = -1 there).

Choices, stated once here and in the README:
- Weighted graphs are scale-free: |W| on the mask is divided by its mean over the kept edges,
  so the mean edge weight is 1, d_avg counts edges as in the binary graph, and multiplying the
  weights by any constant changes no number. (Raw |W| made the sign of a bound depend on the
  init's scale: x0.05 gave Delta_R = +1.51, x5 gave -0.57 on the same graph.)
- Isolated vertices (all-zero rows or columns) are removed before anything is computed when
  `remove_isolated` is set (the default, as is customary); their counts and share are recorded.
- lambda_2 <= 0 happens exactly when the (remaining) graph is complete bipartite. For the
  whole layer (no isolated vertex: a dense layer) Delta_R and Delta_S are *unbounded*,
  reported as +inf. Otherwise the layer is degenerate (no edges, one edge, a star, one
  complete sub-block left after removing isolated vertices) and every bound is *undefined*,
  reported as NaN with the reason (`status`, `describe_status`): it never counts as having
  the property. lambda_2 below `ZERO_TOL * lambda_1` counts as 0 so that rounding noise
  (~1e-14) does not turn "unbounded" into a huge finite number.
- A disconnected graph does NOT always repeat lambda_1: two components repeat it only when
  their top singular values are equal. A large component plus one stray edge has lambda_2 of
  the large component, and its bounds may well be positive. So the number of connected
  components and the largest one's share of the vertices are recorded for every graph.
- sqrt of a negative argument (d_avg < 1, or lambda_1 < 1 in a weighted graph) is taken as 0,
  and the bound stays defined (and negative).
- A bound "has the property" when it is > 0; exactly 0 does not.

The whole unrolled graph (`unrolled_spectrum`) has vertices x_1..x_k and h_0..h_k and the
edges of M_xh (x_t - h_t) and M_hh (h_{t-1} - h_t) at every step, undirected. It is bipartite
(colour h_t by the parity of t and x_t by the opposite one), so the same quantities apply with
the two colour classes as the two sides. For gated cells the gate blocks are merged first: an
edge exists when any gate keeps it (the weighted graph sums |W| over the gates).

Only numpy and scipy: this module must stay importable without torch.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.csgraph
import scipy.sparse.linalg
from scipy.linalg import blas
from threadpoolctl import ThreadpoolController

from expander_sweeps.graphs.scratch import buffer
from expander_sweeps.graphs.top_eigen import certified_top_two

from .unrolled_solver import shift_invert_top_two

__all__ = [
    "LayerSpectrum",
    "layer_spectrum",
    "step_biadjacency",
    "merge_gates",
    "unrolled_adjacency",
    "unrolled_spectrum",
    "unrolled_top_eigenvalues",
    "normalise_weights",
]

ZERO_TOL = 1e-9
_blas = None  # threadpoolctl's controller, found once: looking the libraries up costs ~2 ms a call


def _one_blas_thread():
    """One BLAS thread: at these sizes extra threads cost more in hand-overs than they give."""
    global _blas
    if _blas is None:
        _blas = ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas")


@dataclass(frozen=True)
class LayerSpectrum:
    """Spectral quantities of one bipartite graph."""

    rows: int  # output vertices kept (after removing isolated ones, if asked)
    cols: int  # input vertices kept
    isolated_rows: int
    isolated_cols: int
    edges: int  # nonzero entries of the biadjacency
    lambda_1: float
    lambda_2: float
    d_avg: float  # 2 * total weight / (rows + cols): the average degree over all vertices
    d_left: float  # average degree of the output (row) vertices
    d_right: float  # average degree of the input (column) vertices
    delta_r: float  # (2 sqrt(d_avg - 1) - lambda_2) / lambda_2
    delta_s: float  # (2 sqrt(lambda_1 - 1) - lambda_2) / lambda_2
    biregular: float  # sqrt(d_left - 1) + sqrt(d_right - 1) - lambda_2
    components: int = 1  # connected components of the graph (after removing isolated vertices)
    largest_component: float = 1.0  # share of the graph's vertices in its largest component
    isolated_share: float = 0.0  # share of the layer's vertices that were isolated
    bounds_defined: int = 1  # 0: a degenerate graph, every bound NaN (see `status`)
    bounds_unbounded: int = 0  # 1: a dense (complete bipartite) layer, Delta_R = Delta_S = +inf
    # 1: bounds defined, but an average side degree (d_left or d_right) below LOW_DEGREE, where
    # Hoang et al. define no Ramanujan bound; the numbers are kept, and the report shows
    # crossings with and without such graphs.
    low_degree: int = 0

    @property
    def status(self) -> str:
        """`defined`, `low_degree` (defined, an average side degree below 3), `unbounded` (a dense
        layer: lambda_2 = 0) or `undefined` (degenerate)."""
        if not self.bounds_defined:
            return "undefined"
        if math.isinf(self.delta_r):
            return "unbounded"
        return "low_degree" if self.low_degree else "defined"

    def describe_status(self) -> str:
        if self.status == "low_degree":
            return (f"low_degree: average degrees {self.d_left:.3g} (outputs) and {self.d_right:.3g} (inputs), "
                    f"one below {LOW_DEGREE:g}, where Hoang et al. define no bound")
        if self.status != "undefined":
            return self.status
        isolated = f"{100 * self.isolated_share:.1f}% of vertices isolated"
        if self.edges == 0:
            return f"undefined: no edges ({isolated})"
        return (f"undefined: what is left is the complete bipartite graph K_{{{self.rows},{self.cols}}} "
                f"({isolated}), which has no second eigenvalue to bound")

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


LOW_DEGREE = 3.0  # Hoang et al. (ICLR 2023) define their bounds for average degrees of at least 3


def _sqrt0(x: float) -> float:
    return math.sqrt(x) if x > 0 else 0.0


def _top_two_singular_values(matrix: np.ndarray, binary: bool | None = None,
                             complete: bool = False) -> tuple[float, float]:
    """sigma_1 and sigma_2 of a matrix with no negative entry; `binary` says whether every
    entry is 0 or 1, when the caller knows (None: found out here); `complete`, that every entry
    is an edge (with `binary`: the all-ones matrix, answered in closed form)."""
    if matrix.size == 0:
        return 0.0, 0.0
    if complete and binary:
        # J (rows x cols) = 1 1^T: sigma_1 = sqrt(rows * cols), every other singular value 0.
        return math.sqrt(matrix.shape[0] * matrix.shape[1]), 0.0
    with _one_blas_thread():
        found = _top_two_by_gram(matrix, binary)
        if found is None or found[1] <= _SQUARING_LIMIT * found[0]:
            # No proof, or sigma_2 so far below sigma_1 that squaring loses digits (relative
            # error ~1e-16 (sigma_1 / sigma_2)^2: 1e-8 on near-rank-one weighted layers): the
            # singular values of the biadjacency itself, by LAPACK's SVD.
            values = scipy.linalg.svdvals(matrix, check_finite=False, overwrite_a=False)
            found = float(values[0]), float(values[1]) if len(values) > 1 else 0.0
    first, second = found
    if second <= ZERO_TOL * max(first, 1.0):
        second = 0.0
    return first, second


# Below this ratio sigma_2 / sigma_1 the Gram matrix's eigenvalues would give sigma_2 to worse than
# 1e-12 (relative): the SVD of the matrix answers instead.
_SQUARING_LIMIT = 1e-2


# From this size of Gram matrix on, the proven iterative solver beats LAPACK's (even at 256).
_ITERATIVE_FROM = 256


def _is_binary(matrix: np.ndarray, edges: int | None = None) -> bool:
    """Every entry 0 or 1 (`edges`: the count of nonzero entries, when known). Counted on a
    boolean scratch array: counting a float matrix's nonzero entries is several times slower,
    and fresh boolean arrays page-fault (see `scratch`)."""
    flags = buffer("spectral.is_binary", matrix.shape, np.bool_)
    np.equal(matrix, 1.0, out=flags)
    ones = int(np.count_nonzero(flags))
    if edges is not None:
        return ones == edges
    np.equal(matrix, 0.0, out=flags)
    return ones + int(np.count_nonzero(flags)) == matrix.size


def _lower_gram(matrix: np.ndarray, out: np.ndarray) -> None:
    """The lower triangle (C order) of matrix @ matrix.T into `out`, zeros above it, by BLAS's
    syrk: half the products of a full matrix product (faster: benchmarks/README.md, "Layer spectra").
    Every solver here reads the lower triangle only; the upper one is zeroed (a reused
    buffer holds old numbers there, even NaN) so that a sum or a norm of `out` still means one."""
    syrk = blas.ssyrk if out.dtype == np.float32 else blas.dsyrk
    # `out.T` is `out` in Fortran order: its upper triangle there is the lower one here. A matrix
    # in either order goes to BLAS without a copy (matrix.T of a C-ordered one is Fortran-ordered).
    if matrix.flags.f_contiguous:
        result = syrk(1.0, matrix, trans=0, beta=0.0, c=out.T, overwrite_c=1, lower=0)
    else:
        result = syrk(1.0, np.ascontiguousarray(matrix).T, trans=1, beta=0.0, c=out.T, overwrite_c=1, lower=0)
    if not np.shares_memory(result, out):  # pragma: no cover - f2py copies only a misaligned out
        np.copyto(out.T, result)
    np.copyto(out, 0, where=_strict_upper(out.shape[0]))


@functools.lru_cache(maxsize=8)
def _strict_upper(size: int) -> np.ndarray:
    """Where the strict upper triangle of a size x size matrix is (cached: it is the same every call)."""
    where = np.triu(np.ones((size, size), dtype=bool), 1)
    where.flags.writeable = False
    return where


def _top_two_by_gram(matrix: np.ndarray, binary: bool | None = None) -> tuple[float, float] | None:
    """sigma_1, sigma_2 as square roots of the top two eigenvalues of the smaller Gram matrix;
    None from `_ITERATIVE_FROM` vertices on when the iterative solver's proof fails (the caller
    takes the SVD of the matrix then, not the Gram matrix's eigenvalues: see `_SQUARING_LIMIT`).

    Exact to rounding like an SVD (relative error ~ 1e-16 (sigma_1 / sigma_2)^2): one matrix
    product (its lower triangle), then, from `_ITERATIVE_FROM` vertices on a side, the iterative solver of
    `top_eigen`, which proves both values to 1e-9 (~5 ms at 512 against ~10 ms for LAPACK's
    symmetric eigensolver asked for two values); LAPACK when that proof fails or below that size.
    """
    small = matrix if matrix.shape[0] <= matrix.shape[1] else matrix.T
    size = small.shape[0]
    if size < 2:
        return float(np.sqrt((small * small).sum())), 0.0
    gram = buffer("spectral.gram", (size, size), np.float64)
    if (_is_binary(small) if binary is None else binary) and small.shape[1] < 2**24:
        # Entries of a 0/1 mask's Gram matrix are edge counts: exact in float32, at half the cost.
        single = buffer("spectral.single", small.shape, np.float32)
        np.copyto(single, small, casting="same_kind")
        single_gram = buffer("spectral.single_gram", (size, size), np.float32)
        _lower_gram(single, single_gram)
        np.copyto(gram, single_gram)
    else:
        _lower_gram(small, gram)
    if size >= _ITERATIVE_FROM:
        proven = certified_top_two(gram)
        return None if proven is None else (math.sqrt(proven[0]), math.sqrt(proven[1]))
    values = scipy.linalg.eigh(gram, eigvals_only=True, subset_by_index=[size - 2, size - 1], lower=True,
                               driver="evr", check_finite=False, overwrite_a=True)
    return math.sqrt(max(values[1], 0.0)), math.sqrt(max(values[0], 0.0))


def normalise_weights(matrix: np.ndarray) -> np.ndarray:
    """|matrix| divided by its mean over nonzero entries (mean edge weight 1). This makes every
    weighted quantity independent of the weights' scale. A float64 matrix that needs no change
    (a 0/1 mask) is returned itself, not a copy: do not modify the result."""
    return _normalised(np.asarray(matrix, dtype=np.float64))[0]


def _normalised(b: np.ndarray, total: float | None = None,
                edges: int | None = None) -> tuple[np.ndarray, int, float]:
    """`normalise_weights` of a float64 matrix, with its count of nonzero entries and its sum
    after normalising (`total`: the sum before, `edges`: the count, when known)."""
    if b.size and b.min() < 0:
        b, total = np.abs(b), None
    edges = int(np.count_nonzero(b)) if edges is None else edges
    if edges == 0:
        return b, 0, 0.0
    total = float(b.sum()) if total is None else total
    if total == edges:  # mean weight 1 already (a 0/1 mask): nothing to divide
        return b, edges, total
    b = b / (total / edges)
    return b, edges, float(b.sum())


def _reaches_every_vertex(b: np.ndarray, most_rounds: int = 32) -> bool:
    """Breadth-first search from output vertex 0 of a graph with no isolated vertex, a whole
    frontier per round as two matrix-vector products (b >= 0, so a product is > 0 exactly when
    an edge leads there). Most layers are connected within a few rounds: ~0.2 ms at 512 x 512,
    against ~1.2 ms for building a sparse graph. False also when `most_rounds` did not settle it."""
    reached = np.zeros(b.shape[0])
    reached[0] = 1.0
    count = 1
    for _ in range(most_rounds):
        columns = (reached @ b > 0).astype(np.float64)
        reached = (b @ columns > 0).astype(np.float64)
        new_count = int(np.count_nonzero(reached))
        if new_count == b.shape[0]:
            return True
        if new_count == count:
            return False
        count = new_count
    return False


def _components(b: np.ndarray, isolated: bool = True) -> tuple[int, float]:
    """Connected components of the bipartite graph of `b` and the largest one's vertex share.
    `isolated=False` promises that no row or column of `b` is all zero."""
    rows, cols = b.shape
    if rows + cols == 0:
        return 0, 0.0
    if not isolated and rows and _reaches_every_vertex(b):
        return 1, 1.0  # every column has an edge, so reaching every row reaches every column
    upper = scipy.sparse.coo_matrix(b != 0)
    size = rows + cols
    adjacency = scipy.sparse.coo_matrix(
        (np.ones(upper.nnz), (upper.row, rows + upper.col)), shape=(size, size))
    count, labels = scipy.sparse.csgraph.connected_components(adjacency, directed=False)
    return int(count), float(np.bincount(labels).max()) / size


def layer_spectrum(biadjacency: np.ndarray, remove_isolated: bool = True) -> LayerSpectrum:
    """Spectrum and bounds of the bipartite graph of `biadjacency` (0/1 mask or |W| on mask;
    weights are normalised to mean 1 over the kept edges, see the module notes)."""
    b = np.asarray(biadjacency, dtype=np.float64)
    if b.ndim != 2:
        raise ValueError(f"a biadjacency must be a 2-D matrix, but got shape {b.shape}")
    total = float(b.sum()) if b.size else 0.0
    # A finite sum proves every entry finite; only an infinite or NaN one needs the full look.
    if b.size and not math.isfinite(total) and not np.isfinite(b).all():
        raise ValueError("a biadjacency must be finite, but it holds NaN or infinity (diverged weights?)")
    # Which entries are edges, as one byte each: counting them and finding the vertices with an
    # edge on it reads 8x less memory than on the float matrix (0.08 ms against 0.25 ms at
    # 512 x 512). Taking |.| keeps the same entries nonzero, and so does dividing by the mean
    # weight, but for a weight so tiny that it underflows: that one stays an edge, as it is in
    # the edge count.
    nonzero = buffer("spectral.nonzero", b.shape, np.bool_)
    np.not_equal(b, 0.0, out=nonzero)
    b, edges, total = _normalised(b, total if math.isfinite(total) else None,
                                  int(np.count_nonzero(nonzero)))  # >= 0 from here on
    live_rows = nonzero.any(axis=1)
    live_cols = nonzero.any(axis=0)
    isolated_rows = int((~live_rows).sum())
    isolated_cols = int((~live_cols).sum())
    all_vertices = b.shape[0] + b.shape[1]
    if remove_isolated and (isolated_rows or isolated_cols):
        b = b[live_rows][:, live_cols]
    rows, cols = b.shape
    # Removing isolated vertices removes no edge: the count and the weight stay.
    lambda_1, lambda_2 = _top_two_singular_values(b, binary=edges > 0 and _is_binary(b, edges),
                                                  complete=edges == rows * cols)
    if rows + cols == 2 and lambda_1 > 0:
        lambda_2 = -lambda_1  # one edge, two vertices: the adjacency's eigenvalues are +-w
    components, largest = _components(b, isolated=not remove_isolated and bool(isolated_rows or isolated_cols))
    return _bounds(rows=rows, cols=cols, isolated_rows=isolated_rows, isolated_cols=isolated_cols,
                   edges=edges, total=total, lambda_1=lambda_1, lambda_2=lambda_2,
                   components=components, largest_component=largest,
                   isolated_share=(isolated_rows + isolated_cols) / all_vertices if all_vertices else 0.0)


def _bounds(*, rows: int, cols: int, isolated_rows: int, isolated_cols: int, edges: int, total: float,
            lambda_1: float, lambda_2: float, components: int, largest_component: float,
            isolated_share: float) -> LayerSpectrum:
    """Degrees and bounds of a bipartite graph with sides of `rows` and `cols` vertices and
    `total` edge weight."""
    d_avg = 2.0 * total / (rows + cols) if rows + cols else 0.0
    d_left = total / rows if rows else 0.0
    d_right = total / cols if cols else 0.0
    defined = 1
    if lambda_2 <= 0.0:
        # The graph is complete bipartite: no second eigenvalue to bound. Only the whole layer
        # (a dense layer: no isolated vertex) is "unbounded"; a degenerate remnant is undefined.
        if edges > 0 and isolated_rows == 0 and isolated_cols == 0:
            delta_r = delta_s = math.inf
            biregular = _sqrt0(d_left - 1.0) + _sqrt0(d_right - 1.0) - max(lambda_2, 0.0)
        else:
            delta_r = delta_s = biregular = math.nan
            defined = 0
    else:
        delta_r = (2.0 * _sqrt0(d_avg - 1.0) - lambda_2) / lambda_2
        delta_s = (2.0 * _sqrt0(lambda_1 - 1.0) - lambda_2) / lambda_2
        biregular = _sqrt0(d_left - 1.0) + _sqrt0(d_right - 1.0) - lambda_2
    return LayerSpectrum(
        rows=rows,
        cols=cols,
        isolated_rows=isolated_rows,
        isolated_cols=isolated_cols,
        edges=edges,
        lambda_1=lambda_1,
        lambda_2=lambda_2,
        d_avg=d_avg,
        d_left=d_left,
        d_right=d_right,
        delta_r=delta_r,
        delta_s=delta_s,
        biregular=biregular,
        components=components,
        largest_component=largest_component,
        isolated_share=isolated_share,
        bounds_defined=defined,
        bounds_unbounded=int(math.isinf(delta_r)),
        low_degree=int(bool(defined) and min(d_left, d_right) < LOW_DEGREE),
    )


def step_biadjacency(m_xh: np.ndarray, m_hh: np.ndarray) -> np.ndarray:
    """One step of the unrolled recurrence: x_t and h_{t-1} (columns) feed h_t (rows)."""
    if m_xh.shape[0] != m_hh.shape[0]:
        raise ValueError(
            f"W_xh and W_hh must have the same rows (hidden units), but got {m_xh.shape} and {m_hh.shape}"
        )
    return np.concatenate([m_xh, m_hh], axis=1)


def merge_gates(matrix: np.ndarray, gates: int) -> np.ndarray:
    """Sum the `gates` stacked row blocks of a gated cell's matrix (4H x I -> H x I for an LSTM).
    On a 0/1 mask, `> 0` of the sum is the union of the gates' edges."""
    rows = matrix.shape[0]
    if gates <= 1:
        return matrix
    if rows % gates:
        raise ValueError(f"a matrix of {rows} rows cannot hold {gates} stacked gate blocks")
    return matrix.reshape(gates, rows // gates, -1).sum(axis=0)


def _check_unrolled(m_xh: np.ndarray, m_hh: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    m_xh = np.abs(np.asarray(m_xh, dtype=np.float64))
    m_hh = np.abs(np.asarray(m_hh, dtype=np.float64))
    if m_hh.ndim != 2 or m_hh.shape[0] != m_hh.shape[1]:
        raise ValueError(f"W_hh must be square (H x H), but got shape {m_hh.shape}")
    if m_xh.ndim != 2 or m_xh.shape[0] != m_hh.shape[0]:
        raise ValueError(f"W_xh must be H x I with H = {m_hh.shape[0]}, but got shape {m_xh.shape}")
    if steps < 1:
        raise ValueError(f"the unrolled graph needs at least one step, but got k = {steps}")
    return m_xh, m_hh


def unrolled_adjacency(m_xh: np.ndarray, m_hh: np.ndarray, steps: int) -> scipy.sparse.csr_matrix:
    """Symmetric sparse adjacency of the unrolled graph; vertices h_0..h_k (H each), then x_1..x_k (I each)."""
    m_xh, m_hh = _check_unrolled(m_xh, m_hh, steps)
    hidden, inputs = m_xh.shape
    h_count = (steps + 1) * hidden
    t = np.arange(1, steps + 1)[:, None]
    hh, xh = scipy.sparse.coo_matrix(m_hh), scipy.sparse.coo_matrix(m_xh)
    rows = np.concatenate([(t * hidden + hh.row).ravel(), (t * hidden + xh.row).ravel()])
    cols = np.concatenate([((t - 1) * hidden + hh.col).ravel(), (h_count + (t - 1) * inputs + xh.col).ravel()])
    values = np.concatenate([np.tile(hh.data, steps), np.tile(xh.data, steps)])
    size = h_count + steps * inputs
    upper = scipy.sparse.coo_matrix((values, (rows, cols)), shape=(size, size)).tocsr()
    return (upper + upper.T).tocsr()


# Below this many vertices a dense symmetric eigensolver is exact and fast enough.
_DENSE_LIMIT = 1500


def unrolled_top_eigenvalues(m_xh: np.ndarray, m_hh: np.ndarray, steps: int) -> tuple[float, float]:
    """lambda_1 and lambda_2 of the unrolled graph's adjacency, to about 1e-12 relative: below
    _DENSE_LIMIT vertices a dense symmetric solver, above it Lanczos on the shift-inverted
    operator through an exact block factorisation along time (unrolled_solver.py)."""
    m_xh, m_hh = _check_unrolled(m_xh, m_hh, steps)
    adjacency = unrolled_adjacency(m_xh, m_hh, steps)
    size = adjacency.shape[0]
    if adjacency.nnz == 0:
        return 0.0, 0.0
    with _one_blas_thread():
        if size <= _DENSE_LIMIT:
            values = scipy.linalg.eigvalsh(adjacency.toarray(), subset_by_index=[size - 2, size - 1])
            return float(values[1]), float(values[0])
        return shift_invert_top_two(adjacency, [(m_xh, m_hh)], steps)


def unrolled_spectrum(m_xh: np.ndarray, m_hh: np.ndarray, steps: int, remove_isolated: bool = True) -> LayerSpectrum:
    """Spectrum and bounds of the whole unrolled graph over `steps` steps (see the module notes).

    `rows` and `cols` are the sizes of the two colour classes (h_t with t even and x_t with t
    odd; the rest); d_left and d_right their average degrees. Isolated vertices never change
    lambda_1 or lambda_2 (they only add zeros), so `remove_isolated` acts on the degrees.
    """
    m_xh, m_hh = _check_unrolled(m_xh, m_hh, steps)
    # Scale-free like a layer's graph: one mean over the kept edges of both matrices.
    edges_per_step = np.count_nonzero(m_xh) + np.count_nonzero(m_hh)
    if edges_per_step:
        mean = float(m_xh.sum() + m_hh.sum()) / edges_per_step
        m_xh, m_hh = m_xh / mean, m_hh / mean
    xh_row, hh_row, hh_col = m_xh.sum(axis=1), m_hh.sum(axis=1), m_hh.sum(axis=0)
    x_degree = m_xh.sum(axis=0)
    # Degree of h_t: its inputs (x_t, h_{t-1}) for t >= 1, plus its outputs (h_{t+1}) for t < k.
    h_degrees = [hh_col] + [xh_row + hh_row + (hh_col if t < steps else 0.0) for t in range(1, steps + 1)]
    even_h = sum(int((h_degrees[t] > 0).sum()) for t in range(0, steps + 1, 2))
    odd_h = sum(int((h_degrees[t] > 0).sum()) for t in range(1, steps + 1, 2))
    live_x = int((x_degree > 0).sum())
    odd_x_steps = (steps + 1) // 2  # x_t with t odd sit with the even h_t
    even_x_steps = steps // 2
    all_even = (steps // 2 + 1) * len(hh_col) + odd_x_steps * len(x_degree)
    all_odd = ((steps + 1) // 2) * len(hh_col) + even_x_steps * len(x_degree)
    live_even = even_h + odd_x_steps * live_x
    live_odd = odd_h + even_x_steps * live_x
    even, odd = (live_even, live_odd) if remove_isolated else (all_even, all_odd)
    total = steps * float(m_xh.sum() + m_hh.sum())
    lambda_1, lambda_2 = unrolled_top_eigenvalues(m_xh, m_hh, steps)
    if lambda_2 <= ZERO_TOL * max(lambda_1, 1.0):
        lambda_2 = 0.0
    adjacency = unrolled_adjacency(m_xh, m_hh, steps)
    live = np.flatnonzero(adjacency.getnnz(axis=1) > 0)
    if remove_isolated:
        adjacency = adjacency[live][:, live]
    count, labels = scipy.sparse.csgraph.connected_components(adjacency, directed=False)
    vertices = adjacency.shape[0]
    return _bounds(
        rows=even, cols=odd, isolated_rows=all_even - live_even, isolated_cols=all_odd - live_odd,
        edges=steps * int(edges_per_step), total=total,
        lambda_1=lambda_1, lambda_2=lambda_2, components=int(count),
        largest_component=float(np.bincount(labels).max()) / vertices if vertices else 0.0,
        isolated_share=(all_even + all_odd - live_even - live_odd) / (all_even + all_odd),
    )
