"""Command line: launch, report, validate, schema.

User errors (a bad spec, missing data, no study yet) print what is wrong and how to fix it,
and exit with code 2; no traceback.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .console_output import BATCH_JOB_WIDTH, VERBOSITY, ProgressLines, progress_interval
from .spec import SpecError, SweepSpec, json_schema, load_spec, redact_secrets, redact_url
from .tracking.backends import any_enabled, backend_names, enabled_backends
from .tracking.base import ReportSession

console = Console()
err_console = Console(stderr=True)

USER_ERROR = 2


def _fail(message: str) -> None:
    # The message is text, not markup: a value such as [nan] or a path holding [/x] is printed as it is.
    err_console.print(f"[bold red]error:[/] {escape(redact_secrets(message))}", highlight=False, soft_wrap=True)
    sys.exit(USER_ERROR)


def _quiet_libraries() -> None:
    """Our own lines say what happens; the libraries' INFO chatter (table creation, trial logs) would bury them."""
    import logging

    import optuna

    # Failed trials are reported by our own line, their traceback stored on the trial.
    optuna.logging.set_verbosity(optuna.logging.INFO if VERBOSITY.verbose else optuna.logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.WARNING)


_loaded_run_dirs: list = []  # the run folder of the spec this command loaded (for the disk-full message)


def _load(path: str, overrides: tuple[str, ...]) -> SweepSpec:
    try:
        spec = load_spec(path, overrides)
    except SpecError as err:
        _fail(str(err))
        raise  # unreachable: _fail exits
    unknown = [name for name in spec.tracking.extra if name not in backend_names()]
    if unknown:  # checked here, not in spec.py: the registry lives in tracking/, which imports the spec
        _fail(f"{path}: tracking.extra names {', '.join(map(repr, unknown))}, which no registered tracker backend "
              f"provides (known: {', '.join(backend_names())}); a plug-in's backend needs its module under `plugins:`")
    _loaded_run_dirs.append(spec.run_path)
    return spec


_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_DISK_FULL_WORDS = ("database or disk is full", "No space left on device", "Disk quota exceeded",
                    "File too large", "file write failed")


def _disk_full(error: BaseException) -> bool:
    """Whether the error, or one it came from, is a full disk (or a file-size limit)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS:
            return True
        if any(words in str(error) for words in _DISK_FULL_WORDS):
            return True
        error = error.__cause__ or error.__context__
    return False


def _disk_full_message(error: BaseException) -> str:
    folder = _loaded_run_dirs[-1] if _loaded_run_dirs else Path.cwd()
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    return (f"the disk that holds {folder} is full ({usage.free / 2**20:.1f} MiB free of {usage.total / 2**20:.0f} MiB; "
            f"{type(error).__name__}). Free space there or set run_dir to another disk, then launch again: finished "
            "trials are safe in the study, and a trial cut short is rerun")


class _Commands(click.Group):
    """The CLI's commands; a full disk anywhere below ends in one error line, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Exception as err:
            if not _disk_full(err):
                raise
            _fail(_disk_full_message(err))


set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a spec field, e.g. --set data.root=../data --set training.epochs=2 (repeatable).",
)

extend_option = click.option(
    "--extend", is_flag=True,
    help="Accept a search space (masks.remaining, masks.method, training.seed) that differs from the "
         "study's: new points are added, finished ones kept. Result settings must still match.",
)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="expander-sweeps")
@click.option("-q", "--quiet", is_flag=True,
              help="Print only warnings, errors and the closing lines (no trial lines, progress or tables).")
@click.option("-v", "--verbose", is_flag=True,
              help="Also a line per training epoch, and the libraries' INFO logs (Optuna's trial lines).")
