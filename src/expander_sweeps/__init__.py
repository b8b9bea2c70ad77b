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

__all__ = ["SpecError", "SweepSpec", "load_spec", "launch", "report", "expansion_table", "log_expansion",
           "__version__"]
__version__ = "0.1.0"


def launch(spec: SweepSpec, events=None):
    """Run the trials the study lacks, write the report, publish it to the trackers.
    Returns the sweep's LaunchResult (the study, trials run and failed)."""
    import warnings

    from .reporting import write_report
    from .sweep import launch_study
    from .syncing import publish_report

    result = launch_study(spec, events)
    publish_report(spec, result.study, write_report(spec, result.study), warnings.warn)
    return result


def report(spec: SweepSpec):
    """Write the crossing report of a sweep from its study; returns the Report."""
    from .reporting import write_report

    return write_report(spec)


def __getattr__(name: str):
    # Imported on first use: `import expander_sweeps` stays free of torch for the report and CLI.
    if name in ("expansion_table", "log_expansion"):
        from . import expansion

        return getattr(expansion, name)
    raise AttributeError(f"module 'expander_sweeps' has no attribute {name!r}")
