"""MLflow (a real `mlflow server` on 127.0.0.1) and W&B (real offline run files), end to end."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from optuna.trial import TrialState

from conftest import tiny_spec_dict

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """`mlflow server` with a SQLite backend and a temporary artifact folder, on 127.0.0.1 only."""

    def __init__(self, folder: Path):
        self.folder, self.port = folder, _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self) -> MlflowServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", f"sqlite:///{self.folder / 'server.db'}",
             "--artifacts-destination", str(self.folder / "artifacts"), "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("mlflow server did not start in 120 s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # the server and its uvicorn/gunicorn workers
            try:
                self.process.wait(timeout=3)
            except subprocess.TimeoutExpired:  # a throwaway test server: no need to wait for a clean exit
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)


class TcpGate:
    """A TCP forwarder in front of a real server: closing it makes the server unreachable (new
    connections refused, open ones cut) as a crashed server or a lost network would, and opening
    it again on the same port brings the server back, without the ten seconds of restarting it."""

    def __init__(self, target_port: int):
        self.target_port, self.port = target_port, _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self._listener, self._open = None, []

    def open(self) -> TcpGate:
        self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()
        return self

    def close(self) -> None:
        listener, self._listener = self._listener, None
        # shutdown() first: close() alone leaves a blocked accept() holding the port open.
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        for connection in self._open:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
                connection.close()
        self._open.clear()

    def _accept(self, listener) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source, sink) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def run_cli(*args, env_extra=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", **(env_extra or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([str(BIN / "expander-sweeps"), *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=env)


def _write(tmp_path, mnist_dir, **sections) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_spec_dict(tmp_path / "run", mnist_dir, **sections)))
    return path


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """One real MLflow server for this module's tests (each uses its own experiment)."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow") / "server").start()
    try:
        yield server
    finally:
        server.stop()


SECRETS = {"wandb key": "do-not-log-this-key-0123456789", "storage password": "S3cretStorage42",
           "mlflow password": "S3cretMlflow42"}


def _secrets_on_command_lines(command: list[str], launch_pid: int, found: set, stop: threading.Event) -> None:
    """Watch every expander-sweeps process's command line (what `ps` shows any user). The
    launch's own command line holds the secrets on purpose (the test typed them), and so does,
    for the microseconds between fork and exec, each child it starts: those are skipped. They
    are recognised by the typed arguments, which end their command line (the kernel puts the
    script's interpreter in front). Not by reading the launch's /proc/<pid>/cmdline once: Popen
    can return before the exec has set it up, and an empty one was read under load."""
    typed = "\0".join(command[1:]).encode() + b"\0"
    while not stop.is_set():
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                argv = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if argv.endswith(typed):
                continue
            if b"expander_sweeps" in argv or b"expander-sweeps" in argv:
                seen = {name for name, s in SECRETS.items() if s.encode() in argv}
                if seen:  # which secrets, in which process (its pid, parent and command line, masked)
                    status = (proc / "status").read_text() if (proc / "status").exists() else ""
                    parent = next((line.split()[1] for line in status.splitlines() if line.startswith("PPid:")), "?")
                    shown = argv.replace(b"\0", b" ").decode(errors="replace")
                    for s in SECRETS.values():
                        shown = shown.replace(s, "***")
                    found.update(f"{name} in pid {proc.name} (parent {parent}, launch {launch_pid}): {shown}"
                                 for name in seen)
        time.sleep(0.1)


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, mnist_dir, mlflow_server):
    """A tiny sweep by two workers (batched engine) against a real MLflow server, with W&B offline too, and
    planted secrets: a W&B key in the environment, a password in the storage URL
    (?password=) and one in the MLflow URI (user:password@), both given by --set."""
    folder = tmp_path_factory.mktemp("tracked")
    # A plug-in's graph quantity (a bound) must reach both trackers and the report as the
    # built-in ones do: the tracker process imports the plug-in too.
    (folder / "tracked_measures.py").write_text(
        "import numpy as np\n"
        "from expander_sweeps.plugins import GraphQuantity, register_quantity\n"
        "register_quantity(GraphQuantity('edges_minus_40', 'edges minus 40', 'kept edges minus 40',\n"
        "                                lambda b: float(np.count_nonzero(b) - 40), bound=True))\n")
    # The batched engine (forced on a CPU): its trials must reach MLflow and W&B exactly as
    # per-trial ones do (other tests here run per trial, the CPU's default).
    spec = _write(folder, mnist_dir, tracking={"mlflow": {"uri": mlflow_server.uri},
                                               "wandb": {"enabled": True, "mode": "offline"}},
                  training={"engine": "batched"}, plugins=["tracked_measures"])
    command = [str(BIN / "expander-sweeps"), "launch", str(spec), "--workers", "2",
               "--set", f"study.storage=sqlite:///{folder / 'run' / 'optuna.db'}?password={SECRETS['storage password']}",
               "--set", f"tracking.mlflow.uri=http://alice:{SECRETS['mlflow password']}@127.0.0.1:{mlflow_server.port}"]
    env = {**os.environ, "COLUMNS": "200", "WANDB_API_KEY": SECRETS["wandb key"]}
    env.pop("MLFLOW_TRACKING_URI", None)
    launch = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    on_command_lines, stop = set(), threading.Event()
    watcher = threading.Thread(target=_secrets_on_command_lines, args=(command, launch.pid, on_command_lines, stop),
                               daemon=True)
    watcher.start()
    out, err = launch.communicate(timeout=600)
    stop.set()
    watcher.join()
    result = subprocess.CompletedProcess(command, launch.returncode, out, err)
    yield mlflow_server, spec, folder / "run", result, on_command_lines
    # Tests here load the spec in this process, which imports the plug-in: leave the registry as it was.
    from expander_sweeps.plugins import unregister_quantity

    unregister_quantity("edges_minus_40")
    sys.modules.pop("tracked_measures", None)


