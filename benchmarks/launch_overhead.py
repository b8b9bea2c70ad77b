"""Tracking overhead of the whole command a user runs: `expander-sweeps launch` on the quickstart
(its CPU default: one single-threaded worker per core, the launch's one tracker process fed from
the study), the report and its publishing included, from start to exit. Without trackers, then
with MLflow (embedded, registry) and W&B (offline), alternating; medians and the spread.

tracking_overhead.py times `launch_study` in one process (the trials alone); this one times what
a user waits for, including the end of the launch (the last trials' logging, the report, the
registry aliases, the processes' exits).

    python benchmarks/launch_overhead.py [--repeat 2] [--data ../shared/data/mnist] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed_launch(folder: Path, data: str, extra: list[str], trackers: set[str]) -> float:
    settings = [f"data.root={data}", f"run_dir={folder}", *extra,
                f"tracking.mlflow.enabled={str('mlflow' in trackers).lower()}",
                f"tracking.wandb.enabled={str('wandb' in trackers).lower()}", "tracking.wandb.mode=offline"]
    command = [sys.executable, "-m", "expander_sweeps.cli", "launch", str(REPO / "sweeps" / "quickstart.yaml")]
    for setting in settings:
        command += ["--set", setting]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"the launch failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--trackers", default="mlflow,wandb", help="comma-separated: mlflow, wandb")
    parser.add_argument("--repeat", type=int, default=1, help="pairs of runs (off/on, then on/off, ...)")
    args = parser.parse_args()
    chosen = set(args.trackers.split(","))
    offs, ons = [], []
    with tempfile.TemporaryDirectory(prefix="es-bench-launch-") as root:
        for index in range(2 * args.repeat):
            tracked = (index % 4) in (1, 2)  # off, on, on, off, ...: neither side always first
            seconds = timed_launch(Path(root) / f"run{index}", args.data, args.overrides, chosen if tracked else set())
            (ons if tracked else offs).append(seconds)
            print(f"  run {index + 1}: {'with' if tracked else 'without'} trackers {seconds:6.1f} s", flush=True)
    off, on = statistics.median(offs), statistics.median(ons)
    if args.repeat > 1:
        spread = [100 * (max(runs) / min(runs) - 1) for runs in (offs, ons)]
        print(f"medians of {args.repeat} runs each (max/min of identical runs: +{spread[0]:.0f} % without, "
              f"+{spread[1]:.0f} % with trackers):")
    print(f"`expander-sweeps launch` quickstart, no trackers: {off:7.1f} s")
    print(f"`expander-sweeps launch` quickstart, {args.trackers:10s}  {on:7.1f} s")
    print(f"tracking overhead of the command:        {100 * (on / off - 1):+6.1f} %  (ratio {on / off:.3f}; target < 5 %)")


if __name__ == "__main__":
    main()
