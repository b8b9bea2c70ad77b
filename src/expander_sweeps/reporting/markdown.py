"""The report's Markdown: the header with every definition, the tables, the claim and comparison text."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..graphs.crossings import crossing_text
from ..graphs.graph_measures import added_quantities
from ..pruning.mask_methods import BUILT_IN_METHODS, mask_method
from ..results import RAMANUJAN_BOUNDS, bound_label
from ..spec import SweepSpec
from .analysis import Panel, _accuracy_columns, _panels, drop_points
from .claim_stats import (
    ALPHA,
    CALIBRATION_NOTE,
    PERMUTATIONS,
)
from .report_sections import render_sections


def _expansion_test_markdown(table: pd.DataFrame) -> list[str]:
    if table.empty:
        return []
    looks = int(table["looks"].iloc[0])
    lines = ["## Does expansion matter beyond density? (the test that can fail)", "",
             "At the same kept fraction, does a larger bound go with a smaller accuracy drop? Trials are "
             "compared only within cells of equal asked fraction and equal mask method (a fixed effect per "
             "cell, so no shape of the accuracy curve is assumed), with a fixed effect per seed (a seed's "
             "trials share a dense model and a test set). r is the partial correlation of the drop and the "
             "bound (binary layer graph) left after both effects; p comes from permuting the drop's residuals "
             f"within cells ({PERMUTATIONS} permutations, Freedman-Lane, fixed random seed). "
             f"This table takes **{looks} looks** (layers x noise levels x measures with a test: the report's "
             "bounds and the opt-in measures the spec asks for); their p-values "
             f"are **Holm-adjusted** over all of them. Rule fixed in advance: **supported** when the adjusted "
             f"p < {ALPHA:g} and r < 0, **contradicted** when the adjusted p < {ALPHA:g} and r > 0, "
             "**inconclusive** otherwise, and always when no two trials share a fraction and mask method "
             "(one seed: no comparison at equal density). Measured false-verdict rate on synthetic sweeps "
             f"with no effect of the bound (five null shapes): {CALIBRATION_NOTE}.", "",
             "| pruned | noise | graph | measure | n (cells) | partial r | p (Holm) | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for _, row in table.iterrows():
        where = row["pruned"] + (f", train var {row['train_noise_variance']:g}" if row["train_noise_variance"] else "")
        r = "n/a" if pd.isna(row["partial_r"]) else f"{row['partial_r']:+.2f}"
        p = "n/a" if pd.isna(row["p_value"]) else f"{row['p_value']:.3g} ({row['p_holm']:.3g})"
        lines.append(f"| {_cell(where)} | {row['noise']} | {_cell(row['graph'])} | {row['bound']} "
                     f"| {row['n']} ({row['cells']}) | {r} | {p} | **{row['verdict']}**: {_cell(row['why'])} |")
    return lines + [""]


def _measures_side_by_side(table: pd.DataFrame) -> list[str]:
    """The test above turned around: one row per measure, its verdict at each noise level side by
    side, so a reader sees which measure carries information beyond density and which is density
    in disguise (shown only when several measures were tested)."""
    if table.empty or table["bound"].nunique() < 2:
        return []
    noises = list(dict.fromkeys(table["noise"]))
    pooled = "partial_r_methods_pooled" in table and table["partial_r_methods_pooled"].notna().any()
    lines = ["## Which measure predicts the drop beyond density?", "",
             "The verdicts of the table above (same rule, same Holm family), one row per measure. Each cell: "
             "verdict (partial r at equal fraction and mask method). A measure that is *inconclusive* "
             "everywhere while the trials span several seeds carries no information the kept fraction does "
             "not: density in disguise, in this sweep."
             + (" *r, methods pooled*: the same partial r with every mask method in one cell per fraction "
                "(clean accuracy): graphs of different methods at equal density compared directly. It is "
                "descriptive, not a verdict: a method's own effect on accuracy (a better method for reasons "
                "other than its graph) is not separated from the measure's." if pooled else ""), "",
             "| pruned | graph | measure | " + " | ".join(noises) + (" | r, methods pooled |" if pooled else " |"),
             "| --- " * (3 + len(noises) + (1 if pooled else 0)) + "|"]
    for (pruned, graph, measure), group in table.groupby(["pruned", "graph", "bound"], sort=False):
        cells = []
        for noise in noises:
            row = group[group["noise"] == noise]
            if not len(row):
                cells.append("-")
                continue
            row = row.iloc[0]
            r = "n/a" if pd.isna(row["partial_r"]) else f"{row['partial_r']:+.2f}"
            cells.append(f"{row['verdict']} ({r})")
        line = f"| {_cell(pruned)} | {_cell(graph)} | {measure} | " + " | ".join(cells)
        if pooled:
            clean = group[group["noise"] == noises[0]]
            value = clean["partial_r_methods_pooled"].iloc[0] if len(clean) else math.nan
            line += " | " + ("n/a" if pd.isna(value) else f"{value:+.2f}")
        lines.append(line + " |")
    return lines + [""]


def _cell(text) -> str:
    """A Markdown table cell: a literal | would split the row."""
    return str(text).replace("|", "\\|")


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


def _mean_std(curve: pd.DataFrame, remaining: float, scale: float = 100.0, digits: int = 2) -> str:
    if remaining not in curve.index:
        return "-"
    row = curve.loc[remaining]
    if math.isinf(row["mean"]):
        return "unbounded"
    if row["n"] == 0 or pd.isna(row["mean"]):
        return "undefined"
    text = f"{scale * row['mean']:.{digits}f}"
    return text + (f" ± {scale * row['std']:.{digits}f}" if row["n"] > 1 else "")


def _bound_crossing_text(row) -> str:
    return crossing_text(row, prefix="bound_")


def _plugin_definitions(spec: SweepSpec) -> list[str]:
    """The header's lines for what plug-ins and opt-in measures added: each added graph quantity and
    non-built-in mask method, with the definition its registration gives (every printed number is defined)."""
    lines = [f"- graph quantity *{q.label}* (`{q.name}`{', a bound' if q.bound else ''}; "
             f"{'spectral.measures' if q.opt_in else 'plug-in'}): {q.definition}"
             for q in added_quantities(spec.spectral.measures)]
    lines += [f"- mask method `{m}` (plug-in): {mask_method(m).description}"
              for m in spec.masks.methods if m not in BUILT_IN_METHODS]
    at_init = [m for m in spec.masks.methods if mask_method(m).start == "init"]
    if at_init:
        # Their trials have another shape: said once, with each method's definition and paper.
        t = spec.training
        lines.append(f"- masks chosen at initialisation ({', '.join(at_init)}): no dense model; the masked initial "
                     f"weights are trained {t.epochs} epochs with the mask held (a lottery ticket: rewound to "
                     f"epoch {spec.masks.rewind_epoch} and trained the {t.epochs - spec.masks.rewind_epoch} left), "
                     f"not fine-tuned {t.finetune_epochs}; their drops are against a dense trial of the same shape "
                     f"(`{at_init[0]}` at remaining 1: trained {t.epochs} epochs from initialisation)")
        lines += [f"- mask method `{m}`: {mask_method(m).description} ({mask_method(m).reference})"
                  for m in at_init if mask_method(m).reference]
    return lines


def _claim_markdown(spec: SweepSpec, claim: pd.DataFrame) -> list[str]:
    if claim.empty:
        return []
    threshold = 100 * spec.report.drop_threshold
    bounds = [bound_label(b) for b in spec.report.bounds]
    lines = [
        "## The claim, tested: does the bound crossing predict the accuracy drop?",
        "",
        "Per layer graph (binary mask), against *kept* edges. *drop* = accuracy of the dense trial of the "
        "same seed minus the trial's accuracy (mean over seeds), with its standard error SE (paired: the "
        "two models were scored on the same test images; binomial for trials that did not store which). "
        f"A fraction *dropped* when its mean drop exceeds both {threshold:g} point(s) and 1.96 SE. "
        "*dropped at* = the kept edges from which accuracy stays dropped (every sparser fraction dropped "
        "too: one noisy point between fractions that did not drop is not a drop), interpolated in log(kept); "
        "the size of the first drop of that run ± SE in points. *held* = bound crossing minus drop "
        "crossing, in points of kept edges: "
        ">= 0 means accuracy held at least until the bound crossed. *never positive*: the bound is <= 0 "
        "already at the densest point, so its crossing predicts nothing. The unrolled graph is in claim.csv.",
        "",
        "| pruned | mask | noise | graph | dropped at | first drop (pts) | "
        + " | ".join(f"{b} crossing | held" for b in bounds) + " |",
        "| --- " * (6 + 2 * len(bounds)) + "|",
    ]
    layer_rows = claim[~claim["graph"].str.startswith("unrolled")]
    for (pruned, method, variance, noise, graph), group in layer_rows.groupby(
            ["pruned", "mask_method", "train_noise_variance", "noise", "graph"], sort=False):
        cells = []
        for bound in bounds:
            row = group[group["bound"] == bound]
            if not len(row):
                cells += ["-", "-"]
                continue
            row = row.iloc[0]
            held = row["held_beyond_crossing_pts"]
            cells += [_bound_crossing_text(row), "-" if held is None or pd.isna(held) else f"{held:+.2f}"]
        where = pruned + (f", train var {variance:g}" if variance else "")
        first = group.iloc[0]
        drop = first["drop_crossing_pct"]
        drop_text = "never" if drop is None or pd.isna(drop) else f"{drop:.2f}%"
        size = first["first_drop_pts"]
        size_text = "-" if size is None or pd.isna(size) else f"{size:.2f}" + (
            "" if pd.isna(first["first_drop_se_pts"]) else f" ± {first['first_drop_se_pts']:.2f}")
        lines.append(f"| {_cell(where)} | {method} | {noise} | {_cell(graph)} | {drop_text} | {size_text} | "
                     + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _methods_markdown(spec: SweepSpec, panels: list[Panel]) -> list[str]:
    """Mask methods side by side at equal remaining edges (only when the sweep has several)."""
    methods = list(dict.fromkeys(p.method for p in panels))
    if len(methods) < 2:
        return []
    noisiest = _accuracy_columns(spec)[-1]
    lines = ["## Mask methods side by side", "",
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
                for bound in RAMANUJAN_BOUNDS:
                    column = f"{layer}/binary/{bound}"
                    cells.append(_mean_std(panel.curve(column), r, 1.0, 3) if column in panel.trials else "-")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _markdown(spec: SweepSpec, frame: pd.DataFrame, crossings: pd.DataFrame, claim: pd.DataFrame,
              expansion: pd.DataFrame, figures: list[Path], failed: list[dict]) -> str:
    panels = _panels(frame, spec)
    seeds = ", ".join(str(s) for s in spec.training.seeds)
    lines = [
        f"# Crossing report: {spec.name}",
        "",
        f"- network: {spec.model.cell.upper()}, H = {spec.model.hidden}, {spec.model.layers} layer(s), "
        f"init **{spec.model.init_label}**",
        f"- data: {spec.data.summary}; {_split_sizes(frame)}",
        f"- training: {spec.training.epochs} dense + {spec.training.finetune_epochs} fine-tuning epochs, "
        f"lr {spec.training.lr:g}, batch {spec.training.batch_size}, {spec.training.clipping}, seed(s) {seeds}",
        f"- fine-tuning engine: {_engines(frame)}",
        f"- masks: {', '.join(spec.masks.methods)}, schedule {spec.masks.schedule}, layers "
        f"{', '.join(spec.masks.layers)} (W_hy dense)",
        f"- noise: p = {spec.noise.fraction:g}, variances {', '.join(f'{v:g}' for v in spec.noise.variances)}"
        f" ({'also at training' if spec.noise.at_training else 'test time only'})",
        f"- spectra: isolated vertices {'removed' if spec.spectral.remove_isolated else 'kept'} (their "
        "share recorded); graphs: each pruned layer, its gate blocks (LSTM/GRU), the step graph "
        "[W_xh, W_hh] -> h_t and the whole unrolled graph; *binary* = the 0/1 mask, *weighted* = |W| on "
        "the mask divided by its mean over kept edges (scale-free), of the fine-tuned weights that were "
        "evaluated (at-mask values in trials.csv as `weighted_at_mask`); the weighted Delta_S uses the "
        "weighted graph's own lambda_1; lambda_1 and lambda_2 are the top two singular values of the "
        "biadjacency (LAPACK's below 256 vertices a side, from 256 on an iterative solver that proves "
        "their squares to 1e-9, relative; LAPACK's SVD of the biadjacency when that proof fails or "
        "lambda_2 < 0.01 lambda_1; the all-ones layer in closed form)",
        "- bounds: Delta_R = (2 sqrt(d_avg - 1) - lambda_2) / lambda_2 and Delta_S = (2 sqrt(lambda_1 - 1) - "
        "lambda_2) / lambda_2 are the seed paper's *ratios* (d_avg over all vertices of both sides); the "
        "*biregular bound* sqrt(d_left - 1) + sqrt(d_right - 1) - lambda_2 is Hoang et al.'s Delta_R "
        "(ICLR 2023) in their *difference* form (their Delta_S is a difference too). For an unbalanced layer "
        "(W_xh of H x 28 inputs, say) Delta_R with d_avg is not the Ramanujan threshold of a biregular graph: "
        "the biregular bound is, and the two cross at very different fractions",
        "- a bound *has the property* when it is > 0. A dense layer's binary graph (all ones) has lambda_2 = 0: "
        "its Delta_R and Delta_S are *unbounded*; its weighted graph has lambda_2 > 0 and finite bounds. "
        "*low degree*: an average output or input degree below 3, where Hoang et al. define no bound; kept, "
        "flagged (`low_degree` in trials.csv), and the crossings are also given without such graphs. "
        "A degenerate graph (no edges, one edge, a star, a complete sub-block left after "
        "removing isolated vertices) has no second eigenvalue to bound: *undefined*, left out of means and "
        "crossings, never counted as having the property. Disconnected graphs are not always negative: "
        "see `components` and `largest_component` in trials.csv",
        *_plugin_definitions(spec),
        "- x-axis: the kept fraction of the layer's edges (mean over seeds); crossings interpolated in "
        "log(kept), the figures' axis",
        f"- finished trials: {len(frame)}",
        "",
        "## Where each bound first stops being positive",
        "",
        "Bounds are averaged over seeds at each fraction (undefined seeds left out) before the crossing "
        "is found. When a curve turns positive again further down, the fraction from which it stays "
        "negative is given too.",
        "",
        "*without low-degree graphs*: the same crossing with the points left out where a seed's graph has "
        "an average output or input degree below 3 (status `low_degree`; Hoang et al. define no bound there; "
        "the asked fractions where that happens are listed).",
        "",
        "| pruned | mask | graph | weighting | bound | kept edges at crossing | without low-degree graphs |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for _, row in crossings.iterrows():
        pruned = row["pruned"] + (f", train var {row['train_noise_variance']:g}" if row["train_noise_variance"] else "")
        low = row.get("low_degree_at_pct") or ""
        without = row.get("without_low_degree", "")
        without = without if not low else f"{without} (low degree at asked {low} %)"
        lines.append(f"| {_cell(pruned)} | {row['mask_method']} | {_cell(row['graph'])} | {row['weighting']} "
                     f"| {row['bound']} | {_cell(row['where'])} | {_cell(without)} |")
    lines.append("")
    lines += _claim_markdown(spec, claim)
    lines += _expansion_test_markdown(expansion)
    lines += _measures_side_by_side(expansion)
    lines += _methods_markdown(spec, panels)
    lines += render_sections(spec, frame, crossings)  # plug-ins' sections (report_sections.py)
    lines += ["## Test accuracy (%) against remaining edges", "",
              "*asked*: the fraction the sweep asked for; *kept*: what the mask kept (mean over seeds); "
              "*clean drop*: mean drop vs dense in points ± its SE (paired where the trials stored their "
              "per-image hits, binomial otherwise).", ""]
    acc_cols = [(c, label) for c, label in _accuracy_columns(spec) if c in frame]
    for panel in panels:
        lines += [f"### pruned {panel.pruned}, mask {panel.method}"
                  + (f", train noise var {panel.train_variance:g}" if panel.train_variance else ""), ""]
        lines.append(f"| asked {panel.layer} | kept | " + " | ".join(label for _, label in acc_cols)
                     + f" | clean drop | {panel.layer} Delta_R | {panel.layer} Delta_S |")
        lines.append("| --- " * (len(acc_cols) + 5) + "|")
        curves = {c: panel.curve(c) for c, _ in acc_cols}
        drops = drop_points(panel, "acc/clean", spec.report.drop_threshold) if "acc/clean" in frame else None
        for r in sorted(set(panel.trials[panel.x]), reverse=True):
            accs = " | ".join(_mean_std(curves[c], r) for c, _ in acc_cols)
            bounds = [_mean_std(panel.curve(f"{panel.layer}/binary/{b}"), r, 1.0, 3)
                      if f"{panel.layer}/binary/{b}" in panel.trials else "-" for b in RAMANUJAN_BOUNDS]
            kept = curves[acc_cols[0][0]].loc[r, "kept"] if acc_cols else r
            drop = "-"
            if drops is not None and r in drops.index:
                point = drops.loc[r]
                drop = f"{100 * point['drop']:+.2f}" + ("" if pd.isna(point["se"]) else f" ± {100 * point['se']:.2f}")
            lines.append(f"| {100 * r:g}% | {100 * kept:.3g}% | {accs} | {drop} | {bounds[0]} | {bounds[1]} |")
        lines.append("")
    lines += _failed_markdown(failed)
    if figures:
        lines += ["## Figures", "", "Each figure is also saved as SVG and PDF beside the PNG (vector, for papers).", ""]
        lines += [f"![{p.stem}]({p.name}) ([SVG]({p.stem}.svg), [PDF]({p.stem}.pdf))" for p in figures] + [""]
    return "\n".join(lines)


def _engines(frame: pd.DataFrame) -> str:
    """How the trials were fine-tuned (`engine`, `group_size` per trial): the batched engine's
    numbers equal the per-trial engine's up to float rounding."""
    if "engine" not in frame or frame["engine"].isna().all():
        return "not recorded (trials of an older version: per trial)"
    parts = []
    for engine, rows in frame.groupby(frame["engine"].fillna("not recorded")):
        if engine == "batched":
            sizes = rows["group_size"].dropna().astype(int)
            parts.append(f"batched for {len(rows)} trial(s), in groups of {sizes.min()}-{sizes.max()} "
                         "(one stacked model per group; the same numbers as per trial up to float rounding)")
        else:
            parts.append(f"{str(engine).replace('_', ' ')} for {len(rows)} trial(s)")
    return "; ".join(parts)


