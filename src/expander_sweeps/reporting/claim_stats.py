"""The statistics behind the report's verdicts: the equal-density test of the claim, Holm's
correction over the looks of a table, and the accuracy-drop rule.

Equal-density test (`equal_density_test`). Across a sweep, the bound and accuracy both fall as
edges are removed, so any correlation over fractions measures density. The question that can
fail is whether, *at the same kept fraction*, a larger bound goes with a smaller drop. The test
compares trials within cells of equal asked fraction and equal mask method (a fixed effect per
cell: no shape of the accuracy curve is assumed, and a mask method that is better or worse for
reasons of its own is absorbed too), with a fixed effect per seed (the trials of one seed share a
dense model and a test set, so a seed that is good everywhere is not evidence). What is left is
how each seed's trial deviates from its cell; r is the correlation of the drop's and the bound's
deviations (a partial correlation). Its p-value comes from a Freedman-Lane permutation test:
the drop's residuals are permuted within cells (so a cell whose drops vary more than another's,
the collapse region, keeps its own spread), `PERMUTATIONS` times with a fixed random seed (the
same study always prints the same p). A design where no two trials share a cell (one mask method
and one seed, for instance) has no comparison at equal density: inconclusive, always.

Looks (`holm`): a verdict table makes one look per (layer, noise level, bound); the p-values are
adjusted by Holm's step-down method over every look of the table, so that the chance of any
false verdict in the table is at most `ALPHA` whatever the dependence between the looks.

Drop rule (`drop_onset`): a fraction "dropped" when its mean drop over seeds exceeds both the
threshold and 1.96 standard errors; the accuracy "drops at" the densest fraction from which every
sparser fraction dropped too: one noisy point between fractions that did not drop is not a drop.
A curve with no drop then shows one only when its sparsest point crosses by chance (at most
2.5 %, one-sided), not whenever any of its points does (about 30 % with 14 fractions). Standard errors are paired where the trials stored which test examples they got right:
the dense and the pruned model are scored on the same images, so the error of their difference
is sqrt(((n_10 + n_01) / n - drop^2) / n) (n_10, n_01: the images only one of them got right).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence

import numpy as np

__all__ = ["ALPHA", "CALIBRATION_NOTE", "PERMUTATIONS", "MIN_RUN", "equal_density_test", "holm", "verdict_after_holm",
           "paired_se", "drop_onset", "pack_correct", "unpack_correct"]

ALPHA = 0.05
PERMUTATIONS = 2000
MIN_RUN = 1  # fractions in the run that reaches the sparsest point, for a drop to count
# What `python benchmarks/claim_calibration.py --sweeps 1000` measured (claim_simulation.py's five
# null shapes, two designs; tests/test_claim_stats.py checks that the rate still holds).
CALIBRATION_NOTE = ("4.4-5.8 % per look (mean 5.1 %, +-0.7 each; five null shapes x two designs, "
                    "1,000 sweeps each), 3.8-6.5 % on the six-method design of methods_vs_expansion.yaml "
                    "(4.6-5.1 % over 3,000 more sweeps of its two highest shapes); Holm keeps the chance of "
                    "any false verdict in the whole table near 5 %")
Z_95 = 1.959963984540054


def _dummies(labels: Sequence, drop_first: bool) -> np.ndarray:
    values = sorted(set(labels), key=str)
    if drop_first:
        values = values[1:]
    index = {v: i for i, v in enumerate(values)}
    out = np.zeros((len(labels), len(values)))
    for row, label in enumerate(labels):
        if label in index:
            out[row, index[label]] = 1.0
    return out


def equal_density_test(drop, bound, cells: Sequence, seeds: Sequence,
                       permutations: int = PERMUTATIONS, rng_seed: int = 0) -> dict:
    """Partial correlation of drop and bound within cells of equal fraction and mask method, with
    seed fixed effects, and its two-sided permutation p-value (see the module notes). Returns n
    (trials used), cells (cells with two trials or more), df, partial_r, p_value and, when no test
    is possible, `why`."""
    drop, bound = np.asarray(drop, dtype=float), np.asarray(bound, dtype=float)
    cells, seeds = list(cells), list(seeds)
    finite = np.isfinite(drop) & np.isfinite(bound)
    counts: dict = {}
    for cell, ok in zip(cells, finite, strict=True):
        counts[cell] = counts.get(cell, 0) + int(ok)
    use = np.array([ok and counts[c] >= 2 for c, ok in zip(cells, finite, strict=True)], dtype=bool)
    result = {"n": int(use.sum()), "cells": sum(1 for c in counts.values() if c >= 2), "df": 0,
              "partial_r": math.nan, "p_value": math.nan}
    if not use.any():
        return {**result, "why": "no two trials share a kept fraction and mask method: there is no "
                                 "comparison at equal density (it needs several seeds)"}
    drop, bound = drop[use], bound[use]
    cells = [c for c, u in zip(cells, use, strict=True) if u]
    seeds = [s for s, u in zip(seeds, use, strict=True) if u]
    n = len(drop)
    design = np.column_stack([_dummies(cells, False), _dummies(seeds, True)])
    rank = np.linalg.matrix_rank(design)
    df = n - rank - 1
    result["df"] = int(df)
    if df < 2:
        return {**result, "why": f"{n} trials in {result['cells']} cells of equal density leave {max(df, 0)} "
                                 "degrees of freedom (needs 2: more seeds)"}
    # Residual maker M = I - X X^+ (cell and seed fixed effects removed).
    projector = np.eye(n) - design @ np.linalg.pinv(design)
    drop_res, bound_res = projector @ drop, projector @ bound
    bound_norm, drop_norm = np.linalg.norm(bound_res), np.linalg.norm(drop_res)
    if bound_norm <= 1e-9 * max(np.linalg.norm(bound), 1e-12):
        return {**result, "why": "the bound does not vary at equal kept fraction"}
    if drop_norm <= 1e-12:
        return {**result, "why": "the drop does not vary at equal kept fraction"}
    r = float(drop_res @ bound_res / (drop_norm * bound_norm))
    # Freedman-Lane: permute the drop's residuals within cells, refit, correlate again.
    order = np.argsort([str(c) for c in cells], kind="stable")
    cell_id = np.unique([str(c) for c in cells], return_inverse=True)[1]
    rng = np.random.default_rng(rng_seed)
    keys = rng.random((permutations, n)) + 2.0 * cell_id[order]  # sorts within each cell only
    shuffled = order[np.argsort(keys, axis=1)]  # row p: where each position of `order` takes from
    permuted = np.empty((n, permutations))
    permuted[order, :] = drop_res[shuffled].T
    refit = projector @ permuted
    norms = np.linalg.norm(refit, axis=0)
    null_r = (bound_res @ refit) / np.where(norms > 0, norms * bound_norm, np.inf)
    extreme = int(np.sum(np.abs(null_r) >= abs(r) - 1e-12))
    return {**result, "partial_r": r, "p_value": (1 + extreme) / (1 + permutations)}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN and is not counted as a look)."""
    p = np.asarray(p_values, dtype=float)
    looks = np.flatnonzero(np.isfinite(p))
    adjusted = np.full(len(p), math.nan)
    running = 0.0
    for rank, index in enumerate(looks[np.argsort(p[looks], kind="stable")]):
        running = max(running, min(1.0, (len(looks) - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def verdict_after_holm(partial_r: float, adjusted_p: float, looks: int) -> tuple[str, str]:
    """The verdict and its reason from r and the Holm-adjusted p of one look."""
    if not math.isfinite(adjusted_p):
        return "inconclusive", ""
    if adjusted_p >= ALPHA:
        return "inconclusive", f"Holm-adjusted p = {adjusted_p:.3g} over {looks} looks (needs < {ALPHA:g})"
    if partial_r < 0:
        return "supported", "at equal kept fraction, a larger bound went with a smaller drop"
    return "contradicted", "at equal kept fraction, a larger bound went with a LARGER drop"


def pack_correct(correct: np.ndarray) -> str:
    """Which test examples a model got right, stored on the trial: the bits packed, in base64
    (2,000 test images: 336 characters; optuna-dashboard shows every trial attribute, so short
    matters; zlib gains nothing on such near-random bits)."""
    packed = np.packbits(np.asarray(correct, dtype=bool)).tobytes()
    return base64.b64encode(packed).decode("ascii")


def unpack_correct(text: str, n: int) -> np.ndarray:
    packed = base64.b64decode(text)
    return np.unpackbits(np.frombuffer(packed, dtype=np.uint8), count=n).astype(bool)


def paired_se(reference: np.ndarray, pruned: np.ndarray) -> float:
    """Standard error of mean(reference) - mean(pruned) for two models scored on the same
    examples: the standard deviation of the per-example difference over sqrt(n)."""
    difference = reference.astype(float) - pruned.astype(float)
    n = len(difference)
    return float(np.sqrt(max(0.0, np.mean(difference ** 2) - np.mean(difference) ** 2) / n))


def drop_onset(dropped: Sequence[bool]) -> int | None:
    """Index (in dense-to-sparse order) of the first point of the run of dropped points that
    reaches the sparsest point, if that run has at least MIN_RUN points; None otherwise."""
    start = None
    for index in range(len(dropped) - 1, -1, -1):
        if not dropped[index]:
            break
        start = index
    if start is None or len(dropped) - start < MIN_RUN:
        return None
    return start