@click.option("--log-file", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Also append every line printed to this file, as plain text (no colours, no bars; "
                   "a progress line every 30 s even when the screen shows bars).")
def main(quiet: bool, verbose: bool, log_file: str | None) -> None:
    """Sweeps over pruned RNN/LSTM layers: accuracy, noise, and the Ramanujan bounds of each layer.

    Not on a terminal (a batch job, nohup, tee), lines are up to 200 columns wide ($COLUMNS sets
    it) and a progress line is printed every 30 s ($EXPANDER_SWEEPS_PROGRESS_SECONDS; 0: none)."""
    if quiet and verbose:
        _fail("-q and -v contradict each other: give one of them")
    VERBOSITY.quiet, VERBOSITY.verbose = quiet, verbose
    _show_our_warnings()
    for screen in (console, err_console):
        if not screen.is_terminal and not os.environ.get("COLUMNS", "").isdigit():
            screen.width = BATCH_JOB_WIDTH
    if log_file:
        _log_to(log_file)


_log_console: list[Console] = []  # the --log-file's console, when one was given


def _log_to(path: str) -> None:
    """Every line the CLI prints, to `path` too: each console's print also prints to a plain,
    wide console on the file (markup rendered as text, no colour codes, no live bars)."""
    try:
        handle = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - open for the process's life
    except OSError as err:
        _fail(f"--log-file {path}: {err.strerror or err}; give a file in a folder that exists and is writable")
    log = Console(file=handle, width=BATCH_JOB_WIDTH, no_color=True, force_terminal=False, highlight=False,
                  soft_wrap=True)
    _log_console.append(log)
    for screen in (console, err_console):
        show = screen.print

        def both(*args, _show=show, **kwargs):
            _show(*args, **kwargs)
            log.print(*args, **kwargs)

        screen.print = both  # an instance attribute: progress bars' console.print comes here too


class _WarningLines(logging.Handler):
    """The package's own warnings (a damaged cache rebuilt, ...) as `warning:` lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        err_console.print(f"[yellow]warning:[/] {escape(redact_secrets(record.getMessage()))}", highlight=False,
                          soft_wrap=True)


def _show_our_warnings() -> None:
    log = logging.getLogger("expander_sweeps")
    if not any(isinstance(h, _WarningLines) for h in log.handlers):
        log.addHandler(_WarningLines(logging.WARNING))
        log.propagate = False


class _ConsoleEvents:
    """Draws sweep progress with rich: a bar over trials, one over the current training phase; not
    on a terminal, a progress line at a steady interval instead (console_output.ProgressLines)."""

    def __init__(self, progress: Progress, label: str = ""):
        self.progress = progress
        self.label = label  # a worker's prefix, so that interleaved lines say whose they are
        self.trials_task = None
        self.phase_task = None
        interval = None if VERBOSITY.quiet else progress_interval(console.is_terminal)
        say = self._say
        if interval is None and _log_console and not VERBOSITY.quiet:
            # Bars on the screen, a log file beside them: the log gets the progress lines.
            interval = progress_interval(False)
            say = lambda line: _log_console[0].print(line, markup=False)  # noqa: E731
        self.lines = ProgressLines(say, interval, label) if interval else None

    def _say(self, line: str) -> None:
        self.progress.console.print(line, highlight=False, markup=False, soft_wrap=True)

    def sweep_started(self, spec, to_run, done, data, device, running=0, engine="") -> None:
        if to_run == 0 and running == 0:
            console.print(f"[green]All {done} trials of '{spec.name}' are finished; nothing to run.[/]")
            return
        if self.lines:
            self.lines.sweep_started(to_run + running)
        if not VERBOSITY.quiet:
            elsewhere = ""
            if running:
                grace = spec.study.grace_seconds + spec.study.heartbeat_seconds
                elsewhere = (f", {running} RUNNING in another process: run here if that process is dead "
                             f"(no heartbeat for {grace:g} s), left to it otherwise")
            console.print(f"{self.label}[bold]{spec.name}[/]: {to_run} trial(s) to run ({done} already finished"
                          f"{elsewhere}) on {device}", soft_wrap=True)
            console.print(f"  data: {data}", soft_wrap=True)
            console.print(f"  model: {spec.model.cell.upper()} H={spec.model.hidden}, init {spec.model.init_label}, "
                          f"{spec.training.clipping}; masks {spec.masks.method}/{spec.masks.schedule} on "
                          f"{', '.join(spec.masks.layers)}", soft_wrap=True)
            if engine:
                console.print(f"  engine: {engine}", soft_wrap=True, highlight=False)
        self.trials_task = self.progress.add_task("trials", total=to_run + running)

    def trial_started(self, number, plan) -> None:
        self.progress.update(self.trials_task, description=f"trial {number}: {plan.label()}")
        if self.lines:
            self.lines.trial_started(f"trial {number} ({plan.label()})")

    def group_started(self, numbers, plans) -> None:
        first, last = plans[0].label(), plans[-1].label()
        what = f"trials {', '.join(str(n) for n in numbers)} batched: {first}" + (f" ... {last}" if len(plans) > 1 else "")
        self.progress.update(self.trials_task, description=what)
        if self.lines:
            self.lines.trial_started(f"trials {numbers[0]}-{numbers[-1]} ({len(numbers)} batched)")

    def phase_started(self, phase, epochs, batches) -> None:
        if self.phase_task is not None:
            self.progress.remove_task(self.phase_task)
        self.phase_task = self.progress.add_task(f"  {phase} ({epochs} epochs)", total=max(1, epochs * batches))
        if self.lines:
            self.lines.phase_started(phase, epochs, batches)

    def batch_done(self) -> None:
        self.progress.advance(self.phase_task)
        if self.lines:
            self.lines.batch_done()

    def epoch_done(self, stats) -> None:
        text = (f"{stats.phase} epoch {stats.epoch}/{stats.epochs} loss {stats.loss:.3f} "
                f"train acc {100 * stats.train_accuracy:.1f}%")
        self.progress.update(self.phase_task, description="  " + text)
        if self.lines:
            self.lines.epoch_done(stats.epoch, stats.loss)
        if VERBOSITY.verbose:
            self._say(f"{self.label}  {text}")

    def trial_finished(self, number, plan, result) -> None:
        self.progress.advance(self.trials_task)
        if self.lines:
            self.lines.trial_ended()
        if VERBOSITY.quiet:
            return
        m = result.metrics
        accs = "  ".join(
            f"{'clean' if k == 'acc/clean' else k.removeprefix('acc/')} {100 * v:.1f}%"
            for k, v in m.items() if k.startswith("acc/")
        )
        bounds = []
        for layer in plan.pruned_layers:
            dr, ds = m.get(f"{layer}/binary/delta_r"), m.get(f"{layer}/binary/delta_s")
            if dr is not None:
                bounds.append(f"{layer} ΔR {_signed(dr)} ΔS {_signed(ds)}")
        dense = "dense trained" if result.dense_trained else "dense cached"
        if result.params.get("engine") == "batched":  # its share of its group's time
            dense += f", batched with {result.params['group_size'] - 1} other(s)"
        self.progress.console.print(
            f"{self.label}trial {number:>3} | {plan.label()} | {accs} | {'; '.join(bounds) or 'dense'} | "
            f"{dense}, {result.seconds:.1f}s", highlight=False, soft_wrap=True)

    def trial_failed(self, number, plan, error) -> None:
        # A failure is printed even with -q: it changes the exit code.
        self.progress.console.print(
            f"{self.label}[red]trial {number} failed[/]{f' ({plan.label()})' if plan else ''}: "
            f"{type(error).__name__}: {error}; "
            "recorded as FAIL with its traceback (trial user attribute 'traceback'); "
            "rerun at the next launch", highlight=False, soft_wrap=True)
        self.progress.advance(self.trials_task)
        if self.lines:
            self.lines.trial_ended()

    def warn(self, message) -> None:
        self.progress.console.print(f"[yellow]warning:[/] {escape(redact_secrets(message))}", highlight=False)


def _signed(value: float | None) -> str:
    if value is None:
        return "-"
    return "+inf" if math.isinf(value) else f"{value:+.3f}"


def _short(row) -> str:
    """A crossing in a few characters, for the terminal table (crossings.crossing_text: the one wording)."""
    from .graphs.crossings import crossing_text

    return crossing_text(row)


def _print_report(rep) -> None:
    if rep.crossings.empty:
        console.print("No finished trials: the report is empty.")
        return
    bounds = list(dict.fromkeys(rep.crossings["bound"]))
    table = Table(title="Kept edges where each bound first stops being positive", title_justify="left",
                  caption="swept: the pruned layer, others dense unless tied; step: [W_xh | W_hh] -> h_t",
                  caption_justify="left")
    several_methods = rep.crossings["mask_method"].nunique() > 1
    for column in ["swept", *(["mask"] if several_methods else []), "graph", "weights", *bounds]:
        table.add_column(column, no_wrap=column in bounds)
    groups = rep.crossings.groupby(["pruned", "mask_method", "train_noise_variance", "graph", "weighting"], sort=False)
    for (pruned, method, variance, graph, weighting), rows in groups:
        cells = {row["bound"]: _short(row) for _, row in rows.iterrows()}
        label = (pruned if "tied" in pruned else pruned.split(" (")[0]) + (f", train var {variance:g}" if variance else "")
        table.add_row(label, *([method] if several_methods else []), graph.split(" ")[0], weighting,
                      *(cells.get(b, "") for b in bounds))
    console.print(table)
    _print_claim(rep)
    console.print(f"report: {rep.files['markdown']}", soft_wrap=True)
    for key, path in rep.files.items():
        if key.startswith("figure"):
            console.print(f"figure: {path}", soft_wrap=True)


def _print_claim(rep) -> None:
    """The claim test in brief: clean accuracy, the layer graph's Delta_R and Delta_S."""
    from .graphs.crossings import crossing_text

    if rep.claim.empty:
        return
    rows = rep.claim[(rep.claim["noise"] == "clean") & rep.claim["bound"].isin(["Delta_R", "Delta_S"])
                     & ~rep.claim["graph"].str.startswith("unrolled")]
    table = Table(title="Clean accuracy drop vs bound crossing (binary layer graph, kept edges)",
                  title_justify="left",
                  caption="held: bound crossing minus drop crossing (points of kept edges; >= 0: accuracy "
                  "held until the bound crossed); a drop counts above the threshold and 1.96 SE",
                  caption_justify="left")
    for column in ["swept", "mask", "graph", "dropped at", "bound", "crossing", "held"]:
        table.add_column(column)
    for _, row in rows.iterrows():
        def pct(value) -> str:
            return "never" if value is None or value != value else f"{value:.2f}%"

        held = row["held_beyond_crossing_pts"]
        crossing = crossing_text(row, prefix="bound_")
        table.add_row(row["pruned"].split(" (")[0], row["mask_method"], row["graph"], pct(row["drop_crossing_pct"]),
                      row["bound"], crossing, "" if held is None or held != held else f"{held:+.2f}")
    console.print(table)
    tests = getattr(rep, "expansion_test", None)
    if tests is not None and not tests.empty:
        for _, row in tests[tests["noise"] == "clean"].iterrows():
            r = "" if row["p_value"] != row["p_value"] else (
                f" partial r = {row['partial_r']:+.2f}, p = {row['p_value']:.3g} (Holm {row['p_holm']:.3g} over "
                f"{row['looks']} looks), n = {row['n']} in {row['cells']} cells;")
            console.print(f"expansion beyond density, {row['pruned'].split(' (')[0]} {row['graph']} {row['bound']} "
                          f"(clean): [bold]{row['verdict']}[/] -{r} {escape(row['why'])}", highlight=False, soft_wrap=True)


def _run_here(spec: SweepSpec, label: str = "", extend: bool = False):
    """Run trials of the study in this process, with progress; user errors exit 2."""
    from .data import DataError
    from .sweep.loop import SpecMismatch, StorageError, launch_study
    from .training.factories import FactoryError

    _quiet_libraries()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        try:
            return launch_study(spec, _ConsoleEvents(progress, label), extend=extend, drain_later=True)
        except (DataError, FactoryError, StorageError, SpecMismatch) as err:
            _fail(str(err))
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]: finished trials are in the study, the current one "
                              "is marked failed and queued again: other workers, or the next launch of the same spec, run it.")
            sys.exit(130)


