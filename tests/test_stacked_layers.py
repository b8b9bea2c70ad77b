"""Every layer of a stacked network is named, swept and measured (masks.layers beyond layer 0)."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import optuna
import pytest
import yaml

from conftest import CLI, tiny_spec_dict
from expander_sweeps.graphs.spectral import layer_spectrum, step_biadjacency
from expander_sweeps.results import load_checkpoint
from expander_sweeps.spec import SpecError, matrix_depth, spec_from_dict


def test_deeper_matrices_are_named_and_checked_against_the_model():
    assert [matrix_depth(n) for n in ("W_xh", "W_hh", "W_xh_l1", "W_hh_l3")] == [0, 0, 1, 3]
    spec = spec_from_dict({"name": "x", "model": {"layers": 2}, "masks": {"layers": ["W_hh", "W_hh_l1"]}})
    assert spec.masks.layers == ["W_hh", "W_hh_l1"]
    with pytest.raises(SpecError, match=r"masks.layers names \['W_hh_l1'\], but model.layers is 1"):
        spec_from_dict({"name": "x", "masks": {"layers": ["W_hh", "W_hh_l1"]}})
    with pytest.raises(SpecError, match="masks.layers.0.*a recurrent matrix is W_xh or W_hh"):
        spec_from_dict({"name": "x", "model": {"layers": 2}, "masks": {"layers": ["W_hy"]}})
    with pytest.raises(SpecError, match="synflow scores the first recurrent layer"):
        spec_from_dict({"name": "x", "model": {"layers": 2},
                        "masks": {"method": "synflow", "layers": ["W_hh_l1"]}})


def test_a_two_layer_lstm_sweeps_its_second_layer_with_its_own_graphs(tmp_path, mnist_dir):
    spec = tiny_spec_dict(tmp_path / "run", mnist_dir, model={"cell": "lstm", "hidden": 12, "layers": 2},
                          masks={"layers": ["W_hh", "W_hh_l1"], "remaining": [1.0, 0.3]},
                          tracking={"mlflow": {"enabled": False}})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = subprocess.run([*CLI, "launch", str(path), "--workers", "1"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'run' / 'optuna.db'}")
    deep = [t for t in study.trials if t.user_attrs.get("remaining_W_hh_l1") == 0.3]
    assert len(deep) == 1 and deep[0].user_attrs["remaining_W_hh"] == 1.0
    trial = deep[0].user_attrs
    folder = tmp_path / "run" / trial["files"]["checkpoint"].rsplit("/", 1)[0]
    masks = np.load(folder / "masks.npz")
    model, _ = load_checkpoint(folder / "model.pt")
    weight = model.matrices()["W_hh_l1"].detach().numpy()
    # The second layer's W_hh is what was masked: the checkpoint's weights are zero off the mask.
    assert masks["W_hh_l1"].shape == weight.shape == (48, 12) and not weight[masks["W_hh_l1"] == 0].any()
    assert masks["W_hh_l1"].mean() == pytest.approx(trial["W_hh_l1/kept_fraction"]) == pytest.approx(0.3, abs=1 / 576)
    assert masks["W_hh"].all()  # layer 0 dense in this trial
    # Its graphs, recomputed from the stored mask and weights: the layer, a gate block, the step graph.
    spectra = json.loads((folder / "spectra.json").read_text())
    ours = layer_spectrum(masks["W_hh_l1"], True)
    assert spectra["W_hh_l1/binary"]["lambda_2"] == pytest.approx(ours.lambda_2, rel=1e-9)
    assert spectra["W_hh_l1.f/binary"]["edges"] == int(masks["W_hh_l1"][12:24].sum())
    xh = model.matrices()["W_xh_l1"].detach().numpy()
    step = layer_spectrum(step_biadjacency(np.ones_like(xh, dtype=np.uint8), masks["W_hh_l1"]), True)
    assert spectra["step_l1/binary"]["lambda_1"] == pytest.approx(step.lambda_1, rel=1e-9)
    assert trial["step_l1/binary/delta_r"] == pytest.approx(step.delta_r, rel=1e-9)
    report = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "| W_hh_l1 (W_hh dense) | magnitude | step [W_xh_l1 \\| W_hh_l1] -> h^1_t | binary |" in report
    assert (tmp_path / "run" / "report" / "figure_W_hh_l1.png").exists()