def _split_sizes(frame: pd.DataFrame) -> str:
    """The training and test sizes the trials recorded (`n_train`, `n_test`), as they were."""
    def sizes(column: str, what: str) -> str:
        if column not in frame or frame[column].isna().all():
            return f"{what} size not recorded"
        return ", ".join(f"{int(v):,}" for v in sorted(frame[column].dropna().unique())) + f" {what}"
    return f"trials ran on {sizes('n_train', 'training')} / {sizes('n_test', 'test')} examples"



def comparison_markdown(table: pd.DataFrame) -> str:
    lines = ["# Crossings side by side", "",
             "Kept edges of each layer's graph at which each bound first stops being positive, per sweep "
             "(mean over seeds, with the seeds' own crossings as a range). Each column is labelled with every "
             "result setting that differs between the compared sweeps. What can move a crossing: a binary "
             "layer graph's crossing depends only on its masks, which come from the trained dense model, so "
             "dense training (init, epochs, learning rate, seed, data) moves it and the schedule (`each` or "
             "`tied`) cannot (the dense model does not depend on it); weighted graphs and the step and "
             "unrolled graphs also see fine-tuning. *positive again below*: the bound turns positive again at "
             "sparser points; the fraction from which it stays negative is given.", ""]
    if table.empty:
        return "\n".join(lines + ["No finished trials in any of the sweeps.", ""])
    settings = list(dict.fromkeys(table["setting"]))
    has_reference = "published_pct" in table and table["published_pct"].notna().any()
    lines += ["| layer | weighting | bound | " + " | ".join(_cell(s) for s in settings)
              + (" | published |" if has_reference else " |"),
              "| --- " * (3 + len(settings) + has_reference) + "|"]
    for (layer, weighting, bound), group in table.groupby(["layer", "weighting", "bound"], sort=False):
        cells = []
        for setting in settings:
            match = group[group["setting"] == setting]
            texts = [c + (f" [{s}]" if s else "") for c, s in zip(match["crossing"], match["seed_spread"], strict=True)]
            cells.append(" / ".join(texts) if len(match) else "-")
        if has_reference:
            known = group.dropna(subset=["published_pct"])
            cells.append("-" if known.empty else f"{known['published_pct'].iloc[0]:.2f}% ({known['published_source'].iloc[0]})")
        lines.append(f"| {layer} | {weighting} | {bound} | " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines + [""])