def test_mlflow_parent_and_child_runs_params_metrics_artifacts(tracked):
    from mlflow.tracking import MlflowClient

    server, _, run_dir, result, _ = tracked
    assert result.returncode == 0, result.stdout + result.stderr
    client = MlflowClient(tracking_uri=server.uri)
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("expander_sweeps.role") == "sweep"]
    children = [r for r in runs if "expander_sweeps.sweep.trial" in r.data.tags]
    assert len(parents) == 1 and len(children) == 5
    parent = parents[0]
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "report")} >= {
        "report/report.md", "report/crossings.csv", "report/figure_W_xh.png", "report/figure_W_xh.svg",
        "report/figure_W_xh.pdf", "report/report.html"}
    # The page on the run is the copy whose links all resolve there: no run folder beside it.
    page = Path(client.download_artifacts(parent.info.run_id, "report/report.html", str(run_dir.parent)))
    assert "../trials/" not in page.read_text() and "of its MLflow run" in page.read_text()
    # Every bound that crossed is a metric of the sweep's run (comparable across sweeps in the
    # UI); a bound that never crossed has no number there.
    crossings = json.loads((run_dir / "report" / "crossings.json").read_text())["crossings"]
    crossed = [c for c in crossings if c["status"] == "crossed"]
    logged = {k: v for k, v in parent.data.metrics.items() if k.startswith("crossing_pct/")}
    assert crossed and len(logged) == len(crossed) < len(crossings)
    assert any(c["bound"] == "edges minus 40" for c in crossed)  # a plug-in's bound is reported as the others
    for c in crossed:
        if c["graph"] in ("W_xh", "W_hh"):
            key = f"crossing_pct/magnitude/{c['graph']}/{c['graph']}/{c['weighting']}/{c['bound'].replace(' ', '_')}"
            assert logged[key] == pytest.approx(c["crossing_pct"])
    assert any(k.startswith("crossing_pct/magnitude/W_hh/step/") for k in logged) or not any(
        c["graph"].startswith("step") and c["pruned"].startswith("W_hh") for c in crossed)
    for run in children:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == "FINISHED"
        assert {"remaining_W_xh", "remaining_W_hh", "cell", "hidden", "noise_p"} <= set(run.data.params)
        assert "acc/var_0.3" in run.data.metrics and "W_xh/binary/lambda_2" in run.data.metrics
        for graph in ("W_hh/binary", "W_xh/weighted", "step/binary"):  # the plug-in's quantity, on every graph
            assert run.data.metrics[f"{graph}/edges_minus_40"] == run.data.metrics[f"{graph}/edges"] - 40
        assert [m.step for m in client.get_metric_history(run.info.run_id, "finetune/loss")] == [1]
        # Named for what the trial is, the number first; described in the run's note.
        params = run.data.params
        pruned = [k for k in ("W_xh", "W_hh") if float(params[f"remaining_{k}"]) < 1]
        number = run.data.tags["expander_sweeps.sweep.trial"]
        if pruned:
            kept = float(params[f"remaining_{pruned[0]}"])
            assert run.info.run_name == f"trial {number}: {pruned[0]} {100 * kept:.3g}% magnitude, seed 0"
        else:
            assert run.info.run_name == f"trial {number}: dense, seed 0"
        assert run.info.run_name in run.data.tags["mlflow.note.content"]
        files = {a.path for a in client.list_artifacts(run.info.run_id, "trial")}
        assert {"trial/masks.npz", "trial/mask_W_xh.png", "trial/spectra.json", "trial/model.pt"} <= files
        # A layer left dense has unbounded bounds: NaN (never 1.8e308, MLflow's stand-in for +inf), marked.
        for layer in ("W_xh", "W_hh"):
            dense_layer = float(params[f"remaining_{layer}"]) == 1.0
            value = run.data.metrics[f"{layer}/binary/delta_r"]
            assert math.isnan(value) if dense_layer else math.isfinite(value)
            assert run.data.metrics[f"{layer}/binary/bounds_unbounded"] == float(dense_layer)
    # Every trial's run has the same metric keys (final values; the dense trainer adds its curves).
    key_sets = {frozenset(k for k in r.data.metrics if not k.startswith("dense/")) for r in children}
    assert len(key_sets) == 1, [sorted(a ^ b) for a in key_sets for b in key_sets if a != b][:1]
    dense_trainer = [r for r in children if client.get_metric_history(r.info.run_id, "dense/loss")]
    assert len(dense_trainer) == 1  # the trial that trained the dense model logged its epochs


