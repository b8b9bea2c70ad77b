"""The expansion of any PyTorch model: one row per prunable matrix, from a user's own loop.

    from expander_sweeps import expansion_table, log_expansion
    table = expansion_table(model)            # a pandas DataFrame, one row per matrix and weighting
    log_expansion(model, step=epoch)          # the same, to the active MLflow run and/or W&B run

Which matrices, and which graph each one is:
- `nn.RNN`, `nn.LSTM`, `nn.GRU`: `weight_ih_l{k}` and `weight_hh_l{k}` of every layer (and
  `_reverse` direction), one graph per gate block (LSTM gates i, f, g, o; GRU r, z, n; in
  PyTorch's stacking order). Rows are the hidden units, columns the inputs of that matrix.
- `nn.Linear`: its weight, rows = output features, columns = input features.
- `nn.Conv1d`, `nn.Conv2d`: the bipartite graph of output and input channels, an edge where any
  kernel tap connects them; the weighted graph sums |w| over the kernel. Grouped convolutions
  give the block-diagonal channel graph (no edge across groups).

Edges come from `torch.nn.utils.prune`'s `<name>_mask` buffer when the module has one (the
pruning a researcher applied), otherwise from the nonzero entries of the weight. The weighted
graph is |W| on those edges (for pruned modules, of `weight_orig * weight_mask`). Every number is
`spectral.layer_spectrum`'s, with the definitions in the README; Delta_R and Delta_S are NaN when
undefined (a degenerate graph) and +inf when unbounded (a dense matrix), with `status` saying which.

Metric names are stable: `<prefix>/<matrix>/<weighting>/<quantity>`, for example
`expansion/rnn.weight_hh_l0.i/binary/delta_r` or `expansion/fc.weight/weighted/lambda_2`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..cells import RECURRENT_CELLS
from ..results import GATES, for_trackers
from .graph_measures import added_quantities, measure_added, opt_in_names
from .spectral import layer_spectrum

__all__ = ["prunable_matrices", "expansion_table", "expansion_metrics", "log_expansion", "QUANTITIES"]

# The columns of the table, after `matrix`, `module`, `parameter`, `gate` and `weighting`.
QUANTITIES = ("rows", "cols", "edges", "density", "components", "largest_component", "isolated_rows",
              "isolated_cols", "lambda_1", "lambda_2", "d_avg", "delta_r", "delta_s", "biregular", "status")
_LOGGED = ("edges", "density", "components", "lambda_1", "lambda_2", "d_avg", "delta_r", "delta_s", "biregular")


def _added(measures: tuple[str, ...] | list[str] = ()) -> tuple[str, ...]:
    """The graph quantities plug-ins registered and the opt-in `measures` (graph_measures.py):
    columns after the built-ins."""
    return tuple(q.name for q in added_quantities(measures))



def _weight_and_edges(module: nn.Module, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight as the forward pass uses it, and its edges: prune's mask, else its nonzeros."""
    mask = getattr(module, f"{name}_mask", None)
    weight = getattr(module, name)
    if isinstance(mask, torch.Tensor) and hasattr(module, f"{name}_orig"):
        weight = getattr(module, f"{name}_orig") * mask
        return weight.detach(), mask.detach() != 0
    return weight.detach(), weight.detach() != 0


