"""Recurrent sequence classifiers: a recurrent stack, then a dense output layer on the last step.

The paper's names for the three matrices map onto PyTorch's parameters:
W_xh -> recurrent.weight_ih_l0, W_hh -> recurrent.weight_hh_l0, W_hy -> readout.weight.
Deeper layers are W_xh_l1, W_hh_l1, ... For an LSTM (GRU) the gate blocks are stacked:
4H x I (3H x I), in PyTorch's gate order.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .cells import RECURRENT_CELLS
from .spec import ModelSpec

__all__ = ["SequenceClassifier", "FactoryModel", "build_model", "RECURRENT_CELLS"]



def recurrent_matrices(recurrent: nn.Module) -> dict[str, nn.Parameter]:
    """The paper's names for a recurrent layer's matrices: W_xh, W_hh, then W_xh_l1, W_hh_l1, ..."""
    named = {}
    for layer in range(recurrent.num_layers):
        suffix = "" if layer == 0 else f"_l{layer}"
        named[f"W_xh{suffix}"] = getattr(recurrent, f"weight_ih_l{layer}")
        named[f"W_hh{suffix}"] = getattr(recurrent, f"weight_hh_l{layer}")
    return named


class SequenceClassifier(nn.Module):
    def __init__(self, spec: ModelSpec, input_size: int, num_classes: int):
        super().__init__()
        self.cell = spec.cell
        if spec.cell == "rnn":
            self.recurrent = nn.RNN(input_size, spec.hidden, spec.layers,
                                    nonlinearity=spec.nonlinearity, batch_first=True)
        elif spec.cell == "lstm":
            self.recurrent = nn.LSTM(input_size, spec.hidden, spec.layers, batch_first=True)
        else:
            self.recurrent = nn.GRU(input_size, spec.hidden, spec.layers, batch_first=True)
        self.readout = nn.Linear(spec.hidden, num_classes)
        if spec.init == "kaiming_uniform":
            self._kaiming_uniform()
        elif spec.init == "orthogonal":
            self._kaiming_uniform()
            self._recurrent_blocks(lambda block: nn.init.orthogonal_(block))
        elif spec.init == "identity":
            self._irnn()
        # "pytorch_default" keeps what the constructors drew: U(+-1/sqrt(H)) for the recurrent
        # layer, U(+-1/sqrt(fan_in)) for the readout.

    def _kaiming_uniform(self) -> None:
        for name, param in self.named_parameters():
            if "weight" in name:
                # a=0, leaky_relu gain sqrt(2): bound sqrt(6 / fan_in), the paper's Table 1.
                nn.init.kaiming_uniform_(param)
            else:
                nn.init.zeros_(param)

    def _irnn(self) -> None:
        """Le et al. 2015: W_hh = I, biases 0, every other weight N(0, 0.001^2). With ReLU units
        the hidden state is carried unchanged until training says otherwise: no explosion at k = 784."""
        for name, param in self.named_parameters():
            if "weight" in name:
                nn.init.normal_(param, std=0.001)
            else:
                nn.init.zeros_(param)
        self._recurrent_blocks(lambda block: nn.init.eye_(block))

    @torch.no_grad()
    def _recurrent_blocks(self, init) -> None:
        """Apply `init` to every H x H gate block of every W_hh (one block for a plain RNN)."""
        hidden = self.recurrent.hidden_size
        for layer in range(self.recurrent.num_layers):
            weight = getattr(self.recurrent, f"weight_hh_l{layer}")
            for start in range(0, weight.shape[0], hidden):
                block = torch.empty(hidden, hidden)
                init(block)
                weight[start : start + hidden].copy_(block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.recurrent(x)  # (N, k, H): fixed length, no packing, cuDNN's fast path
        return self.readout(outputs[:, -1])

    def matrices(self) -> dict[str, nn.Parameter]:
        """The paper's names for the weight matrices, in order W_xh, W_hh, (deeper layers), W_hy."""
        return {**recurrent_matrices(self.recurrent), "W_hy": self.readout.weight}

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


class FactoryModel(nn.Module):
    """A user's model (`model.factory`, see factories.py) with what the sweep reads of a model:
    `cell`, `recurrent` (its first RNN/LSTM/GRU) and `matrices()`. Its state_dict is the user
    module's under `net.`."""

    def __init__(self, spec: ModelSpec, input_size: int, num_classes: int, spec_dir: Path | None = None):
        from .training.factories import FactoryError, check_model, import_function

        super().__init__()
        function = import_function(spec.factory, "model.factory", spec_dir)
        try:
            net = function(input_size, num_classes, **spec.args)
        except FactoryError:
            raise
        except Exception as err:  # the user's factory
            raise FactoryError(f"model.factory: {spec.factory}(input_size={input_size}, num_classes={num_classes}, "
                               f"**model.args) raised {type(err).__name__}: {err}") from None
        layer, self.cell = check_model(net, spec)
        self.net = net
        # A path, not a second reference: a registered submodule would appear twice in state_dict.
        self._layer_name = next(name for name, module in net.named_modules() if module is layer)

    @property
    def recurrent(self) -> nn.Module:
        return self.net.get_submodule(self._layer_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def matrices(self) -> dict[str, nn.Parameter]:
        """W_xh, W_hh (and deeper layers' W_xh_l1, W_hh_l1, ...) of the swept recurrent layer."""
        return recurrent_matrices(self.recurrent)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_model(spec: ModelSpec, input_size: int, num_classes: int, seed: int,
                spec_dir: Path | None = None) -> SequenceClassifier | FactoryModel:
    """A freshly initialised model; the seed alone decides the initial weights. `spec_dir`: where
    a `model.factory` module may sit (the spec's folder)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if spec.factory is not None:
            return FactoryModel(spec, input_size, num_classes, spec_dir)
        return SequenceClassifier(spec, input_size, num_classes)