@main.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@set_option
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes for the trials. Default: one per visible GPU; on a CPU one "
                   "single-threaded worker per core (at most one per trial left to run). "
                   "$EXPANDER_SWEEPS_WORKERS sets the default.")
@click.option("--no-report", is_flag=True, help="Skip writing the report at the end.")
@extend_option
def launch(spec_path: str, overrides: tuple[str, ...], workers: int | None, no_report: bool, extend: bool) -> None:
    """Run the sweep SPEC (relaunching continues it), then write its report."""
    from .reporting import write_report

    spec = _load(spec_path, overrides)
    workers, why = (workers, "--workers") if workers else _default_workers(spec)
    started = time.perf_counter()
    if workers == 1:
        result = _run_here(spec, extend=extend)
        ran, failed, study, trackers = result.ran, result.failed, result.study, result.draining
    else:
        ran, failed, study, trackers = _run_workers(spec_path, spec, overrides, workers, extend, why)
    elapsed = time.perf_counter() - started
    console.print(f"ran {ran} trial(s) in {elapsed:.1f}s with {workers} worker(s) ({failed} failed); "
                  f"study: {redact_url(spec.storage_url)}", soft_wrap=True, highlight=False)
    try:
        if not no_report:
            rep = write_report(spec, study)  # the trackers log the last trial(s) meanwhile
            if not VERBOSITY.quiet:
                _print_report(rep)
            _publish(spec, study, rep, trackers)
    finally:
        if trackers is not None:
            trackers.close()
    _print_next_steps(spec)
    if failed:
        sys.exit(1)