def _channel_graph(weight: torch.Tensor, edges: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A conv weight (out, in/groups, *kernel) as the out x in channel graph: |w| summed over the
    kernel on the kept taps, block-diagonal over groups."""
    out_channels, per_group = weight.shape[:2]
    magnitude = (weight.abs() * edges).flatten(2).sum(dim=2)
    kept = edges.flatten(2).any(dim=2)
    full_w = weight.new_zeros(out_channels, per_group * groups)
    full_e = torch.zeros(out_channels, per_group * groups, dtype=torch.bool, device=weight.device)
    rows_per_group = out_channels // groups
    for g in range(groups):
        rows = slice(g * rows_per_group, (g + 1) * rows_per_group)
        cols = slice(g * per_group, (g + 1) * per_group)
        full_w[rows, cols] = magnitude[rows]
        full_e[rows, cols] = kept[rows]
    return full_w, full_e


def prunable_matrices(model: nn.Module) -> Iterator[tuple[str, str, str, str, np.ndarray, np.ndarray]]:
    """(matrix, module, parameter, gate, |W| on the edges, 0/1 edges) for every matrix of
    `model` that this module knows how to read as a bipartite graph (see the module notes)."""
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        kind = RECURRENT_CELLS.get(type(module))
        if kind is not None:
            gates = GATES[kind]
            # PyTorch's own order (layer by layer, input before hidden), which pruning's
            # renaming of a parameter to `<name>_orig` does not change.
            for base in module._flat_weights_names:
                if not base.startswith(("weight_ih_l", "weight_hh_l")):
                    continue
                weight, edges = _weight_and_edges(module, base)
                size = weight.shape[0] // len(gates)
                for index, gate in enumerate(gates):
                    block = slice(index * size, (index + 1) * size)
                    label = f"{prefix}{base}" + (f".{gate}" if len(gates) > 1 else "")
                    yield (label, module_name, base, gate if len(gates) > 1 else "",
                           *_as_numpy(weight[block], edges[block]))
        elif isinstance(module, nn.Linear):
            weight, edges = _weight_and_edges(module, "weight")
            yield (f"{prefix}weight", module_name, "weight", "", *_as_numpy(weight, edges))
        elif isinstance(module, (nn.Conv1d, nn.Conv2d)):
            weight, edges = _weight_and_edges(module, "weight")
            yield (f"{prefix}weight", module_name, "weight", "",
                   *_as_numpy(*_channel_graph(weight, edges, module.groups)))


def _as_numpy(weight: torch.Tensor, edges: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    weighted = (weight.abs() * edges).to(torch.float64).cpu().numpy()
    return weighted, edges.to(torch.float64).cpu().numpy()


def expansion_table(model: nn.Module, weightings: tuple[str, ...] = ("binary", "weighted"),
                    remove_isolated: bool = True, measures: tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per prunable matrix and weighting: the graph's size, kept edges, components,
    lambda_1, lambda_2, d_avg, Delta_R, Delta_S, the biregular bound, their status, every quantity a
    plug-in registered, and the opt-in `measures` (gap_ratio, nl_gap, cheeger_sweep, cheeger_lower,
    cheeger_upper: docs/definitions.md)."""
    unknown_measures = [m for m in measures if m not in opt_in_names()]
    if unknown_measures:
        raise ValueError(f"measures {unknown_measures} are not opt-in graph measures; known: {', '.join(opt_in_names())}")
    unknown = set(weightings) - {"binary", "weighted"}
    if unknown:
        raise ValueError(f"weightings are 'binary' and 'weighted', not {sorted(unknown)}")
    rows = []
    for matrix, module, parameter, gate, weighted, binary in prunable_matrices(model):
        for weighting in weightings:
            graph = binary if weighting == "binary" else weighted
            if weighting == "weighted" and not np.isfinite(graph).all():
                raise ValueError(f"{matrix} holds NaN or infinite weights (a diverged training?)")
            spectrum = layer_spectrum(graph, remove_isolated=remove_isolated)
            values = spectrum.as_dict()
            rows.append({"matrix": matrix, "module": module, "parameter": parameter, "gate": gate,
                         "weighting": weighting,
                         **{q: values[q] for q in QUANTITIES if q in values},
                         "density": int(binary.sum()) / binary.size if binary.size else math.nan,
                         "status": spectrum.status,
                         **measure_added(graph, remove_isolated, measures)})
    columns = ["matrix", "module", "parameter", "gate", "weighting", *QUANTITIES, *_added(measures)]
    return pd.DataFrame(rows, columns=columns)


def expansion_metrics(table: pd.DataFrame, prefix: str = "expansion") -> dict[str, float]:
    """The table as flat metrics `<prefix>/<matrix>/<weighting>/<quantity>`, every key for every
    matrix, as in every tracker of this project: an undefined or unbounded bound is NaN (its
    `status` stays in the table), `.../bounds_defined` = 0 marks an undefined one and
    `.../bounds_unbounded` = 1 an unbounded one (a dense matrix)."""
    metrics: dict[str, float] = {}
    added = _added(opt_in_names())  # the plug-ins' and opt-in columns this table has
    logged = (*_LOGGED, *(c for c in table.columns if c in added))
    for row in table.itertuples(index=False):
        base = f"{prefix}/{row.matrix}/{row.weighting}"
        metrics[f"{base}/bounds_defined"] = float(row.status != "undefined")
        metrics[f"{base}/bounds_unbounded"] = float(row.status == "unbounded")
        for quantity in logged:
            metrics[f"{base}/{quantity}"] = float(getattr(row, quantity))
    return for_trackers(metrics)


def log_expansion(model: nn.Module, step: int, *, mlflow: bool | None = None, wandb: bool | None = None,
                  prefix: str = "expansion", weightings: tuple[str, ...] = ("binary", "weighted")) -> pd.DataFrame:
    """Measure `model` and log it at `step` to the active MLflow run and/or W&B run.

    `mlflow`/`wandb`: None logs to the run that is active (if any), True requires one (a clear
    error otherwise), False skips. Metrics go in one call per tracker; the table goes to MLflow
    as `<prefix>/step_<step>.json` (`mlflow.log_table`, which keeps 10 decimals; the metrics are
    full precision) and to W&B as a `wandb.Table` under
    `<prefix>/table`. Returns the table."""
    table = expansion_table(model, weightings)
    metrics = expansion_metrics(table, prefix)
    logged = False
    run = _active_mlflow_run(required=mlflow is True) if mlflow is not False else None
    if run is not None:
        import mlflow as mlflow_module

        mlflow_module.log_metrics(metrics, step=step)
        mlflow_module.log_table(data=table, artifact_file=f"{prefix}/step_{step:06d}.json")
        logged = True
    wandb_run = _active_wandb_run(required=wandb is True) if wandb is not False else None
    if wandb_run is not None:
        import wandb as wandb_module

        wandb_run.log({**metrics, f"{prefix}/table": wandb_module.Table(dataframe=table.astype({"status": str}))},
                      step=step)
        logged = True
    if not logged and (mlflow is not False or wandb is not False):
        raise RuntimeError("log_expansion found no active MLflow run (mlflow.start_run()) and no W&B run "
                           "(wandb.init()); start one, or call expansion_table(model) for the numbers alone")
    return table


def _active_mlflow_run(required: bool) -> Any:
    try:
        import mlflow
    except ImportError:
        if required:
            raise RuntimeError("log_expansion(mlflow=True) needs the mlflow package: pip install mlflow") from None
        return None
    run = mlflow.active_run()
    if run is None and required:
        raise RuntimeError("log_expansion(mlflow=True) found no active MLflow run; call mlflow.start_run() first")
    return run


def _active_wandb_run(required: bool) -> Any:
    try:
        import wandb
    except ImportError:
        if required:
            raise RuntimeError("log_expansion(wandb=True) needs the wandb package: pip install wandb") from None
        return None
    if wandb.run is None and required:
        raise RuntimeError("log_expansion(wandb=True) found no W&B run; call wandb.init() first")
    return wandb.run
