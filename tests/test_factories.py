"""Your own model and data by import path: the example package through `launch`, and every
broken contract as one line naming the spec field, before anything is trained or created."""

from __future__ import annotations

import json
import shutil
import textwrap
import uuid
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from click.testing import CliRunner
from optuna.trial import TrialState

from expander_sweeps.cli import main
from expander_sweeps.sweep.study import read_result

REPO = Path(__file__).resolve().parents[1]


def invoke(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args], env={"COLUMNS": "300", "MLFLOW_TRACKING_URI": None})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


@pytest.mark.slow
def test_example_gru_factory_and_generated_data_run_through_launch(tmp_path):
    """examples/byo_gru.yaml (a stacked GRU, data generated in code) end to end, in a copy of the
    examples folder: the modules are imported from the spec's folder."""
    folder = tmp_path / "examples"
    shutil.copytree(REPO / "examples" / "byo_gru", folder / "byo_gru")
    spec = folder / "byo_gru.yaml"
    shutil.copy(REPO / "examples" / "byo_gru.yaml", spec)
    run = tmp_path / "run"
    code, out = invoke("launch", spec, "--set", f"run_dir={run}", "--set", "training.epochs=3",
                       "--set", "masks.remaining=[1.0, 0.3, 0.1]", "--set", "tracking.mlflow.enabled=false",
                       "--workers", "1")
    assert code == 0, out
    assert "custom data from byo_gru.data:load (k=20, 6 features, 4 classes)" in out
    assert "900 train / 300 test" in out and "init by byo_gru.models:build_gru" in out
    study = optuna.load_study(study_name="byo_gru", storage=f"sqlite:///{run / 'optuna.db'}")
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 5  # dense + 2 layers x 2 fractions
    pruned = next(t for t in done if t.params.get("layer") == "W_hh" and t.params.get("remaining") == 0.1)
    results = read_result(pruned, run)
    assert not Path(pruned.user_attrs["files"]["checkpoint"]).is_absolute()  # relative to the run folder
    # The GRU's gate blocks are graphs of their own; the mask kept 10% of the first layer's W_hh.
    assert {"W_hh.r/binary/lambda_2", "W_hh.z/binary/lambda_2", "W_hh.n/binary/lambda_2"} <= set(results.metrics)
    assert results.metrics["W_hh/kept_fraction"] == pytest.approx(0.1, abs=0.002)
    assert results.params["init"] == "by byo_gru.models:build_gru"
    # The checkpoint rebuilds through the factory, with the pruned zeros in place.
    from expander_sweeps.results import load_checkpoint

    checkpoint = Path(results.files["checkpoint"])
    assert checkpoint.is_file()
    model, _ = load_checkpoint(checkpoint)
    kept = (model.net.gru.weight_hh_l0 != 0).float().mean().item()
    assert kept == pytest.approx(0.1, abs=0.002) and model.net.gru.weight_hh_l1.count_nonzero() == 96 * 32
    assert model(torch.zeros(3, 20, 6)).shape == (3, 4)
    assert (run / "report" / "report.md").read_text().count("by byo_gru.models:build_gru") >= 1


