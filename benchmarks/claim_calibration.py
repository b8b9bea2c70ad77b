"""Calibration of the report's equal-density test (claim_stats.py) on synthetic sweeps
(claim_simulation.py): the false-verdict rate of one look on each null shape, against the level
ALPHA the rule is set at, and the power against a real effect of each sign.

    python benchmarks/claim_calibration.py               # 2,000 sweeps per shape (~2 minutes)
    python benchmarks/claim_calibration.py --sweeps 300  # a quicker look

The ratio printed for each null shape is the measured rate over ALPHA: at most 1 (within its
binomial spread) means calibrated. The README's "What the numbers mean" quotes these figures.
"""

from __future__ import annotations

import argparse
import math
import time

from expander_sweeps.reporting.claim_simulation import NULL_SHAPES, Design, verdict_rates
from expander_sweeps.reporting.claim_stats import ALPHA


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweeps", type=int, default=2000)
    parser.add_argument("--permutations", type=int, default=500)
    parser.add_argument("--only", default="", help="the designs whose label starts with this (e.g. '6 methods')")
    args = parser.parse_args()
    designs = {"2 methods x 3 seeds x 5 fractions": Design(),
               "1 method x 4 seeds x 8 fractions": Design(methods=1, seeds=4,
                                                         fractions=(0.9, 0.7, 0.5, 0.35, 0.25, 0.15, 0.1, 0.05)),
               # sweeps/methods_vs_expansion.yaml: six methods, three seeds, four fractions
               "6 methods x 3 seeds x 4 fractions": Design(methods=6, seeds=3, fractions=(0.5, 0.25, 0.125, 0.0625))}
    if args.only:
        designs = {k: v for k, v in designs.items() if k.startswith(args.only)}
    started = time.perf_counter()
    for label, design in designs.items():
        print(f"\n{label}, {args.sweeps} synthetic sweeps each, one look at level {ALPHA:g}")
        print(f"{'null shape':<10} {'supported':>10} {'contradicted':>13} {'false verdicts':>15} {'+- 1 SE':>8} {'/ ALPHA':>8}")
        for shape in NULL_SHAPES:
            rates = verdict_rates(shape, design, args.sweeps, permutations=args.permutations)
            total = rates["supported"] + rates["contradicted"]
            se = math.sqrt(total * (1 - total) / args.sweeps)
            print(f"{shape:<10} {rates['supported']:>10.3f} {rates['contradicted']:>13.3f} {total:>15.3f} "
                  f"{se:>8.3f} {total / ALPHA:>8.2f}")
        for effect in (-0.1, 0.1):
            rates = verdict_rates("collapse", design, args.sweeps // 2, effect=effect, permutations=args.permutations)
            print(f"power, effect {effect:+g} (collapse shape): supported {rates['supported']:.3f}, "
                  f"contradicted {rates['contradicted']:.3f}")
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
