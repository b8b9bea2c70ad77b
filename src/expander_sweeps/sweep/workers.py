"""Local worker processes: `launch --workers N` starts N `expander-sweeps worker` processes.

Each worker is an ordinary `worker` process on the same study, so the local path and the
many-machine path are one mechanism. With GPUs, workers are spread round-robin over the
visible devices (CUDA_VISIBLE_DEVICES of each child); on a CPU the cores are shared out.

Why several single-threaded workers by default on a CPU: the recurrent models swept here
(H = 128 and the like) run small matrix products that scale poorly across threads
(`benchmarks/run.py --only cores` measures it on any machine; figures in benchmarks/README.md).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .pacing import LAG_FILE_VARIABLE

__all__ = ["visible_gpus", "usable_cores", "default_workers", "default_worker_plan", "gpu_worker_plan", "dense_threads", "run_workers", "OVERRIDES_VARIABLE",
           "WORKERS_VARIABLE", "inherited_overrides"]

OVERRIDES_VARIABLE = "EXPANDER_SWEEPS_WORKER_OVERRIDES"
SHARE_VARIABLE = "EXPANDER_SWEEPS_CPU_SHARE"  # "workers/cores" of a CPU launch, for dense_threads
WORKER_COUNT_VARIABLE = "EXPANDER_SWEEPS_WORKER_COUNT"  # how many workers a launch started
WORKERS_VARIABLE = "EXPANDER_SWEEPS_WORKERS"  # the default of `launch --workers`, for a whole machine or CI


def inherited_overrides() -> tuple[str, ...]:
    """The --set values a `launch --workers N` parent handed this worker."""
    return tuple(json.loads(os.environ.get(OVERRIDES_VARIABLE) or "[]"))


# What a Linux machine with a GPU that torch could use has: NVIDIA's driver (its /proc folder, its
# device files; containers with GPUs get both), AMD's ROCm (/dev/kfd), WSL2's GPU (/dev/dxg).
_GPU_DRIVER_PATHS = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


def _no_gpu_driver() -> bool:
    """True when this is Linux and no GPU driver is there at all, so torch would find no device.
    Asking torch costs its import (2.5 s of CPU on a small machine) in the launching process,
    which imports nothing else of torch's: on a CPU machine the workers would start that much later."""
    return sys.platform == "linux" and not any(os.path.exists(path) for path in _GPU_DRIVER_PATHS)


