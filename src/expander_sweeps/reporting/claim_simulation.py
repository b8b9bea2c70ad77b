"""Synthetic sweeps for calibrating the equal-density test (claim_stats.py): how often it prints
a verdict when the bound has no effect at equal kept fraction (null shapes), and how often it
finds a real effect of either sign (power).

A synthetic sweep has mask methods x seeds x fractions trials. The bound of a trial is a
method's curve over the fraction, plus a seed effect, plus a per-trial deviation whose spread
grows as edges are removed (masks of one method at one fraction differ more when they are
sparse). The drop follows one of the null shapes below, plus a seed effect, plus noise that is
larger where the curve is steep (seeds collapse at slightly different fractions) and test-set
noise. Under a null the drop never reads the bound's per-trial deviation; with an effect it does.

Null shapes (the drop as a function of the kept fraction f; none is the shape the test assumes,
since it assumes none):
- collapse: flat, then collapsing below a fraction (a real W_hh curve), spread largest in the collapse;
- linear: proportional to the removed fraction;
- step: 0 above a fraction, 0.4 below it;
- method: the second mask method collapses at twice the fraction of the first, while its bound
  is also higher (a method better or worse for reasons of its own);
- seed: flat-then-collapse, and a seed whose bound is higher everywhere also drops less everywhere.

Run `python benchmarks/claim_calibration.py` for the rates the README states.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .claim_stats import ALPHA, equal_density_test

__all__ = ["NULL_SHAPES", "Design", "simulate_sweep", "verdict_rates"]

NULL_SHAPES = ("collapse", "linear", "step", "method", "seed")


@dataclass(frozen=True)
class Design:
    methods: int = 2
    seeds: int = 3
    fractions: tuple[float, ...] = (0.8, 0.5, 0.3, 0.15, 0.07)
    n_test: int = 2000  # test examples behind each accuracy (binomial noise of a drop)


def _collapse(f: np.ndarray, at: float) -> np.ndarray:
    return 0.6 * np.clip(1.0 - f / at, 0.0, None) ** 1.5


def simulate_sweep(shape: str, design: Design, rng: np.random.Generator,
                   effect: float = 0.0) -> dict[str, list]:
    """One synthetic sweep: lists drop, bound, cell, seed, one entry per trial. `effect` adds
    effect x (the bound's deviation from its cell's expected value) to the drop: negative is
    the claim (a larger bound, a smaller drop)."""
    rows = {"drop": [], "bound": [], "cell": [], "seed": []}
    seed_bound = rng.normal(0.0, 0.15, design.seeds)
    seed_drop = rng.normal(0.0, 0.01, design.seeds)
    for method in range(design.methods):
        for seed in range(design.seeds):
            # Seeds collapse at slightly different fractions: the spread is largest in the collapse.
            shift = float(np.exp(rng.normal(0.0, 0.15)))
            for f in design.fractions:
                deviation = rng.normal(0.0, 0.05 + 0.25 * (1.0 - f))
                bound = 0.8 * np.log(f) + 0.4 * method + seed_bound[seed] + deviation
                fs = np.array([f * shift])
                if shape == "collapse":
                    mean = _collapse(fs, 0.3)[0]
                elif shape == "linear":
                    mean = 0.3 * (1.0 - fs[0])
                elif shape == "step":
                    mean = 0.4 if fs[0] < 0.2 else 0.0
                elif shape == "method":
                    mean = _collapse(fs * (2.0 if method else 1.0), 0.3)[0]
                elif shape == "seed":
                    mean = _collapse(fs, 0.3)[0] - 0.05 * seed_bound[seed] / 0.15
                else:
                    raise ValueError(f"unknown null shape {shape!r}; one of {NULL_SHAPES}")
                p = min(0.99, max(0.01, 0.97 - mean))
                test_noise = rng.normal(0.0, np.sqrt(2 * p * (1 - p) / design.n_test))
                drop = mean + seed_drop[seed] + test_noise + effect * deviation
                rows["drop"].append(float(drop))
                rows["bound"].append(float(bound))
                rows["cell"].append((f, method))
                rows["seed"].append(seed)
    return rows


def verdict_rates(shape: str, design: Design, sweeps: int, effect: float = 0.0,
                  rng_seed: int = 0, permutations: int = 500) -> dict[str, float]:
    """Over `sweeps` synthetic sweeps, one look each at level ALPHA: the share that said
    "supported" (r < 0 and p < ALPHA) and "contradicted" (r > 0 and p < ALPHA)."""
    rng = np.random.default_rng(rng_seed)
    supported = contradicted = 0
    for index in range(sweeps):
        rows = simulate_sweep(shape, design, rng, effect)
        test = equal_density_test(rows["drop"], rows["bound"], rows["cell"], rows["seed"],
                                  permutations=permutations, rng_seed=index)
        if test["p_value"] < ALPHA:  # NaN (no test) compares False
            supported += test["partial_r"] < 0
            contradicted += test["partial_r"] > 0
    return {"supported": supported / sweeps, "contradicted": contradicted / sweeps}
