"""The crossing report: where each layer's bounds turn negative, where accuracy drops, and
whether the first predicts the second.

Analysis apart from rendering: `analysis.py` (pure functions over the trials frame: panels,
crossings, the claim, the expansion-beyond-density test, comparisons), `markdown.py`,
`figures.py` and `html.py` (rendering), `report.py` (the files of <run_dir>/report). Reads the
Optuna study, never the trackers; imports no torch.
"""

from __future__ import annotations

from .analysis import (
    Panel,
    claim_rows,
    comparison_rows,
    crossing_rows,
    drop_points,
    expansion_test_rows,
    failed_trials,
    read_reference,
    trials_frame,
)
from .markdown import comparison_markdown
from .report import Report, write_report

__all__ = ["Report", "Panel", "trials_frame", "failed_trials", "crossing_rows", "claim_rows", "expansion_test_rows",
           "drop_points", "write_report", "read_reference", "comparison_rows", "comparison_markdown"]
