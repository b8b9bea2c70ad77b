"""Tracking overhead: the quickstart sweep with no tracker, then with MLflow (embedded, model
registry on) and W&B (offline), in the same process on the same machine. Prints the ratio.

Trackers run in a child process on idle CPU time (SCHED_IDLE, tracking/process.py): training
never waits for a W&B run to start or a model to upload, and shares neither the GIL nor its
cores with them; the time to drain the queue at the end counts in the total here. Runs with
and without trackers alternate (`--repeat` pairs) because identical runs vary by several percent.

    python benchmarks/tracking_overhead.py [--repeat 2] [--data ../shared/data/mnist] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import platform
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from expander_sweeps.spec import load_spec
from expander_sweeps.sweep.loop import launch_study
from expander_sweeps.sweep.workers import usable_cores

REPO = Path(__file__).resolve().parents[1]


def timed_sweep(folder: Path, data: str, extra: list[str], trackers: set[str]) -> tuple[float, float, dict]:
    overrides = [f"data.root={data}", f"run_dir={folder}", *extra,
                 f"tracking.mlflow.enabled={str('mlflow' in trackers).lower()}",
                 f"tracking.wandb.enabled={str('wandb' in trackers).lower()}", "tracking.wandb.mode=offline"]
    spec = load_spec(REPO / "sweeps" / "quickstart.yaml", overrides)
    started = time.perf_counter()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = launch_study(spec)
    total = time.perf_counter() - started
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU of the processes this sweep started and waited for: the tracker process (with
    # wandb-core, which it waits for when W&B is on).
    result.tracker_seconds["CPU of child processes"] = (
        children_after.ru_utime + children_after.ru_stime - children_before.ru_utime - children_before.ru_stime)
    trial_seconds = sum(t.user_attrs["seconds"] for t in result.study.trials if "seconds" in t.user_attrs)
    return total, trial_seconds, result.tracker_seconds


def _mean_difference(without: list[float], with_: list[float]) -> str:
    """The difference of the mean totals as a share of the untracked mean, with its standard
    error (the two sides' variances of the mean added: independent runs). Identical runs vary by
    up to a third here, so the error says how far a ratio of a few runs can be trusted."""
    if min(len(without), len(with_)) < 2:
        return "undefined with one run a side (its standard error needs two; use --repeat 2 or more)"
    base = statistics.mean(without)
    error = (statistics.variance(without) / len(without) + statistics.variance(with_) / len(with_)) ** 0.5
    return (f"{100 * (statistics.mean(with_) / base - 1):+6.1f} % +- {100 * error / base:.1f} points "
            f"(one standard error; means {base:.1f} s and {statistics.mean(with_):.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--trackers", default="mlflow,wandb", help="comma-separated: mlflow, wandb")
    parser.add_argument("--repeat", type=int, default=1, help="pairs of runs (off/on, then on/off, ...)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="es-bench-tracking-"))
    chosen = set(args.trackers.split(","))
    offs, ons = [], []
    tracker_cpu = []  # CPU seconds of the processes each tracked sweep started
    try:
        for index in range(2 * args.repeat):
            # off, on, on, off, off, on ...: neither side always runs first (warm caches, drift).
            tracked = (index % 4) in (1, 2)
            folder = root / f"run{index}"
            total, trials, seconds = timed_sweep(folder, args.data, args.overrides, chosen if tracked else set())
            (ons if tracked else offs).append((total, trials))
            if tracked:
                calls = seconds
                tracker_cpu.append(seconds["CPU of child processes"])
            print(f"  run {index + 1}: {'with' if tracked else 'without'} trackers {total:6.1f} s total, "
                  f"{trials:6.1f} s in trials", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    off_total, off_trials = (statistics.median(v) for v in zip(*offs, strict=True))
    on_total, on_trials = (statistics.median(v) for v in zip(*ons, strict=True))
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU only'}")
    if args.repeat > 1:
        spread = [100 * (max(t for t, _ in runs) / min(t for t, _ in runs) - 1) for runs in (offs, ons)]
        print(f"medians of {args.repeat} runs each (max/min of identical runs: +{spread[0]:.0f} % without, "
              f"+{spread[1]:.0f} % with trackers):")
    print(f"quickstart sweep, no trackers:        {off_total:7.1f} s total, {off_trials:7.1f} s in trials")
    print(f"quickstart sweep, {args.trackers:19s} {on_total:7.1f} s total, {on_trials:7.1f} s in trials")
    print(f"tracking overhead (total):            {100 * (on_total / off_total - 1):+6.1f} %  "
          f"(ratio {on_total / off_total:.3f}; target < 5 %)")
    print(f"tracking overhead (time in trials):   {100 * (on_trials / off_trials - 1):+6.1f} %")
    print(f"tracking overhead (means):            {_mean_difference([t for t, _ in offs], [t for t, _ in ons])}")
    # The trackers' CPU as a share of the sweep's core-seconds: what they would cost if they took
    # it from training. Under SCHED_IDLE they run on time training leaves idle instead.
    cores = usable_cores()
    cpu = statistics.median(tracker_cpu)
    print(f"trackers' CPU (median):               {cpu:6.1f} s = {100 * cpu / (cores * off_total):.1f} % of the "
          f"sweep's {cores} cores x {off_total:.1f} s (run on idle CPU time where the OS has SCHED_IDLE)")
    print("wall time in tracker calls (in the tracker process, waits for an idle core included), largest first:")
    for key, seconds in sorted(calls.items(), key=lambda kv: -kv[1])[:10]:
        print(f"  {key:28s} {seconds:7.2f} s")


if __name__ == "__main__":
    main()
