"""Coordination at scale: many workers on one study, no training (issue #36, item 4).

Each worker (a thread with a storage of its own: its own connections, its own journal replica)
runs the tool's real per-trial coordination: find stale trials, claim a waiting grid point,
heartbeat, read the point, record what a real trial records (262 user attributes, ~40 KB: the
shape of a quickstart trial's record), tell the study. Workers are spread over processes
(`--processes`) so that 256 of them fit in one machine's memory.

Per storage and worker count it prints: trials per second; per trial the worker's wall time in
coordination (median, 95th percentile), the client's CPU time, and the server's CPU time
(PostgreSQL: its processes' CPU from /proc; Redis: INFO cpu; SQLite and the journal file have no
server, their whole cost is the client's); duplicates (a grid point completed twice, or a trial
claimed by two workers: must be 0) and lost points (a grid point without a COMPLETE trial: must be 0).

The baseline (`--baseline`), measured in the same run: Optuna's own path, which this tool used
before: reading the waiting trials with `get_trials`, claiming with `set_trial_state_values`,
one transaction per attribute, `optuna.storages.fail_stale_trials`.

    python benchmarks/coordination.py --workers 8 64 256 --storages sqlite postgres journal redis
    python benchmarks/coordination.py --workers 8 64 --storages postgres --baseline --points 500
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

PG_ADMIN = os.environ.get("EXPANDER_SWEEPS_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("EXPANDER_SWEEPS_REDIS", "redis://127.0.0.1:6379/0")
DATA = Path(os.environ.get("EXPANDER_SWEEPS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def spec_for(url: str, points: int, run_dir: str):
    """A grid of `points` points (fractions of W_hh), the tool's own spec."""
    from expander_sweeps.spec import spec_from_dict

    fractions = [round(1 - i / (points + 1), 6) for i in range(points)]
    return spec_from_dict({
        "name": "coordination", "run_dir": run_dir,
        "data": {"root": str(DATA / "mnist"), "download": False},
        "masks": {"remaining": fractions, "layers": ["W_hh"]},
        "noise": {"variances": [0.3]},
        "study": {"storage": url, "heartbeat_seconds": 30, "grace_seconds": 120},
        "tracking": {"mlflow": {"enabled": False}},
    })


def trial_record(number: int) -> tuple[dict, dict, dict]:
    """(params, metrics, files) shaped like a quickstart trial's: 262 attributes, ~40 KB."""
    params = {"remaining_W_xh": 1.0, "remaining_W_hh": 0.5, "pruned_layers": "W_hh", "mask_method": "magnitude",
              "schedule": "each", "cell": "rnn", "hidden": 128, "seed": 0, "engine": "per_trial", "group_size": 1}
    metrics = {}
    for graph in ("W_xh", "W_hh", "step", "unrolled"):
        for weighting in ("binary", "weighted"):
            for quantity in ("lambda_1", "lambda_2", "avg_degree", "delta_r", "delta_s", "biregular",
                             "left_degree", "right_degree", "ramanujan", "gap", "d_left_min", "d_left_max",
                             "d_right_min", "d_right_max", "edges", "components", "bipartite_bound",
                             "spectral_ratio", "solver_iterations", "solver_residual", "seconds",
                             "lambda_2_rel_error", "deg_var", "deg_cv", "sigma_2", "kept"):
                metrics[f"{graph}/{weighting}/{quantity}"] = 0.123456789 * (number + 1)
    metrics.update({"acc/clean": 0.97, "acc/noise_0.3": 0.9, "drop/noise_0.3": 0.07, "n_test": 2000, "n_train": 8000})
    files = {key: f"trials/{number:05d}/{key}.npz" for key in ("masks", "checkpoint", "spectra", "history",
                                                               "mask_picture_W_hh", "mask_picture_W_xh")}
    return params, dict(list(metrics.items())[:240]), files


# ----------------------------------------------------------------------------- one worker
def work(url: str, points: int, run_dir: str, baseline: bool, start: threading.Barrier, go, out: list,
         arrive=lambda: None) -> None:
    import optuna
    from optuna.trial import TrialState

    from expander_sweeps.sweep import study as study_module

    spec = spec_for(url, points, run_dir)
    study = study_module.open_study(spec)
    encoding = (study_module.fractions_on_log_scale(study), study_module.recorded_method_choices(study))
    arrive()
    start.wait()  # this worker's storage is open
    go.wait()  # every worker of every process is ready: the clock starts
    while True:
        began, cpu = time.perf_counter(), time.thread_time()
        if baseline:
            with study_module._heartbeats_allowed():
                optuna.storages.fail_stale_trials(study)
            trial = None
            for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                with contextlib.suppress(Exception):
                    study._storage.record_heartbeat(frozen._trial_id)
                with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                    if study._storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING):
                        trial = optuna.Trial(study, frozen._trial_id)
                        break
        else:
            study_module.fail_stale(study)
            trial = study_module.claim_waiting(study, spec)
        if trial is None:
            return
        try:
            told = record(study, spec, trial, encoding, run_dir, baseline) is not None
        except optuna.exceptions.UpdateFinishedTrialError:  # claimed twice: another worker told it
            told = False
        out.append((trial.number, told, time.perf_counter() - began, time.thread_time() - cpu))


