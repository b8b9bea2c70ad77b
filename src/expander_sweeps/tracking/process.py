"""Trackers in a process of their own, which runs on idle CPU time only.

Why a process and not a thread: on a CPU machine whose cores are all busy training, a tracker
thread in the training process competes for the GIL with the training loop's Python and for
the cores with PyTorch's thread team; a W&B run also starts a `wandb-core` service. Measured
on 2 cores, that slowed the sweep by far more than the trackers' own CPU time. Here every
tracker call is queued to a child process with one torch/BLAS thread, under Linux's SCHED_IDLE
scheduling policy (elsewhere `nice` 10); its threads and children, `wandb-core` included,
inherit it. `nice` was not enough: training's torch threads work in lock-step, so a core the
child takes even at `nice` 10 holds every thread up at the next join, and two single-threaded
workers simply lose that core's time. A SCHED_IDLE process runs only when a core would
otherwise idle (between batches, while a trial evaluates or writes its files, at the end of the
sweep), and any training thread that wakes takes the core back at once. Measured on the
quickstart (2 cores, benchmarks/README.md), the overhead fell from +10.4 % to +2.2 % in one
process and from +9.1 % to +1.6 % for the whole `launch`.

Such a process can fall behind when training leaves no idle time for long. The parent counts
the calls it sent and the child the calls it ran (a shared counter), so `lag_seconds` says how
long the oldest waiting call has waited; `pacing.py` pauses training when that passes
`tracking.max_lag_seconds` (a pause changes no number). An unprivileged process cannot leave
SCHED_IDLE again, which is why training makes room instead of the child raising its priority.

When the spec asks for it (`tracking.lend_thread`: off by default, since the thread count
changes float sums and so the numbers), while the child has calls to run (an Event it sets and
clears), the training loop runs with one torch thread fewer (`between_batches`), and takes it
back when the child is idle.

The child builds the trackers from the spec and opens the study itself (for the sweep's shared
state, such as MLflow's parent run id). Warnings come back to the parent and are printed
there. Only `publish` and `close` wait for the child; every other call returns at once. The
child imports MLflow's and W&B's libraries as soon as it starts (1.5 s of CPU, which the
parent's loading of the data overlaps), but builds the trackers only at its first call, so
that nothing is created before the parent has checked the data (`abandon` stops a child that
never got a call). It takes the study's lock itself around `start_sweep`, so that parallel
workers still agree on one parent run.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .base import TrackerCalls

__all__ = ["TrackerProcess"]

_NICENESS = 10
_POLL_SECONDS = 2.0


class TrackerProcess(TrackerCalls):
    """The FanOut interface, served by a child process (see the module notes)."""

    name = "tracker-process"

    def __init__(self, spec, warn: Callable[[str], None]):
        self._warn = warn
        self.seconds: dict[str, float] = {}
        self.names: list[str] = []
        self._dead = False
        self._death_reason: str | None = None
        self._missed: list[int] = []  # trials whose start the child never ran: for `sync`
        context = multiprocessing.get_context("spawn")  # no forked copy of torch's threads and CUDA
        self._calls = context.Queue()
        self._replies = context.Queue()
        self._busy = context.Event()  # set by the child while it has calls to run
        self._ran = context.Value("Q", 0, lock=False)  # calls the child has run: only it writes
        self._sent: collections.deque[tuple[int, float]] = collections.deque()  # (number, when) not yet run
        self._count = 0  # calls sent
        self._trial_starts: collections.deque[tuple[int, int]] = collections.deque()  # (call, trial) not yet run
        self.priority: str | None = None  # how the child runs ("SCHED_IDLE", "nice 10"), once it says
        self._lent_from: int | None = None  # torch's thread count before one was lent to the child
        self._process = context.Process(
            target=_serve, args=(spec.model_dump(mode="json"), self._calls, self._replies, os.getpid(), self._busy,
                                 self._ran),
            name="expander-sweeps-trackers", daemon=True,
        )
        with _main_module_left_alone(), _this_package_first_on_path():
            self._process.start()

    # --------------------------------------------------------------------- parent side

    def _pump(self, block_for: float | None = None) -> tuple[str, Any] | None:
        """Print the child's warnings, note its tracker names; return the first other reply
        (waiting up to `block_for`)."""
        while True:
            try:
                kind, value = self._replies.get(timeout=block_for) if block_for else self._replies.get_nowait()
            except queue.Empty:
                return None
            if kind == "warn":
                self._warn(value)
            elif kind == "died":
                self._death_reason = value
            elif kind in ("ready", "started"):
                self.names = value
            elif kind == "priority":
                self.priority = value
            else:
                return kind, value

    def _wait_for(self, expected: str) -> Any:
        while True:
            reply = self._pump(block_for=_POLL_SECONDS)
            if reply is not None:
                kind, value = reply
                if kind == expected:
                    return value
            elif not self._process.is_alive():
                self._report_death()
                return None

    def _report_death(self) -> None:
        """Said once, with the reason: from then on calls are dropped (the trials they carried
        are listed at `close`), and `sync` pushes them."""
        if not self._dead:
            self._dead = True
            self._pump()  # the child's last words
            # Trials whose start the child never ran (it died first, or while building the
            # trackers at its first call) are missed too.
            self._missed.extend(number for call, number in self._trial_starts if call > self._ran.value)
            self._trial_starts.clear()
            reason = self._death_reason or f"exit code {self._process.exitcode}"
            self._warn(f"the tracker process stopped ({reason}); tracker calls from here on are "
                       "dropped. The results are safe in the Optuna study, and `expander-sweeps sync "
                       "SPEC` pushes them")

    def _put(self, method: str, args: tuple) -> None:
        self._count += 1
        self._sent.append((self._count, time.monotonic()))
        if method == "start_trial":
            self._trial_starts.append((self._count, args[0]))
        self._calls.put((method, args))

    def lag_seconds(self) -> float:
        ran = self._ran.value
        while self._sent and self._sent[0][0] <= ran:
            self._sent.popleft()
        while self._trial_starts and self._trial_starts[0][0] <= ran:
            self._trial_starts.popleft()
        if not self._sent or self._dead or not self._process.is_alive():
            return 0.0  # a dead child's calls are dropped: nothing to wait for
        return time.monotonic() - self._sent[0][1]

    def _each(self, method: str, *args: Any) -> None:
        self._pump()
        if self._process.is_alive():
            self._put(method, args)
            return
        self._report_death()
        if method == "start_trial":
            self._missed.append(args[0])

    def between_batches(self) -> None:
        """Lend the child one of training's CPU threads while it has work, and take it back
        when it is idle. Training's torch threads work in lock-step, so a tracker that takes a
        core they all use (even at a lower priority) stalls every thread at the next join: on 2
        cores each second of tracker CPU cost about a second of training. With one thread
        fewer, training slows by its parallel share only (2 -> 1 thread: about 1.2x)."""
        import torch

        if not self._busy.is_set():
            self._take_back_thread()
        elif self._lent_from is None and torch.get_num_threads() > 1:
            self._lent_from = torch.get_num_threads()
            torch.set_num_threads(self._lent_from - 1)

    def _take_back_thread(self) -> None:
        if self._lent_from is not None:
            import torch

            torch.set_num_threads(self._lent_from)
            self._lent_from = None

    def begin(self, spec, study) -> None:
        """Start the sweep in the trackers. Returns at once: the child opens the study for the
        sweep's shared state and takes its lock itself, while the first trial starts here."""
        from .base import tracker_config

        self._each("start_sweep", spec.name, tracker_config(spec))

    def publish(self, spec, study, report, warn) -> dict:
        """The report, published by the child once it has logged every trial (its trackers'
        libraries are loaded and their stores open there). If the child is gone or cannot,
        here, as without a tracker process."""
        self._pump()
        if self._process.is_alive():
            self._put("publish", (report.published_files(), report.trials.to_dict(orient="records")))
            aliases = self._wait_for("published")
            if aliases is not None:
                return aliases
        else:
            self._report_death()
        return super().publish(spec, study, report, warn)

    def abandon(self) -> None:
        if self._count:  # it has work: let it finish as usual
            self.close()
            return
        self._process.terminate()  # it has only imported libraries
        self._process.join(timeout=30)
        self._pump()

    def close(self) -> None:
        """Wait until every queued call has run, then let the child exit."""
        self._take_back_thread()  # training is over
        if self._process.is_alive():
            self._put("close", ())
            seconds = self._wait_for("closed")
            if seconds:
                self.seconds = seconds
        self._process.join(timeout=30)
        if self._process.is_alive():  # pragma: no cover - a tracker SDK that hangs on exit
            self._process.terminate()
        self._pump()
        if self._missed:
            self._warn(f"trial(s) {', '.join(map(str, self._missed))} reached no tracker (the tracker "
                       "process had stopped); `expander-sweeps sync SPEC` pushes them")


