"""The crossing report: where each layer's bounds turn negative, where accuracy drops, and
whether the first predicts the second.

Reads the Optuna study (never the trackers). A *panel* is the set of trials that vary one
thing: with schedule `each`/`independent`, panel L holds the trials where every other
maskable layer is dense (the paper's one panel per layer); with `tied`, one panel holds all
trials, every layer pruned together. A panel has one mask method (the dense trials belong to
every method's panel) and every seed: curves are means over seeds, with their spread.

The x-axis of every curve, crossing and figure is the *kept* fraction of the layer's edges
(the mean over seeds of what the mask really kept at an asked fraction; a regular mask keeps
a multiple of 1/inputs, a min-degree mask may keep more). Crossings are interpolated in
log(kept fraction), the axis the figures draw.

The claim under test: accuracy holds while a layer's graph keeps the Ramanujan property and
drops once it is lost. Two parts, whose statistics live in claim_stats.py:
- Crossings (`claim_rows`): per panel and noise level, the accuracy drop relative to dense
  (same seed) with its standard error (paired where the trials stored which test examples they
  got right, binomial otherwise), the kept fraction from which the mean drop stays a drop
  (above both `report.drop_threshold` and 1.96 standard errors at that fraction and every
  sparser one, at least two fractions: `claim_stats.drop_onset`), and its distance from each
  bound's crossing. A bound that is already <= 0 at the densest point predicts nothing, and says so.
- Expansion beyond density (`expansion_test_rows`): across a sweep, bound and accuracy both
  fall as edges are removed, so any correlation over fractions measures density. The test
  that can fail compares trials at equal asked fraction and mask method, with seeds as the unit
  that repeats (`claim_stats.equal_density_test`), and corrects for the table's looks (Holm).
"""

from __future__ import annotations

import dataclasses
import json
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only; no display is needed or wanted
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from .claim_stats import (  # noqa: E402  # noqa: E402
    ALPHA,
    CALIBRATION_NOTE,
    PERMUTATIONS,
    drop_onset,
    equal_density_test,
    holm,
    paired_se,
    unpack_correct,
    verdict_after_holm,
)
from .graph_measures import added_quantities, bound_names, quantity  # noqa: E402
from .html_report import write_html  # noqa: E402
from .mask_methods import BUILT_IN_METHODS, mask_method  # noqa: E402
from .report_sections import render_sections  # noqa: E402
from .results import CORRECT_ATTR, GATES, RAMANUJAN_BOUNDS, accuracy_key, bound_label  # noqa: E402
from .spec import SweepSpec  # noqa: E402
from .spectral import find_crossing  # noqa: E402

__all__ = ["Report", "trials_frame", "crossing_rows", "claim_rows", "expansion_test_rows", "drop_points",
           "write_report"]