def _default_workers(spec: SweepSpec) -> tuple[int, str]:
    from .sweep.study import StorageError, trials_left
    from .sweep.workers import default_worker_plan

    try:
        return default_worker_plan(lambda: trials_left(spec))
    except (ValueError, StorageError) as err:  # a malformed $EXPANDER_SWEEPS_WORKERS; a storage down
        _fail(str(err))


def _run_workers(spec_path: str, spec: SweepSpec, overrides: tuple[str, ...], workers: int, extend: bool,
                 why: str = ""):
    """Run the sweep in `workers` local worker processes; (trials run, failed, study, the trackers
    still logging the last trials or None: the caller closes them)."""
    from .sweep.study import StorageError, open_study, sweep_progress
    from .sweep.syncing import TrialRelay
    from .sweep.workers import run_workers

    _quiet_libraries()
    watched = {}
    ended_before = _ended_trials(spec)
    tracked = any_enabled(spec)
    lag_file = spec.run_path / ".trackers-lag" if tracked else None
    relay = TrialRelay(spec, lambda m: console.print(f"[yellow]warning:[/] {escape(redact_secrets(m))}", highlight=False),
                       ended_before, lag_file) if tracked else None

    def progress() -> tuple[int, int]:
        if "study" not in watched:  # the workers create the study: open it once it is there
            try:
                watched["study"] = open_study(spec, create=False)
            except (KeyError, StorageError):
                return 0, 0
        if relay is not None:
            relay.push_finished(watched["study"])
        return sweep_progress(watched["study"], spec)

    try:
        codes = run_workers(spec_path, overrides, workers, console, extend, progress, untracked=tracked,
                            lag_file=lag_file, why=why)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: finished trials are in the study, the current ones "
                          "are marked failed and queued again: the next launch of the same spec runs them.")
        if relay is not None:
            relay.close(watched.get("study"))
        sys.exit(130)
    try:
        if any(code == USER_ERROR for code in codes):
            sys.exit(USER_ERROR)
        study = _existing_study(spec, "the workers created none; see their lines above")
    except SystemExit:
        if relay is not None:  # logs what finished, or stops a tracker process that got nothing
            relay.close(watched.get("study"))
        raise
    if relay is not None:
        relay.finish(study)
    return len(_ended_trials(spec, study) - ended_before), _failed_count(study), study, relay