@contextlib.contextmanager
def _main_module_left_alone():
    """Start a spawned child without running this program's main module in it.

    A spawned child normally re-imports the parent's `__main__` (a user's script or a
    benchmark), so that functions defined there can be unpickled. The tracker child needs
    nothing from it (its entry point is `_serve`, in this module), and running it costs the
    imports of the whole script (torch, for one: seconds of CPU beside training) and fails
    outright for a script that calls `launch_study` without an `if __name__ == "__main__":`
    guard. multiprocessing leaves the main module alone when its spec is named `__main__`
    (what it does for an interactive session); that name is given to it while the child starts."""
    import importlib.machinery

    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = main.__dict__.get("__spec__")
    main.__spec__ = importlib.machinery.ModuleSpec("__main__", None)
    try:
        yield
    finally:
        main.__spec__ = saved


@contextlib.contextmanager
def _this_package_first_on_path():
    """Start a spawned child whose `import expander_sweeps` finds the package this process runs.

    The child gets this process's `sys.path`, and loading one of the sweep's own logged models
    (`mlflow.pyfunc.load_model`, `mlflow.pytorch.load_model`) puts the model's `code/` folder
    first on it: a copy of the few modules of this package the model needs. A tracker started
    after that imported the copy and died (`No module named 'expander_sweeps.tracking'`). So
    the folder that holds the running package comes first while the child starts."""
    home = str(Path(__file__).resolve().parents[2])  # .../src (or site-packages) above expander_sweeps/
    saved = sys.path
    sys.path = [home, *saved]
    try:
        yield
    finally:
        sys.path = saved