Z_95 = 1.959963984540054



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

    def kept(self) -> pd.Series:
        """Per trial: the kept fraction of the x-axis layer, as the mean over the trials (seeds)
        of its asked fraction, so that all seeds of one point share one x."""
        column = f"{self.layer}/kept_fraction"
        own = self.trials[column] if column in self.trials else pd.Series(np.nan, index=self.trials.index)
        own = own.where(self.trials[self.x] < 1.0, 1.0).fillna(self.trials[self.x])
        return own.groupby(self.trials[self.x]).transform("mean")

    def curve(self, column: str) -> pd.DataFrame:
        """Mean, standard deviation and count over seeds of `column` (undefined NaN and unbounded
        +inf left out of mean and spread), per asked fraction, with the mean kept fraction."""
        values = self.trials[column].astype(float)
        finite = values.where(np.isfinite(values))
        grouped = finite.groupby(self.trials[self.x])
        unbounded = np.isposinf(values).groupby(self.trials[self.x]).all()
        curve = pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1).fillna(0.0),
                              "n": grouped.count(), "kept": self.kept().groupby(self.trials[self.x]).mean()})
        curve.loc[unbounded[unbounded].index, "mean"] = np.inf
        return curve.sort_index(ascending=False)

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

    def drop_errors(self, column: str, paired: pd.Series | None = None) -> pd.Series:
        """Standard error of each trial's drop. Paired (`paired_errors`, or `paired` when the
        caller has them) where the trial and the dense trial of its seed both stored which test
        examples they got right: they were scored on the same images. Otherwise binomial, as if
        independent: sqrt(p_d (1 - p_d) / n + p (1 - p) / n) with n test examples (`n_test`);
        NaN where n was not recorded."""
        reference = self.drops(column) + self.trials[column]
        n = self.trials["n_test"] if "n_test" in self.trials else pd.Series(np.nan, index=self.trials.index)
        p = self.trials[column]
        errors = np.sqrt((reference * (1 - reference) + p * (1 - p)) / n)
        return (self.paired_errors(column) if paired is None else paired).fillna(errors)

    def paired_errors(self, column: str) -> pd.Series:
        """The paired standard error of each trial's drop (`claim_stats.paired_se`); NaN where a
        side has no stored hits, or the seed has no single dense trial."""
        out = pd.Series(np.nan, index=self.trials.index)
        if CORRECT_COLUMN not in self.trials or "n_test" not in self.trials:
            return out
        hits = self.trials[CORRECT_COLUMN].map(lambda c: c.get(column) if isinstance(c, dict) else None)
        dense = self.trials[self.trials[self.x] >= 1.0]
        reference = {seed: group.iloc[0] for seed, group in hits[dense.index].dropna().groupby(dense["seed"])
                     if len(group) == 1}  # the dense trial's hits, once per seed
        for index, mine in hits.dropna().items():
            partner = reference.get(self.trials.at[index, "seed"])
            if partner is not None:
                n = int(self.trials.at[index, "n_test"])
                out[index] = paired_se(unpack_correct(partner, n), unpack_correct(mine, n))
        return out
        hits = self.trials[CORRECT_COLUMN].map(lambda c: c.get(column) if isinstance(c, dict) else None)
        dense = self.trials[self.x] >= 1.0
        for index in self.trials.index:
            mine = hits[index]
            partner = hits[dense & (self.trials["seed"] == self.trials.at[index, "seed"])].dropna()
            if mine is None or len(partner) != 1 or "n_test" not in self.trials:
                continue
            n = int(self.trials.at[index, "n_test"])
            out[index] = paired_se(unpack_correct(partner.iloc[0], n), unpack_correct(mine, n))
        return out


@dataclass
class Report:
    crossings: pd.DataFrame
    trials: pd.DataFrame
    markdown: str
    files: dict[str, Path] = field(default_factory=dict)
    failed: list[dict] = field(default_factory=list)  # trials whose point never completed, and why
    claim: pd.DataFrame = field(default_factory=pd.DataFrame)  # crossings vs drops (see module notes)
    expansion_test: pd.DataFrame = field(default_factory=pd.DataFrame)  # expansion beyond density

    def published_files(self) -> list[str]:
        """The files the trackers get (MLflow's parent run under report/, W&B's summary run): all
        of them, the figures in every format, and report.html as the copy that links nowhere
        outside itself (`published/report.html`) instead of the run folder's."""
        return [str(path) for key, path in self.files.items() if key != "html"]


