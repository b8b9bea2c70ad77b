"""The report's analysis: pure functions over the trials frame. Panels, crossings of each bound,
the claim (crossings against accuracy drops), the expansion-beyond-density test, several sweeps
compared. No rendering here (markdown.py, figures.py) and no files (report.py).

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from ..graphs.crossings import CrossingStatus, crossing_text, find_crossing
from ..graphs.graph_measures import bound_names
from ..results import CORRECT_ATTR, GATES, accuracy_key, bound_label
from ..spec import SweepSpec, matrix_depth
from .claim_stats import (
    drop_onset,
    equal_density_test,
    holm,
    paired_se,
    unpack_correct,
    verdict_after_holm,
)

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


def _dense_method(method: str, spec: SweepSpec) -> str:
    from ..pruning.mask_methods import UnknownMaskMethod
    from ..sweep.space import dense_method

    try:
        return dense_method(method, spec)
    except UnknownMaskMethod:  # a study read without the plug-in that registered its method
        return spec.masks.methods[0]


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
            # The dense trials of this method's shape (space.dense_method): one per seed.
            own_dense = all_dense & (part["mask_method"] == _dense_method(method, spec))
            mine = part[(part["mask_method"] == method) | own_dense]
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
    # A deeper layer's panel shows its own step graph (step_l1: [W_xh_l1 | W_hh_l1] -> h^1_t).
    steps = list(dict.fromkeys("step" if matrix_depth(layer) == 0 else f"step_l{matrix_depth(layer)}"
                               for layer in layers))
    return [g for layer in layers for g in (layer, *(f"{layer}.{gate}" for gate in gates))] + [*steps, "unrolled"]


def _graph_label(graph: str, spec: SweepSpec, frame: pd.DataFrame) -> str:
    if graph == "step":
        return "step [W_xh | W_hh] -> h_t"
    if graph.startswith("step_l"):
        depth = graph[len("step_l"):]
        return f"step [W_xh_l{depth} | W_hh_l{depth}] -> h^{depth}_t"
    if graph == "unrolled":
        steps = frame["unrolled/binary/steps"].dropna() if "unrolled/binary/steps" in frame else pd.Series(dtype=float)
        depth = f", {spec.model.layers} layers" if spec.model.layers > 1 else ""
        return (f"unrolled over k = {int(steps.iloc[0])} steps" if len(steps) else "unrolled over k steps") + depth
    return graph


def _crossing_fields(crossing) -> dict:
    return {
        "status": crossing.status.value,
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
    if status == CrossingStatus.NEGATIVE_AT_START:
        return "the bound was never positive (<= 0 already at the densest point): it predicts nothing"
    if status == CrossingStatus.NO_DATA:
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
            several_methods = trials["mask_method"].nunique() > 1
            for graph in [g for g in _claim_graphs(members[0], spec) if g != "unrolled"]:
                for bound in tested_measures(spec):
                    bound_column = f"{graph}/binary/{bound}"
                    if bound_column not in trials:
                        continue
                    test = equal_density_test(trials["_drop"], trials[bound_column], cells, trials["seed"])
                    # Descriptive, no verdict: the same partial r with methods pooled at each fraction
                    # (a method's own effect on accuracy is not separated from the measure's).
                    pooled = (equal_density_test(trials["_drop"], trials[bound_column], list(trials["_fraction"]),
                                                 trials["seed"], permutations=1)["partial_r"]
                              if several_methods else math.nan)
                    rows.append({"pruned": pruned, "train_noise_variance": variance, "noise": noise,
                                 "graph": graph, "bound": bound_label(bound), "measure": bound,
                                 "mask_methods": ", ".join(sorted(set(trials["mask_method"]))),
                                 "seeds": int(trials["seed"].nunique()), **test,
                                 "partial_r_methods_pooled": pooled})
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


# Opt-in measures that are not measures of a graph's expansion: left out of the claim test.
NOT_PREDICTORS = ("vertex_expansion_se",)


def tested_measures(spec: SweepSpec) -> list[str]:
    """What the test beyond density is run on: the report's bounds, then the opt-in measures the
    spec asks for (a larger value: a better expander, for each of them)."""
    return [*spec.report.bounds, *[m for m in spec.spectral.measures
                                   if m not in NOT_PREDICTORS and m not in spec.report.bounds]]


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
                    bound_pct = None if crossing.status != CrossingStatus.CROSSED else 100 * crossing.remaining
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


def _setting(spec: SweepSpec) -> str:
    """The choices that move a crossing (the paper's Table 2 depends on them), in words."""
    return (f"{spec.model.cell.upper()} init {spec.model.init_label}, schedule {spec.masks.schedule}, "
            f"{spec.masks.methods[0] if len(spec.masks.methods) == 1 else '/'.join(spec.masks.methods)}")


def _differing_settings(specs: list[SweepSpec]) -> list[str]:
    """Per spec, the result settings (fingerprint.py: every field that changes a trial, epochs
    included) whose value is not the same in every compared spec, as `key=value`."""
    from ..sweep.fingerprint import result_settings

    settings = [result_settings(spec) for spec in specs]
    keys = sorted({k for s in settings for k in s if len({json.dumps(t.get(k), sort_keys=True, default=str)
                                                         for t in settings}) > 1})
    keys = [k for k in keys if not k.startswith("data.root")]  # where the data lies is not a setting
    return [", ".join(f"{k.split('.', 1)[-1]}={_setting_value(s.get(k))}" for k in keys) for s in settings]


def _setting_value(value) -> str:
    return "/".join(map(str, value)) if isinstance(value, list) else str(value)


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
            per_seed.setdefault(key, []).append(row["crossing_pct"] if row["status"] == CrossingStatus.CROSSED else None)
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
            crossing = crossing_text(row)
            difference = None
            if published is not None and row["status"] == CrossingStatus.CROSSED:
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