def visible_gpus() -> list[str]:
    """GPU ids this process may use, as CUDA_VISIBLE_DEVICES spells them."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    if _no_gpu_driver():
        return []
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and `taskset` narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# Several trials share one GPU: a trial of these small recurrent models leaves most of a GPU idle,
# and each worker needs CPU time to feed it: about two cores per GPU worker, at most 8 per GPU
# (the H200 figures behind these numbers are in benchmarks/README.md, "Workers per GPU").
CORES_PER_GPU_WORKER = 2
MAX_WORKERS_PER_GPU = 8
GPU_MEMORY_PER_WORKER = 2 * 2**30  # a CUDA context (~0.5 GiB) and a small model's training, with room


def gpu_worker_plan(gpus: int, cores: int, free_memory: list[int] | None, runnable: int) -> tuple[int, str]:
    """Workers for `gpus` GPUs: per GPU, one per CORES_PER_GPU_WORKER cores of the machine's share
    for that GPU, at most MAX_WORKERS_PER_GPU, and no more than the GPU with the least free memory
    holds at GPU_MEMORY_PER_WORKER each (`free_memory`: bytes per GPU, None when unknown); in all,
    at least one and no more than the trials left. Returns the count and why, in words."""
    by_cores = max(1, cores // (CORES_PER_GPU_WORKER * gpus))
    per_gpu = min(MAX_WORKERS_PER_GPU, by_cores)
    why = [f"{cores} cores / {gpus} GPU(s) at {CORES_PER_GPU_WORKER} per worker: {by_cores}"]
    if by_cores > MAX_WORKERS_PER_GPU:
        why.append(f"capped at {MAX_WORKERS_PER_GPU}")
    if free_memory:
        by_memory = max(1, min(free_memory) // GPU_MEMORY_PER_WORKER)
        why.append(f"{min(free_memory) / 2**30:.0f} GiB free holds {by_memory}")
        per_gpu = min(per_gpu, by_memory)
    count = max(1, min(gpus * per_gpu, runnable))
    if count < gpus * per_gpu:
        why.append(f"{runnable} trial(s) left")
    return count, f"{per_gpu} per GPU ({'; '.join(why)})"


def _free_gpu_memory(gpus: list[str]) -> list[int] | None:
    """Free bytes of each visible GPU from nvidia-smi (None when it cannot say: no nvidia-smi, GPUs
    named by UUID). Not from torch: that would put a CUDA context of the launcher on the GPU."""
    if not all(g.isdigit() for g in gpus):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.free", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    free = {}
    for line in out.splitlines():
        index, _, mib = line.partition(",")
        if index.strip().isdigit() and mib.strip().isdigit():
            free[index.strip()] = int(mib.strip()) * 2**20
    return [free[g] for g in gpus] if all(g in free for g in gpus) else None


def default_worker_plan(runnable: int | Callable[[], int]) -> tuple[int, str]:
    """Workers for a launch with `runnable` trials left to run (or a function counting them,
    called only when the count matters), and why: with GPUs, several per GPU (`gpu_worker_plan`);
    on a CPU one single-threaded worker per core; never more than there are trials (a worker with
    nothing to take only costs its start-up). $EXPANDER_SWEEPS_WORKERS overrides both."""
    chosen = os.environ.get(WORKERS_VARIABLE, "").strip()
    if chosen:
        if not chosen.isdigit() or int(chosen) < 1:
            raise ValueError(f"${WORKERS_VARIABLE} must be a whole number >= 1, but it is {chosen!r}")
        return int(chosen), f"${WORKERS_VARIABLE}"
    gpus = visible_gpus()
    count = runnable() if callable(runnable) else runnable
    if gpus:
        return gpu_worker_plan(len(gpus), usable_cores(), _free_gpu_memory(gpus), count)
    cores = usable_cores()
    if cores == 1:
        return 1, "one core"
    workers = max(1, min(cores, count))
    return workers, f"one single-threaded worker per core ({cores})" + (f", {count} trial(s) left" if count < cores else "")


def default_workers(runnable: int | Callable[[], int]) -> int:
    """The count of `default_worker_plan`."""
    return default_worker_plan(runnable)[0]


def dense_threads(spec) -> int | None:
    """Threads for training a dense model in a local CPU worker, or None to leave torch's.

    Every fine-tuning trial waits for its dense model, so while the sweep's D dense models train,
    only min(workers, D) workers have work: those share all the cores (one dense model on 2 cores
    trains with 2 threads, 1.2x faster than with one) instead of leaving cores idle."""
    share = os.environ.get(SHARE_VARIABLE, "")
    workers, _, cores = share.partition("/")
    if not (workers.isdigit() and cores.isdigit()):
        return None
    variances = len(spec.noise.variances) if spec.noise.at_training else 1
    dense_models = len(spec.training.seeds) * max(1, variances)
    return max(1, int(cores) // max(1, min(int(workers), dense_models)))


def _wait_a_second_or_until_all_exit(processes: list[subprocess.Popen]) -> None:
    """The progress bar's tick (one second), cut short when the last worker exits: the end of
    the launch (the last trials' logging, the report) should not wait for the tick."""
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and any(p.poll() is None for p in processes):
        time.sleep(0.05)


def throttled(poll: Callable[[], tuple[int, int]], share: float = 0.05,
              clock: Callable[[], float] = time.monotonic) -> Callable[[], tuple[int, int]]:
    """`poll`, called at most often enough to keep its cost under `share` of one core: after a
    poll that took d seconds, calls within d / share return its answer again.

    The launching process polls the study every second while the workers use every core, and
    a poll's cost grows with the study: Optuna re-reads each unfinished trial on every read, so
    with 2,000 grid points enqueued one poll took 0.23-0.29 s (a quarter of a core, twice that
    with the trackers' relay). Small studies (polls of milliseconds) still update every second."""
    last: tuple[int, int] | None = None
    due = -math.inf

    def poll_within_budget() -> tuple[int, int]:
        nonlocal last, due
        now = clock()
        if last is None or now >= due:
            last = poll()
            due = now + (clock() - now) / share
        return last

    return poll_within_budget


def run_workers(spec_path: str, overrides: tuple[str, ...], count: int, console, extend: bool = False,
                progress: Callable[[], tuple[int, int]] | None = None, untracked: bool = False,
                lag_file: Path | None = None, why: str = "") -> list[int]:
    """Start `count` workers, relay their lines with a [wN] prefix, and return their exit codes.

    `progress` (trials done, trials in all), polled every second (less often when a poll is
    slow: `throttled`), drives a progress bar like
    the one a single process shows. `untracked`: the workers log to no tracker (the caller logs
    their trials from the study; `lag_file`: where it says how far behind its trackers are, which
    the workers read to pause for them, see pacing.py). Ctrl-C reaches the workers too (one
    process group): each marks its current trial failed and stops; KeyboardInterrupt is raised
    once all have."""
    gpus = visible_gpus()
    if progress is not None:
        progress = throttled(progress)
    from ..console_output import PROGRESS_VARIABLE, VERBOSITY

    command = [sys.executable, "-m", "expander_sweeps.cli", *(["-q"] if VERBOSITY.quiet else []),
               *(["-v"] if VERBOSITY.verbose else []), "worker", str(spec_path)]
    if extend:
        command.append("--extend")
    processes = []
    for index in range(count):
        env = dict(os.environ)
        # --set values travel in the environment, not on the command line, where `ps` shows
        # them to every user of the machine (a storage URL may hold a password).
        env[OVERRIDES_VARIABLE] = json.dumps(list(overrides))
        env[WORKER_COUNT_VARIABLE] = str(count)  # the batched engine's groups share the trials out
        if console.is_terminal:  # the launch draws a bar; its workers' progress lines would clutter it
            env.setdefault(PROGRESS_VARIABLE, "0")
        if untracked:
            env["EXPANDER_SWEEPS_TRACKERS"] = "off"
        if lag_file is not None:
            env[LAG_FILE_VARIABLE] = str(lag_file)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
            # Several workers per GPU: each feeds its GPU from its share of the cores.
            env.setdefault("OMP_NUM_THREADS", str(max(1, usable_cores() // count)))
        else:
            # CPU workers share the cores instead of each starting one thread per core.
            env.setdefault("OMP_NUM_THREADS", str(max(1, usable_cores() // count)))
            env[SHARE_VARIABLE] = f"{count}/{usable_cores()}"
        processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True, env=env, bufsize=1))
    console.print(f"started {count} workers"
                  + (f" on GPUs {', '.join(env_gpu for env_gpu in gpus)}" if gpus else " on the CPU")
                  + (f": {why}" if why else ""), highlight=False, soft_wrap=True)

    with Progress(TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=progress is None) as bar:
        task = bar.add_task("trials", total=None)

        def relay(index: int, stream) -> None:
            for line in stream:
                bar.console.print(f"[w{index}] {line.rstrip()}", highlight=False, markup=False, soft_wrap=True)

        threads = [threading.Thread(target=relay, args=(i, p.stdout), daemon=True) for i, p in enumerate(processes)]
        for thread in threads:
            thread.start()
        interrupted = False
        while any(p.poll() is None for p in processes):
            try:
                _wait_a_second_or_until_all_exit(processes)
                if progress is not None:
                    done, total = progress()
                    bar.update(task, completed=done, total=total)
            except KeyboardInterrupt:  # the workers got it too: let them fail their trials cleanly
                interrupted = True
            except Exception:  # noqa: BLE001 - a progress bar must never stop a sweep
                progress = None
        codes = [p.wait() for p in processes]
        for thread in threads:
            thread.join(timeout=5)
    if interrupted:
        raise KeyboardInterrupt
    return codes
