"""The crossing report: where each layer's bounds turn negative, where accuracy drops, and
whether the first predicts the second.

Analysis apart from rendering: `analysis.py` (pure functions over the trials frame: panels,
crossings, the claim, the expansion-beyond-density test, comparisons), `markdown.py`,
`figures.py` and `html.py` (rendering), `report.py` (the files of <run_dir>/report); the claim's
statistics in `claim_stats.py`, their calibration in `claim_simulation.py`, plug-ins' sections
in `report_sections.py`. Reads the Optuna study, never the trackers; imports no torch.

The names below are imported when first used (PEP 562), so that importing the package for
`report_sections` (a plug-in does) costs no pandas or matplotlib.
"""

from __future__ import annotations

import importlib

__all__ = ["Report", "Panel", "trials_frame", "failed_trials", "crossing_rows", "claim_rows", "expansion_test_rows",
           "drop_points", "write_report", "read_reference", "comparison_rows", "comparison_markdown"]

_HOMES = {"Report": "report", "write_report": "report", "comparison_markdown": "markdown"}


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES.get(name, 'analysis')}", __name__), name)