def test_tracker_runs_have_the_trials_own_start_end_and_step_seconds(tracked):
    """The relay logs the workers' trials after they end (and this sweep ran batched): each MLflow
    run still spans its trial's own start and end, and every run has its steps' seconds; W&B
    has `seconds/trial` (it sets a run's start itself)."""
    from mlflow.tracking import MlflowClient

    server, _, run_dir, result, _ = tracked
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    trials = {t.number: t for t in study.trials}
    client = MlflowClient(tracking_uri=server.uri)
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id],
                              "tags.`expander_sweeps.sweep.trial` != ''")
    assert len(runs) == 5
    for run in runs:
        trial = trials[int(run.data.tags["expander_sweeps.sweep.trial"])]
        began, ended = trial.datetime_start.timestamp(), trial.datetime_complete.timestamp()
        # The relay passes the study's own times: exact to the millisecond (it logs seconds later).
        assert abs(run.info.start_time / 1000 - began) < 0.01, (run.info.start_time, began)
        assert abs(run.info.end_time / 1000 - ended) < 0.01, (run.info.end_time, ended)
        metrics = run.data.metrics
        assert {"seconds/dense", "seconds/prepare", "seconds/finetune", "seconds/finish", "seconds/trial"} <= set(metrics)
        assert metrics["seconds/trial"] == pytest.approx(ended - began, abs=1.5)
        assert trial.user_attrs["phase_seconds"]["finetune"] == metrics["seconds/finetune"] > 0
    token = study.user_attrs["wandb_run_token"]
    for folder in sorted((run_dir / "wandb").glob(f"offline-run-*-tiny-{token}-trial-*")):
        assert _inspect(folder, summary=True)["summary"]["seconds/trial"] > 0


