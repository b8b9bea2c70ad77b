"""The crossing report: where each layer's bounds turn negative, where accuracy drops, and
whether the first predicts the second.

Reads the Optuna study (never the trackers). A *panel* is the set of trials that vary one
thing: with schedule `each`/`independent`, panel L holds the trials where every other
maskable layer is dense (the paper's one panel per layer); with `tied`, one panel holds all
trials, every layer pruned together. A panel has one mask method (the dense trials belong to
every method's panel) and every seed: curves are means over seeds, with their spread.

The claim under test: accuracy holds while a layer's graph keeps the Ramanujan property and
drops once it is lost. Per panel and noise level the report gives the accuracy drop relative
to dense (same seed), the remaining fraction where the drop first exceeds
`report.drop_threshold`, its distance from each bound's crossing, and the Spearman rank
correlation between the bound and the drop (per seed, then mean and a 95% t-interval over
seeds). A negative correlation supports the claim: the larger the bound, the smaller the drop.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only; no display is needed or wanted
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.stats  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from .models import GATES  # noqa: E402
from .spec import SweepSpec  # noqa: E402
from .spectral import find_crossing  # noqa: E402
from .trial import accuracy_key  # noqa: E402

__all__ = ["Report", "trials_frame", "crossing_rows", "claim_rows", "equal_density_rows", "write_report"]

_BOUND_LABELS = {"delta_r": "Delta_R", "delta_s": "Delta_S", "biregular": "biregular bound"}


@dataclass
class Panel:
    layer: str  # the layer on the x-axis ("W_xh"; with `tied`, the first layer)
    pruned: str  # what was pruned, in words
    train_variance: float
    method: str  # mask method of its masked trials
    trials: pd.DataFrame  # every seed, sorted by remaining, densest first

    @property
    def x(self) -> str:
        return f"remaining_{self.layer}"

    @property
    def slug(self) -> str:
        """File name part of the panel's figure (every method of a layer shares one figure)."""
        name = "tied" if self.pruned.endswith("(tied)") else self.layer
        return name + (f"_trainvar{self.train_variance:g}" if self.train_variance else "")

    def curve(self, column: str) -> pd.DataFrame:
        """Mean, standard deviation and count over seeds of `column`, per remaining fraction."""
        grouped = self.trials.groupby(self.x)[column]
        return pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1).fillna(0.0),
                             "n": grouped.count()}).sort_index(ascending=False)

    def drops(self, column: str) -> pd.Series:
        """Accuracy drop of every trial relative to the dense trial of its seed (the dense model's
        own accuracy before masking when the sweep has no dense trial for that seed)."""
        dense_rows = self.trials[self.trials[self.x] >= 1.0]
        dense_by_seed = dense_rows.groupby("seed")[column].mean()
        reference = self.trials["seed"].map(dense_by_seed)
        fallback = f"dense/{column}"
        if fallback in self.trials:
            reference = reference.fillna(self.trials[fallback])
        return reference - self.trials[column]


