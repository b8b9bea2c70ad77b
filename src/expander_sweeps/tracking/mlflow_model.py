"""A trial's MLflow model directory (pytorch flavour, pickle format), made in two halves.

Why two halves: the tracker process logs the models, and importing torch there cost about 2 s
of CPU per sweep, a fifth of that process's CPU; on a CPU machine whose cores all train, each
of those seconds is taken from training. The trial's own process has torch and the model
already, so it writes the part that needs them, the *payload* (`write_payload`): the model
pickled as MLflow's pytorch flavour pickles it (`torch.save` with cloudpickle), the model's
output on the example input (for the signature), and which modules' code the model needs. The
tracker process builds the MLflow model directory around the payload (`assemble`) with MLflow's
Model API, without torch: the same files `mlflow.pytorch.save_model` writes, in the same order
(tests compare the two and load the result with `mlflow.pytorch.load_model`).

`assemble` raises `PayloadUnusable` when the payload is missing or not from this format, or
when this MLflow lacks a helper it uses; the caller then saves the model the slow way.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PayloadUnusable", "write_payload", "assemble", "payload_folder", "wanted", "PAYLOAD_FORMAT"]

PAYLOAD_FORMAT = 1
_MODEL_FILE, _OUTPUT_FILE, _INFO_FILE = "model.pth", "output_example.npy", "payload.json"
# What MLflow's pytorch flavour records as its pickle module (a cloudpickle shim): the model is
# unpickled with it when loaded, whoever pickled it.
_PICKLE_MODULE_NAME = "mlflow.pytorch.pickle_module"


class PayloadUnusable(Exception):
    """The payload cannot be assembled here; save the model from its checkpoint instead."""


def write_payload(checkpoint: str | Path, example: np.ndarray, folder: str | Path) -> None:
    """The torch half of a logged model, from the trial's checkpoint (the clean model: rebuilt
    from its weights, on the CPU, in eval mode, with no training hooks) and its example input."""
    import cloudpickle
    import torch

    from ..results import load_checkpoint
    from .model_code import code_sources

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model, _ = load_checkpoint(checkpoint)
    with torch.no_grad():
        output = model(torch.from_numpy(example)).numpy()
    # cloudpickle's Pickler, as MLflow's pickle module uses it: the same bytes save_model writes.
    torch.save(model, folder / _MODEL_FILE, pickle_module=cloudpickle)
    np.save(folder / _OUTPUT_FILE, output)
    (folder / _INFO_FILE).write_text(json.dumps({
        "format": PAYLOAD_FORMAT, "pytorch_version": str(torch.__version__), "code": code_sources(model)}))


def _read_payload(folder: Path) -> dict[str, Any]:
    try:
        info = json.loads((folder / _INFO_FILE).read_text())
    except (OSError, ValueError) as err:
        raise PayloadUnusable(f"no readable payload in {folder}: {err}") from None
    if info.get("format") != PAYLOAD_FORMAT or not (folder / _MODEL_FILE).is_file():
        raise PayloadUnusable(f"the payload in {folder} is not of format {PAYLOAD_FORMAT}")
    return info


def assemble(payload: str | Path, example_path: str | Path, path: str | Path, mlflow_model,
             requirements: list[str]) -> None:
    """Write the MLflow model directory `path` (which must not exist) for `mlflow_model` (an
    `mlflow.models.Model` carrying the LoggedModel's ids) from a payload and the example input,
    as `mlflow.pytorch.save_model(..., serialization_format="pickle", pip_requirements=...)`."""
    import yaml
    from mlflow import pyfunc
    from mlflow.models import infer_signature

    from .model_code import model_code_paths

    payload, path = Path(payload), Path(path)
    info = _read_payload(payload)
    conda_env, pip_requirements, python_env = _environment(tuple(requirements))
    save_example = _example_saver()
    example = np.load(example_path)
    path.mkdir(parents=True)
    # save_model's order: the example, the signature, the code, the data, the flavours, the
    # size (of what is there by then), MLmodel, then the environment files.
    save_example(mlflow_model, example, str(path))
    mlflow_model.signature = infer_signature(example, np.load(payload / _OUTPUT_FILE))
    code = path / "code"
    _package, *user_code = model_code_paths(info["code"], code)  # this package's modules: written there
    for source in map(Path, user_code):  # a model.factory network's own module or package
        if source.is_dir():
            shutil.copytree(source, code / source.name)
        else:
            shutil.copy2(source, code / source.name)
    data = path / "data"
    data.mkdir()
    (data / "pickle_module_info.txt").write_text(_PICKLE_MODULE_NAME)
    shutil.copy2(payload / _MODEL_FILE, data / _MODEL_FILE)
    mlflow_model.add_flavor("pytorch", model_data="data", pytorch_version=info["pytorch_version"], code="code")
    pyfunc.add_to_model(mlflow_model, loader_module="mlflow.pytorch", data="data",
                        pickle_module_name=_PICKLE_MODULE_NAME, code="code", conda_env="conda.yaml",
                        python_env="python_env.yaml", model_config={"device": None})
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    if size:
        mlflow_model.model_size_bytes = size
    mlflow_model.save(str(path / "MLmodel"))
    with open(path / "conda.yaml", "w") as f:
        yaml.safe_dump(conda_env, stream=f, default_flow_style=False)
    (path / "requirements.txt").write_text("\n".join(pip_requirements))
    python_env.to_yaml(str(path / "python_env.yaml"))


def _example_saver():
    try:
        from mlflow.models.utils import _save_example
    except ImportError as err:  # a future MLflow without it: save the model the slow way
        raise PayloadUnusable(f"this MLflow has no example writer ({err})") from None
    return _save_example


@functools.lru_cache(maxsize=4)  # the same for every model of a sweep: worked out once a process
def _environment(requirements: tuple[str, ...]):
    """conda.yaml's content, requirements.txt's lines and python_env.yaml's writer, made by the
    helpers save_model uses, so they pin what it pins. What save_model adds on top is a check of
    the requirements against the installed packages: 1.6 s of CPU (a map of every installed
    distribution's modules), with nothing to find here, where every requirement is pinned to
    the installed version (`mlflow_backend.model_requirements`)."""
    try:
        from mlflow.utils.environment import (
            _generate_mlflow_version_pinning,
            _mlflow_conda_env,
            _PythonEnv,
        )
    except ImportError as err:
        raise PayloadUnusable(f"this MLflow has no environment helpers ({err})") from None
    if any(r.split("=")[0].strip().lower() == "mlflow" or r.startswith("-") for r in requirements):
        raise PayloadUnusable("requirements naming mlflow, or pip options, are left to save_model")
    pip_requirements = (_generate_mlflow_version_pinning(), *requirements)
    conda_env = _mlflow_conda_env(additional_pip_deps=list(pip_requirements), install_mlflow=False)
    return conda_env, pip_requirements, _PythonEnv.current()


def payload_folder(trial_dir: str | Path) -> Path:
    """Where a trial writes its payload."""
    return Path(trial_dir) / "mlflow_model"


def wanted(spec) -> bool:
    """Whether a trial of `spec` writes a payload: only when MLflow logs models."""
    return bool(spec.tracking.mlflow.enabled and spec.tracking.mlflow.log_models)