def test_model_registry_versions_tags_aliases_and_reload(tracked, mnist_dir):
    import mlflow
    from mlflow.entities import LoggedModelStatus
    from mlflow.tracking import MlflowClient

    from expander_sweeps.data import load_dataset
    from expander_sweeps.spec import load_spec
    from expander_sweeps.training.train import accuracy

    server, spec_path, run_dir, result, _ = tracked
    client = MlflowClient(tracking_uri=server.uri)
    versions = client.search_model_versions("name = 'tiny-pruned'")
    assert len(versions) == 5
    for version in versions:
        assert {"remaining_W_xh", "remaining_W_hh", "acc/clean", "ramanujan_W_xh", "ramanujan_W_hh",
                "remaining_edges"} <= set(version.tags)
        # A few tags (the registry page lists them all per version); the rest is on the run.
        assert len([t for t in version.tags if not t.startswith("alias.")]) <= 11, sorted(version.tags)
    model = client.get_registered_model("tiny-pruned")
    assert set(model.aliases) == {"dense", "best", "sparsest-ramanujan"}
    assert "model registry aliases: dense" in result.stdout

    chosen = client.get_model_version_by_alias("tiny-pruned", "sparsest-ramanujan")
    assert chosen.tags["ramanujan_W_xh"] == "true" and chosen.tags["ramanujan_W_hh"] == "true"
    # The rule, recomputed from the study: among trials whose every pruned layer has both bounds
    # > 0 and whose clean accuracy is within 1 point of the dense trial, the fewest kept edges
    # (ties: the higher clean accuracy). The rule is tagged on the version.
    assert "within 1 point(s)" in chosen.tags["alias.sparsest-ramanujan"]
    finished = optuna.load_study(study_name="tiny", storage=load_spec(spec_path).storage_url).get_trials(
        states=(TrialState.COMPLETE,))
    dense_accuracy = next(t.user_attrs["acc/clean"] for t in finished
                          if t.user_attrs["remaining_W_xh"] == t.user_attrs["remaining_W_hh"] == 1.0)

    def qualifies(attrs) -> bool:
        pruned = [layer for layer in ("W_xh", "W_hh") if attrs[f"remaining_{layer}"] < 1.0]
        return (attrs["acc/clean"] >= dense_accuracy - 0.01
                and all(attrs[f"{layer}/binary/delta_r"] > 0 and attrs[f"{layer}/binary/delta_s"] > 0
                        for layer in pruned))

    edges = {t.number: t.user_attrs["W_xh/binary/edges"] + t.user_attrs["W_hh/binary/edges"] for t in finished}
    expected = min((t for t in finished if qualifies(t.user_attrs)),
                   key=lambda t: (edges[t.number], -t.user_attrs["acc/clean"]))
    assert int(chosen.tags["expander_sweeps.sweep.trial"]) == expected.number
    assert any(not qualifies(t.user_attrs) or edges[t.number] > edges[expected.number] for t in finished)
    mlflow.set_tracking_uri(server.uri)
    loaded = mlflow.pytorch.load_model("models:/tiny-pruned@sparsest-ramanujan")
    spec = load_spec(spec_path)
    data = load_dataset(spec.data)
    measured = accuracy(loaded, data.x_test, data.y_test, batch_size=512)
    study = optuna.load_study(study_name="tiny", storage=spec.storage_url)
    recorded = next(t for t in study.trials if t.number == int(chosen.tags["expander_sweeps.sweep.trial"]))
    assert measured == recorded.user_attrs["acc/clean"]  # the very same test accuracy
    assert measured == pytest.approx(float(chosen.tags["acc/clean"]), rel=1e-5)

    # MLflow 3: every version is a LoggedModel, the output of its trial's run, with its accuracies.
    experiment = client.get_experiment_by_name("tiny")
    logged = client.search_logged_models([experiment.experiment_id])
    assert len(logged) == 5 and {m.status for m in logged} == {LoggedModelStatus.READY}
    assert sorted(m.name for m in logged) == sorted(f"trial-{m.tags['expander_sweeps.sweep.trial']}" for m in logged)
    # (MLflow's open-source registry keeps no model_id column: a version points at its
    # LoggedModel through its source URI)
    assert {v.source for v in versions} == {f"models:/{m.model_id}" for m in logged}
    chosen_model_id = chosen.source.removeprefix("models:/")
    model = next(m for m in logged if m.model_id == chosen_model_id)
    assert model.tags["expander_sweeps.sweep.trial"] == chosen.tags["expander_sweeps.sweep.trial"]
    assert {m.key: m.value for m in model.metrics}["acc/clean"] == recorded.user_attrs["acc/clean"]
    run = client.get_run(chosen.run_id)
    assert [o.model_id for o in run.outputs.model_outputs] == [chosen_model_id]
    # The training data is the run's dataset input, digested by the data's fingerprint.
    (data_input,) = run.inputs.dataset_inputs
    assert data_input.dataset.name == "mnist"
    assert data_input.dataset.digest == run.data.params["data_fingerprint"]
    assert json.loads(data_input.dataset.source)["uri"] == Path(mnist_dir).resolve().as_uri()

    # Self-contained: the requirements are PyPI packages pinned to what made the model (never
    # expander-sweeps, which no index has), and the model loads and predicts in a Python that
    # cannot import the installed expander_sweeps: the code travels in the model.
    folder = Path(mlflow.artifacts.download_artifacts(chosen.source, dst_path=str(run_dir / "restore")))
    requirements = [line for line in (folder / "requirements.txt").read_text().split() if line]
    assert not [r for r in requirements if "expander" in r]
    for requirement in requirements:
        name, _, pinned = requirement.partition("==")
        assert pinned == importlib.metadata.version(name).split("+")[0], requirement
    assert {"torch", "cloudpickle", "pydantic"} <= {r.partition("==")[0] for r in requirements}
    assert (folder / "code" / "expander_sweeps" / "models.py").is_file()
    example = mlflow.models.Model.load(str(folder)).load_input_example(str(folder))
    expected_prediction = mlflow.pyfunc.load_model(str(folder)).predict(example)
    assert expected_prediction.shape == (len(example), 10)
    np.save(run_dir / "restore" / "expected.npy", expected_prediction)
    out = subprocess.run([sys.executable, "-c", RESTORE_WITHOUT_PACKAGE, str(folder), str(REPO / "src"),
                          str(run_dir / "restore" / "expected.npy")],
                         cwd=run_dir, capture_output=True, text=True, timeout=300,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert out.returncode == 0 and "restored" in out.stdout, out.stdout + out.stderr


# Runs in a fresh interpreter: hide the installed (editable) expander_sweeps, prove it is gone,
# then load the logged model, which must bring its own copy, and compare its predictions.
RESTORE_WITHOUT_PACKAGE = """
import importlib.util, sys
import numpy as np
model_dir, source, expected = sys.argv[1:4]
sys.path[:] = [p for p in sys.path if p.rstrip('/') != source.rstrip('/')]
sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]
assert importlib.util.find_spec('expander_sweeps') is None, 'the installed package is still importable'
import mlflow.models, mlflow.pyfunc
model = mlflow.pyfunc.load_model(model_dir)
example = mlflow.models.Model.load(model_dir).load_input_example(model_dir)
prediction = model.predict(example)
assert np.array_equal(prediction, np.load(expected)), 'different predictions'
module = sys.modules['expander_sweeps'].__file__
assert module.startswith(model_dir), module
print('restored from', module)
"""


def _inspect(run_dir: Path, summary: bool) -> dict | list:
    args = [str(BIN / "wandb"), "leet", "inspect", "--json", str(run_dir)]
    if summary:
        args.insert(3, "--summary")
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True).stdout
    return json.loads(out) if summary else [json.loads(line) for line in out.splitlines() if line.strip()]