@dataclass
class Report:
    crossings: pd.DataFrame
    trials: pd.DataFrame
    markdown: str
    files: dict[str, Path] = field(default_factory=dict)
    failed: list[dict] = field(default_factory=list)  # trials whose point never completed, and why
    claim: pd.DataFrame = field(default_factory=pd.DataFrame)  # the claim, tested (see module notes)


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per finished trial: its number and every scalar it recorded."""
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        row = {"trial": t.number}
        row.update({k: v for k, v in t.user_attrs.items() if isinstance(v, (int, float, str, bool))})
        rows.append(row)
    return pd.DataFrame(rows)


def failed_trials(study: optuna.Study) -> list[dict]:
    """Failed trials whose grid point never completed since, with the reason stored on them."""
    completed = {tuple(sorted(t.params.items())) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if tuple(sorted(t.params.items())) in completed:
            continue  # retried and completed later
        # Every failure path of a live worker stores an error; only a dead worker leaves none.
        reason = t.user_attrs.get("error", "its worker stopped sending heartbeats (killed or lost)")
        rows.append({"trial": t.number, "params": t.params, "reason": reason})
    return rows


def _with_defaults(frame: pd.DataFrame, spec: SweepSpec) -> pd.DataFrame:
    """Columns the panels group by, filled for trials recorded before they existed."""
    frame = frame.copy()
    if "mask_method" not in frame:
        frame["mask_method"] = spec.masks.methods[0]
    if "seed" not in frame:
        frame["seed"] = spec.training.seeds[0]
    if "train_noise_variance" not in frame:
        frame["train_noise_variance"] = 0.0
    return frame


def _panels(frame: pd.DataFrame, spec: SweepSpec) -> list[Panel]:
    layers = spec.masks.layers
    frame = _with_defaults(frame, spec)
    methods = [m for m in spec.masks.methods if m in set(frame["mask_method"])] or sorted(set(frame["mask_method"]))
    panels = []
    for variance in sorted(frame["train_noise_variance"].unique()):
        part = frame[frame["train_noise_variance"] == variance]
        all_dense = pd.Series(True, index=part.index)
        for layer in layers:
            all_dense &= part[f"remaining_{layer}"] >= 1.0
        for method in methods:
            mine = part[(part["mask_method"] == method) | all_dense]
            if spec.masks.schedule == "tied":
                label = "+".join(layers) + " (tied)"
                rows = mine.sort_values(f"remaining_{layers[0]}", ascending=False)
                if (rows[f"remaining_{layers[0]}"] < 1.0).any():
                    panels.append(Panel(layers[0], label, variance, method, rows))
                continue
            for layer in layers:
                others_dense = pd.Series(True, index=mine.index)
                for other in layers:
                    if other != layer:
                        others_dense &= mine[f"remaining_{other}"] == 1.0
                rows = mine[others_dense].sort_values(f"remaining_{layer}", ascending=False)
                if len(rows) and ((rows[f"remaining_{layer}"] < 1.0).any() or len(methods) == 1):
                    others = [o for o in layers if o != layer]
                    label = layer + (f" ({', '.join(others)} dense)" if others else "")
                    panels.append(Panel(layer, label, variance, method, rows))
    return panels


def _panel_graphs(panel: Panel, spec: SweepSpec) -> list[str]:
    """The graphs a panel reports: its layer(s), their gate blocks (LSTM/GRU), the step and unrolled graphs."""
    layers = spec.masks.layers if panel.pruned.endswith("(tied)") else [panel.layer]
    gates = GATES[spec.model.cell] if len(GATES[spec.model.cell]) > 1 else ()
    return [g for layer in layers for g in (layer, *(f"{layer}.{gate}" for gate in gates))] + ["step", "unrolled"]


def _graph_label(graph: str, spec: SweepSpec, frame: pd.DataFrame) -> str:
    if graph == "step":
        return "step [W_xh | W_hh] -> h_t"
    if graph == "unrolled":
        steps = frame["unrolled/binary/steps"].dropna() if "unrolled/binary/steps" in frame else pd.Series(dtype=float)
        return f"unrolled over k = {int(steps.iloc[0])} steps" if len(steps) else "unrolled over k steps"
    return graph


def _crossing_fields(crossing) -> dict:
    return {
        "status": crossing.status,
        "crossing_pct": None if crossing.remaining is None else round(100 * crossing.remaining, 3),
        "upper_pct": None if crossing.upper is None else 100 * crossing.upper,
        "lower_pct": None if crossing.lower is None else 100 * crossing.lower,
        "where": crossing.describe(),
    }


def crossing_rows(frame: pd.DataFrame, spec: SweepSpec) -> pd.DataFrame:
    """Per panel, graph, weighting and bound: the remaining edge % where the bound (mean over
    seeds) first turns negative."""
    rows = []
    weightings = ["binary", "weighted"] if spec.spectral.weighted else ["binary"]
    for panel in _panels(frame, spec):
        x = panel.trials[panel.x].tolist()
        for graph in _panel_graphs(panel, spec):
            for weighting in weightings:
                for bound in spec.report.bounds:
                    column = f"{graph}/{weighting}/{bound}"
                    if column not in panel.trials:
                        continue
                    rows.append({
                        "pruned": panel.pruned,
                        "mask_method": panel.method,
                        "train_noise_variance": panel.train_variance,
                        "graph": _graph_label(graph, spec, frame),
                        "weighting": weighting,
                        "bound": _BOUND_LABELS[bound],
                        **_crossing_fields(find_crossing(x, panel.trials[column].tolist())),
                    })
    return pd.DataFrame(rows)


def _spearman_over_seeds(panel: Panel, bound_column: str, drops: pd.Series) -> tuple[float, float, float, int]:
    """Spearman's rho between a bound and the accuracy drop, per seed; mean and 95% t-interval."""
    rhos = []
    for _, rows in panel.trials.groupby("seed"):
        bound, drop = rows[bound_column], drops[rows.index]
        keep = bound.notna() & drop.notna()
        if keep.sum() < 3 or bound[keep].nunique() < 2 or drop[keep].nunique() < 2:
            continue
        rho = scipy.stats.spearmanr(bound[keep].to_numpy(), drop[keep].to_numpy()).statistic
        if not math.isnan(rho):
            rhos.append(float(rho))
    if not rhos:
        return math.nan, math.nan, math.nan, 0
    mean = float(np.mean(rhos))
    if len(rhos) < 2:
        return mean, math.nan, math.nan, 1
    half = float(scipy.stats.t.ppf(0.975, len(rhos) - 1) * np.std(rhos, ddof=1) / math.sqrt(len(rhos)))
    return mean, max(-1.0, mean - half), min(1.0, mean + half), len(rhos)


