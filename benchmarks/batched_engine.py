"""The batched engine against the per-trial one, measured in the same run on this machine.

    python benchmarks/batched_engine.py                # models: N masked copies fine-tuned
    python benchmarks/batched_engine.py --grid         # and the paper's RNN grid launched, per engine
                                                       # and workers (GPU: utilisation sampled too)

models: N masked copies of one RNN, GRU or LSTM (H = 128, k = 28, 28 features: sequential
MNIST's shape) and of an LSTM at k = 400, 40 features (FSDD's), fine-tuned for one epoch of `--samples` samples,
one after another with train.fit (cuDNN on a GPU) and together with batched.fit_batched. Prints
the wall time of each and the ratio (per-trial / batched: > 1 means the batched engine is faster).

grid: `expander-sweeps launch sweeps/mnist_noise.yaml` (trackers off, MNIST from ../shared/data),
per engine and worker count: wall time, trials per minute, and on a GPU the SM utilisation that
`nvidia-smi` reports every 0.5 s (mean, and the share of samples above 50 %).
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EXPANDER_SWEEPS_SHARED_DATA", REPO.parent / "shared" / "data"))

from expander_sweeps.models import build_model  # noqa: E402
from expander_sweeps.pruning.masks import MaskHolder, magnitude_mask  # noqa: E402
from expander_sweeps.spec import ModelSpec  # noqa: E402
from expander_sweeps.training.batched import StackedClassifier, StackedMasks, fit_batched  # noqa: E402
from expander_sweeps.training.train import fit  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_models(device: torch.device, counts: list[int], samples: int, cells: list[str]) -> None:
    shapes = {"rnn": (28, 28), "gru": (28, 28), "lstm28": (28, 28), "lstm": (40, 400)}
    for name in cells:
        features, steps = shapes[name]
        cell = name.removesuffix("28")
        x = torch.randn(samples, steps, features, device=device)
        y = torch.randint(0, 10, (samples,), device=device)
        base = build_model(ModelSpec(cell=cell, hidden=128), features, 10, 0).to(device)
        fractions = [0.9, 0.5, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01]
        settings = dict(phase="finetune", epochs=1, batch_size=128, lr=1e-3, seed=1)
        for count in counts:
            models, holders = [], []
            for index in range(count):
                model = copy.deepcopy(base)
                matrices = model.matrices()
                remaining = fractions[index % len(fractions)]
                holders.append(MaskHolder(matrices, {"W_hh": magnitude_mask(matrices["W_hh"], remaining)}))
                models.append(model)
            stacked = StackedClassifier(models)
            masks = StackedMasks(stacked, {"recurrent.weight_hh_l0": torch.stack([h._pairs[0][1] for h in holders])})
            fit(copy.deepcopy(models[0]), x[:256], y[:256], **settings)  # warm-up: kernels, allocator
            _sync(device)
            started = time.perf_counter()
            for model, holder in zip(models, holders, strict=True):
                fit(model, x, y, masks=holder, **settings)
            _sync(device)
            one_by_one = time.perf_counter() - started
            started = time.perf_counter()
            fit_batched(stacked, x, y, masks=masks, **settings)
            _sync(device)
            together = time.perf_counter() - started
            print(f"  {cell} k={steps}, {count:>2} models, {samples} samples: per trial {one_by_one:7.2f} s, "
                  f"batched {together:7.2f} s  ratio {one_by_one / together:.2f}x", flush=True)


def _sample_gpu(samples: list[float], stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=5)
            samples.append(float(out.stdout.split()[0]))
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            return
        stop.wait(0.5)


def bench_grid(engines: list[str], workers: list[str], extra: list[str]) -> None:
    for engine in engines:
        for count in workers:
            with tempfile.TemporaryDirectory(prefix="es-bench-engine-") as folder:
                command = [sys.executable, "-m", "expander_sweeps.cli", "launch", str(REPO / "sweeps" / "mnist_noise.yaml"),
                           "--no-report", "--set", f"data.root={SHARED / 'mnist'}", "--set", "data.download=false",
                           "--set", f"run_dir={folder}", "--set", "tracking.mlflow.enabled=false",
                           "--set", f"training.engine={engine}"]
                for override in extra:
                    command += ["--set", override]
                if count != "default":
                    command += ["--workers", count]
                env = {**os.environ, "EXPANDER_SWEEPS_TRACKERS": "off"}
                env.pop("EXPANDER_SWEEPS_WORKERS", None)
                samples: list[float] = []
                stop = threading.Event()
                sampler = threading.Thread(target=_sample_gpu, args=(samples, stop), daemon=True)
                if torch.cuda.is_available():
                    sampler.start()
                started = time.perf_counter()
                out = subprocess.run(command, capture_output=True, text=True, env=env)
                seconds = time.perf_counter() - started
                stop.set()
                if out.returncode != 0:
                    raise SystemExit(f"launch failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
                trials = out.stdout.count("| dense ")  # one finished-trial line each
                busy = (f", SM mean {sum(samples) / len(samples):.0f} %, > 50 % in "
                        f"{100 * sum(s > 50 for s in samples) / len(samples):.0f} % of samples") if samples else ""
                print(f"  engine {engine:9} workers {count:>7}: {seconds:6.1f} s, {trials} trials, "
                      f"{60 * trials / seconds:.1f} trials/min{busy}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--counts", type=int, nargs="+", default=None, help="group sizes (default 8 32 on CUDA, 4 8 on CPU)")
    parser.add_argument("--samples", type=int, default=None, help="samples per epoch (default 8000 on CUDA, 2000 on CPU)")
    parser.add_argument("--cells", nargs="+", default=["rnn", "gru", "lstm28", "lstm"],
                        choices=["rnn", "gru", "lstm28", "lstm"],
                        help="rnn, gru, lstm28: k = 28, 28 features (sequential MNIST); lstm: k = 400, 40 (FSDD)")
    parser.add_argument("--grid", action="store_true", help="also launch the paper's RNN grid per engine and workers")
    parser.add_argument("--workers", nargs="+", default=None, help="worker counts for --grid (default: default 1 on CPU, default 2 4 8 on CUDA)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="spec overrides for --grid")
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    cuda = device.type == "cuda"
    print(f"[engine] {torch.cuda.get_device_name() if cuda else 'CPU'}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", flush=True)
    bench_models(device, args.counts or ([8, 32] if cuda else [4, 8]), args.samples or (8000 if cuda else 2000),
                 args.cells)
    if args.grid:
        print("[engine] the paper's RNN grid (sweeps/mnist_noise.yaml), per engine and workers", flush=True)
        bench_grid(["per_trial", "batched"], args.workers or (["default", "2", "4", "8"] if cuda else ["default", "1"]),
                   args.overrides)


if __name__ == "__main__":
    main()