def test_wandb_offline_runs_have_flat_config_summary_history_and_artifacts(tracked):
    _, _, run_dir, result, _ = tracked
    assert "wandb sync" in result.stdout
    token = optuna.load_study(study_name="tiny", storage=f"sqlite:///{run_dir / 'optuna.db'}").user_attrs[
        "wandb_run_token"]
    runs = sorted((run_dir / "wandb").glob(f"offline-run-*-tiny-{token}-trial-*"))  # ids unique to this sweep
    assert len(runs) == 5
    for folder in runs:
        state = _inspect(folder, summary=True)
        assert state["state"] == "finished"
        assert {"remaining_W_xh", "remaining_W_hh", "cell", "trial"} <= set(state["config"])
        pruned = state["config"]["pruned_layers"]
        assert set(state["tags"]) == {"sweep:tiny", f"pruned:{pruned}", "mask:magnitude", "seed:0"}
        assert state["notes"].startswith(f"Sweep tiny, trial {state['config']['trial']}: ")
        assert all(not isinstance(v, dict) for v in state["config"].values())  # flat, for parallel coordinates
        assert {"acc/clean", "acc/var_0.3", "W_xh/binary/lambda_2", "step/binary/d_avg"} <= set(state["summary"])
        assert state["summary"]["W_hh/binary/edges_minus_40"] == state["summary"]["W_hh/binary/edges"] - 40
        # Every key in every run; a dense layer's unbounded bound is NaN there (W&B's JSON
        # spells it "NaN"), and marked.
        dense_layer = state["config"]["remaining_W_xh"] == 1
        value = state["summary"]["W_xh/binary/delta_r"]
        assert value == "NaN" if dense_layer else isinstance(value, float) and math.isfinite(value)
        assert state["summary"]["W_xh/binary/bounds_unbounded"] == float(dense_layer)
        records = _inspect(folder, summary=False)
        history = [r["history"] for r in records if r["type"] == "history"]
        assert any("finetune/loss" in json.dumps(h) for h in history)
        artifacts = [r["artifact"] for r in records if r["type"] == "artifact"]
        assert {a["type"] for a in artifacts} == {"model", "masks"}
        # Staged inside the run folder (not ~/.local/share/wandb), so the folder syncs from anywhere.
        staged = [Path(c["local_path"]) for a in artifacts for c in a["manifest"]["contents"]]
        assert staged and all(p.is_relative_to(run_dir.resolve() / "wandb" / "staging") and p.is_file()
                              for p in staged)
        # Lineage on the model artifact: the data's fingerprint and source, the dense checkpoint.
        (model_artifact,) = [a for a in artifacts if a["type"] == "model"]
        lineage = json.loads(model_artifact["metadata"])
        assert lineage["data_fingerprint"] == state["config"]["data_fingerprint"]
        assert json.loads(lineage["data_source"])["uri"].startswith("file://")
        assert (run_dir / "cache" / lineage["dense_checkpoint"]).is_file()
    # Besides the trial runs, exactly one summary run, holding the crossing table.
    others = [f for f in (run_dir / "wandb").glob("offline-run-*") if f not in runs]
    assert len(others) == 1 and others[0].name.endswith(f"-tiny-{token}-summary")
    # Registry-style aliases mirroring MLflow's: versions of one `tiny-pruned` model artifact,
    # each alias on the checkpoint of the trial MLflow's alias points at, its rule in metadata.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracked[0].uri)
    published = [r["artifact"] for r in _inspect(others[0], summary=False) if r["type"] == "artifact"
                 and r["artifact"]["name"] == "tiny-pruned"]
    by_alias = {alias: a for a in published for alias in a["aliases"] if alias != "latest"}
    assert set(by_alias) == set(client.get_registered_model("tiny-pruned").aliases) == {
        "dense", "best", "sparsest-ramanujan"}
    for alias, artifact in by_alias.items():
        metadata = json.loads(artifact["metadata"])
        version = client.get_model_version_by_alias("tiny-pruned", alias)
        assert metadata["trial"] == int(version.tags["expander_sweeps.sweep.trial"])
        assert metadata[f"alias.{alias}"] == version.tags[f"alias.{alias}"]
        (content,) = artifact["manifest"]["contents"]
        checkpoint = run_dir / "trials" / f"{metadata['trial']:05d}" / "model.pt"
        assert Path(content["local_path"]).read_bytes() == checkpoint.read_bytes()
    assert "crossings" in _inspect(others[0], summary=True)["summary"]


