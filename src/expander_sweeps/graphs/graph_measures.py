"""Graph quantities as plug-ins: one registry of what is measured on each pruned layer's graph.

The built-in quantities (lambda_1, lambda_2, d_avg and the bounds Delta_R, Delta_S, biregular)
are computed together by `spectral.layer_spectrum`; the registry holds their names, labels and
definitions, which the spec, the report, its figures and `expansion_table` read. A new quantity
is one function and one registration:

    from expander_sweeps.plugins import GraphQuantity, register_quantity

    def laplacian_gap(biadjacency):      # a float64 (rows, cols) array, isolated vertices removed
        ...
        return gap                        # a float; NaN where it is undefined

    register_quantity(GraphQuantity("nl_gap", "normalised-Laplacian gap", "...", laplacian_gap))

Named under `plugins:` in the spec, it is computed on every layer, gate-block and step graph
(binary and weighted; not on the unrolled graph, whose size is the data's sequence length times
the layer), and reaches the study, MLflow, W&B, spectra.json and `expansion_table` as
`<graph>/<weighting>/<name>`. With `bound=True` it is a bound: the report finds the kept fraction
where it crosses zero (`report.bounds` lists every registered bound by default).

Only the standard library at import time (the spec checks names against it in every process).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..registry import Registry

__all__ = ["GraphQuantity", "register_quantity", "unregister_quantity", "quantity", "quantity_names",
           "bound_names", "added_quantities", "opt_in_names", "measure_added"]


@dataclass(frozen=True)
class GraphQuantity:
    """name: the last part of the metric key (`W_hh/binary/<name>`); label: how reports write it;
    definition: one sentence, in the report header and the docs; compute: biadjacency -> float
    (None for the built-ins, which spectral.layer_spectrum computes); bound: whether its sign is
    a property the report tracks (its zero crossing); figure_style, figure_color: its line on a
    layer's figure (matplotlib linestyle and colour); opt_in: computed only when a spec's
    `spectral.measures` (or `expansion_table(measures=...)`) names it, as the built-in measures of
    measures.py are (a plug-in's quantity is computed everywhere unless it says so)."""

    name: str
    label: str
    definition: str
    compute: Callable[[Any], float] | None = None
    bound: bool = False
    figure_style: Any = "--"
    figure_color: str = "black"
    opt_in: bool = False  # computed only where asked (spectral.measures, expansion_table's measures=)


_REGISTRY: Registry[GraphQuantity] = Registry("graph quantity", "it ends a metric name")


def register_quantity(q: GraphQuantity, replace: bool = False) -> GraphQuantity:
    return _REGISTRY.add(q.name, q, replace)


def unregister_quantity(name: str) -> None:
    _REGISTRY.remove(name)


def quantity(name: str) -> GraphQuantity:
    return _REGISTRY.get(name)


def quantity_names() -> tuple[str, ...]:
    return _REGISTRY.names()


def bound_names() -> tuple[str, ...]:
    """The registered bounds, built-in ones first: what `report.bounds` may list."""
    return tuple(q.name for q in _REGISTRY.items() if q.bound)


def added_quantities(chosen: tuple[str, ...] | list[str] = ()) -> tuple[GraphQuantity, ...]:
    """Quantities computed by their own function: every plug-in's that is not opt-in, and the
    opt-in ones named in `chosen`."""
    return tuple(q for q in _REGISTRY.items() if q.compute is not None and (not q.opt_in or q.name in chosen))


def opt_in_names() -> tuple[str, ...]:
    """What `spectral.measures` may list."""
    return tuple(q.name for q in _REGISTRY.items() if q.opt_in)


def measure_added(biadjacency: Any, remove_isolated: bool, chosen: tuple[str, ...] | list[str] = ()) -> dict[str, float]:
    """Every added quantity of one graph (`added_quantities(chosen)`), on its biadjacency as
    float64 with (when asked, as the built-in spectra do) all-zero rows and columns removed. A
    quantity that raises is an error naming it; one that returns NaN is undefined for this graph,
    and is recorded as NaN."""
    added = added_quantities(chosen)
    if not added:
        return {}
    import numpy as np  # here, not at import: the registry is read in processes without numpy's cost

    matrix = np.asarray(biadjacency, dtype=np.float64)
    if remove_isolated:
        matrix = matrix[np.abs(matrix).sum(axis=1) > 0][:, np.abs(matrix).sum(axis=0) > 0]
    values = {}
    for q in added:
        try:
            value = float(q.compute(matrix))
        except Exception as err:
            raise RuntimeError(f"graph quantity {q.name!r} failed on a {matrix.shape[0]} x {matrix.shape[1]} "
                               f"graph: {type(err).__name__}: {err}") from err
        values[q.name] = value
    return values


# ----------------------------------------------------------------------------- built-in quantities
# Computed together by spectral.layer_spectrum (the README's "Definitions" has their formulas).
register_quantity(GraphQuantity("lambda_1", "lambda_1", "the largest singular value of the biadjacency matrix "
                                "(the graph's largest eigenvalue)"))
register_quantity(GraphQuantity("lambda_2", "lambda_2", "the second-largest singular value of the biadjacency matrix"))
register_quantity(GraphQuantity("d_avg", "average degree", "2 * total edge weight / (rows + cols)"))
register_quantity(GraphQuantity("delta_r", "Delta_R", "(2 sqrt(d_avg - 1) - lambda_2) / lambda_2 (Hoang et al., "
                                "ICLR 2023)", bound=True, figure_style="--", figure_color="black"))
register_quantity(GraphQuantity("delta_s", "Delta_S", "(2 sqrt(lambda_1 - 1) - lambda_2) / lambda_2 (Hoang et al., "
                                "ICLR 2023)", bound=True, figure_style="-.", figure_color="dimgray"))
register_quantity(GraphQuantity("biregular", "biregular bound", "sqrt(d_left - 1) + sqrt(d_right - 1) - lambda_2",
                                bound=True, figure_style=(0, (5, 1, 1, 1, 1, 1)), figure_color="saddlebrown"))


# Opt-in measures (measures.py has their definitions and references): named in spectral.measures.
def _from_measures(name: str) -> Callable[[Any], float]:
    def compute(biadjacency: Any) -> float:
        from . import measures  # numpy's cost only where a measure is asked for

        return getattr(measures, name)(biadjacency)

    return compute


register_quantity(GraphQuantity("gap_ratio", "spectral gap ratio", "(lambda_1 - lambda_2) / lambda_1 of the "
                                "biadjacency: the spectral gap, free of the weights' scale",
                                _from_measures("gap_ratio"), opt_in=True))
register_quantity(GraphQuantity("nl_gap", "normalised-Laplacian gap", "the second-smallest eigenvalue of "
                                "I - D^-1/2 A D^-1/2 (0 iff disconnected)",
                                _from_measures("normalised_laplacian_gap"), opt_in=True))
register_quantity(GraphQuantity("cheeger_sweep", "Cheeger sweep cut", "the least conductance w(S, V-S) / "
                                "min(vol S, vol V-S) over the sweep cuts of the Fiedler vector: an upper bound "
                                "on the Cheeger constant h", _from_measures("cheeger_sweep"), opt_in=True))
register_quantity(GraphQuantity("cheeger_lower", "Cheeger lower side", "nl_gap / 2 <= h (Cheeger-Buser)",
                                _from_measures("cheeger_lower"), opt_in=True))
register_quantity(GraphQuantity("cheeger_upper", "Cheeger upper side", "h <= sqrt(2 nl_gap) (Cheeger-Buser)",
                                _from_measures("cheeger_upper"), opt_in=True))
register_quantity(GraphQuantity("imdb", "IMDB", "the mean over groups of inputs of equal degree (>= 3, at least 2 "
                                "inputs) of the biregular bound sqrt(d_in - 1) + sqrt(d_out - 1) - lambda_2 of the "
                                "sub-graph they span (Hoang et al., ICLR 2023)", _from_measures("imdb"), opt_in=True))
register_quantity(GraphQuantity("vertex_expansion", "vertex expansion (sampled)", "min |N(S)| / |S| over 2,000 "
                                "sampled input sets S of at most half the inputs: an upper bound on the vertex "
                                "expansion (Stewart et al., CVPRW 2023)", _from_measures("vertex_expansion"),
                                opt_in=True))
register_quantity(GraphQuantity("vertex_expansion_se", "vertex expansion sampling error", "bootstrap standard "
                                "deviation of the sampled vertex expansion (200 resamples of the drawn sets)",
                                _from_measures("vertex_expansion_se"), opt_in=True))