def _ended_trials(spec: SweepSpec, study=None) -> set[int]:
    """Numbers of the trials that ended (complete or failed) in the spec's study; none if there
    is no study yet."""
    from optuna.trial import TrialState

    from .sweep.study import StorageError, open_study

    if study is None:
        try:
            study = open_study(spec, create=False)
        except (KeyError, StorageError):
            return set()
    return {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))}


def _print_next_steps(spec: SweepSpec) -> None:
    """What to open next, with the commands (URLs without their passwords)."""
    from .sweep.storages import dashboard_argument
    from .sweep.study import artifact_dir

    lines = [f"report:          {spec.run_path / 'report' / 'report.html'} (and report.md)",
             f"optuna-dashboard {dashboard_argument(spec.storage_url)} --artifact-dir {artifact_dir(spec.run_path)}"]
    for backend in enabled_backends(spec):
        lines += backend.open_next(spec) if backend.open_next else []
    if VERBOSITY.quiet:
        lines = lines[:1]
    console.print("open next:\n" + "\n".join(f"  {line}" for line in lines), highlight=False, markup=False,
                  soft_wrap=True)


def _publish(spec: SweepSpec, study, rep, trackers: ReportSession | None = None) -> None:
    """The report onto the trackers (by the launch's own, still open, when given), the registry
    aliases, and how to upload offline W&B runs."""
    from .sweep.syncing import publish_report

    aliases = publish_report(spec, study, rep, lambda m: console.print(f"[yellow]warning:[/] {escape(redact_secrets(m))}",
                                                                       highlight=False),
                             trackers)
    if aliases:
        console.print("model registry aliases: " + ", ".join(f"{a} -> v{v}" for a, v in aliases.items()))
    for backend in enabled_backends(spec):
        note = backend.after_publish(spec) if backend.after_publish else None
        if note:
            console.print(note, soft_wrap=True, highlight=False, markup=False)


