"""expander-sweeps: sweeps over pruned recurrent networks and the expansion of their layers.

The Python API mirrors the CLI and returns plain objects:

    spec = load_spec("sweeps/quickstart.yaml", ["data.root=../shared/data/mnist"])
    result = launch(spec)      # LaunchResult: the Optuna study, trials run and failed
    rep = report(spec)         # Report: crossing table, trials, markdown, file paths
"""

from __future__ import annotations

from .spec import SpecError, SweepSpec, load_spec

__all__ = ["SpecError", "SweepSpec", "load_spec", "launch", "report", "__version__"]
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
