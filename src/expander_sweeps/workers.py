"""Local worker processes: `launch --workers N` starts N `expander-sweeps worker` processes.

Each worker is an ordinary `worker` process on the same study, so the local path and the
many-machine path are one mechanism. With GPUs, workers are spread round-robin over the
visible devices (CUDA_VISIBLE_DEVICES of each child); on a CPU the cores are shared out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

__all__ = ["visible_gpus", "default_workers", "run_workers", "OVERRIDES_VARIABLE", "inherited_overrides"]

OVERRIDES_VARIABLE = "EXPANDER_SWEEPS_WORKER_OVERRIDES"


def inherited_overrides() -> tuple[str, ...]:
    """The --set values a `launch --workers N` parent handed this worker."""
    return tuple(json.loads(os.environ.get(OVERRIDES_VARIABLE) or "[]"))


def visible_gpus() -> list[str]:
    """GPU ids this process may use, as CUDA_VISIBLE_DEVICES spells them."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def default_workers() -> int:
    """One worker per visible GPU; one on a CPU-only machine."""
    return max(1, len(visible_gpus()))


def run_workers(spec_path: str, overrides: tuple[str, ...], count: int, console, extend: bool = False) -> list[int]:
    """Start `count` workers, relay their lines with a [wN] prefix, and return their exit codes."""
    gpus = visible_gpus()
    command = [sys.executable, "-m", "expander_sweeps.cli", "worker", str(spec_path)]
    if extend:
        command.append("--extend")
    processes = []
    for index in range(count):
        env = dict(os.environ)
        # --set values travel in the environment, not on the command line, where `ps` shows
        # them to every user of the machine (a storage URL may hold a password).
        env[OVERRIDES_VARIABLE] = json.dumps(list(overrides))
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
        else:
            # CPU workers share the cores instead of each starting one thread per core.
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // count)))
        processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True, env=env, bufsize=1))
    console.print(f"started {count} workers"
                  + (f" on GPUs {', '.join(env_gpu for env_gpu in gpus)}" if gpus else " on the CPU"))

    def relay(index: int, stream) -> None:
        for line in stream:
            console.print(f"[w{index}] {line.rstrip()}", highlight=False, markup=False, soft_wrap=True)

    threads = [threading.Thread(target=relay, args=(i, p.stdout), daemon=True) for i, p in enumerate(processes)]
    for thread in threads:
        thread.start()
    try:
        codes = [p.wait() for p in processes]
    except KeyboardInterrupt:  # Ctrl-C reached the workers too (same process group): let them fail cleanly
        codes = [p.wait() for p in processes]
    for thread in threads:
        thread.join(timeout=5)
    return codes
