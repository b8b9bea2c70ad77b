"""The report's figures: one per layer, accuracy against kept edges with the bounds on the right axis."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only; no display is needed or wanted
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..graphs.graph_measures import quantity  # noqa: E402
from ..results import bound_label  # noqa: E402
from ..spec import SweepSpec  # noqa: E402
from .analysis import Panel, _accuracy_columns, _matching


def _draw_panel(axis, panel: Panel, spec: SweepSpec, crossings: pd.DataFrame, claim: pd.DataFrame) -> None:
    """Accuracy (mean over seeds, band = +-1 std) and bounds against remaining edges, with
    vertical lines where each bound crosses zero and where each accuracy drops past the threshold."""
    weighting = spec.report.figure_weighting
    acc_axis = axis
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (column, label) in enumerate(_accuracy_columns(spec)):
        if column not in panel.trials:
            continue
        curve = panel.curve(column)
        x, color = 100 * curve["kept"].to_numpy(), colors[index % len(colors)]
        acc_axis.plot(x, 100 * curve["mean"], marker="o", ms=3, color=color, label=f"acc {label}")
        if (curve["n"] > 1).any():
            acc_axis.fill_between(x, 100 * (curve["mean"] - curve["std"]), 100 * (curve["mean"] + curve["std"]),
                                  color=color, alpha=0.15, linewidth=0)
        match = _matching(claim, pruned=panel.pruned, mask_method=panel.method,
                          train_noise_variance=panel.train_variance, noise=label)
        if len(match) and match.iloc[0]["drop_crossing_pct"] is not None and not pd.isna(match.iloc[0]["drop_crossing_pct"]):
            acc_axis.axvline(match.iloc[0]["drop_crossing_pct"], color=color, linestyle=(0, (1, 2)), linewidth=1.2)
    all_x = 100 * panel.kept()
    acc_axis.set_xscale("log")
    acc_axis.set_xticks(sorted(set(all_x.round(6))))
    acc_axis.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
    acc_axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    acc_axis.invert_xaxis()  # dense on the left; pruning harder moves right
    acc_axis.set_xlabel(f"kept edges of {panel.layer} (%)")
    acc_axis.set_ylabel("test accuracy (%)")
    acc_axis.set_ylim(0, 100)
    acc_axis.grid(True, which="both", alpha=0.25)
    bound_axis = acc_axis.twinx()
    # Dotted lines are the accuracy drops' alone; each bound has its own dash pattern.
    styles = {b: quantity(b).figure_style for b in spec.report.figure_bounds}
    bound_colors = {b: quantity(b).figure_color for b in spec.report.figure_bounds}
    for bound in spec.report.figure_bounds:
        column = f"{panel.layer}/{weighting}/{bound}"
        if column not in panel.trials:
            continue
        curve = panel.curve(column)
        # +inf at the dense point cannot be drawn; NaN (undefined) leaves a gap.
        finite = np.isfinite(curve["mean"].to_numpy())
        bound_axis.plot(100 * curve["kept"].to_numpy()[finite], curve["mean"].to_numpy()[finite], styles[bound],
                        color=bound_colors[bound], label=f"{bound_label(bound)} ({weighting})")
        match = _matching(crossings, pruned=panel.pruned, mask_method=panel.method,
                          train_noise_variance=panel.train_variance, graph=panel.layer, weighting=weighting,
                          bound=bound_label(bound))
        if len(match) and match.iloc[0]["crossing_pct"] is not None and not pd.isna(match.iloc[0]["crossing_pct"]):
            bound_axis.axvline(match.iloc[0]["crossing_pct"], color=bound_colors[bound], linestyle=styles[bound],
                               alpha=0.7, linewidth=1.2)
    # The bounds' zero sits at mid-height (a symmetric axis), drawn solid black and named in the
    # legend: no accuracy curve (coloured, solid with markers) can be taken for it.
    low, high = bound_axis.get_ylim()
    reach = max(abs(low), abs(high), 1e-3)
    bound_axis.set_ylim(-reach, reach)
    bound_axis.axhline(0.0, color="black", linewidth=1.6, label="bound = 0 (right axis)")
    bound_axis.set_ylabel("bound (> 0: Ramanujan)")
    handles = acc_axis.get_legend_handles_labels()
    more = bound_axis.get_legend_handles_labels()
    acc_axis.legend(handles[0] + more[0], handles[1] + more[1], fontsize=8, loc="upper center",
                    bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    seeds = panel.trials["seed"].nunique()
    acc_axis.set_title(f"mask {panel.method}; {seeds} seed{'s' if seeds > 1 else ''}", fontsize=9)


def _figure(panels: list[Panel], spec: SweepSpec, crossings: pd.DataFrame, claim: pd.DataFrame, path: Path) -> None:
    """One figure per layer (and training noise): one Figure-3-style plot per mask method, side by side."""
    fig, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 6.2), dpi=150, squeeze=False)
    for axis, panel in zip(axes[0], panels, strict=True):
        _draw_panel(axis, panel, spec, crossings, claim)
    first = panels[0]
    noise = f", train noise var {first.train_variance:g}" if first.train_variance else ""
    title = (f"{spec.name}: {spec.model.cell.upper()} H={spec.model.hidden}, init {spec.model.init_label}, "
             f"{spec.training.clipping}; pruned {first.pruned}{noise}; noise p={spec.noise.fraction:g} (sigma = variance). "
             f"Vertical lines: bound crossings ({spec.report.figure_weighting} graph; bound's style) and "
             f"accuracy drop > {100 * spec.report.drop_threshold:g} point vs dense (dotted, accuracy's colour)")
    # Wrapped to the figure's width (about 15 characters an inch at this size): never cut off.
    fig.suptitle(textwrap.fill(title, width=int(15 * fig.get_figwidth())), fontsize=9)
    fig.tight_layout()
    for suffix in (".png", ".svg", ".pdf"):  # PNG to look at; SVG and PDF for papers (vector)
        fig.savefig(path.with_suffix(suffix))
    plt.close(fig)