CORRECT_COLUMN = "_correct"  # per trial, the packed per-example hits (a dict); in no file


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per finished trial: its number and every scalar it recorded, and in
    CORRECT_COLUMN which test examples it got right (None for trials recorded before that)."""
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        row = {"trial": t.number}
        row.update({k: v for k, v in t.user_attrs.items() if isinstance(v, (int, float, str, bool))})
        row[CORRECT_COLUMN] = t.user_attrs.get(CORRECT_ATTR)
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
        "crossing_pct": None if crossing.remaining is None else 100 * crossing.remaining,
        "upper_pct": None if crossing.upper is None else 100 * crossing.upper,
        "lower_pct": None if crossing.lower is None else 100 * crossing.lower,
        "stays_negative_from_pct": None if crossing.stays_negative is None else 100 * crossing.stays_negative,
        "undefined_at_pct": " ".join(f"{100 * r:g}" for r in crossing.undefined),
        "where": crossing.describe(),
    }


def crossing_rows(frame: pd.DataFrame, spec: SweepSpec) -> pd.DataFrame:
    """Per panel, graph, weighting and bound: the kept edge % where the bound (mean over
    seeds) first stops being positive."""
    rows = []
    weightings = ["binary", "weighted"] if spec.spectral.weighted else ["binary"]
    for panel in _panels(frame, spec):
        x = panel.kept().tolist()
        for graph in _panel_graphs(panel, spec):
            for weighting in weightings:
                for bound in spec.report.bounds:
                    column = f"{graph}/{weighting}/{bound}"
                    if column not in panel.trials:
                        continue
                    values = panel.trials[column]
                    low_column = f"{graph}/{weighting}/low_degree"
                    low = (panel.trials[low_column] == 1) if low_column in panel.trials else values != values
                    without = find_crossing(x, values.where(~low).tolist()) if low.any() else None
                    if without is not None:  # the points left out are low-degree, not undefined
                        left_out = {float(k) for k, is_low in zip(x, low, strict=True) if is_low}
                        without = dataclasses.replace(
                            without, undefined=tuple(u for u in without.undefined if u not in left_out))
                    rows.append({
                        "pruned": panel.pruned,
                        "mask_method": panel.method,
                        "train_noise_variance": panel.train_variance,
                        "graph": _graph_label(graph, spec, frame),
                        "weighting": weighting,
                        "bound": bound_label(bound),
                        **_crossing_fields(find_crossing(x, values.tolist())),
                        "low_degree_at_pct": " ".join(f"{100 * r:g}" for r in sorted(set(panel.trials.loc[low, panel.x]),
                                                                                      reverse=True)),
                        "without_low_degree": "same (no low-degree graph)" if without is None else without.describe(),
                    })
    return pd.DataFrame(rows)


def _verdict(status: str, bound_pct: float | None, drop_pct: float | None) -> str:
    if status == "negative_at_start":
        return "the bound was never positive (<= 0 already at the densest point): it predicts nothing"
    if status == "no_data":
        return "the bound is undefined at every point"
    if bound_pct is None and drop_pct is None:
        return "neither the bound nor accuracy crossed"
    if bound_pct is None:
        return f"accuracy dropped (at {drop_pct:.2f}% kept) while the bound stayed positive"
    if drop_pct is None:
        return "the bound crossed, accuracy never dropped"
    gap = bound_pct - drop_pct
    if gap >= 0:
        return f"accuracy held until the crossing and {gap:.2f} points of kept edges beyond"
    return f"accuracy dropped {-gap:.2f} points of kept edges before the bound crossed"


def drop_points(panel: Panel, column: str, threshold: float) -> pd.DataFrame:
    """Per asked fraction: kept fraction, mean drop over seeds, its standard error (of the mean;
    paired where the trials allow, see `Panel.drop_errors`), whether it was paired, and whether
    it counts as a drop: mean > threshold and mean > 1.96 SE."""
    paired = panel.paired_errors(column)  # unpacks every trial's hits: once per column
    drops, errors = panel.drops(column), panel.drop_errors(column, paired)
    by = panel.trials[panel.x]
    seeds = drops.groupby(by).count()
    table = pd.DataFrame({
        "kept": panel.kept().groupby(by).mean(),
        "drop": drops.groupby(by).mean(),
        "se": np.sqrt((errors ** 2).groupby(by).sum(min_count=1)) / seeds,
        "seeds": seeds,
        "paired": paired.notna().groupby(by).all(),
    }).sort_index(ascending=False)
    table["margin"] = np.maximum(threshold, (Z_95 * table["se"]).fillna(0.0))
    table["dropped"] = table["drop"] > table["margin"]
    return table


def _drop_crossing(points: pd.DataFrame) -> tuple[float | None, pd.DataFrame]:
    """Where accuracy drops for good (`claim_stats.drop_onset`), in kept %, interpolated in
    log(kept) between the last point that did not drop and the first of the run that stays
    dropped (margin - drop goes from >= 0 to < 0 there); and that first point's row."""
    onset = drop_onset(points["dropped"].tolist())
    if onset is None:
        return None, points.head(0)
    at_drop = points.iloc[[onset]]
    if onset == 0:
        return 100 * float(points["kept"].iloc[0]), at_drop
    k0, k1 = float(points["kept"].iloc[onset - 1]), float(points["kept"].iloc[onset])
    v0 = float(points["margin"].iloc[onset - 1] - points["drop"].iloc[onset - 1])
    v1 = float(points["margin"].iloc[onset] - points["drop"].iloc[onset])
    if not (math.isfinite(v0) and v0 - v1 > 0):
        return 100 * k1, at_drop
    return 100 * math.exp(math.log(k0) + (math.log(k1) - math.log(k0)) * v0 / (v0 - v1)), at_drop