def _failed_count(study) -> int:
    """Grid points whose last attempt failed (retried ones that later completed do not count)."""
    from optuna.trial import TrialState

    completed = {tuple(sorted(t.params.items())) for t in study.get_trials(states=(TrialState.COMPLETE,))}
    failed = {tuple(sorted(t.params.items())) for t in study.get_trials(states=(TrialState.FAIL,))}
    return len(failed - completed)


@main.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@set_option
@extend_option
def worker(spec_path: str, overrides: tuple[str, ...], extend: bool) -> None:
    """Join SPEC's study and take trials until it is done (start one per GPU, on any machine)."""
    import os

    from .sweep.workers import inherited_overrides
    from .training.train import resolve_device

    spec = _load(spec_path, inherited_overrides() + overrides)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    console.print(f"worker {os.getpid()} on {resolve_device(spec.training.device)}"
                  + (f", CUDA_VISIBLE_DEVICES={visible}" if visible is not None else ""), highlight=False)
    result = _run_here(spec, label=f"[{os.getpid()}] ", extend=extend)
    console.print(f"worker {os.getpid()}: ran {result.ran} trial(s), {result.failed} failed", highlight=False)


@main.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@set_option
def report(spec_path: str, overrides: tuple[str, ...]) -> None:
    """Write the crossing table and figures of SPEC's study (any time, from the study alone)."""
    from .reporting import write_report

    spec = _load(spec_path, overrides)
    _quiet_libraries()
    study = _existing_study(spec, f"run `expander-sweeps launch {spec_path}` first")
    _print_report(write_report(spec, study))


@main.command()
@click.argument("spec_paths", metavar="SPEC...", nargs=-1, required=True, type=click.Path(dir_okay=False))
@set_option
@click.option("-o", "--output", type=click.Path(file_okay=False), default="runs/comparison", show_default=True,
              help="Folder for comparison.md and comparison.csv.")
@click.option("--reference", type=click.Path(dir_okay=False, exists=True), default=None,
              help="A CSV of published crossings (columns layer, graph, weighting, bound, percent, source), "
                   "shown as its own column and as each sweep's difference from it.")
def compare(spec_paths: tuple[str, ...], overrides: tuple[str, ...], output: str, reference: str | None) -> None:
    """Put the crossings of several finished sweeps side by side (for example the same protocol
    under two inits and two schedules: what moves the paper's Table 2). --set applies to every SPEC."""
    from pathlib import Path

    from .reporting import comparison_markdown, comparison_rows, read_reference

    _quiet_libraries()
    published = None
    if reference is not None:
        try:
            published = read_reference(Path(reference))
        except (OSError, ValueError) as err:
            _fail(f"--reference: {err}")
    studies = []
    for path in spec_paths:
        spec = _load(path, overrides)
        studies.append((spec, _existing_study(spec, f"run `expander-sweeps launch {path}` first")))
    table = comparison_rows(studies, published)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text(comparison_markdown(table))
    table.to_csv(out / "comparison.csv", index=False)
    if not table.empty:
        settings = list(dict.fromkeys(table["setting"]))
        grid = Table(title="Kept edges where each layer's bound first stops being positive", title_justify="left")
        for column in ["layer", "weights", "bound", *settings]:
            grid.add_column(escape(column))
        for (layer, weighting, bound), group in table.groupby(["layer", "weighting", "bound"], sort=False):
            grid.add_row(layer, weighting, bound, *(escape(" / ".join(group[group["setting"] == s]["crossing"]) or "-")
                                                     for s in settings))
        console.print(grid)
    console.print(f"comparison: {out / 'comparison.md'}", soft_wrap=True, highlight=False)