def _verdict(bound_pct: float | None, drop_pct: float | None, threshold_points: float) -> str:
    if bound_pct is None and drop_pct is None:
        return "neither the bound nor accuracy crossed"
    if bound_pct is None:
        return f"accuracy dropped (at {drop_pct:.2f}%) while the bound stayed positive"
    if drop_pct is None:
        return f"the bound crossed, accuracy never dropped by more than {threshold_points:g} point(s)"
    gap = bound_pct - drop_pct
    if gap >= 0:
        return f"accuracy held until the crossing and {gap:.2f} points of remaining edges beyond"
    return f"accuracy dropped {-gap:.2f} points of remaining edges before the bound crossed"


def equal_density_rows(frame: pd.DataFrame, spec: SweepSpec) -> pd.DataFrame:
    """Does the bound predict accuracy beyond what the number of edges does?

    Across a sweep's rank correlation, the bound and the accuracy both fall as edges are removed,
    so rho reflects density as much as expansion. Here the trials of one layer at ONE remaining
    fraction (every mask method and seed) are compared: Spearman's rho between the bound and the
    drop at each fraction with at least 4 trials, then the mean over fractions. Negative: at equal
    density, the better expander lost less accuracy.
    """
    rows = []
    panels = [p for p in _panels(frame, spec) if (p.trials[p.x] < 1.0).any()]
    groups: dict[tuple, list[Panel]] = {}
    for panel in panels:
        groups.setdefault((panel.pruned, panel.train_variance, panel.layer), []).append(panel)
    for (pruned, variance, layer), members in groups.items():
        for column, noise in _accuracy_columns(spec):
            if column not in frame:
                continue
            pieces = []
            for panel in members:
                masked = panel.trials[panel.trials[panel.x] < 1.0]
                pieces.append(masked.assign(_drop=panel.drops(column)[masked.index]))
            trials = pd.concat(pieces)
            for bound in spec.report.bounds:
                bound_column = f"{layer}/binary/{bound}"
                if bound_column not in trials:
                    continue
                rhos = []
                for _, same in sorted(trials.groupby(f"remaining_{layer}"), key=lambda kv: -kv[0]):
                    keep = same[bound_column].notna() & same["_drop"].notna()
                    if keep.sum() >= 4 and same.loc[keep, bound_column].nunique() > 1 and same.loc[keep, "_drop"].nunique() > 1:
                        rho = scipy.stats.spearmanr(same.loc[keep, bound_column], same.loc[keep, "_drop"]).statistic
                        if not math.isnan(rho):
                            rhos.append(float(rho))
                rows.append({"pruned": pruned, "train_noise_variance": variance, "noise": noise,
                             "bound": _BOUND_LABELS[bound], "fractions": len(rhos),
                             "mean_rho": float(np.mean(rhos)) if rhos else math.nan,
                             "rhos": ", ".join(f"{r:+.2f}" for r in rhos)})
    return pd.DataFrame(rows)


