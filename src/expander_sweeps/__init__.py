"""expander-sweeps: sweeps over pruned recurrent networks and the expansion of their layers.

The Python API mirrors the CLI and returns plain objects:

    spec = load_spec("sweeps/quickstart.yaml", ["data.root=../shared/data/mnist"])
    result = launch(spec)      # LaunchResult: the Optuna study, trials run and failed
    rep = report(spec)         # Report: crossing table, trials, markdown, file paths

and measures any PyTorch model from a user's own training loop:

    table = expansion_table(model)      # one row per prunable matrix and weighting
    log_expansion(model, step=epoch)    # the same to the active MLflow and/or W&B run
"""

from __future__ import annotations

from .spec import SpecError, SweepSpec, load_spec

__all__ = ["SpecError", "SweepSpec", "NoStudyError", "load_spec", "launch", "report", "expansion_table",
           "log_expansion", "__version__"]
__version__ = "0.1.0"


def launch(spec: SweepSpec, events=None):
    """Run the trials the study lacks, write the report, publish it to the trackers.
    Returns the sweep's LaunchResult (the study, trials run and failed)."""
    import warnings

    from .reporting import write_report
    from .sweep.loop import launch_study
    from .sweep.syncing import publish_report

    result = launch_study(spec, events, drain_later=True)
    trackers, result.draining = result.draining, None
    try:
        rep = write_report(spec, result.study)  # while the trackers log the last trial(s)
        publish_report(spec, result.study, rep, warnings.warn, trackers)
    finally:
        if trackers is not None:
            trackers.close()
            result.tracker_seconds = trackers.seconds
    return result


class NoStudyError(LookupError):
    """The spec's study does not exist (yet) in its storage."""


def report(spec: SweepSpec):
    """Write the crossing report of a sweep from its study; returns the Report. Raises
    NoStudyError when the study is not there (relative run_dir and storage paths are read from
    the current folder, as the CLI reads them), and creates nothing then."""
    from .reporting import write_report
    from .spec import redact_url
    from .sweep.study import open_study

    try:
        study = open_study(spec, create=False)
    except KeyError:
        raise NoStudyError(f"no study named '{spec.name}' in {redact_url(spec.storage_url)} (run_dir "
                           f"{spec.run_path.resolve()}); launch the sweep first, or run from the folder "
                           "the sweep was launched from") from None
    return write_report(spec, study)


def __getattr__(name: str):
    # Imported on first use: `import expander_sweeps` stays free of torch for the report and CLI.
    if name in ("expansion_table", "log_expansion"):
        from .graphs import expansion

        return getattr(expansion, name)
    raise AttributeError(f"module 'expander_sweeps' has no attribute {name!r}")