def record(study, spec, trial, encoding, run_dir: str, baseline: bool):
    """What a finished trial writes (loop._record_success), with a heartbeat running; its plan."""
    from expander_sweeps.results import CORRECT_ATTR, PHASE_SECONDS_ATTR
    from expander_sweeps.sweep import study as study_module
    from expander_sweeps.sweep.space import suggest_plan

    with study_module.heartbeat(study, trial._trial_id, spec.study.heartbeat_seconds):
        trial.set_user_attr("worker", f"{os.getpid()}:{threading.get_ident()}")
        plan = suggest_plan(trial, spec, *encoding)
        params, metrics, files = trial_record(trial.number)
        if baseline:
            for key, value in {**params, **metrics, "files": files, "param_names": sorted(params),
                               "dense_trained": False, "seconds": 1.0}.items():
                study._storage.set_trial_user_attr(trial._trial_id, key, value)
        else:
            study_module.record_result(trial, params, metrics, files, False, 1.0, Path(run_dir))
        trial.set_user_attr(CORRECT_ATTR, {"acc/clean": "3/" * 170, "acc/noise_0.3": "7/" * 170})
        trial.set_user_attr(PHASE_SECONDS_ATTR, {"dense": 7.0, "prepare": 0.05, "finetune": 19.7, "finish": 0.3})
        study.tell(trial, [metrics["acc/clean"]])
    return plan


