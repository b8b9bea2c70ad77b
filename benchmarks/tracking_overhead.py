"""Tracking overhead: the quickstart sweep with no tracker, then with MLflow (embedded, model
registry on) and W&B (offline), in the same process on the same machine. Prints the ratio.

Trackers run on a background thread (FanOut): training never waits for a W&B run to start or
a model to upload; the time to drain the queue at the end counts in the total here.

    python benchmarks/tracking_overhead.py [--data ../shared/data/mnist] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from expander_sweeps.spec import load_spec
from expander_sweeps.sweep import launch_study

REPO = Path(__file__).resolve().parents[1]


def timed_sweep(folder: Path, data: str, extra: list[str], trackers: set[str]) -> tuple[float, float, dict]:
    overrides = [f"data.root={data}", f"run_dir={folder}", *extra,
                 f"tracking.mlflow.enabled={str('mlflow' in trackers).lower()}",
                 f"tracking.wandb.enabled={str('wandb' in trackers).lower()}", "tracking.wandb.mode=offline"]
    spec = load_spec(REPO / "sweeps" / "quickstart.yaml", overrides)
    started = time.perf_counter()
    result = launch_study(spec)
    total = time.perf_counter() - started
    trial_seconds = sum(t.user_attrs["seconds"] for t in result.study.trials if "seconds" in t.user_attrs)
    return total, trial_seconds, result.tracker_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--trackers", default="mlflow,wandb", help="comma-separated: mlflow, wandb")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="es-bench-tracking-"))
    try:
        chosen = set(args.trackers.split(","))
        off_total, off_trials, _ = timed_sweep(root / "off", args.data, args.overrides, set())
        on_total, on_trials, calls = timed_sweep(root / "on", args.data, args.overrides, chosen)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU only'}")
    print(f"quickstart sweep, no trackers:        {off_total:7.1f} s total, {off_trials:7.1f} s in trials")
    print(f"quickstart sweep, {args.trackers:19s} {on_total:7.1f} s total, {on_trials:7.1f} s in trials")
    print(f"tracking overhead (total):            {100 * (on_total / off_total - 1):+6.1f} %  "
          f"(ratio {on_total / off_total:.3f}; target < 5 %)")
    print(f"tracking overhead (time in trials):   {100 * (on_trials / off_trials - 1):+6.1f} %")
    print("time in tracker calls (background thread), largest first:")
    for key, seconds in sorted(calls.items(), key=lambda kv: -kv[1])[:10]:
        print(f"  {key:28s} {seconds:7.2f} s")


if __name__ == "__main__":
    main()
