"""The report written: the analysis, rendered as Markdown, HTML, figures, CSV and JSON in <run_dir>/report."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pandas as pd

from ..spec import SweepSpec
from .analysis import (
    CORRECT_COLUMN,
    Panel,
    _panels,
    _with_defaults,
    claim_rows,
    crossing_rows,
    expansion_test_rows,
    failed_trials,
    trials_frame,
)
from .figures import _figure
from .html import write_html
from .markdown import _failed_markdown, _markdown


@dataclass
class Report:
    crossings: pd.DataFrame
    trials: pd.DataFrame
    markdown: str
    files: dict[str, Path] = field(default_factory=dict)
    failed: list[dict] = field(default_factory=list)  # trials whose point never completed, and why
    claim: pd.DataFrame = field(default_factory=pd.DataFrame)  # crossings vs drops (see module notes)
    expansion_test: pd.DataFrame = field(default_factory=pd.DataFrame)  # expansion beyond density

    def published_files(self) -> list[str]:
        """The files the trackers get (MLflow's parent run under report/, W&B's summary run): all
        of them, the figures in every format, and report.html as the copy that links nowhere
        outside itself (`published/report.html`) instead of the run folder's."""
        return [str(path) for key, path in self.files.items() if key != "html"]


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON-ready dicts: NaN -> null, numpy scalars -> Python."""
    if frame.empty:
        return []
    return json.loads(frame.to_json(orient="records"))


def write_report(spec: SweepSpec, study: optuna.Study | None = None) -> Report:
    """Write report.md, crossings.csv/json, claim.csv, trials.csv and one PNG per layer into <run_dir>/report."""
    if study is None:
        from ..sweep.study import open_study

        study = open_study(spec, create=False)
    frame = trials_frame(study)
    failed = failed_trials(study)
    out = spec.run_path / "report"
    out.mkdir(parents=True, exist_ok=True)
    if frame.empty:
        markdown = "\n".join([f"# Crossing report: {spec.name}", "", "No finished trials yet.", "",
                              *_failed_markdown(failed)])
        (out / "report.md").write_text(markdown)
        return Report(pd.DataFrame(), frame, markdown, {"markdown": out / "report.md"}, failed)
    frame = _with_defaults(frame, spec)
    crossings = crossing_rows(frame, spec)
    claim = claim_rows(frame, spec)
    expansion = expansion_test_rows(frame, spec)
    figures = []
    grouped: dict[str, list[Panel]] = {}
    for panel in _panels(frame, spec):
        grouped.setdefault(panel.slug, []).append(panel)
    for slug, panels in grouped.items():
        path = out / f"figure_{slug}.png"
        _figure(panels, spec, crossings, claim, path)
        figures.append(path)
    markdown = _markdown(spec, frame, crossings, claim, expansion, figures, failed)
    files = {
        "markdown": out / "report.md",
        "crossings_csv": out / "crossings.csv",
        "crossings_json": out / "crossings.json",
        "claim_csv": out / "claim.csv",
        "expansion_test_csv": out / "expansion_test.csv",
        "trials_csv": out / "trials.csv",
    }
    files["markdown"].write_text(markdown)
    crossings.to_csv(files["crossings_csv"], index=False)
    claim.to_csv(files["claim_csv"], index=False)
    expansion.to_csv(files["expansion_test_csv"], index=False)
    files["crossings_json"].write_text(json.dumps({
        "sweep": spec.name,
        "cell": spec.model.cell,
        "hidden": spec.model.hidden,
        "init": spec.model.init_label,
        "clip_grad_norm": spec.training.clip_grad_norm,
        "mask_methods": spec.masks.methods,
        "seeds": spec.training.seeds,
        "schedule": spec.masks.schedule,
        "drop_threshold": spec.report.drop_threshold,
        "finished_trials": len(frame),
        "crossings": _records(crossings),
        "claim": _records(claim),
        "expansion_test": _records(expansion),
        "failed_trials": failed,
    }, indent=2))
    frame.drop(columns=[CORRECT_COLUMN], errors="ignore").sort_values("trial").to_csv(files["trials_csv"], index=False)
    files["html"] = write_html(spec, markdown, frame, out)
    files["html_published"] = write_html(spec, markdown, frame, out, local=False)
    for i, path in enumerate(figures):
        files[f"figure_{i}"] = path
        files[f"svg_{i}"], files[f"pdf_{i}"] = path.with_suffix(".svg"), path.with_suffix(".pdf")
    return Report(crossings, frame, markdown, files, failed, claim, expansion)
