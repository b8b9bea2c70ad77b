"""Plug-ins: a mask method and a graph quantity, each one function and one registration in a module
the spec names under `plugins:`, reach a real sweep (the CLI, on the real MNIST files), its study,
spectra.json, `expansion_table`, the report's crossings and header; bad names are clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

from conftest import CLI, tiny_spec_dict
from expander_sweeps.plugins import unregister_mask_method, unregister_quantity, unregister_section
from expander_sweeps.sweep.study import read_result

# A plug-in as a user writes it: a mask method that keeps the first columns of every row (a mask
# whose every entry is known in advance) and two quantities: a normalised-Laplacian gap and a
# bound whose sign is known by hand (kept edges minus 40).
PLUGIN = textwrap.dedent('''
    import numpy as np
    import torch

    from expander_sweeps.plugins import GraphQuantity, register_quantity
    from expander_sweeps.plugins import MaskMethod, register_mask_method
    from expander_sweeps.plugins import ReportSection, register_section


    def first_columns(request):
        keep = max(1, round(request.remaining * request.weight.shape[1]))
        mask = torch.zeros(request.weight.shape, dtype=torch.bool)
        mask[:, :keep] = True
        return mask


    def laplacian_gap(biadjacency):
        """1 - sigma_2 of D_r^-1/2 B D_c^-1/2: the bipartite normalised Laplacian's second eigenvalue
        (a side of one vertex has one singular value; the graph's other eigenvalues are then 1)."""
        rows, cols = biadjacency.sum(axis=1), biadjacency.sum(axis=0)
        scaled = biadjacency / np.sqrt(np.outer(rows, cols))
        sigma = np.append(np.linalg.svd(scaled, compute_uv=False), 0.0)
        return float(1.0 - sigma[1])


    def edges_over_40(biadjacency):
        return float(np.count_nonzero(biadjacency) - 40)


    def kept_edges(spec, trials, crossings):
        rows = [f"| {int(t)} | {k:.4f} |" for t, k in zip(trials["trial"], trials["W_hh/kept_fraction"])]
        return ["## Kept edges of W_hh per trial", "", "| trial | kept |", "| --- | --- |", *rows]


    def broken(spec, trials, crossings):
        raise ValueError("no such column")


    register_mask_method(MaskMethod("first_columns", first_columns, "keep the first columns of every row"))
    register_section(ReportSection("kept_edges", kept_edges))
    register_section(ReportSection("broken", broken))
    register_quantity(GraphQuantity("lap_gap", "Laplacian gap (lab)", "1 - second eigenvalue ...",
                                    laplacian_gap))
    register_quantity(GraphQuantity("edges_over_40", "edges over 40", "kept edges minus 40", edges_over_40,
                                    bound=True, figure_style=":", figure_color="teal"))
''')


@pytest.fixture
def plugin_spec(tmp_path, mnist_dir):
    (tmp_path / "lab_plugin.py").write_text(PLUGIN)
    spec = tiny_spec_dict(tmp_path / "run", mnist_dir, plugins=["lab_plugin"],
                          masks={"remaining": [1.0, 0.3, 0.05], "method": ["magnitude", "first_columns"],
                                 "layers": ["W_hh"]},
                          spectral={"graphs": ["layer"], "measures": ["nl_gap", "cheeger_sweep"]},
                          report={"figure_bounds": ["delta_r", "edges_over_40"]},
                          tracking={"mlflow": {"enabled": False}})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    yield path
    # The test process imported the plug-in too (via load_spec): leave the registries as they were.
    unregister_mask_method("first_columns")
    unregister_quantity("lap_gap")
    unregister_quantity("edges_over_40")
    unregister_section("kept_edges")
    unregister_section("broken")
    sys.modules.pop("lab_plugin", None)


def _independent_laplacian_gap(biadjacency: np.ndarray) -> float:
    """The second-smallest eigenvalue of I - D^-1/2 A D^-1/2 on the whole bipartite graph (a dense
    symmetric eigen-solver on (rows + cols) vertices: not the plug-in's SVD)."""
    rows, cols = biadjacency.shape
    adjacency = np.zeros((rows + cols, rows + cols))
    adjacency[:rows, rows:] = biadjacency
    adjacency[rows:, :rows] = biadjacency.T
    inv_sqrt = 1.0 / np.sqrt(adjacency.sum(axis=1))
    laplacian = np.eye(rows + cols) - inv_sqrt[:, None] * adjacency * inv_sqrt[None, :]
    return float(np.sort(np.linalg.eigvalsh(laplacian))[1])


@pytest.mark.slow
def test_a_plugin_method_and_quantity_reach_the_sweep_the_study_and_the_report(plugin_spec, tmp_path):
    result = subprocess.run([*CLI, "launch", str(plugin_spec), "--workers", "1"], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'run' / 'optuna.db'}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 5  # the dense point and 2 fractions x 2 methods
    for trial in done:
        remaining = trial.params["remaining"]
        stored = read_result(trial, tmp_path / "run")
        spectra = json.loads(Path(stored.files["spectra"]).read_text())
        mask = np.load(stored.files["masks"])["W_hh"].astype(np.float64)
        if trial.params.get("mask_method") == "first_columns" and remaining < 1.0:
            keep = max(1, round(remaining * 16))
            assert mask[:, :keep].all() and not mask[:, keep:].any()  # the plug-in's mask, used as made
        # The graph the built-ins measure (isolated vertices removed), measured independently.
        kept = mask[mask.sum(axis=1) > 0][:, mask.sum(axis=0) > 0]
        assert spectra["W_hh/binary"]["lap_gap"] == pytest.approx(_independent_laplacian_gap(kept), abs=1e-9)
        assert spectra["W_hh/binary"]["edges_over_40"] == mask.sum() - 40
        # The opt-in measures asked for (spectral.measures), on the same graphs: the built-in nl_gap
        # is the plug-in's lap_gap by another route (an SVD of the normalised biadjacency).
        for weighting in ("binary", "weighted"):
            values = spectra[f"W_hh/{weighting}"]
            assert values["nl_gap"] == pytest.approx(values["lap_gap"], abs=1e-9)
            assert values["nl_gap"] / 2 - 1e-9 <= values["cheeger_sweep"] <= (2 * values["nl_gap"]) ** 0.5 + 1e-9
            assert "gap_ratio" not in values  # not asked for
        assert stored.metrics["W_hh/weighted/cheeger_sweep"] == spectra["W_hh/weighted"]["cheeger_sweep"]
        assert stored.metrics["W_hh/binary/lap_gap"] == spectra["W_hh/binary"]["lap_gap"]  # in the study
        assert stored.metrics["W_hh/binary/edges_over_40"] == mask.sum() - 40
        weighted = json.loads(Path(stored.files["spectra"]).read_text())["W_hh/weighted"]
        assert weighted["edges_over_40"] == mask.sum() - 40  # the weighted graph has the same edges

    # The report: the bound's crossing (77 edges at 30 %, 13 at 5 %: it crosses between them) and
    # both plug-ins defined in its header.
    report = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "graph quantity *Laplacian gap (lab)* (`lap_gap`; plug-in)" in report
    assert "graph quantity *normalised-Laplacian gap* (`nl_gap`; spectral.measures)" in report
    assert "mask method `first_columns` (plug-in): keep the first columns of every row" in report
    # The plug-in's sections: after the built-in ones, in report.md and report.html; the one that
    # raised says so where it would have been, and the rest of the report is intact.
    kept = {t.number: t.user_attrs["W_hh/kept_fraction"] for t in done}
    assert "## Kept edges of W_hh per trial" in report
    for number, fraction in kept.items():
        assert f"| {number} | {fraction:.4f} |" in report
    assert "**This plug-in section failed and is missing:** ValueError: no such column" in report
    assert report.index("## Kept edges of W_hh per trial") > report.index("## Where each bound first stops")
    page = (tmp_path / "run" / "report" / "report.html").read_text()
    assert "Kept edges of W_hh per trial" in page
    crossings = (tmp_path / "run" / "report" / "crossings.csv").read_text().splitlines()
    edges = [line for line in crossings if "edges over 40" in line and ",binary," in line]
    assert len(edges) == 2, crossings  # one per method
    for line in edges:
        pct = float(line.split(",")[crossings[0].split(",").index("crossing_pct")])
        assert 5.0 < pct < 30.0, line


def test_a_plugin_quantity_is_a_column_of_expansion_table_and_a_logged_metric(plugin_spec):
    import torch

    from expander_sweeps import expansion_table
    from expander_sweeps.graphs.expansion import expansion_metrics
    from expander_sweeps.spec import load_spec

    assert load_spec(plugin_spec).plugins == ["lab_plugin"]  # imports the plug-in, as every worker does
    torch.manual_seed(0)
    layer = torch.nn.Linear(12, 9)
    with torch.no_grad():
        layer.weight.mul_(torch.rand(9, 12) < 0.5)  # pruned: the graph is the nonzero entries
    table = expansion_table(layer)
    edges = (layer.weight != 0).to(torch.float64).numpy()
    kept = edges[edges.sum(axis=1) > 0][:, edges.sum(axis=0) > 0]
    binary = table[table.weighting == "binary"].iloc[0]
    assert binary["lap_gap"] == pytest.approx(_independent_laplacian_gap(kept), abs=1e-9)
    assert binary["edges_over_40"] == edges.sum() - 40
    metrics = expansion_metrics(table)
    assert metrics["expansion/weight/binary/lap_gap"] == binary["lap_gap"]
    assert metrics["expansion/weight/weighted/edges_over_40"] == edges.sum() - 40


@pytest.mark.parametrize("change, message", [
    ({"plugins": ["no_such_lab_module"]}, "cannot import plug-in module 'no_such_lab_module'"),
    ({"masks": {"method": "snipp"}}, "got 'snipp', which is not a registered mask method; known: magnitude, random"),
    ({"report": {"bounds": ["delta_r", "cheeger"]}}, "got 'cheeger', which is not a registered bound; known: delta_r"),
])
def test_unknown_plugins_methods_and_bounds_are_clear_spec_errors(tmp_path, mnist_dir, change, message):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_spec_dict(tmp_path / "run", mnist_dir, **change)))
    result = subprocess.run([*CLI, "validate", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert message in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr


def test_a_plugin_that_takes_a_built_in_name_is_refused_and_methods_lists_a_specs_plugins(plugin_spec, tmp_path):
    (tmp_path / "clash_plugin.py").write_text(
        "from expander_sweeps.plugins import MaskMethod, register_mask_method\n"
        "register_mask_method(MaskMethod('magnitude', lambda request: None, 'mine'))\n")
    clash = yaml.safe_load(plugin_spec.read_text()) | {"plugins": ["clash_plugin"]}
    (tmp_path / "clash.yaml").write_text(yaml.safe_dump(clash))
    result = subprocess.run([*CLI, "validate", str(tmp_path / "clash.yaml")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    assert "mask method 'magnitude' is already registered" in " ".join(result.stderr.split()), result.stderr

    listed = subprocess.run([*CLI, "methods", str(plugin_spec)], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert "first_columns: keep the first columns of every row" in listed.stdout
    assert "edges_over_40 (bound): edges over 40: kept edges minus 40" in listed.stdout
    assert "report sections from plug-ins: kept_edges, broken" in listed.stdout
    assert "tracker backends (tracking.mlflow, tracking.wandb, tracking.extra): mlflow, wandb" in listed.stdout
    plain = subprocess.run([*CLI, "methods"], capture_output=True, text=True, timeout=120)
    assert "first_columns" not in plain.stdout and "magnitude_min_degree" in plain.stdout


# A tracker from a plug-in: every call it receives, one JSON line each, in the file its settings name.
RECORDER = textwrap.dedent('''
    import json
    from pathlib import Path

    from expander_sweeps.plugins import Backend, register_backend


    class Recorder:
        name = "recorder"

        def __init__(self, spec):
            self._file = Path(spec.tracking.extra["recorder"]["file"])

        def _write(self, call, **fields):
            with self._file.open("a") as out:
                out.write(json.dumps({"call": call, **fields}, default=str) + "\\n")

        def _calls(self):
            return [json.loads(l) for l in self._file.read_text().splitlines()] if self._file.exists() else []

        def start_sweep(self, sweep, config, state):
            self._write("start_sweep", sweep=sweep, config=sorted(config))

        def start_trial(self, number, params, started=None):
            self._write("start_trial", number=number, params=params)

        def log_metrics(self, metrics, step=None):
            self._write("log_metrics", metrics=metrics, step=step)

        def log_history(self, steps):
            self._write("log_history", steps=steps)

        def log_artifact(self, path, folder=None):
            self._write("log_artifact", path=path, folder=folder)

        def log_model(self, record):
            self._write("log_model", number=record.number, files=sorted(record.files))

        def end_trial(self, status, ended=None):
            self._write("end_trial", status=status)

        def end_sweep(self, report_files):
            self._write("end_sweep", files=[Path(f).name for f in report_files])

        def publish(self, study, rows):
            self._write("publish", trials=sorted(int(r["trial"]) for r in rows))
            return {}

        def logged_trials(self):
            started = [c["number"] for c in self._calls() if c["call"] == "log_model"]
            return set(started)


    register_backend(Backend("recorder", "Recorder", Recorder))
''')


@pytest.mark.slow
def test_a_tracker_from_a_plugin_receives_everything_a_built_in_one_does(tmp_path, mnist_dir):
    from expander_sweeps.plugins import unregister_backend

    (tmp_path / "recorder_plugin.py").write_text(RECORDER)
    calls_file = tmp_path / "calls.jsonl"
    spec = tiny_spec_dict(tmp_path / "run", mnist_dir, plugins=["recorder_plugin"],
                          tracking={"mlflow": {"enabled": False}, "extra": {"recorder": {"file": str(calls_file)}}})
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    try:
        result = subprocess.run([*CLI, "launch", str(tmp_path / "spec.yaml"), "--workers", "1"], capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "warning" not in result.stdout + result.stderr  # the tracker never failed
        calls = [json.loads(line) for line in calls_file.read_text().splitlines()]
        names = [c["call"] for c in calls]
        assert names[0] == "start_sweep" and calls[0]["sweep"] == "tiny"
        trials = [c["number"] for c in calls if c["call"] == "start_trial"]
        assert sorted(trials) == [0, 1, 2, 3, 4]
        finals = [c["metrics"] for c in calls if c["call"] == "log_metrics" and "acc/clean" in c["metrics"]]
        assert len(finals) == 5 and all("W_xh/binary/delta_r" in m for m in finals)
        assert any("finetune/loss" in json.dumps(c["steps"]) for c in calls if c["call"] == "log_history")
        artifacts = {Path(c["path"]).name for c in calls if c["call"] == "log_artifact"}
        assert {"masks.npz", "spectra.json", "model.pt"} <= artifacts
        assert names.count("log_model") == 5 and names.count("end_trial") == 5
        assert {c["status"] for c in calls if c["call"] == "end_trial"} == {"FINISHED"}
        # The report: published (its trial rows) before the sweep's end with the report's files.
        (publish,) = [c for c in calls if c["call"] == "publish"]
        assert publish["trials"] == [0, 1, 2, 3, 4]
        end = [c for c in calls if c["call"] == "end_sweep"][-1]
        assert {"report.md", "crossings.csv"} <= set(end["files"])
        assert names.index("publish") < len(names) - 1 - names[::-1].index("end_sweep")
        # `sync` asks the tracker what it holds: nothing is missing, nothing is pushed twice.
        synced = subprocess.run([*CLI, "sync", str(tmp_path / "spec.yaml")], capture_output=True, text=True,
                                timeout=300)
        assert synced.returncode == 0, synced.stdout + synced.stderr
        assert "recorder: 5 of 5 trials present, pushing 0" in " ".join(synced.stdout.split())
    finally:
        unregister_backend("recorder")
        sys.modules.pop("recorder_plugin", None)


def test_a_tracker_name_no_backend_provides_is_a_clear_error(tmp_path, mnist_dir):
    spec = tiny_spec_dict(tmp_path / "run", mnist_dir, tracking={"extra": {"tensorbord": {}}})
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    result = subprocess.run([*CLI, "validate", str(tmp_path / "spec.yaml")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "tracking.extra names 'tensorbord', which no registered tracker backend provides (known: mlflow, wandb)" \
        in " ".join(result.stderr.split()), result.stderr


def test_a_plugin_quantity_that_raises_is_an_error_naming_it():
    import numpy as np

    from expander_sweeps.graphs.graph_measures import measure_added
    from expander_sweeps.plugins import GraphQuantity, register_quantity

    def broken(biadjacency):
        raise ZeroDivisionError("no edges to divide by")

    register_quantity(GraphQuantity("broken_measure", "broken", "raises", broken))
    try:
        with pytest.raises(RuntimeError, match=r"graph quantity 'broken_measure' failed on a 2 x 3 graph: "
                                               r"ZeroDivisionError: no edges to divide by"):
            measure_added(np.ones((2, 3)), remove_isolated=True)
    finally:
        unregister_quantity("broken_measure")