def _claim_graphs(panel: Panel, spec: SweepSpec) -> list[str]:
    """The layer graphs whose bounds a panel's accuracy is compared with (every pruned layer when
    they are tied), and the unrolled graph."""
    layers = spec.masks.layers if panel.pruned.endswith("(tied)") else [panel.layer]
    return [*layers, "unrolled"]


def expansion_test_rows(frame: pd.DataFrame, spec: SweepSpec) -> pd.DataFrame:
    """The claim beyond density, per pruned layer (all mask methods and seeds together), noise
    level, layer graph (binary) and bound: `claim_stats.equal_density_test` of drop and bound
    in cells of equal asked fraction and mask method, then Holm's correction over every row."""
    rows = []
    panels = [p for p in _panels(frame, spec) if (p.trials[p.x] < 1.0).any()]
    groups: dict[tuple, list[Panel]] = {}
    for panel in panels:
        groups.setdefault((panel.pruned, panel.train_variance), []).append(panel)
    for (pruned, variance), members in groups.items():
        for column, noise in _accuracy_columns(spec):
            if column not in frame:
                continue
            pieces = []
            for panel in members:
                masked = panel.trials[panel.x] < 1.0
                pieces.append(panel.trials[masked].assign(_drop=panel.drops(column)[masked],
                                                          _fraction=panel.trials[panel.x][masked]))
            trials = pd.concat(pieces)
            cells = list(zip(trials["_fraction"], trials["mask_method"], strict=True))
            for graph in [g for g in _claim_graphs(members[0], spec) if g != "unrolled"]:
                for bound in spec.report.bounds:
                    bound_column = f"{graph}/binary/{bound}"
                    if bound_column not in trials:
                        continue
                    test = equal_density_test(trials["_drop"], trials[bound_column], cells, trials["seed"])
                    rows.append({"pruned": pruned, "train_noise_variance": variance, "noise": noise,
                                 "graph": graph, "bound": bound_label(bound),
                                 "mask_methods": ", ".join(sorted(set(trials["mask_method"]))),
                                 "seeds": int(trials["seed"].nunique()), **test})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["why"] = table["why"].fillna("") if "why" in table else ""
    looks = int(table["p_value"].notna().sum())
    table["p_holm"] = holm(table["p_value"].tolist())
    table["looks"] = looks
    verdicts = [verdict_after_holm(r, p, looks) for r, p in zip(table["partial_r"], table["p_holm"], strict=True)]
    table["verdict"] = [v for v, _ in verdicts]
    table["why"] = [why or reason for why, (_, reason) in zip(table["why"], verdicts, strict=True)]
    return table


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
             f"This table takes **{looks} looks** (layers x noise levels x bounds with a test); their p-values "
             f"are **Holm-adjusted** over all of them. Rule fixed in advance: **supported** when the adjusted "
             f"p < {ALPHA:g} and r < 0, **contradicted** when the adjusted p < {ALPHA:g} and r > 0, "
             "**inconclusive** otherwise, and always when no two trials share a fraction and mask method "
             "(one seed: no comparison at equal density). Measured false-verdict rate on synthetic sweeps "
             f"with no effect of the bound (five null shapes): {CALIBRATION_NOTE}.", "",
             "| pruned | noise | graph | bound | n (cells) | partial r | p (Holm) | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for _, row in table.iterrows():
        where = row["pruned"] + (f", train var {row['train_noise_variance']:g}" if row["train_noise_variance"] else "")
        r = "n/a" if pd.isna(row["partial_r"]) else f"{row['partial_r']:+.2f}"
        p = "n/a" if pd.isna(row["p_value"]) else f"{row['p_value']:.3g} ({row['p_holm']:.3g})"
        lines.append(f"| {_cell(where)} | {row['noise']} | {_cell(row['graph'])} | {row['bound']} "
                     f"| {row['n']} ({row['cells']}) | {r} | {p} | **{row['verdict']}**: {_cell(row['why'])} |")
    return lines + [""]