def worker_process(url, points, run_dir, baseline, threads, ready, go, results) -> None:
    barrier = threading.Barrier(threads + 1)
    outs = [[] for _ in range(threads)]
    failures = []

    arrived = [False] * threads

    def guarded(index: int) -> None:
        try:
            work(url, points, run_dir, baseline, barrier, go, outs[index], lambda: arrived.__setitem__(index, True))
        except Exception as err:  # a worker that fails is counted, and the first reason printed
            failures.append(f"{type(err).__name__}: {str(err).splitlines()[0][:200]}")
            if not arrived[index]:
                barrier.wait()  # failed before the start: the others must not wait for it

    pool = [threading.Thread(target=guarded, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    barrier.wait()  # every worker has opened its storage
    ready.put(os.getpid())
    for thread in pool:
        thread.join()
    results.put(([row for out in outs for row in out], failures))


# ----------------------------------------------------------------------------- the server's CPU
def server_cpu(kind: str) -> float | None:
    """Seconds of CPU the storage's server has used so far (None: no server)."""
    if kind == "postgres":
        total = 0.0
        tick = os.sysconf("SC_CLK_TCK")
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
                if comm not in ("postgres", "postmaster"):
                    continue
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # utime, stime, and the reaped children's (backends that exited)
            total += sum(int(fields[i]) for i in (11, 12, 13, 14)) / tick
        return total
    if kind == "redis":
        import redis

        info = redis.Redis.from_url(REDIS).info("cpu")
        return info["used_cpu_sys"] + info["used_cpu_user"]
    return None


@contextlib.contextmanager
def storage_of(kind: str, folder: Path):
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'optuna.db'}"
    elif kind == "journal":
        yield f"journal://{folder / 'study.log'}"
    elif kind == "postgres":
        import psycopg

        name = f"es_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
            try:
                yield PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
            finally:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    else:
        import redis

        prefix = f"es_bench_{uuid.uuid4().hex[:8]}:"
        try:
            yield f"{REDIS}?prefix={prefix}"
        finally:
            client = redis.Redis.from_url(REDIS)
            keys = list(client.scan_iter(match=f"{prefix}*"))
            for i in range(0, len(keys), 1000):
                client.delete(*keys[i:i + 1000])


def measure(kind: str, workers: int, points: int, processes: int, baseline: bool) -> dict:
    from optuna.trial import TrialState

    from expander_sweeps.sweep import study as study_module
    from expander_sweeps.sweep.space import point_key

    if kind == "postgres":
        import psycopg

        with psycopg.connect(PG_ADMIN) as admin:
            allowed = int(admin.execute("SHOW max_connections").fetchone()[0])
        if allowed < 2 * workers + 20:  # each worker: a connection, and its heartbeat thread's
            sys.exit(f"PostgreSQL allows {allowed} connections; {workers} workers need about {2 * workers + 20}: "
                     f"ALTER SYSTEM SET max_connections = {2 * workers + 100}; then restart the server "
                     "(a cluster puts PgBouncer in front instead)")
    with tempfile.TemporaryDirectory() as tmp, storage_of(kind, Path(tmp)) as url:
        spec = spec_for(url, points, tmp)
        study = study_module.open_study(spec)
        with study_module.sweep_lock(study, spec):
            study_module.enqueue_grid(study, spec)
        processes = min(processes, workers)
        shares = [workers // processes + (i < workers % processes) for i in range(processes)]
        context = mp.get_context("fork")
        ready, results, go = context.Queue(), context.Queue(), context.Event()
        children = [context.Process(target=worker_process, args=(url, points, tmp, baseline, n, ready, go, results))
                    for n in shares]
        for child in children:
            child.start()
        for _ in children:
            ready.get()
        cpu_before, began = server_cpu(kind), time.perf_counter()
        go.set()
        rows, failures = [], []
        for _ in children:
            done, failed = results.get()
            rows += done
            failures += failed
        elapsed = time.perf_counter() - began
        cpu_after = server_cpu(kind)
        for child in children:
            child.join()
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        keys = Counter(point_key(study_module.trial_point(t), spec) for t in complete)
        grid = {point_key(study_module.trial_point(t), spec) for t in trials}
        claims = Counter(number for number, *_ in rows)
    walls = sorted(row[2] for row in rows)
    server = None if cpu_before is None else (cpu_after - cpu_before) / max(1, len(rows)) * 1000
    return {
        "storage": kind, "workers": workers, "path": "optuna" if baseline else "tool", "trials": len(rows),
        "seconds": elapsed, "per_s": len(rows) / elapsed,
        "wall_ms_median": 1000 * statistics.median(walls), "wall_ms_p95": 1000 * walls[int(0.95 * (len(walls) - 1))],
        "client_cpu_ms": 1000 * sum(row[3] for row in rows) / max(1, len(rows)),
        "server_cpu_ms": server,
        "duplicates": sum(n - 1 for n in keys.values() if n > 1) + sum(n - 1 for n in claims.values() if n > 1),
        "lost": len(grid) - len(keys), "failed_workers": len(failures), "first_failure": failures[:1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 64, 256])
    parser.add_argument("--storages", nargs="+", default=["sqlite", "postgres", "journal", "redis"],
                        choices=["sqlite", "postgres", "journal", "redis"])
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--processes", type=int, default=16, help="processes the workers are spread over")
    parser.add_argument("--baseline", action="store_true", help="also Optuna's own path, in the same run")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(f"{args.points} grid points; {os.cpu_count()} cores; client and server CPU per trial in ms")
    print("| storage | path | workers | trials/s | wall/trial median (p95) ms | client CPU ms | server CPU ms "
          "| duplicates | lost | workers failed |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    rows = []
    for kind in args.storages:
        for workers in args.workers:
            for baseline in ([False, True] if args.baseline else [False]):
                row = measure(kind, workers, args.points, args.processes, baseline)
                rows.append(row)
                server = "-" if row["server_cpu_ms"] is None else f"{row['server_cpu_ms']:.1f}"
                print(f"| {kind} | {row['path']} | {workers} | {row['per_s']:.1f} | {row['wall_ms_median']:.0f} "
                      f"({row['wall_ms_p95']:.0f}) | {row['client_cpu_ms']:.1f} | {server} | {row['duplicates']} "
                      f"| {row['lost']} | {row['failed_workers']} |", flush=True)
                if row["first_failure"]:
                    print(f"  first worker failure: {row['first_failure'][0]}", flush=True)
    if args.baseline:
        for tool in (r for r in rows if r["path"] == "tool"):
            base = next(r for r in rows if r["path"] == "optuna" and r["storage"] == tool["storage"]
                        and r["workers"] == tool["workers"])
            print(f"{tool['storage']} x {tool['workers']}: trials/s {tool['per_s'] / base['per_s']:.2f}x Optuna's path, "
                  f"client CPU per trial {base['client_cpu_ms'] / tool['client_cpu_ms']:.2f}x less")
    if any(r["duplicates"] or r["lost"] or r["failed_workers"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