def _equal_density_markdown(table: pd.DataFrame) -> list[str]:
    table = table[table["fractions"] > 0] if not table.empty else table
    if table.empty:
        return []
    lines = ["## At equal remaining edges: does the better expander lose less accuracy?", "",
             "Spearman's rho between a bound (binary layer graph) and the accuracy drop among the trials "
             "of one remaining fraction (every mask method and seed), per fraction, then the mean. "
             "This separates expansion from density, which a rank correlation across fractions cannot. "
             "Negative supports the claim.", "",
             "| pruned | noise | bound | mean rho | rho per fraction (dense to sparse) |", "| --- | --- | --- | --- | --- |"]
    for _, row in table.iterrows():
        where = row["pruned"] + (f", train var {row['train_noise_variance']:g}" if row["train_noise_variance"] else "")
        lines.append(f"| {where} | {row['noise']} | {row['bound']} | {row['mean_rho']:+.2f} | {row['rhos']} |")
    return lines + [""]


def claim_rows(frame: pd.DataFrame, spec: SweepSpec) -> pd.DataFrame:
    """Per panel, noise level, graph and bound: bound crossing vs accuracy-drop crossing, and
    the rank correlation between the bound and the drop (see the module notes)."""
    threshold = spec.report.drop_threshold
    rows = []
    for panel in _panels(frame, spec):
        if not (panel.trials[panel.x] < 1.0).any():
            continue
        x = panel.trials[panel.x].tolist()
        for column, noise in _accuracy_columns(spec):
            if column not in panel.trials:
                continue
            drops = panel.drops(column)
            drop_crossing = find_crossing(x, (threshold - drops).tolist())
            drop_pct = None if drop_crossing.remaining is None else 100 * drop_crossing.remaining
            for graph in (panel.layer, "unrolled"):
                for bound in spec.report.bounds:
                    bound_column = f"{graph}/binary/{bound}"
                    if bound_column not in panel.trials:
                        continue
                    crossing = find_crossing(x, panel.trials[bound_column].tolist())
                    bound_pct = None if crossing.status != "crossed" else 100 * crossing.remaining
                    if crossing.status == "negative_at_start":
                        bound_pct = 100 * crossing.lower
                    rho, low, high, seeds = _spearman_over_seeds(panel, bound_column, drops)
                    rows.append({
                        "pruned": panel.pruned,
                        "mask_method": panel.method,
                        "train_noise_variance": panel.train_variance,
                        "noise": noise,
                        "graph": _graph_label(graph, spec, frame),
                        "bound": _BOUND_LABELS[bound],
                        "bound_status": crossing.status,
                        "bound_crossing_pct": None if bound_pct is None else round(bound_pct, 3),
                        "drop_crossing_pct": None if drop_pct is None else round(drop_pct, 3),
                        "held_beyond_crossing_pts": (None if bound_pct is None or drop_pct is None
                                                     else round(bound_pct - drop_pct, 3)),
                        "verdict": _verdict(bound_pct, drop_pct, 100 * threshold),
                        "spearman_rho": rho,
                        "rho_ci_low": low,
                        "rho_ci_high": high,
                        "seeds": seeds,
                    })
    return pd.DataFrame(rows)