def _cell(text) -> str:
    """A Markdown table cell: a literal | would split the row."""
    return str(text).replace("|", "\\|")


def claim_rows(frame: pd.DataFrame, spec: SweepSpec) -> pd.DataFrame:
    """Per panel, noise level, graph and bound: bound crossing vs accuracy-drop crossing (in kept
    edges), and what that says (see the module notes)."""
    threshold = spec.report.drop_threshold
    rows = []
    for panel in _panels(frame, spec):
        if not (panel.trials[panel.x] < 1.0).any():
            continue
        x = panel.kept().tolist()
        for column, noise in _accuracy_columns(spec):
            if column not in panel.trials:
                continue
            points = drop_points(panel, column, threshold)
            drop_pct, at_drop = _drop_crossing(points)
            for graph in _claim_graphs(panel, spec):
                for bound in spec.report.bounds:
                    bound_column = f"{graph}/binary/{bound}"
                    if bound_column not in panel.trials:
                        continue
                    crossing = find_crossing(x, panel.trials[bound_column].tolist())
                    bound_pct = None if crossing.status != "crossed" else 100 * crossing.remaining
                    rows.append({
                        "pruned": panel.pruned,
                        "mask_method": panel.method,
                        "train_noise_variance": panel.train_variance,
                        "noise": noise,
                        "graph": _graph_label(graph, spec, frame),
                        "bound": bound_label(bound),
                        "bound_status": crossing.status,
                        "bound_crossing_pct": bound_pct,
                        "bound_stays_negative_from_pct": (None if crossing.stays_negative is None
                                                          else 100 * crossing.stays_negative),
                        "drop_crossing_pct": drop_pct,
                        "first_drop_pts": None if at_drop.empty else 100 * float(at_drop["drop"].iloc[0]),
                        "first_drop_se_pts": (None if at_drop.empty or pd.isna(at_drop["se"].iloc[0])
                                              else 100 * float(at_drop["se"].iloc[0])),
                        "held_beyond_crossing_pts": (None if bound_pct is None or drop_pct is None
                                                     else bound_pct - drop_pct),
                        "verdict": _verdict(crossing.status, bound_pct, drop_pct),
                    })
    return pd.DataFrame(rows)


def _accuracy_columns(spec: SweepSpec) -> list[tuple[str, str]]:
    return [(accuracy_key(v), "clean" if v == 0 else f"noise var {v:g}") for v in spec.noise.test_variances]


def _matching(frame: pd.DataFrame, **equal) -> pd.DataFrame:
    """The rows of frame whose columns equal the given values; none when the frame is empty
    (a sweep of the dense point alone has no crossings and no claim rows)."""
    if frame.empty or not set(equal) <= set(frame.columns):
        return frame.iloc[0:0]
    keep = np.ones(len(frame), dtype=bool)
    for column, value in equal.items():
        keep &= (frame[column] == value).to_numpy()
    return frame[keep]


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
    status = row["bound_status"]
    if status == "never":
        return "never"
    if status == "no_data":
        return "undefined"
    if status == "negative_at_start":
        return "never positive"
    text = _fmt_pct(row["bound_crossing_pct"])
    stays = row["bound_stays_negative_from_pct"]
    if stays is None or pd.isna(stays):
        return text + " (positive again below)"
    return text


