"""Every performance benchmark of issue #5, each against its baseline measured in the same run.

    python benchmarks/run.py                 # all sections (about 10 minutes on 2 CPU cores)
    python benchmarks/run.py --only spectra  # one section: throughput, sweep, spectra, memory,
                                             # cores, tracking, gpu
    python benchmarks/run.py --quick         # smaller sizes, for a smoke test
    python benchmarks/run.py --only sweep --paper-grid   # the paper's whole grid, timed (~10 min)

Sections:
  throughput  samples/s of the project's trainer vs the naive DataLoader loop (benchmarks/
              naive_trial.py), dense and fine-tuning with the mask held (the naive one with
              torch.nn.utils.prune hooks): RNN H=128 on sequential MNIST (k=28), LSTM H=128 on
              FSDD MFCC frames (k=400)
  sweep       a reduced paper grid run by the project's sweep and by the naive script's loop:
              trainings, epochs, wall time; and the same counts for the full paper grid
  spectra     time per mask of lambda_1/lambda_2/bounds, with lambda_2 checked against a dense
              reference (relative error)
  memory      peak resident memory of one trial and of a sweep process, project vs naive
  cores       the quickstart by `launch`'s CPU default (one single-threaded worker per core) vs
              `--workers 1` (one process, torch's threads): wall-time ratio
  tracking    benchmarks/tracking_overhead.py: the quickstart with and without trackers
  gpu         with CUDA: samples/s vs cuDNN's standalone RNN/LSTM at the same shapes and vs a
              minimal training loop; then benchmarks/batched_engine.py --grid (engines, workers)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.linalg
import scipy.sparse.linalg
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import naive_trial  # noqa: E402

from expander_sweeps.data import load_dataset  # noqa: E402
from expander_sweeps.graphs import spectral, top_eigen  # noqa: E402
from expander_sweeps.models import build_model  # noqa: E402
from expander_sweeps.pruning.masks import MaskHolder, magnitude_mask  # noqa: E402
from expander_sweeps.spec import AudioDataSpec, MnistDataSpec, ModelSpec, load_spec  # noqa: E402
from expander_sweeps.training.train import fit  # noqa: E402

SHARED = Path(os.environ.get("EXPANDER_SWEEPS_SHARED_DATA", REPO.parent / "shared" / "data"))
CACHE = Path(os.environ.get("EXPANDER_SWEEPS_BENCH_CACHE", Path.home() / ".cache" / "expander-sweeps" / "bench"))


def line(name: str, value: str) -> None:
    print(f"  {name:<58} {value}", flush=True)


# ----------------------------------------------------------------------------- throughput


class TensorSamples(torch.utils.data.Dataset):
    """The naive side of the LSTM benchmark: features held per sample, a transform per __getitem__."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x.numpy(), y.numpy()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int):
        return torch.from_numpy(self.x[index].astype(np.float32)), int(self.y[index])