def test_two_local_workers_run_the_grid_once_and_report(tracked):
    import re

    _, _, run_dir, result, _ = tracked
    assert result.returncode == 0, result.stdout + result.stderr
    assert "started 2 workers on the CPU" in result.stdout
    assert "[w0]" in result.stdout and "[w1]" in result.stdout
    assert len(set(re.findall(r"worker (\d+) on cpu", result.stdout))) == 2  # two processes joined the study
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    done = study.get_trials(states=(TrialState.COMPLETE,))
    points = sorted((t.params.get("layer", "dense"), t.params["remaining"]) for t in done)
    assert len(done) == len(study.trials) == 5 and len(set(points)) == 5  # each grid point once
    assert {t.user_attrs["worker"] for t in done} and (run_dir / "report" / "crossings.csv").exists()


def test_no_secret_reaches_files_names_params_tags_output_or_command_lines(tracked):
    from mlflow.tracking import MlflowClient

    server, _, run_dir, result, on_command_lines = tracked
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ran 5 trial(s)" in result.stdout and "with 2 worker(s)" in result.stdout and "password=***" in result.stdout
    assert not [n for n, s in SECRETS.items() if s in result.stdout + result.stderr]
    assert not on_command_lines, f"secrets on a worker's command line: {on_command_lines}"
    for folder in (run_dir, server.folder):
        for path in folder.rglob("*"):
            for name, secret in SECRETS.items():
                assert secret not in str(path), f"{name} in a file name: {path}"
                if path.is_file():
                    assert secret.encode() not in path.read_bytes(), f"{name} in {path}"
    client = MlflowClient(tracking_uri=server.uri)
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert len(runs) == 6  # the sweep's parent and 5 trials
    for run in runs:
        values = " ".join([*run.data.params.values(), *run.data.tags.values()])
        assert not [n for n, s in SECRETS.items() if s in values], run.info.run_id


