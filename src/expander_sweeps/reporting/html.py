"""report.html: the report as one self-contained page (figures inlined, no network, no files
needed beside it to read it), with sortable tables and each trial linked to its files.

It is report.md rendered (markdown-it, which rich already brings) plus a trials table, a
little CSS and a little script. Sorting: click a column's header (again to reverse); numbers
sort as numbers (`unbounded` above every finite value), empty and `undefined` cells last. The URL
remembers the sort (`report.html#sort=<table>:<column>:<asc|desc>`, tables and columns counted
from 0), so a sorted view can be bookmarked or shared.
"""

from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path

import pandas as pd
from markdown_it import MarkdownIt

from ..results import RAMANUJAN_BOUNDS, trial_label
from ..spec import SweepSpec
from ..tracking.backends import enabled_backends

__all__ = ["write_html"]

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1500px; padding: 0 1rem; color: #222; }
p, ul, ol { max-width: 1100px; }
.scroll { overflow-x: auto; max-width: 100%; }
.bleed { width: calc(100vw - 3rem); max-width: none; margin-left: calc(50% - 50vw + 1.5rem); }
table.trials th { white-space: normal; min-width: 3.5em; }
td.files, td.runs { white-space: nowrap; }
td.files a { margin-right: .6em; }
h1, h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; cursor: pointer; user-select: none; white-space: nowrap; }
th[aria-sort=ascending]::after { content: " \\25B2"; }
th[aria-sort=descending]::after { content: " \\25BC"; }
tr:nth-child(even) td { background: #fafafa; }
img { display: block; max-width: 100%; border: 1px solid #eee; }
code { background: #f3f3f3; padding: 0 .2rem; }
"""

# Sorting, written for this page: no library, no network.
_SCRIPT = """
(function () {
  function key(text) {
    var t = text.trim();
    if (t === "" || t === "undefined" || t === "-") return [2, 0];
    if (t === "inf" || t === "+inf" || t === "unbounded") return [0, Infinity];
    var n = Number(t.replace(/%$/, ""));
    return isNaN(n) ? [1, t.toLowerCase()] : [0, n];
  }
  function sortTable(table, column, direction) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[column] ? a.cells[column].textContent : "");
      var y = key(b.cells[column] ? b.cells[column].textContent : "");
      if (x[0] !== y[0]) return x[0] - y[0];          // numbers, then words, then empty: always
      if (x[1] === y[1]) return 0;
      var order = x[1] < y[1] ? -1 : 1;
      return direction === "desc" ? -order : order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (cell, index) {
      if (index === column) cell.setAttribute("aria-sort", direction === "desc" ? "descending" : "ascending");
      else cell.removeAttribute("aria-sort");
    });
  }
  var tables = Array.prototype.slice.call(document.querySelectorAll("table"));
  tables.forEach(function (table, tableIndex) {
    if (!table.tHead || !table.tBodies.length) return;
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (cell, column) {
      cell.addEventListener("click", function () {
        var direction = cell.getAttribute("aria-sort") === "ascending" ? "desc" : "asc";
        sortTable(table, column, direction);
        history.replaceState(null, "", "#sort=" + tableIndex + ":" + column + ":" + direction);
      });
    });
  });
  var wanted = /^#sort=(\\d+):(\\d+):(asc|desc)$/.exec(location.hash);
  if (wanted && tables[+wanted[1]]) sortTable(tables[+wanted[1]], +wanted[2], wanted[3]);
  document.documentElement.setAttribute("data-ready", "1");
})();
"""


def _inline_images(body: str, folder: Path) -> str:
    """<img src="figure.png"> -> a data: URI of the file, so the page needs nothing beside it."""

    def inline(match: re.Match) -> str:
        path = folder / html.unescape(match.group(1))
        if not path.is_file() or path.suffix.lower() != ".png":
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'src="data:image/png;base64,{data}"'

    return re.sub(r'src="([^"]+)"', inline, body)


def _figures_first(markdown: str) -> str:
    """The page shows the figures right after the setting (what people look at first); the
    Markdown keeps them at the end, after the tables they illustrate."""
    sections = re.split(r"(?m)^(?=## )", markdown)
    figures = [part for part in sections if part.startswith("## Figures")]
    if not figures or len(sections) < 2:
        return markdown
    rest = [part for part in sections if not part.startswith("## Figures")]
    return "".join([rest[0], figures[0].rstrip() + "\n\n", *rest[1:]])


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "undefined"
    if isinstance(value, float):
        # A dense layer's binary bound: unbounded, as the report's other tables say it.
        return "unbounded" if math.isinf(value) and value > 0 else f"{value:.4g}"
    return str(value)


def _trials_table(spec: SweepSpec, frame: pd.DataFrame, local: bool) -> str:
    """One row per finished trial: what it was, its accuracies and bounds, links to its files
    (`local`: the page beside the run folder; else, as on a tracker, where the files are) and the
    names of its tracker runs."""
    layers = list(spec.masks.layers)
    accuracy = sorted((c for c in frame.columns if c.startswith("acc/")), key=lambda c: (c != "acc/clean", c))
    bounds = [f"{layer}/binary/{b}" for layer in layers for b in RAMANUJAN_BOUNDS if f"{layer}/binary/{b}" in frame]
    columns = ["trial", "seed", "mask_method", *[f"remaining_{layer}" for layer in layers if f"remaining_{layer}" in frame],
               *accuracy, *bounds]
    # Long names break after their slashes (W_xh/<wbr>binary/<wbr>delta_r): narrow columns.
    head = "".join(f"<th>{html.escape(c).replace('/', '/<wbr>')}</th>" for c in [*columns, "files", "tracker runs"])
    rows = []
    for record in frame.sort_values("trial").to_dict("records"):
        number = int(record["trial"])
        folder = spec.run_path / "trials" / f"{number:05d}"
        links = []
        files = (("masks", "masks.npz"), *((f"mask {layer}", f"mask_{layer}.png") for layer in layers),
                 ("checkpoint", "model.pt"), ("spectra", "spectra.json"))
        for label, name in files if local else ():
            if (folder / name).exists():
                target = Path("..") / "trials" / f"{number:05d}" / name
                links.append(f'<a href="{html.escape(target.as_posix())}">{html.escape(label)}</a>')
        where = " ".join(links) or "-"
        if not local:  # a tracker's copy: the run folder is not beside it
            where = "artifacts <code>trial/</code> of its MLflow run" if spec.tracking.mlflow.enabled else "the run folder"
        label = html.escape(trial_label(number, record))
        runs = [f"{html.escape(backend.label)}: {label}" for backend in enabled_backends(spec)]
        cells = "".join(f"<td>{html.escape(_cell(record.get(c)))}</td>" for c in columns)
        rows.append(f'<tr>{cells}<td class="files">{where}</td><td class="runs">{"<br>".join(runs) or "-"}</td></tr>')
    folder_note = (f"Files open from the run folder ({html.escape(str(spec.run_path))})" if local else
                   "This copy sits on a tracker: each trial's files are among its own run's artifacts")
    return (f"<h2>Trials</h2><p>Every finished trial; click a column to sort. {folder_note}; tracker runs "
            f"are named as in MLflow and W&amp;B.</p>"
            f'<div class="scroll bleed"><table class="trials"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def write_html(spec: SweepSpec, markdown: str, frame: pd.DataFrame, report_dir: Path,
               local: bool = True) -> Path:
    """report.html beside report.md: the same report, its figures inlined, tables sortable (wide
    ones scroll inside the page). `local` False: the copy for the trackers, in
    `report/published/`, whose trials table says where a trial's files are instead of linking
    into a run folder that is not beside it."""
    renderer = MarkdownIt("commonmark", {"html": False}).enable("table")
    body = _inline_images(renderer.render(_figures_first(markdown)), report_dir)
    body = body.replace("<table>", '<div class="scroll"><table>').replace("</table>", "</table></div>")
    if not frame.empty:
        body += _trials_table(spec, frame, local)
    page = (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Crossing report: {html.escape(spec.name)}</title><style>{_STYLE}</style></head>"
            f"<body>{body}<script>{_SCRIPT}</script></body></html>\n")
    path = report_dir / "report.html" if local else report_dir / "published" / "report.html"
    path.parent.mkdir(exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