# ------------------------------------------------------------------------- child side


def _serve(spec_data: dict, calls, replies, parent_pid: int, busy, ran) -> None:
    """The child's loop. An exception it cannot handle ends it with one line of reason for the
    parent (not a traceback on the terminal)."""
    try:
        _serve_calls(spec_data, calls, replies, parent_pid, busy, ran)
    except Exception as err:
        replies.put(("died", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:500]))
        sys.exit(1)
    _exit_without_teardown(replies)


def _exit_without_teardown(replies) -> None:
    """Leave once every call has run and been answered, skipping the interpreter's teardown.

    Tearing down what the child imported (torch, MLflow, SQLAlchemy) took 1.3 s, which the
    launch waited for in `close` after the last trial had been logged. Nothing is left to do
    by then except what is done here explicitly: W&B's service is shut down the documented
    way (it finishes any run still open and writes its files), logging is flushed, and the
    replies queue's feeder thread has written the last reply to the pipe."""
    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown()
    logging.shutdown()
    replies.close()
    replies.join_thread()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


def _run_on_idle_time() -> str:
    """Put this process under SCHED_IDLE where the OS has it, else at `nice` 10; says which.
    Called before the child starts any thread or process, so that all of them inherit it."""
    with contextlib.suppress(OSError):
        os.nice(_NICENESS)  # kept under SCHED_IDLE too: the fallback if that is refused
    if hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return "SCHED_IDLE"
        except OSError:  # a kernel or container that refuses it
            pass
    return f"nice {_NICENESS}"


def _serve_calls(spec_data: dict, calls, replies, parent_pid: int, busy, ran) -> None:
    # Ctrl-C reaches the whole process group: the parent decides when the trackers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    replies.put(("priority", _run_on_idle_time()))
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = "1"  # before mlflow.pytorch imports torch

    from ..spec import SweepSpec
    from .base import FanOut
    from .factory import enabled_trackers, preload_libraries

    def warn(message: str) -> None:
        replies.put(("warn", message))

    busy.set()  # importing the trackers' libraries and opening the store: seconds of CPU
    spec = SweepSpec.model_validate(spec_data)
    # The libraries now, the trackers (their stores, their runs) at the first call: the parent
    # starts this process before it has checked the data, and nothing may be created before that.
    preload_libraries(spec)
    fan = None
    study = None  # opened at start_sweep
    while True:
        if calls.empty():
            busy.clear()
        try:
            method, args = calls.get(timeout=_POLL_SECONDS)
        except queue.Empty:
            if os.getppid() != parent_pid:  # the parent was killed: nothing more will come
                return
            continue
        busy.set()
        if fan is None:
            fan = FanOut(enabled_trackers(spec, warn), warn, background=False)
            replies.put(("ready", fan.names))
        try:
            if method == "close":
                replies.put(("closed", fan.seconds))
                return
            if method == "publish":
                from .publishing import publish_files

                replies.put(("published", None if study is None else publish_files(spec, study, *args, warn)))
            elif method == "start_sweep":
                from ..sweep.study import StudyState, open_study, sweep_lock

                try:
                    study = open_study(spec, create=False)
                except Exception as err:  # the parent has the study open: this is unexpected
                    warn(f"the tracker process could not open the study ({type(err).__name__}: {err})")
                    continue
                with sweep_lock(study, spec):  # parallel workers agree on one parent run
                    fan.start_sweep(*args, StudyState(study))
                replies.put(("started", fan.names))
            else:
                getattr(fan, method)(*args)
        finally:
            ran.value += 1  # for the parent's lag_seconds: this call has run
