"""The crossing report: where each layer's bounds turn negative, and accuracy against remaining edges.

Reads the Optuna study (never the trackers). A *panel* is the set of trials that vary one
thing: with schedule `each`/`independent`, panel L holds the trials where every other
maskable layer is dense (the paper's one panel per layer); with `tied`, one panel holds all
trials, every layer pruned together. Each panel reports the graph of its layer and the
per-step graph [M_xh | M_hh], and says which layers were pruned.
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
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from .models import GATES  # noqa: E402
from .spec import SweepSpec  # noqa: E402
from .spectral import find_crossing  # noqa: E402
from .trial import accuracy_key  # noqa: E402

__all__ = ["Report", "trials_frame", "crossing_rows", "write_report"]

_BOUND_LABELS = {"delta_r": "Delta_R", "delta_s": "Delta_S", "biregular": "biregular bound"}


@dataclass
class Panel:
    layer: str  # the layer on the x-axis ("W_xh"; with `tied`, the first layer)
    pruned: str  # what was pruned, in words
    train_variance: float
    trials: pd.DataFrame  # sorted by remaining, densest first

    @property
    def slug(self) -> str:
        name = "tied" if self.pruned.endswith("(tied)") else self.layer
        return name + (f"_trainvar{self.train_variance:g}" if self.train_variance else "")


@dataclass
class Report:
    crossings: pd.DataFrame
    trials: pd.DataFrame
    markdown: str
    files: dict[str, Path] = field(default_factory=dict)
    failed: list[dict] = field(default_factory=list)  # trials whose point never completed, and why


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


def _panels(frame: pd.DataFrame, spec: SweepSpec) -> list[Panel]:
    layers = spec.masks.layers
    variances = sorted(frame["train_noise_variance"].unique()) if "train_noise_variance" in frame else [0.0]
    panels = []
    for variance in variances:
        part = frame[frame["train_noise_variance"] == variance] if "train_noise_variance" in frame else frame
        if spec.masks.schedule == "tied":
            label = "+".join(layers) + " (tied)"
            panels.append(Panel(layers[0], label, variance,
                                part.sort_values(f"remaining_{layers[0]}", ascending=False)))
            continue
        for layer in layers:
            others_dense = pd.Series(True, index=part.index)
            for other in layers:
                if other != layer:
                    others_dense &= part[f"remaining_{other}"] == 1.0
            rows = part[others_dense].sort_values(f"remaining_{layer}", ascending=False)
            if len(rows):
                others = [o for o in layers if o != layer]
                label = layer + (f" ({', '.join(others)} dense)" if others else "")
                panels.append(Panel(layer, label, variance, rows))
    return panels


def _panel_graphs(panel: Panel, spec: SweepSpec) -> list[str]:
    """The graphs a panel reports: its layer(s), their gate blocks (LSTM/GRU), the step graph."""
    layers = spec.masks.layers if panel.pruned.endswith("(tied)") else [panel.layer]
    gates = GATES[spec.model.cell] if len(GATES[spec.model.cell]) > 1 else ()
    return [g for layer in layers for g in (layer, *(f"{layer}.{gate}" for gate in gates))] + ["step"]


def crossing_rows(frame: pd.DataFrame, spec: SweepSpec) -> pd.DataFrame:
    """Per panel, graph, weighting and bound: the remaining edge % where the bound first turns negative."""
    rows = []
    weightings = ["binary", "weighted"] if spec.spectral.weighted else ["binary"]
    for panel in _panels(frame, spec):
        x = panel.trials[f"remaining_{panel.layer}"].tolist()
        for graph in _panel_graphs(panel, spec):
            for weighting in weightings:
                for bound in spec.report.bounds:
                    column = f"{graph}/{weighting}/{bound}"
                    if column not in panel.trials:
                        continue
                    crossing = find_crossing(x, panel.trials[column].tolist())
                    rows.append({
                        "pruned": panel.pruned,
                        "train_noise_variance": panel.train_variance,
                        "graph": graph if graph != "step" else "step [W_xh | W_hh] -> h_t",
                        "weighting": weighting,
                        "bound": _BOUND_LABELS[bound],
                        "status": crossing.status,
                        "crossing_pct": None if crossing.remaining is None else round(100 * crossing.remaining, 3),
                        "upper_pct": None if crossing.upper is None else 100 * crossing.upper,
                        "lower_pct": None if crossing.lower is None else 100 * crossing.lower,
                        "where": crossing.describe(),
                    })
    return pd.DataFrame(rows)


def _accuracy_columns(spec: SweepSpec) -> list[tuple[str, str]]:
    return [(accuracy_key(v), "clean" if v == 0 else f"noise var {v:g}") for v in spec.noise.test_variances]


def _figure(panel: Panel, spec: SweepSpec, crossings: pd.DataFrame, path: Path) -> None:
    weighting = spec.report.figure_weighting
    x = 100 * panel.trials[f"remaining_{panel.layer}"]
    fig, acc_axis = plt.subplots(figsize=(7.5, 4.6), dpi=120)
    for column, label in _accuracy_columns(spec):
        if column in panel.trials:
            acc_axis.plot(x, 100 * panel.trials[column], marker="o", ms=3, label=f"acc {label}")
    acc_axis.set_xscale("log")
    acc_axis.set_xticks(sorted(set(x)))
    acc_axis.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    acc_axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    acc_axis.invert_xaxis()  # dense on the left; pruning harder moves right
    acc_axis.set_xlabel(f"remaining edges of {panel.layer} (%)")
    acc_axis.set_ylabel("test accuracy (%)")
    acc_axis.set_ylim(0, 100)
    acc_axis.grid(True, which="both", alpha=0.25)
    bound_axis = acc_axis.twinx()
    styles = {"delta_r": "--", "delta_s": ":", "biregular": "-."}
    colors = {"delta_r": "black", "delta_s": "dimgray", "biregular": "saddlebrown"}
    for bound in spec.report.figure_bounds:
        column = f"{panel.layer}/{weighting}/{bound}"
        if column not in panel.trials:
            continue
        values = panel.trials[column]
        finite = values.map(math.isfinite)  # +inf at the dense point cannot be drawn
        bound_axis.plot(x[finite], values[finite], styles[bound], color=colors[bound],
                        label=f"{_BOUND_LABELS[bound]} ({weighting})")
        match = crossings[(crossings["pruned"] == panel.pruned)
                          & (crossings["train_noise_variance"] == panel.train_variance)
                          & (crossings["graph"] == panel.layer)
                          & (crossings["weighting"] == weighting)
                          & (crossings["bound"] == _BOUND_LABELS[bound])]
        if len(match) and match.iloc[0]["crossing_pct"] is not None and not pd.isna(match.iloc[0]["crossing_pct"]):
            bound_axis.axvline(match.iloc[0]["crossing_pct"], color=colors[bound], linestyle=styles[bound],
                               alpha=0.6, linewidth=1)
    bound_axis.axhline(0.0, color="red", linewidth=0.8, alpha=0.5)
    bound_axis.set_ylabel("bound (> 0: Ramanujan)")
    handles = acc_axis.get_legend_handles_labels()
    more = bound_axis.get_legend_handles_labels()
    acc_axis.legend(handles[0] + more[0], handles[1] + more[1], fontsize=7, loc="lower left")
    noise = f", train noise var {panel.train_variance:g}" if panel.train_variance else ""
    acc_axis.set_title(
        f"{spec.name}: {spec.model.cell.upper()} H={spec.model.hidden}, init {spec.model.init}; "
        f"pruned {panel.pruned}{noise}\nnoise p={spec.noise.fraction:g} (sigma = variance); "
        f"vertical lines: bound crossings ({weighting} graph)",
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


def _markdown(spec: SweepSpec, frame: pd.DataFrame, crossings: pd.DataFrame, figures: list[Path],
              failed: list[dict]) -> str:
    lines = [
        f"# Crossing report: {spec.name}",
        "",
        f"- network: {spec.model.cell.upper()}, H = {spec.model.hidden}, {spec.model.layers} layer(s), "
        f"init **{spec.model.init}**",
        f"- data: {spec.data.summary}",
        f"- training: {spec.training.epochs} dense + {spec.training.finetune_epochs} fine-tuning epochs, "
        f"lr {spec.training.lr:g}, batch {spec.training.batch_size}, seed {spec.training.seed}",
        f"- masks: {spec.masks.method}, schedule {spec.masks.schedule}, layers {', '.join(spec.masks.layers)}"
        " (W_hy dense)",
        f"- noise: p = {spec.noise.fraction:g}, variances {', '.join(f'{v:g}' for v in spec.noise.variances)}"
        f" ({'also at training' if spec.noise.at_training else 'test time only'})",
        f"- spectra: isolated vertices {'removed' if spec.spectral.remove_isolated else 'kept'}; "
        "a dense layer has lambda_2 = 0 and unbounded (+inf) Delta_R, Delta_S",
        f"- finished trials: {len(frame)}",
        "",
        "## Where each bound first turns negative",
        "",
        "| pruned | graph | weighting | bound | remaining edges at crossing |",
        "| --- | --- | --- | --- | --- |",
    ]
    for _, row in crossings.iterrows():
        pruned = row["pruned"] + (f", train var {row['train_noise_variance']:g}" if row["train_noise_variance"] else "")
        lines.append(f"| {pruned} | {row['graph']} | {row['weighting']} | {row['bound']} | {row['where']} |")
    lines += ["", "## Test accuracy (%) against remaining edges", ""]
    acc_cols = [(c, label) for c, label in _accuracy_columns(spec) if c in frame]
    for panel in _panels(frame, spec):
        lines += [f"### pruned {panel.pruned}" + (f", train noise var {panel.train_variance:g}" if panel.train_variance else ""), ""]
        lines.append(f"| remaining {panel.layer} | " + " | ".join(label for _, label in acc_cols)
                     + f" | {panel.layer} Delta_R | {panel.layer} Delta_S |")
        lines.append("| --- " * (len(acc_cols) + 3) + "|")
        for _, row in panel.trials.iterrows():
            accs = " | ".join(f"{100 * row[c]:.2f}" for c, _ in acc_cols)
            dr, ds = row.get(f"{panel.layer}/binary/delta_r"), row.get(f"{panel.layer}/binary/delta_s")
            lines.append(f"| {100 * row[f'remaining_{panel.layer}']:g}% | {accs} | {dr:.3f} | {ds:.3f} |")
        lines.append("")
    lines += _failed_markdown(failed)
    if figures:
        lines += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures] + [""]
    return "\n".join(lines)


def write_report(spec: SweepSpec, study: optuna.Study | None = None) -> Report:
    """Write report.md, crossings.csv, crossings.json, trials.csv and one PNG per panel into <run_dir>/report."""
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
    crossings = crossing_rows(frame, spec)
    figures = []
    for panel in _panels(frame, spec):
        path = out / f"figure_{panel.slug}.png"
        _figure(panel, spec, crossings, path)
        figures.append(path)
    markdown = _markdown(spec, frame, crossings, figures, failed)
    files = {
        "markdown": out / "report.md",
        "crossings_csv": out / "crossings.csv",
        "crossings_json": out / "crossings.json",
        "trials_csv": out / "trials.csv",
    }
    files["markdown"].write_text(markdown)
    crossings.to_csv(files["crossings_csv"], index=False)
    files["crossings_json"].write_text(json.dumps({
        "sweep": spec.name,
        "cell": spec.model.cell,
        "hidden": spec.model.hidden,
        "init": spec.model.init,
        "mask_method": spec.masks.method,
        "schedule": spec.masks.schedule,
        "finished_trials": len(frame),
        "crossings": crossings.astype(object).where(crossings.notna(), None).to_dict(orient="records"),
        "failed_trials": failed,
    }, indent=2))
    frame.sort_values("trial").to_csv(files["trials_csv"], index=False)
    for i, path in enumerate(figures):
        files[f"figure_{i}"] = path
    return Report(crossings, frame, markdown, files, failed)
