"""A logged model made in two halves (tracking/mlflow_model.py): the payload where the model and
torch are, the MLflow directory where they are not. Checked against what MLflow's own
`mlflow.pytorch.save_model` writes, through MLflow's loaders, and in real processes: a script
without a main guard, and a tracker that logs every model of a sweep without importing torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO, tiny_spec_dict
from expander_sweeps.models import build_model
from expander_sweeps.results import load_checkpoint, save_checkpoint
from expander_sweeps.spec import load_spec
from expander_sweeps.tracking.mlflow_backend import model_requirements
from expander_sweeps.tracking.mlflow_model import PayloadUnusable, assemble, write_payload
from expander_sweeps.tracking.model_code import code_sources, model_code_paths


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_assembled_model_is_what_mlflow_pytorch_save_model_writes(tmp_path):
    import mlflow.pytorch
    import torch
    from mlflow.models import Model, infer_signature

    spec = load_spec(REPO / "sweeps" / "quickstart.yaml")
    model = build_model(spec.model, 28, 10, seed=3).eval()
    save_checkpoint(tmp_path / "model.pt", model, spec.model.model_dump(), 28, 10, {"W_hh": 0.1})
    example = np.random.default_rng(0).standard_normal((1, 28, 28)).astype(np.float32)
    np.save(tmp_path / "example.npy", example)
    write_payload(tmp_path / "model.pt", example, tmp_path / "payload")

    ids = {"artifact_path": "file:///somewhere/artifacts", "model_uuid": "m-1", "run_id": "r-1", "model_id": "m-1"}
    ours, theirs = Model(**ids), Model(**ids)
    assemble(tmp_path / "payload", tmp_path / "example.npy", tmp_path / "ours", ours, list(model_requirements()))
    # MLflow is handed the model as the slow path hands it: rebuilt from the checkpoint.
    model, _ = load_checkpoint(tmp_path / "model.pt")
    with torch.no_grad():
        signature = infer_signature(example, model(torch.from_numpy(example)).numpy())
    mlflow.pytorch.save_model(model, str(tmp_path / "theirs"), input_example=example, signature=signature,
                              serialization_format="pickle", pip_requirements=list(model_requirements()),
                              code_paths=model_code_paths(code_sources(model), tmp_path / "code"), mlflow_model=theirs)

    mine, reference = _files(tmp_path / "ours"), _files(tmp_path / "theirs")
    assert sorted(mine) == sorted(reference)
    for name in reference:
        if name == "MLmodel":
            continue  # its creation time differs; compared field by field below
        assert mine[name] == reference[name], name  # the pickled model too: the very same bytes
    ours_yaml, theirs_yaml = (yaml.safe_load(f["MLmodel"]) for f in (mine, reference))
    ours_yaml.pop("utc_time_created"), theirs_yaml.pop("utc_time_created")
    assert ours_yaml == theirs_yaml
    loaded = mlflow.pytorch.load_model(str(tmp_path / "ours"))
    with torch.no_grad():
        assert torch.equal(loaded(torch.from_numpy(example)), model(torch.from_numpy(example)))


def test_a_missing_or_foreign_payload_is_refused_so_the_caller_saves_the_slow_way(tmp_path):
    from mlflow.models import Model

    np.save(tmp_path / "example.npy", np.zeros((1, 2, 2), dtype=np.float32))
    with pytest.raises(PayloadUnusable):
        assemble(tmp_path / "nothing", tmp_path / "example.npy", tmp_path / "out", Model(), [])
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "payload.json").write_text(json.dumps({"format": 999}))
    with pytest.raises(PayloadUnusable):
        assemble(tmp_path / "old", tmp_path / "example.npy", tmp_path / "out", Model(), [])
    assert not (tmp_path / "out").exists()


# A user's script as people write them: torch imported at the top, no main guard. It counts how
# often it runs in a file: a spawned tracker child that re-ran it would run the sweep again (or,
# as multiprocessing does, stop with a bootstrapping error).
UNGUARDED_SCRIPT = """
import sys
from pathlib import Path
import torch
from expander_sweeps.spec import load_spec
from expander_sweeps.sweep.loop import launch_study
with open(sys.argv[2], "a") as runs:
    runs.write("ran\\n")
result = launch_study(load_spec(sys.argv[1]))
print("trials", len(result.study.trials))
"""

# What the tracker process does with a finished sweep's trials, in a fresh interpreter:
# `sync` logs every trial MLflow lacks (runs, metrics, models, registry versions).
SYNC_WITHOUT_TORCH = """
import sys
from expander_sweeps.spec import load_spec
from expander_sweeps.sweep.study import open_study
from expander_sweeps.sweep.syncing import sync_trackers
spec = load_spec(sys.argv[1], [f"tracking.mlflow.uri={sys.argv[2]}"])
pushed = sync_trackers(spec, open_study(spec, create=False), print, print)
print("pushed", pushed, "torch imported:", "torch" in sys.modules)
"""


def test_a_sweep_s_models_are_logged_without_torch_and_load(tmp_path, mnist_dir):
    import mlflow
    from mlflow.tracking import MlflowClient

    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(tiny_spec_dict(tmp_path / "run", mnist_dir,
                                                       masks={"remaining": [1.0, 0.3], "layers": ["W_hh"]})))
    script, runs = tmp_path / "script.py", tmp_path / "runs.txt"
    script.write_text(UNGUARDED_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = subprocess.run([sys.executable, str(script), str(spec_path), str(runs)], capture_output=True, text=True,
                         timeout=600, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert runs.read_text() == "ran\n"  # the tracker process did not run the script again
    trials = sorted((tmp_path / "run" / "trials").iterdir())
    assert len(trials) == 2 and all((t / "mlflow_model" / "payload.json").is_file() for t in trials)

    # What each trial's model computed on its example input, where it was trained.
    outputs = {int(t.name): np.load(t / "mlflow_model" / "output_example.npy") for t in trials}

    # Into a new store, by a fresh process that must never import torch; one trial has lost its
    # payload (as a trial run with MLflow off would lack it): that one is saved the slow way.
    shutil.rmtree(trials[1] / "mlflow_model")
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    out = subprocess.run([sys.executable, "-c", SYNC_WITHOUT_TORCH, str(spec_path), fresh], capture_output=True,
                         text=True, timeout=600, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "pushed {'mlflow': 2} torch imported: True" in out.stdout  # the payload-less trial needed it
    shutil.rmtree(trials[1])  # its checkpoint gone too: only the trial with a payload has a model to log
    fresher = f"sqlite:///{tmp_path / 'fresher.db'}"
    out = subprocess.run([sys.executable, "-c", SYNC_WITHOUT_TORCH, str(spec_path), fresher], capture_output=True,
                         text=True, timeout=600, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "torch imported: False" in out.stdout, out.stdout

    for uri, count in ((fresh, 2), (fresher, 1)):
        versions = MlflowClient(tracking_uri=uri).search_model_versions("name = 'tiny-pruned'")
        assert len(versions) == count
        for version in versions:
            folder = Path(mlflow.artifacts.download_artifacts(
                artifact_uri=version.source, dst_path=str(tmp_path / "downloads" / uri[-8:] / str(version.version))))
            example = mlflow.models.Model.load(str(folder)).load_input_example(str(folder))
            # Either way (payload or checkpoint), MLflow's model computes what the trial's did.
            prediction = mlflow.pyfunc.load_model(str(folder)).predict(example)
            assert np.array_equal(prediction, outputs[int(version.tags["expander_sweeps.sweep.trial"])])