def test_server_down_mid_sweep_loses_nothing_and_sync_is_idempotent(tmp_path, mnist_dir, mlflow_server):
    from mlflow.tracking import MlflowClient

    gate = TcpGate(mlflow_server.port).open()  # the sweep reaches the server through it
    spec = _write(tmp_path, mnist_dir, name="down", masks={"remaining": [1.0, 0.2]},
                  training={"epochs": 1, "finetune_epochs": 2, "batch_size": 32},
                  tracking={"mlflow": {"uri": gate.uri}})
    storage = f"sqlite:///{tmp_path / 'run' / 'optuna.db'}"
    launch = subprocess.Popen([str(BIN / "expander-sweeps"), "launch", str(spec)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "200"})

    def finished() -> int:
        try:
            return len(optuna.load_study(study_name="down", storage=storage).get_trials(states=(TrialState.COMPLETE,)))
        except (KeyError, Exception):
            return 0

    deadline = time.monotonic() + 180
    while finished() < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    gate.close()  # the tracking server is gone in the middle of the sweep
    output = launch.communicate(timeout=600)[0]
    assert launch.returncode == 0, output
    assert "tracker 'mlflow' failed" in output and output.count("tracker 'mlflow' failed") == 1
    assert finished() == 3  # every trial is in the study

    gate.open()  # the server is back
    first = run_cli("sync", spec)
    assert first.returncode == 0, first.stdout + first.stderr
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    experiment = client.get_experiment_by_name("down")

    def trial_runs():
        runs = client.search_runs([experiment.experiment_id], "tags.`expander_sweeps.sweep.trial` != ''")
        return sorted(int(r.data.tags["expander_sweeps.sweep.trial"]) for r in runs if r.info.status == "FINISHED")

    assert trial_runs() == list(range(3))
    assert len(client.search_model_versions("name = 'down-pruned'")) == 3
    second = run_cli("sync", spec)
    assert second.returncode == 0 and "pushing 0" in second.stdout
    assert trial_runs() == list(range(3))
    assert len(client.search_model_versions("name = 'down-pruned'")) == 3
    gate.close()