def _package(tmp_path: Path, body: str) -> str:
    """A module of factories in the spec's folder, under a fresh name (imports are cached)."""
    name = f"cases_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        import numpy as np
        import torch
        from torch import nn

        def data(n=200, steps=5, features=3):
            rng = np.random.default_rng(0)
            return rng.standard_normal((n, steps, features)).astype(np.float32), rng.integers(0, 3, n)

        class Net(nn.Module):
            def __init__(self, input_size, num_classes, cell=nn.RNN, hidden=8, batch_first=True, out=None):
                super().__init__()
                self.rnn = cell(input_size, hidden, batch_first=batch_first)
                self.fc = nn.Linear(hidden, out or num_classes)
            def forward(self, x):
                return self.fc(self.rnn(x)[0][:, -1])

        def model(input_size, num_classes, **args):
            return Net(input_size, num_classes, **args)
    """) + textwrap.dedent(body))
    return name


CASES = {
    # name: (extra module code, spec changes, the field named, words of the message)
    "module missing": ("", {"model": {"factory": "no_such_module_xyz:model"}}, "model.factory", "cannot import"),
    "function missing": ("", {"model": {"factory": "{pkg}:nothing"}}, "model.factory", "has no 'nothing'"),
    "not a module": ("def bad(i, c):\n    return 'a model'\n", {"model": {"factory": "{pkg}:bad"}},
                     "model.factory", "returned a str, but a torch.nn.Module"),
    "no recurrent layer": ("def mlp(i, c):\n    return nn.Linear(i, c)\n", {"model": {"factory": "{pkg}:mlp"}},
                           "model.factory", "no nn.RNN, nn.LSTM or nn.GRU"),
    "cell differs": ("def gru(i, c):\n    return Net(i, c, cell=nn.GRU)\n", {"model": {"factory": "{pkg}:gru"}},
                     "model.factory", "model.cell is 'rnn' but the factory's layer has 'gru'"),
    "hidden differs": ("", {"model": {"factory": "{pkg}:model", "hidden": 16}}, "model.factory",
                       "model.hidden is 16 but the factory's layer has 8"),
    "not batch first": ("", {"model": {"factory": "{pkg}:model", "args": {"batch_first": False}}},
                        "model.factory", "batch_first=False"),
    "wrong output": ("", {"model": {"factory": "{pkg}:model", "args": {"out": 7}}}, "model.factory",
                     "returned (2, 7), but logits of shape (N, 3)"),
    "factory raises": ("", {"model": {"factory": "{pkg}:model", "args": {"colour": "red"}}}, "model.factory",
                       "raised TypeError"),
    "x 2-D": ("def flat():\n    x, y = data()\n    return x[:, 0], y\n", {"data": {"loader": "{pkg}:flat"}},
              "data.loader", "x must have shape (N, k, features), but has shape (200, 3)"),
    "float labels": ("def floats():\n    x, y = data()\n    return x, y * 0.5\n", {"data": {"loader": "{pkg}:floats"}},
                     "data.loader", "integer class labels"),
    "one thing": ("def one():\n    return data()[0]\n", {"data": {"loader": "{pkg}:one"}}, "data.loader",
                  "expected (x, y), but got ndarray"),
    "wrong keys": ("def keys():\n    return {'train': data(), 'valid': data()}\n", {"data": {"loader": "{pkg}:keys"}},
                   "data.loader", "exactly the keys 'train' and 'test'"),
    "label count": ("def short():\n    x, y = data()\n    return x, y[:-1]\n", {"data": {"loader": "{pkg}:short"}},
                    "data.loader", "one label per example (200)"),
}


def _spec(tmp_path: Path, pkg: str, changes: dict) -> Path:
    spec = {
        "name": "byo", "run_dir": str(tmp_path / "run"),
        "data": {"dataset": "custom", "loader": f"{pkg}:data"},
        "model": {"factory": f"{pkg}:model", "hidden": 8},
        "training": {"epochs": 1, "finetune_epochs": 1, "batch_size": 32},
        "masks": {"remaining": [1.0, 0.5]}, "noise": {"variances": [0.3]},
        "tracking": {"mlflow": {"enabled": False}},
    }
    for section, values in changes.items():
        spec[section] = {**spec[section], **{k: (v.format(pkg=pkg) if isinstance(v, str) else v)
                                             for k, v in values.items()}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_each_broken_contract_is_one_line_naming_the_field_before_anything_is_created(tmp_path, case):
    code_text, changes, field, words = CASES[case]
    pkg = _package(tmp_path, code_text)
    spec = _spec(tmp_path, pkg, changes)
    code, out = invoke("launch", spec, "--workers", "1")
    assert code == 2, out
    (line,) = [x for x in out.splitlines() if x.strip()]
    assert line.startswith(f"error: {field}: ") and words in line, line
    assert "Traceback" not in out
    assert not (tmp_path / "run" / "optuna.db").exists()  # nothing trained, no study created
    if "cannot import" in words or "has no" in words:  # `validate` finds a wrong import path too
        code, out = invoke("validate", spec)
        assert code == 2 and words in out


def test_a_good_factory_and_loader_pass_and_args_without_factory_are_refused(tmp_path):
    pkg = _package(tmp_path, "")
    code, out = invoke("validate", _spec(tmp_path, pkg, {}))
    assert code == 0, out
    bad = _spec(tmp_path, pkg, {"model": {"factory": None, "args": {"hidden": 3}}})
    code, out = invoke("validate", bad)
    assert code == 2 and "model.args are the arguments of model.factory" in out
    code, out = invoke("validate", _spec(tmp_path, pkg, {"model": {"factory": "not a path"}}))
    assert code == 2 and "model.factory" in out


def test_dense_cache_key_follows_the_factory_code_and_args(tmp_path):
    from expander_sweeps.spec import load_spec
    from expander_sweeps.training.dense_cache import dense_key

    pkg = _package(tmp_path, "")
    spec = load_spec(_spec(tmp_path, pkg, {}))
    key, config = dense_key(spec, 0.0, "data")
    assert config["model"]["factory"] == f"{pkg}:model" and len(config["factory_source"]) == 16
    wider = load_spec(_spec(tmp_path, pkg, {"model": {"factory": f"{pkg}:model", "args": {"hidden": 8}}}))
    assert dense_key(wider, 0.0, "data")[0] != key  # other arguments, other dense model
    with open(tmp_path / f"{pkg}.py", "a") as module:
        module.write("\n# an edit to the model's code\n")
    assert dense_key(spec, 0.0, "data")[0] != key


@pytest.mark.slow
def test_the_gru_showcase_as_shipped_learns_and_shows_crossings(tmp_path):
    """examples/byo_gru.yaml as a user runs it (trackers off): the GRU learns the task well above
    chance, and each pruned layer's binary graph crosses at least one bound within the grid."""
    folder = tmp_path / "examples"
    shutil.copytree(REPO / "examples" / "byo_gru", folder / "byo_gru")
    spec = folder / "byo_gru.yaml"
    shutil.copy(REPO / "examples" / "byo_gru.yaml", spec)
    run = tmp_path / "run"
    code, out = invoke("launch", spec, "--set", f"run_dir={run}", "--set", "tracking.mlflow.enabled=false")
    assert code == 0, out
    study = optuna.load_study(study_name="byo_gru", storage=f"sqlite:///{run / 'optuna.db'}")
    dense = next(t for t in study.trials if t.params.get("remaining") == 1.0)
    assert dense.user_attrs["acc/clean"] > 0.6  # 4 classes: chance is 0.25
    crossings = json.loads((run / "report" / "crossings.json").read_text())["crossings"]
    for layer in ("W_xh", "W_hh"):
        assert any(c["graph"] == layer and c["weighting"] == "binary" and c["status"] == "crossed"
                   for c in crossings), layer
