"""Spectra of the bipartite graph of a pruned layer, its Ramanujan bounds, and zero crossings.

A layer with biadjacency B (rows = outputs, columns = inputs; the 0/1 mask, or |W| on the
mask for the weighted graph) is the bipartite graph with adjacency [[0, B], [B^T, 0]]. Its
eigenvalues are +-sigma_i(B) plus zeros, so lambda_1 = sigma_1(B) and lambda_2 = sigma_2(B).

Choices, stated once here and in the README:
- Isolated vertices (all-zero rows or columns) are removed before anything is computed when
  `remove_isolated` is set (the default, as is customary); their counts are always recorded.
- A complete bipartite graph (a dense layer) has lambda_2 = 0: Delta_R and Delta_S are
  unbounded and reported as +inf. lambda_2 below `ZERO_TOL * lambda_1` counts as 0 so that
  rounding noise (~1e-14) does not turn "unbounded" into a huge finite number.
- A disconnected graph repeats lambda_1 (one copy per component of the same top singular
  value), so lambda_2 = lambda_1 and the bounds are negative: such a layer is no expander.
- sqrt of a negative argument (d_avg < 1, or lambda_1 < 1 in a weighted graph with small
  weights) is taken as 0, and the bound stays defined (and negative).

Only numpy and scipy: this module must stay importable without torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import scipy.linalg

__all__ = [
    "LayerSpectrum",
    "Crossing",
    "layer_spectrum",
    "step_biadjacency",
    "find_crossing",
    "BOUNDS",
]

ZERO_TOL = 1e-9
BOUNDS = ("delta_r", "delta_s", "biregular")


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

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _sqrt0(x: float) -> float:
    return math.sqrt(x) if x > 0 else 0.0


def _top_two_singular_values(matrix: np.ndarray) -> tuple[float, float]:
    if matrix.size == 0:
        return 0.0, 0.0
    # Values only (no vectors); LAPACK's gesdd is exact to rounding at these sizes, where an
    # iterative solver struggles: lambda_2 sits at the edge of the bulk of the spectrum.
    values = scipy.linalg.svdvals(matrix, check_finite=False, overwrite_a=False)
    first = float(values[0])
    second = float(values[1]) if len(values) > 1 else 0.0
    if second <= ZERO_TOL * max(first, 1.0):
        second = 0.0
    return first, second


def layer_spectrum(biadjacency: np.ndarray, remove_isolated: bool = True) -> LayerSpectrum:
    """Spectrum and bounds of the bipartite graph of `biadjacency` (0/1 mask or |W| on mask)."""
    b = np.abs(np.asarray(biadjacency, dtype=np.float64))
    if b.ndim != 2:
        raise ValueError(f"a biadjacency must be a 2-D matrix, but got shape {b.shape}")
    nonzero = b != 0
    live_rows = nonzero.any(axis=1)
    live_cols = nonzero.any(axis=0)
    isolated_rows = int((~live_rows).sum())
    isolated_cols = int((~live_cols).sum())
    if remove_isolated:
        b = b[live_rows][:, live_cols]
    rows, cols = b.shape
    total = float(b.sum())
    lambda_1, lambda_2 = _top_two_singular_values(b)
    d_avg = 2.0 * total / (rows + cols) if rows + cols else 0.0
    d_left = total / rows if rows else 0.0
    d_right = total / cols if cols else 0.0
    if lambda_2 == 0.0:
        # Complete bipartite (or empty / single edge): no second eigenvalue to bound.
        delta_r = delta_s = math.inf
    else:
        delta_r = (2.0 * _sqrt0(d_avg - 1.0) - lambda_2) / lambda_2
        delta_s = (2.0 * _sqrt0(lambda_1 - 1.0) - lambda_2) / lambda_2
    biregular = _sqrt0(d_left - 1.0) + _sqrt0(d_right - 1.0) - lambda_2
    return LayerSpectrum(
        rows=rows,
        cols=cols,
        isolated_rows=isolated_rows,
        isolated_cols=isolated_cols,
        edges=int(np.count_nonzero(b)),
        lambda_1=lambda_1,
        lambda_2=lambda_2,
        d_avg=d_avg,
        d_left=d_left,
        d_right=d_right,
        delta_r=delta_r,
        delta_s=delta_s,
        biregular=biregular,
    )


def step_biadjacency(m_xh: np.ndarray, m_hh: np.ndarray) -> np.ndarray:
    """One step of the unrolled recurrence: x_t and h_{t-1} (columns) feed h_t (rows)."""
    if m_xh.shape[0] != m_hh.shape[0]:
        raise ValueError(
            f"W_xh and W_hh must have the same rows (hidden units), but got {m_xh.shape} and {m_hh.shape}"
        )
    return np.concatenate([m_xh, m_hh], axis=1)


@dataclass(frozen=True)
class Crossing:
    """Where a bound first turns negative as the remaining fraction decreases."""

    status: str  # "crossed" | "never" | "negative_at_start" | "no_data"
    remaining: float | None  # interpolated remaining fraction of the crossing
    upper: float | None  # last grid point (from dense down) where the bound was >= 0
    lower: float | None  # first grid point where it was < 0

    def describe(self) -> str:
        if self.status == "crossed":
            return f"{100 * self.remaining:.2f}% (between {100 * self.lower:g}% and {100 * self.upper:g}%)"
        if self.status == "never":
            return f"never negative (down to {100 * self.lower:g}%)" if self.lower else "never negative"
        if self.status == "negative_at_start":
            return f"already negative at {100 * self.lower:g}% (the densest point)"
        return "no data"


def find_crossing(remaining: Sequence[float], values: Sequence[float]) -> Crossing:
    """First remaining fraction (walking from dense to sparse) where `values` turns negative.

    Several values at one fraction (seeds) are averaged; NaN values are ignored. Between the
    last non-negative grid point and the first negative one the crossing is interpolated
    linearly; from +inf (a dense layer) the interpolation's limit is the negative point itself.
    """
    by_fraction: dict[float, list[float]] = {}
    for r, v in zip(remaining, values, strict=True):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        by_fraction.setdefault(float(r), []).append(float(v))
    if not by_fraction:
        return Crossing("no_data", None, None, None)
    points = sorted(((r, float(np.mean(vs))) for r, vs in by_fraction.items()), reverse=True)
    previous: tuple[float, float] | None = None
    for r, v in points:
        if v < 0:
            if previous is None:
                return Crossing("negative_at_start", r, None, r)
            r0, v0 = previous
            estimate = r if math.isinf(v0) else r0 + (r - r0) * v0 / (v0 - v)
            return Crossing("crossed", estimate, r0, r)
        previous = (r, v)
    return Crossing("never", None, points[0][0], points[-1][0])