def _naive_epochs(model, dataset, epochs: int, device, masks: dict | None = None) -> float:
    loader = torch.utils.data.DataLoader(dataset, batch_size=128, shuffle=True)
    if masks:
        for name, remaining in masks.items():
            torch.nn.utils.prune.l1_unstructured(model.rnn, name=name, amount=1.0 - remaining)
    started = time.perf_counter()
    naive_trial.train(model, loader, epochs, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def _project_epochs(model, x, y, epochs: int, masked: float | None) -> float:
    holder = None
    if masked is not None:
        matrices = model.matrices()
        holder = MaskHolder(matrices, {n: magnitude_mask(matrices[n], masked) for n in ("W_xh", "W_hh")})
    started = time.perf_counter()
    fit(model, x, y, phase="bench", epochs=epochs, batch_size=128, lr=1e-3, seed=0, masks=holder)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def _throughput_case(label: str, cell: str, x: torch.Tensor, y: torch.Tensor, naive_set, epochs: int,
                     device: torch.device, classes: int) -> None:
    features = x.shape[2]
    xd, yd = x.to(device), y.to(device)
    for phase, masked in (("dense", None), ("fine-tune, 10% kept", 0.1)):
        # Warm-up (allocator, cuDNN plans) outside the timing, for both.
        _project_epochs(build_model(ModelSpec(cell=cell, hidden=128), features, classes, 0).to(device),
                        xd[:256], yd[:256], 1, masked)
        project = _project_epochs(build_model(ModelSpec(cell=cell, hidden=128), features, classes, 0).to(device),
                                  xd, yd, epochs, masked)
        naive_model = naive_trial.Net(features, 128, classes, cell).to(device)
        naive = _naive_epochs(naive_model, naive_set, epochs,
                              device, {"weight_ih_l0": masked, "weight_hh_l0": masked} if masked else None)
        n = len(x) * epochs
        line(f"{label}, {phase}: project / naive samples/s",
             f"{n / project:,.0f} / {n / naive:,.0f}  ratio {naive / project:.2f}x")


def bench_throughput(args, device: torch.device) -> None:
    print(f"\n[throughput] device {device}; {torch.get_num_threads()} torch threads", flush=True)
    mnist = load_dataset(MnistDataSpec(root=str(SHARED / "mnist"), download=False, split="pooled",
                                       limit_train=2000 if args.quick else None))
    (tr_images, tr_labels), _ = naive_trial.mnist_split(SHARED / "mnist", train=len(mnist.x_train))
    naive_set = naive_trial.SequenceImages(tr_images, tr_labels)
    _throughput_case(f"RNN H=128 MNIST rows k=28, {len(mnist.x_train)} samples", "rnn", mnist.x_train,
                     mnist.y_train, naive_set, 1 if args.quick else 2, device, 10)
    limit = 128 if args.quick else 512
    fsdd = load_dataset(AudioDataSpec(dataset="fsdd", root=str(SHARED / "fsdd"), limit_train=limit),
                        CACHE / "fsdd")
    _throughput_case(f"LSTM H=128 FSDD MFCC k={fsdd.seq_len}, {len(fsdd.x_train)} samples", "lstm",
                     fsdd.x_train, fsdd.y_train, TensorSamples(fsdd.x_train, fsdd.y_train), 1, device, 10)


# ----------------------------------------------------------------------------- sweep cost


def bench_sweep(args, device: torch.device) -> None:
    remaining = [1.0, 0.25] if args.quick else [1.0, 0.5, 0.1]
    variances = [0.3] if args.quick else [0.3, 0.6]
    layers = ["W_xh", "W_hh"]
    epochs, finetune = (1, 1) if args.quick else (3, 2)
    train, test = (1000, 500) if args.quick else (4000, 1000)
    if args.paper_grid:
        # The paper's grid and epochs, timed end to end, on fewer images so that the naive
        # loop's 3,600 epochs fit in minutes.
        remaining = [1.0, 0.8, 0.6, 0.4, 0.2, 0.1, 0.05, 0.02, 0.01]
        variances = [0.15, 0.3, 0.45, 0.6]
        epochs, finetune = 20, 20
        train, test = 1000, 500
    print(f"\n[sweep] grid {len(layers)} layers x {len(remaining)} fractions x {1 + len(variances)} noise levels "
          f"(clean + {variances}); {epochs}+{finetune} epochs; {train}/{test} MNIST images", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        spec = load_spec(REPO / "sweeps" / "quickstart.yaml", [
            f"data.root={SHARED / 'mnist'}", f"run_dir={folder}", f"data.limit_train={train}",
            f"data.limit_test={test}", f"training.epochs={epochs}", f"training.finetune_epochs={finetune}",
            f"masks.remaining={remaining}", f"noise.variances={variances}",
            "tracking.mlflow.enabled=false", "tracking.wandb.enabled=false", "spectral.graphs=[layer]",
        ])
        from expander_sweeps.sweep.loop import launch_study

        started = time.perf_counter()
        result = launch_study(spec)
        project = time.perf_counter() - started
        trials = result.ran
    dense_trainings = 1
    project_epochs = dense_trainings * epochs + trials * finetune
    (tr_images, tr_labels), (te_images, te_labels) = naive_trial.mnist_split(SHARED / "mnist", train, test)
    points = [(layer, r, v) for layer in layers for r in remaining for v in [0.0, *variances]]
    started = time.perf_counter()
    for layer, r, v in points:
        naive_trial.run_point((tr_images, tr_labels), (te_images, te_labels), layer, r, v, epochs, finetune, device)
    naive = time.perf_counter() - started
    naive_epochs = len(points) * (epochs + finetune)
    line("project: trials / trainings (dense + fine-tune) / epochs",
         f"{trials} / {dense_trainings} + {trials} / {project_epochs}")
    line("naive:   points / trainings (dense + fine-tune) / epochs",
         f"{len(points)} / {len(points)} + {len(points)} / {naive_epochs}")
    line("wall time project / naive", f"{project:.1f} s / {naive:.1f} s  ratio {naive / project:.2f}x")
    # The paper's grid: 9 fractions x 2 layers x 5 noise levels, 20 + 20 epochs.
    fractions, noise_levels, e, f = 9, 5, 20, 20
    naive_full = fractions * len(layers) * noise_levels * (e + f)
    project_full = e + (1 + (fractions - 1) * len(layers)) * f
    line("paper grid (9 x 2 x 5, 20+20 epochs): epochs naive / project",
         f"{naive_full} / {project_full}  ratio {naive_full / project_full:.1f}x (by epoch count)")


# ----------------------------------------------------------------------------- spectra


def _timed(fn, repeat: int) -> tuple[float, object]:
    fn()  # warm-up
    started = time.perf_counter()
    for _ in range(repeat):
        value = fn()
    return (time.perf_counter() - started) / repeat, value


def _solver_used(mask: np.ndarray) -> str:
    """Which path `layer_spectrum` took for this mask: the proven iterative one or LAPACK's."""
    small = mask if mask.shape[0] <= mask.shape[1] else mask.T
    if small.shape[0] < spectral._ITERATIVE_FROM:
        return "; LAPACK (small)"
    proven = top_eigen.certified_top_two(small @ small.T) is not None
    return "; iterative, proven to 1e-9" if proven else "; LAPACK (the proof failed)"


def _against_svdvals(mask: np.ndarray, rounds: int = 15) -> None:
    """The comparison of issue #16: LAPACK's singular values of the same mask, one thread. This
    machine's speed drifts (the same batch took 33 ms and 49 ms minutes apart), so two batches
    timed one after the other compare two machines; here both sides alternate, and medians are
    compared. Two ways: batches of 4 calls a side, the first of each untimed (warm caches, as
    the issue's own figures were taken), and single calls (each side with the other's data
    evicted from the caches, as a sweep computes each layer's spectra once)."""
    from threadpoolctl import threadpool_limits

    def project():
        spectral.layer_spectrum(mask)

    def baseline():
        scipy.linalg.svdvals(mask)

    def alternate(batch: int) -> tuple[list[float], list[float]]:
        times: tuple[list[float], list[float]] = ([], [])
        for _ in range(rounds):
            for side, fn in enumerate((project, baseline)):
                for call in range(batch):
                    started = time.perf_counter()
                    fn()
                    if call or batch == 1:
                        times[side].append(time.perf_counter() - started)
        return times

    with threadpool_limits(1):
        alternate(1)  # warm-up
        for label, batch in (("warm, alternating batches of 4", 4), ("cold, alternating single calls", 1)):
            ours, theirs = alternate(batch)
            mine, lapack = statistics.median(ours), statistics.median(theirs)
            line(f"layer 512x512 vs scipy.linalg.svdvals ({label})",
                 f"{1000 * mine:8.2f} ms vs {1000 * lapack:.2f} ms  ratio {lapack / mine:.2f}x "
                 f"(medians of {len(ours)}; targets: < 10 ms, >= 4x)")


def bench_spectra(args) -> None:
    print("\n[spectra] magnitude masks of trained-like (Gaussian) weights at 10% kept; one CPU thread for BLAS",
          flush=True)
    rng = np.random.default_rng(0)

    def mask(shape, kept=0.1):
        w = torch.from_numpy(rng.standard_normal(shape))
        return magnitude_mask(w, kept).numpy().astype(np.float64)

    shapes = [("W_xh 128x28", (128, 28)), ("W_hh 128x128", (128, 128)), ("512x512", (512, 512)),
              ("LSTM W_xh 4H x I = 512x40", (512, 40))]
    if not args.quick:
        shapes.append(("2048x2048", (2048, 2048)))
    for label, shape in shapes:
        m = mask(shape)
        seconds, s = _timed(lambda m=m: spectral.layer_spectrum(m), 20 if shape[0] < 1000 else 3)
        reference = np.sort(np.linalg.eigvalsh(np.block([[np.zeros((shape[0],) * 2), m],
                                                         [m.T, np.zeros((shape[1],) * 2)]])))[::-1] \
            if sum(shape) <= 1200 else scipy.linalg.svdvals(m)
        error = abs(s.lambda_2 - reference[1]) / reference[1]
        line(f"layer {label}", f"{1000 * seconds:8.2f} ms  lambda_2 rel. error {error:.1e} (dense eigvalsh)"
             + _solver_used(m))
        if shape == (512, 512):
            _against_svdvals(m)
    cases = [("unrolled k=28, H=128, I=28", 128, 28, 28, True)]
    if not args.quick:
        cases.append(("unrolled k=400, H=128, I=40 (FSDD)", 128, 40, 400, False))
    for label, hidden, inputs, steps, dense_check in cases:
        m_xh, m_hh = mask((hidden, inputs)), mask((hidden, hidden))
        seconds, (l1, l2) = _timed(lambda m_xh=m_xh, m_hh=m_hh, steps=steps:
                                   spectral.unrolled_top_eigenvalues(m_xh, m_hh, steps), 3)
        adjacency = spectral.unrolled_adjacency(m_xh, m_hh, steps)
        if dense_check:
            ref = scipy.linalg.eigvalsh(adjacency.toarray())[::-1]
            how = "dense eigvalsh"
        else:
            # A dense reference would need a 67k x 67k matrix (36 GB). Plain Lanczos on the
            # sparse adjacency, with a wide subspace and a tight tolerance, is the reference.
            t = time.perf_counter()
            ref = np.sort(scipy.sparse.linalg.eigsh(adjacency, k=3, which="LA", tol=1e-13, ncv=64,
                                                    return_eigenvectors=False))[::-1]
            how = f"plain Lanczos, {time.perf_counter() - t:.0f} s"
        line(f"{label} (n={adjacency.shape[0]})",
             f"{1000 * seconds:8.1f} ms  lambda_2 rel. error {abs(l2 - ref[1]) / ref[1]:.1e} ({how})")
    if not args.quick:
        # The same k = 400 chain with small H, where a dense reference fits in memory.
        m_xh, m_hh = mask((16, 8), 0.3), mask((16, 16), 0.3)
        seconds, (l1, l2) = _timed(lambda: spectral.unrolled_top_eigenvalues(m_xh, m_hh, 400), 3)
        adjacency = spectral.unrolled_adjacency(m_xh, m_hh, 400)
        ref = scipy.linalg.eigvalsh(adjacency.toarray())[::-1]
        line(f"unrolled k=400, H=16, I=8 (n={adjacency.shape[0]})",
             f"{1000 * seconds:8.1f} ms  lambda_2 rel. error {abs(l2 - ref[1]) / ref[1]:.1e} (dense eigvalsh)")


# ----------------------------------------------------------------------------- memory

_MEMORY_PROBE = r"""
import sys, tempfile
sys.path.insert(0, {here!r})
which = sys.argv[1]
if which == "naive":
    import naive_trial, torch
    from pathlib import Path
    tr, te = naive_trial.mnist_split(Path({mnist!r}), 8000, 2000)
    naive_trial.run_point(tr, te, "W_hh", 0.1, 0.3, 1, 1, torch.device("cpu"))
else:
    from expander_sweeps.spec import load_spec
    from expander_sweeps.sweep.loop import launch_study
    with tempfile.TemporaryDirectory() as folder:
        grid = "[0.1]" if which == "trial" else "[1.0, 0.5, 0.1, 0.02]"
        spec = load_spec({quickstart!r}, ["data.root={mnist}", "run_dir=" + folder, "training.epochs=1",
                          "training.finetune_epochs=1", "masks.remaining=" + grid, "masks.layers=[W_hh]",
                          "tracking.mlflow.enabled=" + ("true" if which == "sweep" else "false")])
        launch_study(spec)
# VmHWM, not getrusage: Linux carries ru_maxrss over exec, so a child started by a big parent
# would report the parent's peak.
print(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")))
"""


def bench_memory(args) -> None:
    print("\n[memory] peak resident set of a fresh process (8,000 / 2,000 MNIST images, 1+1 epochs)", flush=True)
    code = _MEMORY_PROBE.format(here=str(HERE), mnist=str(SHARED / "mnist"),
                                quickstart=str(REPO / "sweeps" / "quickstart.yaml"))
    peaks = {}
    for which in ("naive", "trial", "sweep"):
        out = subprocess.run([sys.executable, "-c", code, which], capture_output=True, text=True, check=True)
        peaks[which] = int(out.stdout.strip().splitlines()[-1]) / 1024  # KiB -> MiB
    line("naive script, one point", f"{peaks['naive']:.0f} MiB")
    line("project, one trial (no tracker)", f"{peaks['trial']:.0f} MiB  ratio {peaks['trial'] / peaks['naive']:.2f}x")
    line("project, 4-point sweep with embedded MLflow", f"{peaks['sweep']:.0f} MiB")


# ----------------------------------------------------------------------------- GPU


def bench_gpu(args) -> None:
    if not torch.cuda.is_available():
        print("\n[gpu] skipped: no CUDA device on this machine", flush=True)
        return
    device = torch.device("cuda")
    print(f"\n[gpu] {torch.cuda.get_device_name()}", flush=True)
    for cell, features, steps in (("rnn", 28, 28), ("lstm", 40, 400)):
        x = torch.randn(8192, steps, features, device=device)
        y = torch.randint(0, 10, (8192,), device=device)
        model = build_model(ModelSpec(cell=cell, hidden=128), features, 10, 0).to(device)
        _project_epochs(model, x[:512], y[:512], 1, None)
        project = _project_epochs(model, x, y, 2, None)
        # cuDNN alone: forward + backward of the bare recurrent layer on the same batches.
        rnn = (torch.nn.LSTM if cell == "lstm" else torch.nn.RNN)(features, 128, batch_first=True).to(device)
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(2):
            for start in range(0, len(x), 128):
                out, _ = rnn(x[start:start + 128])
                out[:, -1].sum().backward()
        torch.cuda.synchronize()
        bare = time.perf_counter() - started
        # A whole minimal training loop: the recurrent layer, a readout, cross entropy and fused
        # Adam over contiguous batches; what the project's trainer adds to it is its own cost.
        loop = _minimal_loop_seconds(cell, features, x, y, 2)
        n = 2 * len(x)
        line(f"{cell} k={steps}: project / bare cuDNN samples/s (forward + backward of the layer alone)",
             f"{n / project:,.0f} / {n / bare:,.0f}  ratio {bare / project:.2f}")
        line(f"{cell} k={steps}: project / minimal PyTorch training loop samples/s",
             f"{n / project:,.0f} / {n / loop:,.0f}  ratio {loop / project:.2f}")
    print("\n[gpu] the batched engine: N masked models one after another vs stacked, and the paper's grid "
          "per engine and workers (benchmarks/batched_engine.py --grid)", flush=True)
    subprocess.run([sys.executable, str(HERE / "batched_engine.py"), "--grid"], check=True)


def _minimal_loop_seconds(cell: str, features: int, x: torch.Tensor, y: torch.Tensor, epochs: int) -> float:
    torch.manual_seed(0)
    rnn = (torch.nn.LSTM if cell == "lstm" else torch.nn.RNN)(features, 128, batch_first=True).to(x.device)
    readout = torch.nn.Linear(128, 10).to(x.device)
    params = [*rnn.parameters(), *readout.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-3, fused=True)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(epochs):
        for start in range(0, len(x), 128):
            out, _ = rnn(x[start:start + 128])
            loss = torch.nn.functional.cross_entropy(readout(out[:, -1]), y[start:start + 128])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    torch.cuda.synchronize()
    return time.perf_counter() - started


# ----------------------------------------------------------------------------- cores and tracking


def _launch_seconds(folder: Path, extra: list[str], workers: str | None) -> float:
    """Wall time of `expander-sweeps launch sweeps/quickstart.yaml` as a user runs it, with
    `--workers` given, or (None) the default a user's shell gets."""
    env = {**os.environ}
    env.pop("EXPANDER_SWEEPS_WORKERS", None)
    command = [sys.executable, "-m", "expander_sweeps.cli", "launch", str(REPO / "sweeps" / "quickstart.yaml"),
               "--no-report", "--set", f"data.root={SHARED / 'mnist'}", "--set", f"run_dir={folder}"]
    for override in extra:
        command += ["--set", override]
    if workers is not None:
        command += ["--workers", workers]
    started = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"launch failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return seconds


def bench_cores(args) -> None:
    """The CPU default (one single-threaded worker per core) against one process with torch's
    threads, on the quickstart sweep with the default trackers (embedded MLflow), alternating;
    with one seed (13 trials behind one dense model) and two seeds (26 trials, two dense models)."""
    import statistics

    from expander_sweeps.sweep.workers import default_workers, usable_cores

    quick = ["training.epochs=2", "training.finetune_epochs=1"] if args.quick else []
    for label, extra in (("1 seed, 13 trials", quick), ("2 seeds, 26 trials", [*quick, "training.seed=[0, 1]"])):
        print(f"\n[cores] quickstart sweep ({label}), `launch` default ({default_workers(13)} workers on "
              f"{usable_cores()} cores) vs `--workers 1`; {args.repeat} alternating pair(s)", flush=True)
        one, many = [], []
        with tempfile.TemporaryDirectory(prefix="es-bench-cores-") as root:
            for index in range(2 * args.repeat):
                parallel = (index % 4) in (1, 2)  # 1, N, N, 1, ...: neither side always first
                seconds = _launch_seconds(Path(root) / f"run{index}", extra, None if parallel else "1")
                (many if parallel else one).append(seconds)
                line(f"run {index + 1}: {'default' if parallel else '--workers 1'}", f"{seconds:.1f} s")
        line("median, --workers 1 / default", f"{statistics.median(one):.1f} s / {statistics.median(many):.1f} s  "
             f"ratio {statistics.median(one) / statistics.median(many):.2f}x (target >= 1.3x on 2 cores)")


def bench_tracking(args) -> None:
    """benchmarks/tracking_overhead.py (the trials, in one process) and launch_overhead.py (the
    whole command), in this run."""
    print("\n[tracking] quickstart sweep without trackers vs MLflow (embedded, registry) + W&B (offline)",
          flush=True)
    command = [sys.executable, str(HERE / "tracking_overhead.py"), "--repeat", str(args.repeat),
               "--data", str(SHARED / "mnist")]
    if args.quick:
        command += ["--set", "training.epochs=2", "--set", "training.finetune_epochs=1"]
    subprocess.run(command, check=True)
    print("\n[tracking] the whole `expander-sweeps launch` (CPU default, report and publishing included), "
          "without trackers vs MLflow + W&B", flush=True)
    command[1] = str(HERE / "launch_overhead.py")
    subprocess.run(command, check=True)


SECTIONS = {"throughput": bench_throughput, "sweep": bench_sweep, "spectra": bench_spectra,
            "memory": bench_memory, "cores": bench_cores, "tracking": bench_tracking, "gpu": bench_gpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), help="run only these sections")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke test, not figures)")
    parser.add_argument("--paper-grid", action="store_true",
                        help="sweep section: the paper's full grid and 20+20 epochs on 1,000/500 images")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--repeat", type=int, default=2,
                        help="cores and tracking sections: alternating pairs of runs (medians reported)")
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          (args.device if args.device != "auto" else "cpu"))
    print(json.dumps({"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
                      "torch": torch.__version__, "cuda": torch.cuda.get_device_name() if torch.cuda.is_available()
                      else None}))
    for name in args.only or list(SECTIONS):
        fn = SECTIONS[name]
        if name in ("throughput", "sweep"):
            fn(args, device)
        else:
            fn(args)


if __name__ == "__main__":
    main()