def test_wandb_sweep_export_and_agent_trial(tmp_path, mnist_dir):
    spec = _write(tmp_path, mnist_dir, tracking={"mlflow": {"enabled": False}, "wandb": {"mode": "offline"}})
    from click.testing import CliRunner

    from expander_sweeps.cli import main

    exported = CliRunner().invoke(main, ["export", "wandb", str(spec), "-o", str(tmp_path / "sweep.yaml")])
    assert exported.exit_code == 0, exported.output
    config = yaml.safe_load((tmp_path / "sweep.yaml").read_text())
    assert config["method"] == "grid" and config["metric"] == {"name": "acc/clean", "goal": "maximize"}
    assert config["parameters"]["point"]["values"] == [
        "remaining=1.0", "layer=W_xh,remaining=0.3", "layer=W_xh,remaining=0.05",
        "layer=W_hh,remaining=0.3", "layer=W_hh,remaining=0.05"]  # the 5 distinct points, dense once
    assert config["command"][2:4] == ["agent-trial", str(spec)]
    # What `wandb agent` runs for one point of the grid:
    first = run_cli("agent-trial", spec, "--point=layer=W_hh,remaining=0.3")
    assert first.returncode == 0, first.stdout + first.stderr
    again = CliRunner().invoke(main, ["agent-trial", str(spec), "--layer=W_hh", "--remaining=0.3"])
    assert again.exit_code == 0 and "ran 0" in again.output, again.output  # the study already has it
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'run' / 'optuna.db'}")
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert [(t.params["layer"], t.params["remaining"]) for t in done] == [("W_hh", 0.3)]
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*-tiny-*-trial-0"))



def test_expansion_from_your_own_loop_reaches_mlflow_and_wandb(tmp_path, mlflow_server):
    """examples/expansion_in_your_loop.py (the README's script) as a user runs it, against the
    real MLflow server and a W&B offline run; both read back."""
    from mlflow.tracking import MlflowClient

    script = REPO / "examples" / "expansion_in_your_loop.py"
    readme = (REPO / "README.md").read_text()
    assert script.read_text().strip() in readme  # the README shows exactly the script tested here
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server.uri, "MLFLOW_EXPERIMENT_NAME": "own-loop",
           "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "weight_hh_l0.r" in out.stdout and "delta_r" in out.stdout

    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name("own-loop")
    (run,) = client.search_runs([experiment.experiment_id])
    key = "expansion/rnn.weight_hh_l0.{}/binary/edges"
    # l1_unstructured(amount=0.8) on the 192 x 64 W_hh keeps 12288 - round(0.8 * 12288) = 2458 edges,
    # split over the three gate blocks.
    for step in range(3):
        edges = [next(m.value for m in client.get_metric_history(run.info.run_id, key.format(g)) if m.step == step)
                 for g in "rzn"]
        assert sum(edges) == 2458
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0, 1, 2]
    # The dense second layer's binary graph is unbounded: NaN in MLflow (not 1.8e308), marked as unbounded.
    assert math.isnan(run.data.metrics["expansion/rnn.weight_ih_l1.r/binary/delta_r"])
    assert run.data.metrics["expansion/rnn.weight_ih_l1.r/binary/bounds_defined"] == 1.0
    assert run.data.metrics["expansion/rnn.weight_ih_l1.r/binary/bounds_unbounded"] == 1.0
    tables = sorted(a.path for a in client.list_artifacts(run.info.run_id, "expansion"))
    assert tables == [f"expansion/step_00000{s}.json" for s in range(3)]
    local = client.download_artifacts(run.info.run_id, "expansion/step_000002.json", str(tmp_path))
    logged = json.loads(Path(local).read_text())
    rows = [dict(zip(logged["columns"], values, strict=True)) for values in logged["data"]]
    row = next(r for r in rows if r["matrix"] == "rnn.weight_hh_l0.z" and r["weighting"] == "weighted")
    metric = run.data.metrics["expansion/rnn.weight_hh_l0.z/weighted/lambda_2"]  # the last step's value
    assert row["lambda_2"] == pytest.approx(metric, rel=1e-9)  # log_table writes 10 decimals

    (folder,) = (tmp_path / "wandb").glob("offline-run-*")
    state = _inspect(folder, summary=True)
    assert state["summary"]["expansion/rnn.weight_hh_l0.z/weighted/lambda_2"] == pytest.approx(metric, rel=1e-9)
    assert state["summary"]["expansion/table"]["_type"] == "table-file"
    assert state["summary"]["expansion/rnn.weight_ih_l1.r/binary/delta_r"] == "NaN"  # kept, as in MLflow
    assert state["summary"]["expansion/rnn.weight_ih_l1.r/binary/bounds_unbounded"] == 1
    steps = [r["history"] for r in _inspect(folder, summary=False) if r["type"] == "history"]
    assert len(steps) == 3 and all("expansion/head.weight/binary/edges" in json.dumps(h) for h in steps)