def _existing_study(spec: SweepSpec, hint: str):
    """The spec's study, which must exist already; user errors exit 2 with `hint`."""
    from .sweep.study import SpecMismatch, StorageError, check_spec, open_study

    try:
        study = open_study(spec, create=False)
        check_spec(study, spec)  # a report must describe the trials as they were run
        return study
    except (StorageError, SpecMismatch) as err:
        _fail(str(err))
    except KeyError:
        _fail(f"no study named '{spec.name}' in {redact_url(spec.storage_url)}; {hint}")


@main.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@set_option
def sync(spec_path: str, overrides: tuple[str, ...]) -> None:
    """Push every finished trial of SPEC that a tracker lacks (after a tracker was down); idempotent."""
    from .reporting import write_report
    from .sweep.syncing import sync_trackers, tracker_failure

    spec = _load(spec_path, overrides)
    _quiet_libraries()
    warnings_seen = []

    def warn(message: str) -> None:
        warnings_seen.append(message)
        err_console.print(f"[yellow]warning:[/] {escape(redact_secrets(message))}", highlight=False)

    study = _existing_study(spec, "nothing to sync")
    try:
        pushed = sync_trackers(spec, study, warn, lambda m: console.print(m, highlight=False))
    except Exception as err:  # a damaged store, a server down: one line, what to do (never a traceback)
        _fail(tracker_failure(spec, err))
    _publish(spec, study, write_report(spec, study))
    console.print("synced: " + (", ".join(f"{k} +{v}" for k, v in pushed.items()) or "no tracker is enabled"))
    if warnings_seen:
        sys.exit(1)


@main.group()
def export() -> None:
    """Export the sweep for other tools."""


@export.command("wandb")
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@set_option
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to a file instead of stdout.")
def export_wandb(spec_path: str, overrides: tuple[str, ...], output: str | None) -> None:
    """SPEC as a W&B sweep config (`wandb sweep FILE`, then `wandb agent ID`)."""
    import yaml

    from .sweep.space import wandb_sweep_config

    spec = _load(spec_path, overrides)
    if overrides:
        # Agents run `agent-trial SPEC`: with --set, SPEC must be the resolved spec, written
        # beside the export (or in the run folder), or the agents would run the unmodified YAML.
        resolved = Path(output).with_suffix(".spec.yaml") if output else spec.run_path / "wandb-sweep.spec.yaml"
        resolved.parent.mkdir(parents=True, exist_ok=True)
        resolved.write_text(f"# {spec_path} with {' '.join('--set ' + o for o in overrides)}\n"
                            + yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False))
        err_console.print(f"the agents run the resolved spec {escape(str(resolved))}", highlight=False)
        if spec.study.storage and redact_url(spec.study.storage) != spec.study.storage:
            err_console.print("[yellow]warning:[/] the resolved spec holds study.storage with a password; "
                              "prefer $EXPANDER_SWEEPS_STORAGE on the agents' machines", highlight=False)
        spec_path = str(resolved)
    config = wandb_sweep_config(spec, spec_path)
    if "description" in config:  # a multi-objective study: say what W&B's sweep does not optimise
        err_console.print(f"[yellow]note:[/] {escape(config['description'])}", highlight=False)
    text = yaml.safe_dump(config, sort_keys=False)
    if output:
        Path(output).write_text(text)
        console.print(f"wrote {output}; next: wandb sweep {output}")
    else:
        click.echo(text, nl=False)