def _accuracy_columns(spec: SweepSpec) -> list[tuple[str, str]]:
    return [(accuracy_key(v), "clean" if v == 0 else f"noise var {v:g}") for v in spec.noise.test_variances]


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
        x, color = 100 * curve.index.to_numpy(), colors[index % len(colors)]
        acc_axis.plot(x, 100 * curve["mean"], marker="o", ms=3, color=color, label=f"acc {label}")
        if (curve["n"] > 1).any():
            acc_axis.fill_between(x, 100 * (curve["mean"] - curve["std"]), 100 * (curve["mean"] + curve["std"]),
                                  color=color, alpha=0.15, linewidth=0)
        match = claim[(claim["pruned"] == panel.pruned) & (claim["mask_method"] == panel.method)
                      & (claim["train_noise_variance"] == panel.train_variance) & (claim["noise"] == label)]
        if len(match) and match.iloc[0]["drop_crossing_pct"] is not None and not pd.isna(match.iloc[0]["drop_crossing_pct"]):
            acc_axis.axvline(match.iloc[0]["drop_crossing_pct"], color=color, linestyle=(0, (1, 2)), linewidth=1.2)
    all_x = 100 * panel.trials[panel.x]
    acc_axis.set_xscale("log")
    acc_axis.set_xticks(sorted(set(all_x)))
    acc_axis.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    acc_axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    acc_axis.invert_xaxis()  # dense on the left; pruning harder moves right
    acc_axis.set_xlabel(f"remaining edges of {panel.layer} (%)")
    acc_axis.set_ylabel("test accuracy (%)")
    acc_axis.set_ylim(0, 100)
    acc_axis.grid(True, which="both", alpha=0.25)
    bound_axis = acc_axis.twinx()
    styles = {"delta_r": "--", "delta_s": ":", "biregular": "-."}
    bound_colors = {"delta_r": "black", "delta_s": "dimgray", "biregular": "saddlebrown"}
    for bound in spec.report.figure_bounds:
        column = f"{panel.layer}/{weighting}/{bound}"
        if column not in panel.trials:
            continue
        curve = panel.curve(column)
        finite = np.isfinite(curve["mean"].to_numpy())  # +inf at the dense point cannot be drawn
        bound_axis.plot(100 * curve.index.to_numpy()[finite], curve["mean"].to_numpy()[finite], styles[bound],
                        color=bound_colors[bound], label=f"{_BOUND_LABELS[bound]} ({weighting})")
        match = crossings[(crossings["pruned"] == panel.pruned) & (crossings["mask_method"] == panel.method)
                          & (crossings["train_noise_variance"] == panel.train_variance)
                          & (crossings["graph"] == panel.layer) & (crossings["weighting"] == weighting)
                          & (crossings["bound"] == _BOUND_LABELS[bound])]
        if len(match) and match.iloc[0]["crossing_pct"] is not None and not pd.isna(match.iloc[0]["crossing_pct"]):
            bound_axis.axvline(match.iloc[0]["crossing_pct"], color=bound_colors[bound], linestyle=styles[bound],
                               alpha=0.7, linewidth=1.2)
    bound_axis.axhline(0.0, color="red", linewidth=0.8, alpha=0.5)
    bound_axis.set_ylabel("bound (> 0: Ramanujan)")
    handles = acc_axis.get_legend_handles_labels()
    more = bound_axis.get_legend_handles_labels()
    acc_axis.legend(handles[0] + more[0], handles[1] + more[1], fontsize=6, loc="lower left")
    seeds = panel.trials["seed"].nunique()
    acc_axis.set_title(f"mask {panel.method}; {seeds} seed{'s' if seeds > 1 else ''}", fontsize=8)


