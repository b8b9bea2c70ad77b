"""Your own model and data, named in the spec by import path (`package.module:function`).

The contracts (also in the spec's field descriptions and the README):
- `model.factory(input_size, num_classes, **model.args)` is called under the trial's seed and
  returns a `torch.nn.Module` mapping (N, k, features) floats to (N, num_classes) logits that
  holds an `nn.RNN`, `nn.LSTM` or `nn.GRU` with batch_first=True. The first one (in module
  order) is the layer swept: W_xh = weight_ih_l0, W_hh = weight_hh_l0.
- `data.loader(**data.args)` returns (x, y), which the tool splits like MNIST's pooled split,
  or {"train": (x, y), "test": (x, y)}: x of shape (N, k, features), y of N integer labels
  0..C-1, numpy arrays or tensors.

Every broken contract is a FactoryError naming the spec field and what was expected, raised
before anything is trained or created. Modules are imported from the spec's folder first (so
an `examples/` package beside the spec works without installing it), then the Python path.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..cells import RECURRENT_CELLS

__all__ = ["FactoryError", "import_function", "recurrent_layer", "check_model", "dataset_from_loader"]



class FactoryError(ValueError):
    """A model factory or data loader named in the spec breaks its contract."""


def import_function(path: str, field: str, spec_dir: Path | None) -> Callable:
    """The function `package.module:function` names; `field` is the spec key, for messages."""
    module_name, _, attribute = path.partition(":")
    if spec_dir is not None and str(spec_dir) not in sys.path:
        sys.path.insert(0, str(spec_dir))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        where = f"the spec's folder {spec_dir} or " if spec_dir else ""
        raise FactoryError(f"{field}: cannot import '{module_name}' ({err}); put it in {where}the Python "
                           "path (pip install your package, or set PYTHONPATH)") from None
    except Exception as err:  # the user's module raised while being imported
        raise FactoryError(f"{field}: importing '{module_name}' failed: {type(err).__name__}: {err}") from None
    function = getattr(module, attribute, None)
    if function is None:
        raise FactoryError(f"{field}: module '{module_name}' has no '{attribute}'")
    if not callable(function):
        raise FactoryError(f"{field}: '{path}' is a {type(function).__name__}, not a function")
    return function


def recurrent_layer(model: nn.Module, field: str = "model.factory") -> tuple[nn.Module, str]:
    """The first nn.RNN / nn.LSTM / nn.GRU of `model` and its cell name."""
    for module in model.modules():
        kind = RECURRENT_CELLS.get(type(module))
        if kind is not None:
            return module, kind
    raise FactoryError(f"{field}: the model holds no nn.RNN, nn.LSTM or nn.GRU; the sweep prunes a "
                       "recurrent layer's W_xh and W_hh")


def check_model(model: Any, spec_model, field: str = "model.factory") -> tuple[nn.Module, str]:
    """The factory's result against its contract and the spec's cell, hidden and layers."""
    if not isinstance(model, nn.Module):
        raise FactoryError(f"{field}: returned a {type(model).__name__}, but a torch.nn.Module was expected")
    layer, kind = recurrent_layer(model, field)
    if not layer.batch_first:
        raise FactoryError(f"{field}: the {kind.upper()} has batch_first=False, but inputs are (N, k, features); "
                           "construct it with batch_first=True")
    stated = {"model.cell": (spec_model.cell, kind), "model.hidden": (spec_model.hidden, layer.hidden_size),
              "model.layers": (spec_model.layers, layer.num_layers)}
    wrong = [f"{key} is {said!r} but the factory's layer has {built!r}" for key, (said, built) in stated.items()
             if said != built]
    if wrong:
        raise FactoryError(f"{field}: " + "; ".join(wrong) + " (the spec must describe the layer it sweeps)")
    return layer, kind


def check_forward(model: nn.Module, x: torch.Tensor, num_classes: int, field: str = "model.factory") -> None:
    """One forward pass on two examples: (2, num_classes) logits, or a clear error."""
    try:
        with torch.no_grad():
            out = model(x[:2])
    except Exception as err:  # the user's forward
        raise FactoryError(f"{field}: the model's forward failed on a batch of shape {tuple(x[:2].shape)} "
                           f"(N, k, features): {type(err).__name__}: {err}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (min(2, len(x)), num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise FactoryError(f"{field}: the model's forward returned {got}, but logits of shape "
                           f"(N, {num_classes}) were expected for (N, k, features) inputs")


def _as_pair(value: Any, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise FactoryError(f"{where}: expected (x, y), but got {type(value).__name__}"
                           + (f" of length {len(value)}" if isinstance(value, (tuple, list)) else ""))
    x, y = (v.detach().cpu() if isinstance(v, torch.Tensor) else v for v in value)
    try:
        x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
        y_array = np.asarray(y)
    except (TypeError, ValueError) as err:
        raise FactoryError(f"{where}: x and y must be arrays or tensors ({err})") from None
    if x.ndim != 3:
        raise FactoryError(f"{where}: x must have shape (N, k, features), but has shape {tuple(x.shape)}")
    if y_array.ndim != 1 or len(y_array) != len(x):
        raise FactoryError(f"{where}: y must hold one label per example ({len(x)}), but has shape {y_array.shape}")
    if not np.issubdtype(y_array.dtype, np.integer):
        raise FactoryError(f"{where}: y must hold integer class labels, but has dtype {y_array.dtype}")
    if len(y_array) and y_array.min() < 0:
        raise FactoryError(f"{where}: labels must be 0..C-1, but the smallest is {int(y_array.min())}")
    if not torch.isfinite(x).all():
        raise FactoryError(f"{where}: x holds NaN or infinite values")
    return x, torch.from_numpy(y_array.astype(np.int64))


def dataset_from_loader(spec, spec_dir: Path | None):
    """Call `data.loader`, check what it returns, split and subset it like the built-in datasets."""
    from ..data.base import SequenceDataset, stratified_split, stratified_subset

    field = "data.loader"
    loader = import_function(spec.loader, field, spec_dir)
    try:
        value = loader(**spec.args)
    except Exception as err:  # the user's loader
        raise FactoryError(f"{field}: {spec.loader}(**data.args) raised {type(err).__name__}: {err}") from None
    if isinstance(value, dict):
        if set(value) != {"train", "test"}:
            raise FactoryError(f"{field}: a mapping must have exactly the keys 'train' and 'test', but has {sorted(value)}")
        x_tr, y_tr = _as_pair(value["train"], f"{field} (train)")
        x_te, y_te = _as_pair(value["test"], f"{field} (test)")
        if x_tr.shape[1:] != x_te.shape[1:]:
            raise FactoryError(f"{field}: train examples are {tuple(x_tr.shape[1:])} (k, features) but test "
                               f"examples {tuple(x_te.shape[1:])}; they must match")
        how = "given train/test split"
    else:
        x_all, y_all = _as_pair(value, field)
        train_idx, test_idx = stratified_split(y_all.numpy(), spec.test_fraction, spec.split_seed)
        x_tr, y_tr, x_te, y_te = x_all[train_idx], y_all[train_idx], x_all[test_idx], y_all[test_idx]
        how = f"pooled {len(y_all)} examples, stratified {100 * spec.test_fraction:g}% test, seed {spec.split_seed}"
    keep_tr = stratified_subset(y_tr.numpy(), spec.limit_train, spec.split_seed + 1)
    keep_te = stratified_subset(y_te.numpy(), spec.limit_test, spec.split_seed + 2)
    x_tr, y_tr, x_te, y_te = x_tr[keep_tr], y_tr[keep_tr], x_te[keep_te], y_te[keep_te]
    if len(x_tr) == 0 or len(x_te) == 0:
        raise FactoryError(f"{field}: the split left {len(x_tr)} training and {len(x_te)} test examples; both need some")
    num_classes = int(max(y_tr.max(), y_te.max())) + 1
    if num_classes < 2:
        raise FactoryError(f"{field}: every label is 0; a classifier needs at least two classes")
    return SequenceDataset(
        x_train=x_tr.contiguous(), y_train=y_tr, x_test=x_te.contiguous(), y_test=y_te, num_classes=num_classes,
        description=f"custom data from {spec.loader} (k={x_tr.shape[1]}, {x_tr.shape[2]} features, "
        f"{num_classes} classes): {how}; {len(y_tr)} train / {len(y_te)} test",
    )
