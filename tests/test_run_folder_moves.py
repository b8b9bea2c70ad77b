"""A run folder copied elsewhere (a cluster's to a laptop) works from the copy: the embedded MLflow
store's absolute paths follow it, the sweep keeps its one parent run, nothing is written into the
original, and a registered model loads by alias from the copy alone."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from conftest import CLI, tiny_spec_dict

pytestmark = pytest.mark.slow


def _files(folder) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime for p in folder.rglob("*") if p.is_file()}


def test_a_copied_run_folder_syncs_into_itself_and_its_models_load_from_the_copy(tmp_path, mnist_dir):
    import mlflow
    from mlflow.tracking import MlflowClient

    original, copy = tmp_path / "cluster" / "run", tmp_path / "laptop" / "run"
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_dict(original, mnist_dir, masks={"remaining": [1.0, 0.3]},
                                                  training={"epochs": 1, "finetune_epochs": 1})))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run([*CLI, "launch", str(spec)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    copy.parent.mkdir(parents=True)
    shutil.copytree(original, copy)
    before = _files(original)

    synced = subprocess.run([*CLI, "sync", str(spec), "--set", f"run_dir={copy}"], capture_output=True, text=True,
                            env=env, timeout=600)
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert _files(original) == before  # nothing written into the folder it was copied from
    shutil.rmtree(original)  # from here on, only the copy exists

    uri = f"sqlite:///{copy / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tiny")
    assert experiment.artifact_location == (copy / "mlartifacts").as_uri()
    runs = client.search_runs([experiment.experiment_id])
    assert len([r for r in runs if r.data.tags.get("expander_sweeps.role") == "sweep"]) == 1  # one parent run
    assert all(r.info.artifact_uri.startswith(copy.as_uri() + "/") for r in runs)
    mlflow.set_tracking_uri(uri)
    model = mlflow.pytorch.load_model("models:/tiny-pruned@best")
    assert sum(p.numel() for p in model.parameters()) > 0
    version = client.get_model_version_by_alias("tiny-pruned", "best")
    assert str(tmp_path / "cluster") not in str(version.source)