@main.command("agent-trial", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@click.pass_context
def agent_trial(ctx: click.Context, spec_path: str) -> None:
    """Run one point of SPEC given as --name=value arguments (what `wandb agent` passes)."""
    from .sweep.space import AgentArgumentError, agent_point

    spec = _load(spec_path, ())
    try:
        point = agent_point(list(ctx.args), spec)
    except AgentArgumentError as err:
        _fail(str(err))
    if not spec.tracking.wandb.enabled:  # an agent's run is a W&B run
        spec = spec.model_copy(update={"tracking": spec.tracking.model_copy(
            update={"wandb": spec.tracking.wandb.model_copy(update={"enabled": True})})})
    from .data import DataError
    from .sweep.loop import SpecMismatch, StorageError, launch_study
    from .training.factories import FactoryError

    _quiet_libraries()
    try:
        result = launch_study(spec, point=point)
    except (DataError, FactoryError, StorageError, SpecMismatch) as err:
        _fail(str(err))
    console.print(f"agent trial {point}: ran {result.ran}, failed {result.failed}", highlight=False)
    if result.failed:
        sys.exit(1)


@main.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@set_option
def validate(spec_path: str, overrides: tuple[str, ...]) -> None:
    """Check SPEC and print it with every default filled in."""
    import yaml

    spec = _load(spec_path, overrides)
    _check_import_paths(spec)
    # The verdict on stderr, the spec alone on stdout: `validate SPEC > resolved.yaml` is YAML.
    err_console.print(f"[green]{escape(spec_path)} is valid.[/]", highlight=False, soft_wrap=True)
    shown = spec.model_dump(mode="json")
    # URLs are printed without their passwords (a terminal log is not a place for them).
    if shown["study"]["storage"]:
        shown["study"]["storage"] = redact_url(shown["study"]["storage"])
    if shown["tracking"]["mlflow"]["uri"]:
        shown["tracking"]["mlflow"]["uri"] = redact_url(shown["tracking"]["mlflow"]["uri"])
    click.echo(redact_secrets(yaml.safe_dump(shown, sort_keys=False)), nl=False)  # as is: no wrapping at 80


def _check_import_paths(spec: SweepSpec) -> None:
    """model.factory and data.loader must name importable functions (their results are checked
    when a launch has loaded the data: before any training)."""
    if spec.model.factory is None and getattr(spec.data, "loader", None) is None:
        return
    from .training.factories import FactoryError, import_function

    try:
        if spec.model.factory is not None:
            import_function(spec.model.factory, "model.factory", spec.spec_dir)
        if getattr(spec.data, "loader", None) is not None:
            import_function(spec.data.loader, "data.loader", spec.spec_dir)
    except FactoryError as err:
        _fail(str(err))


@main.command()
@click.argument("spec_path", metavar="[SPEC]", required=False, type=click.Path(dir_okay=False))
def methods(spec_path: str | None) -> None:
    """List the mask methods, graph quantities, trackers and report sections (with SPEC: its plug-ins' too)."""
    from .graphs.graph_measures import quantity, quantity_names
    from .pruning.mask_methods import mask_method, mask_method_names

    if spec_path:
        _load(spec_path, ())  # imports its `plugins:`, which register theirs
    console.print("[bold]mask methods[/] (masks.method)")
    for name in mask_method_names():
        method = mask_method(name)
        options = escape(f" [reads masks.{', masks.'.join(method.options)}]") if method.options else ""
        console.print(f"  {name}: {method.description}{options}", highlight=False, soft_wrap=True)
    console.print("[bold]graph quantities[/] (<graph>/<weighting>/<name>; bounds may be listed in report.bounds)")
    for name in quantity_names():
        q = quantity(name)
        kind = ' (bound)' if q.bound else ' (opt-in: spectral.measures)' if q.opt_in else ''
        console.print(f"  {name}{kind}: {q.label}: {q.definition}", highlight=False,
                      soft_wrap=True)
    from .reporting.report_sections import section_names

    console.print(f"[bold]tracker backends[/] (tracking.mlflow, tracking.wandb, tracking.extra): "
                  f"{', '.join(backend_names())}", highlight=False, soft_wrap=True)
    console.print(f"[bold]report sections from plug-ins[/]: {', '.join(section_names()) or 'none'}", highlight=False,
                  soft_wrap=True)


@main.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write to a file instead of stdout.")
def schema(output: str | None) -> None:
    """Print the JSON Schema of spec files (for editor completion)."""
    text = json_schema()
    if output:
        Path(output).write_text(text + "\n")
        console.print(f"wrote {output}")
    else:
        click.echo(text)


if __name__ == "__main__":  # pragma: no cover
    main()