def _figure(panels: list[Panel], spec: SweepSpec, crossings: pd.DataFrame, claim: pd.DataFrame, path: Path) -> None:
    """One figure per layer (and training noise): one Figure-3-style plot per mask method, side by side."""
    fig, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 4.8), dpi=110, squeeze=False)
    for axis, panel in zip(axes[0], panels, strict=True):
        _draw_panel(axis, panel, spec, crossings, claim)
    first = panels[0]
    noise = f", train noise var {first.train_variance:g}" if first.train_variance else ""
    fig.suptitle(
        f"{spec.name}: {spec.model.cell.upper()} H={spec.model.hidden}, init {spec.model.init}; pruned "
        f"{first.pruned}{noise}; noise p={spec.noise.fraction:g} (sigma = variance)\n"
        f"vertical lines: bound crossings ({spec.report.figure_weighting} graph; bound's style) and "
        f"accuracy drop > {100 * spec.report.drop_threshold:g} point vs dense (dotted, accuracy's colour)",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _failed_markdown(failed: list[dict]) -> list[str]:
    if not failed:
        return []
    lines = ["## Failed trials", "", "They are rerun at the next launch.", "", "| trial | parameters | reason |",
             "| --- | --- | --- |"]
    for row in failed:
        params = ", ".join(f"{k}={v}" for k, v in row["params"].items())
        lines.append(f"| {row['trial']} | {params} | {row['reason'].replace('|', '/')} |")
    return lines + [""]


def _fmt_pct(value) -> str:
    return "-" if value is None or pd.isna(value) else f"{value:.2f}%"


def _fmt_rho(row) -> str:
    if pd.isna(row["spearman_rho"]):
        return "n/a"
    if pd.isna(row["rho_ci_low"]):
        return f"{row['spearman_rho']:+.2f} (1 seed)"
    return f"{row['spearman_rho']:+.2f} [{row['rho_ci_low']:+.2f}, {row['rho_ci_high']:+.2f}]"


def _mean_std(curve: pd.DataFrame, remaining: float, scale: float = 100.0, digits: int = 2) -> str:
    if remaining not in curve.index:
        return "-"
    row = curve.loc[remaining]
    text = f"{scale * row['mean']:.{digits}f}"
    return text + (f" ± {scale * row['std']:.{digits}f}" if row["n"] > 1 else "")


def _claim_markdown(spec: SweepSpec, claim: pd.DataFrame) -> list[str]:
    if claim.empty:
        return []
    threshold = 100 * spec.report.drop_threshold
    bounds = [_BOUND_LABELS[b] for b in spec.report.bounds]
    lines = [
        "## The claim, tested: does the bound crossing predict the accuracy drop?",
        "",
        f"Per layer graph (binary mask). *drop* = accuracy of the dense trial of the same seed minus "
        f"the trial's accuracy; *drop > {threshold:g} pt* = the remaining edges where the mean drop first "
        "exceeds the threshold (interpolated). *held* = bound crossing minus drop crossing, in points of "
        "remaining edges: >= 0 means accuracy held at least until the bound crossed. rho = Spearman "
        "rank correlation between the bound and the drop over the panel's trials, mean over seeds "
        "[95% t-interval]; negative supports the claim. Every graph (also the unrolled one) is in claim.csv.",
        "",
        "| pruned | mask | noise | drop > " + f"{threshold:g} pt at | "
        + " | ".join(f"{b} crossing | held | rho({b}, drop)" for b in bounds) + " |",
        "| --- " * (4 + 3 * len(bounds)) + "|",
    ]
    layer_rows = claim[~claim["graph"].str.startswith("unrolled")]
    for (pruned, method, variance, noise), group in layer_rows.groupby(
            ["pruned", "mask_method", "train_noise_variance", "noise"], sort=False):
        cells = []
        for bound in bounds:
            row = group[group["bound"] == bound]
            if not len(row):
                cells += ["-", "-", "-"]
                continue
            row = row.iloc[0]
            held = row["held_beyond_crossing_pts"]
            crossing = {"never": "never", "no_data": "no data"}.get(row["bound_status"])
            cells += [crossing or _fmt_pct(row["bound_crossing_pct"]),
                      "-" if held is None or pd.isna(held) else f"{held:+.2f}", _fmt_rho(row)]
        where = pruned + (f", train var {variance:g}" if variance else "")
        drop = group.iloc[0]["drop_crossing_pct"]
        drop_text = "never" if drop is None or pd.isna(drop) else f"{drop:.2f}%"
        lines.append(f"| {where} | {method} | {noise} | {drop_text} | "
                     + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _methods_markdown(spec: SweepSpec, panels: list[Panel]) -> list[str]:
    """Mask methods side by side at equal remaining edges (only when the sweep has several)."""
    methods = list(dict.fromkeys(p.method for p in panels))
    if len(methods) < 2:
        return []
    noisiest = _accuracy_columns(spec)[-1]
    lines = ["## Mask methods at equal remaining edges", "",
             f"Mean ± std over seeds. Accuracy in %, clean and at {noisiest[1]}; bounds of the layer's binary "
             "graph; *kept*: the % of edges the mask really kept (a regular mask keeps d of every row's "
             "inputs, so it rounds the asked fraction to a multiple of 1/inputs, and never goes below one).", ""]
    by_key: dict[tuple, dict[str, Panel]] = {}
    for panel in panels:
        by_key.setdefault((panel.pruned, panel.train_variance, panel.layer), {})[panel.method] = panel
    for (pruned, variance, layer), mine in by_key.items():
        lines += [f"### pruned {pruned}" + (f", train noise var {variance:g}" if variance else ""), ""]
        header = [f"remaining {layer}"]
        for method in mine:
            header += [f"{method} kept", f"{method} clean", f"{method} {noisiest[1]}", f"{method} Delta_R",
                       f"{method} Delta_S"]
        lines += ["| " + " | ".join(header) + " |", "| --- " * len(header) + "|"]
        fractions = sorted({r for p in mine.values() for r in p.trials[p.x]}, reverse=True)
        for r in fractions:
            cells = [f"{100 * r:g}%"]
            for panel in mine.values():
                kept = f"{layer}/kept_fraction"
                cells += [_mean_std(panel.curve(kept), r, 100.0, 1).split(" ±")[0] if kept in panel.trials else "-",
                          _mean_std(panel.curve("acc/clean"), r),
                          _mean_std(panel.curve(noisiest[0]), r) if noisiest[0] in panel.trials else "-"]
                for bound in ("delta_r", "delta_s"):
                    column = f"{layer}/binary/{bound}"
                    cells.append(_mean_std(panel.curve(column), r, 1.0, 3) if column in panel.trials else "-")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _markdown(spec: SweepSpec, frame: pd.DataFrame, crossings: pd.DataFrame, claim: pd.DataFrame,
              equal_density: pd.DataFrame, figures: list[Path], failed: list[dict]) -> str:
    panels = _panels(frame, spec)
    seeds = ", ".join(str(s) for s in spec.training.seeds)
    lines = [
        f"# Crossing report: {spec.name}",
        "",
        f"- network: {spec.model.cell.upper()}, H = {spec.model.hidden}, {spec.model.layers} layer(s), "
        f"init **{spec.model.init}**",
        f"- data: {spec.data.summary}",
        f"- training: {spec.training.epochs} dense + {spec.training.finetune_epochs} fine-tuning epochs, "
        f"lr {spec.training.lr:g}, batch {spec.training.batch_size}, seed(s) {seeds}",
        f"- masks: {', '.join(spec.masks.methods)}, schedule {spec.masks.schedule}, layers "
        f"{', '.join(spec.masks.layers)} (W_hy dense)",
        f"- noise: p = {spec.noise.fraction:g}, variances {', '.join(f'{v:g}' for v in spec.noise.variances)}"
        f" ({'also at training' if spec.noise.at_training else 'test time only'})",
        f"- spectra: isolated vertices {'removed' if spec.spectral.remove_isolated else 'kept'}; "
        "a dense layer has lambda_2 = 0 and unbounded (+inf) Delta_R, Delta_S; the weighted graph "
        "uses |W| on the mask, and its Delta_S uses the weighted graph's own lambda_1",
        f"- finished trials: {len(frame)}",
        "",
        "## Where each bound first turns negative",
        "",
        "Bounds are averaged over seeds at each remaining fraction before the crossing is found.",
        "",
        "| pruned | mask | graph | weighting | bound | remaining edges at crossing |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for _, row in crossings.iterrows():
        pruned = row["pruned"] + (f", train var {row['train_noise_variance']:g}" if row["train_noise_variance"] else "")
        lines.append(f"| {pruned} | {row['mask_method']} | {row['graph']} | {row['weighting']} | {row['bound']} "
                     f"| {row['where']} |")
    lines.append("")
    lines += _claim_markdown(spec, claim)
    lines += _equal_density_markdown(equal_density)
    lines += _methods_markdown(spec, panels)
    lines += ["## Test accuracy (%) against remaining edges", ""]
    acc_cols = [(c, label) for c, label in _accuracy_columns(spec) if c in frame]
    for panel in panels:
        lines += [f"### pruned {panel.pruned}, mask {panel.method}"
                  + (f", train noise var {panel.train_variance:g}" if panel.train_variance else ""), ""]
        lines.append(f"| remaining {panel.layer} | " + " | ".join(label for _, label in acc_cols)
                     + f" | {panel.layer} Delta_R | {panel.layer} Delta_S |")
        lines.append("| --- " * (len(acc_cols) + 3) + "|")
        curves = {c: panel.curve(c) for c, _ in acc_cols}
        for r in sorted(set(panel.trials[panel.x]), reverse=True):
            accs = " | ".join(_mean_std(curves[c], r) for c, _ in acc_cols)
            bounds = [_mean_std(panel.curve(f"{panel.layer}/binary/{b}"), r, 1.0, 3)
                      if f"{panel.layer}/binary/{b}" in panel.trials else "-" for b in ("delta_r", "delta_s")]
            lines.append(f"| {100 * r:g}% | {accs} | {bounds[0]} | {bounds[1]} |")
        lines.append("")
    lines += _failed_markdown(failed)
    if figures:
        lines += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures] + [""]
    return "\n".join(lines)


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON-ready dicts: NaN -> null, numpy scalars -> Python."""
    if frame.empty:
        return []
    return json.loads(frame.to_json(orient="records"))


def write_report(spec: SweepSpec, study: optuna.Study | None = None) -> Report:
    """Write report.md, crossings.csv/json, claim.csv, trials.csv and one PNG per layer into <run_dir>/report."""
    if study is None:
        from .sweep import open_study

        study = open_study(spec, create=False)
    frame = trials_frame(study)
    failed = failed_trials(study)
    out = spec.run_path / "report"
    out.mkdir(parents=True, exist_ok=True)
    if frame.empty:
        markdown = "\n".join([f"# Crossing report: {spec.name}", "", "No finished trials yet.", "",
                              *_failed_markdown(failed)])
        (out / "report.md").write_text(markdown)
        return Report(pd.DataFrame(), frame, markdown, {"markdown": out / "report.md"}, failed)
    frame = _with_defaults(frame, spec)
    crossings = crossing_rows(frame, spec)
    claim = claim_rows(frame, spec)
    equal_density = equal_density_rows(frame, spec)
    figures = []
    grouped: dict[str, list[Panel]] = {}
    for panel in _panels(frame, spec):
        grouped.setdefault(panel.slug, []).append(panel)
    for slug, panels in grouped.items():
        path = out / f"figure_{slug}.png"
        _figure(panels, spec, crossings, claim, path)
        figures.append(path)
    markdown = _markdown(spec, frame, crossings, claim, equal_density, figures, failed)
    files = {
        "markdown": out / "report.md",
        "crossings_csv": out / "crossings.csv",
        "crossings_json": out / "crossings.json",
        "claim_csv": out / "claim.csv",
        "trials_csv": out / "trials.csv",
    }
    files["markdown"].write_text(markdown)
    crossings.to_csv(files["crossings_csv"], index=False)
    claim.to_csv(files["claim_csv"], index=False)
    files["crossings_json"].write_text(json.dumps({
        "sweep": spec.name,
        "cell": spec.model.cell,
        "hidden": spec.model.hidden,
        "init": spec.model.init,
        "mask_methods": spec.masks.methods,
        "seeds": spec.training.seeds,
        "schedule": spec.masks.schedule,
        "drop_threshold": spec.report.drop_threshold,
        "finished_trials": len(frame),
        "crossings": _records(crossings),
        "claim": _records(claim),
        "equal_density": _records(equal_density),
        "failed_trials": failed,
    }, indent=2))
    frame.sort_values("trial").to_csv(files["trials_csv"], index=False)
    for i, path in enumerate(figures):
        files[f"figure_{i}"] = path
    return Report(crossings, frame, markdown, files, failed, claim)