def _plugin_definitions(spec: SweepSpec) -> list[str]:
    """The header's lines for what plug-ins added: each added graph quantity and non-built-in mask
    method, with the definition its registration gives (every printed number is defined)."""
    lines = [f"- graph quantity *{q.label}* (`{q.name}`{', a bound' if q.bound else ''}; plug-in): {q.definition}"
             for q in added_quantities()]
    lines += [f"- mask method `{m}` (plug-in): {mask_method(m).description}"
              for m in spec.masks.methods if m not in BUILT_IN_METHODS]
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


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON-ready dicts: NaN -> null, numpy scalars -> Python."""
    if frame.empty:
        return []
    return json.loads(frame.to_json(orient="records"))


def write_report(spec: SweepSpec, study: optuna.Study | None = None) -> Report:
    """Write report.md, crossings.csv/json, claim.csv, trials.csv and one PNG per layer into <run_dir>/report."""
    if study is None:
        from .study import open_study

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
    expansion = expansion_test_rows(frame, spec)
    figures = []
    grouped: dict[str, list[Panel]] = {}
    for panel in _panels(frame, spec):
        grouped.setdefault(panel.slug, []).append(panel)
    for slug, panels in grouped.items():
        path = out / f"figure_{slug}.png"
        _figure(panels, spec, crossings, claim, path)
        figures.append(path)
    markdown = _markdown(spec, frame, crossings, claim, expansion, figures, failed)
    files = {
        "markdown": out / "report.md",
        "crossings_csv": out / "crossings.csv",
        "crossings_json": out / "crossings.json",
        "claim_csv": out / "claim.csv",
        "expansion_test_csv": out / "expansion_test.csv",
        "trials_csv": out / "trials.csv",
    }
    files["markdown"].write_text(markdown)
    crossings.to_csv(files["crossings_csv"], index=False)
    claim.to_csv(files["claim_csv"], index=False)
    expansion.to_csv(files["expansion_test_csv"], index=False)
    files["crossings_json"].write_text(json.dumps({
        "sweep": spec.name,
        "cell": spec.model.cell,
        "hidden": spec.model.hidden,
        "init": spec.model.init_label,
        "clip_grad_norm": spec.training.clip_grad_norm,
        "mask_methods": spec.masks.methods,
        "seeds": spec.training.seeds,
        "schedule": spec.masks.schedule,
        "drop_threshold": spec.report.drop_threshold,
        "finished_trials": len(frame),
        "crossings": _records(crossings),
        "claim": _records(claim),
        "expansion_test": _records(expansion),
        "failed_trials": failed,
    }, indent=2))
    frame.drop(columns=[CORRECT_COLUMN], errors="ignore").sort_values("trial").to_csv(files["trials_csv"], index=False)
    files["html"] = write_html(spec, markdown, frame, out)
    files["html_published"] = write_html(spec, markdown, frame, out, local=False)
    for i, path in enumerate(figures):
        files[f"figure_{i}"] = path
        files[f"svg_{i}"], files[f"pdf_{i}"] = path.with_suffix(".svg"), path.with_suffix(".pdf")
    return Report(crossings, frame, markdown, files, failed, claim, expansion)


def _setting(spec: SweepSpec) -> str:
    """The choices that move a crossing (the paper's Table 2 depends on them), in words."""
    return (f"{spec.model.cell.upper()} init {spec.model.init_label}, schedule {spec.masks.schedule}, "
            f"{spec.masks.methods[0] if len(spec.masks.methods) == 1 else '/'.join(spec.masks.methods)}")


def _differing_settings(specs: list[SweepSpec]) -> list[str]:
    """Per spec, the result settings (fingerprint.py: every field that changes a trial, epochs
    included) whose value is not the same in every compared spec, as `key=value`."""
    from .fingerprint import result_settings

    settings = [result_settings(spec) for spec in specs]
    keys = sorted({k for s in settings for k in s if len({json.dumps(t.get(k), sort_keys=True, default=str)
                                                         for t in settings}) > 1})
    keys = [k for k in keys if not k.startswith("data.root")]  # where the data lies is not a setting
    return [", ".join(f"{k.split('.', 1)[-1]}={_setting_value(s.get(k))}" for k in keys) for s in settings]


def _setting_value(value) -> str:
    return "/".join(map(str, value)) if isinstance(value, list) else str(value)


def _short_crossing(row) -> str:
    if row["status"] == "crossed":
        text = f"{row['crossing_pct']:.2f}%"
        stays = row.get("stays_negative_from_pct")
        if stays is not None and not pd.isna(stays) and not math.isclose(stays, row["lower_pct"]):
            text += f" (positive again below; stays negative from {stays:.3g}%)"
        return text
    if row["status"] == "never":
        return f"never (to {row['lower_pct']:.3g}%)"
    if row["status"] == "negative_at_start":
        return "never positive"
    return "undefined"


def _seed_spread(frame: pd.DataFrame, spec: SweepSpec) -> dict[tuple, str]:
    """(layer, weighting, bound, mask method) -> the range of the crossing over seeds, each seed's
    curve on its own ("" with one seed)."""
    seeds = sorted(frame["seed"].unique()) if "seed" in frame else []
    if len(seeds) < 2:
        return {}
    per_seed: dict[tuple, list[float | None]] = {}
    for seed in seeds:
        crossings = crossing_rows(frame[frame["seed"] == seed], spec)
        for _, row in crossings[crossings["graph"].isin(spec.masks.layers)].iterrows():
            key = (row["graph"], row["weighting"], row["bound"], row["mask_method"])
            per_seed.setdefault(key, []).append(row["crossing_pct"] if row["status"] == "crossed" else None)
    spread = {}
    for key, values in per_seed.items():
        crossed = [v for v in values if v is not None and not pd.isna(v)]
        text = f"seeds {min(crossed):.2f}-{max(crossed):.2f}%" if crossed else "no seed crossed"
        if crossed and len(crossed) < len(values):
            text += f", {len(values) - len(crossed)} of {len(values)} seeds never"
        spread[key] = text
    return spread


def read_reference(path: Path) -> pd.DataFrame:
    """Published crossings to compare with: a CSV with the columns layer, graph, weighting, bound,
    percent, source (graph: `layer` for the layer's own graph). Raises ValueError naming what is wrong."""
    table = pd.read_csv(path)
    needed = ["layer", "graph", "weighting", "bound", "percent", "source"]
    missing = [c for c in needed if c not in table]
    if missing:
        raise ValueError(f"{path}: the reference file lacks the column(s) {', '.join(missing)} "
                         f"(it needs {', '.join(needed)})")
    labels = {bound_label(b).lower(): bound_label(b) for b in bound_names()} | {b: bound_label(b) for b in bound_names()}
    table["bound"] = [labels.get(str(b).strip().lower(), str(b).strip()) for b in table["bound"]]
    table["percent"] = pd.to_numeric(table["percent"], errors="coerce")
    if table["percent"].isna().any():
        row = int(table["percent"].isna().idxmax()) + 2
        raise ValueError(f"{path}: line {row}: percent must be a number (kept edges in %)")
    return table


def comparison_rows(studies: list[tuple[SweepSpec, optuna.Study]],
                    reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """The layer graphs' crossings of several sweeps side by side: one row per (layer, weighting,
    bound, mask method), one column per sweep, labelled with every result setting that differs
    between the sweeps; with the seeds' spread, and the difference from a published crossing when
    `reference` (read_reference) has one."""
    rows = []
    differing = _differing_settings([spec for spec, _ in studies])
    for (spec, study), differs in zip(studies, differing, strict=True):
        frame = trials_frame(study)
        if frame.empty:
            continue
        frame = _with_defaults(frame, spec)
        crossings = crossing_rows(frame, spec)
        spread = _seed_spread(frame, spec)
        setting = f"{spec.name}: {differs or _setting(spec)}"
        for _, row in crossings[crossings["graph"].isin(spec.masks.layers)].iterrows():
            key = (row["graph"], row["weighting"], row["bound"], row["mask_method"])
            published = None
            if reference is not None:
                match = reference[(reference["layer"] == row["graph"]) & (reference["graph"] == "layer")
                                  & (reference["weighting"] == row["weighting"]) & (reference["bound"] == row["bound"])]
                published = match.iloc[0] if len(match) else None
            crossing = _short_crossing(row)
            difference = None
            if published is not None and row["status"] == "crossed":
                difference = row["crossing_pct"] - float(published["percent"])
                crossing += f" ({difference:+.2f} pts vs published)"
            rows.append({"layer": row["graph"], "weighting": row["weighting"], "bound": row["bound"],
                         "mask_method": row["mask_method"], "setting": setting,
                         "others": "tied" if "(tied)" in row["pruned"] else "dense",
                         "crossing": crossing, "crossing_pct": row["crossing_pct"],
                         "seed_spread": spread.get(key, ""),
                         "published_pct": None if published is None else float(published["percent"]),
                         "published_source": None if published is None else str(published["source"]),
                         "difference_pts": difference})
    return pd.DataFrame(rows)


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
