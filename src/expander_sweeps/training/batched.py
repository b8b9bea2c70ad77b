"""The batched engine: N masked copies of one dense model fine-tuned as one stacked model.

A sweep over sparsity is an ideal batch: every fine-tuning trial of a dense model starts from
the same weights, sees the same batches in the same order (and the same training noise) and
differs only in its masks. Here the N models' weights are stacked, `[N, ...]`, and one forward
pass per batch runs all N on the shared inputs: one `baddbmm` per step and layer instead of N
cuDNN calls, which on a GPU keeps it busy where one small RNN leaves it mostly idle.

Every number is the per-trial trainer's (train.py) up to float rounding:
- the loss is the sum of the N models' mean losses, so each model's gradient is its own (the
  derivative of a sum with respect to one term is 1; a model that diverges to NaN stays NaN alone);
- Adam is elementwise, so one Adam over the stacked weights is N Adams;
- masked entries are zeroed per model, gradients before the step and weights after it;
- `clip_grad_norm` clips each model's own global norm (torch's formula), never one norm of the group;
- batch order and training noise come from one generator seeded as the per-trial one is.

A model that diverges fails its own trial only: its loss is checked at every epoch's end, as
train.py does, and the others go on. The cells follow PyTorch's equations and gate orders
(RNN tanh/relu; LSTM i, f, g, o; GRU r, z, n with b_hn inside r * (...)).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from ..data import add_noise
from ..models import SequenceClassifier
from ..pruning.masks import MaskHolder
from .train import EpochStats, adam, divergence_hint

__all__ = ["StackedClassifier", "StackedMasks", "BatchedFit", "fit_batched", "correct_predictions_batched",
           "per_model_bytes"]

_GATES = {"rnn": 1, "lstm": 4, "gru": 3}


class StackedClassifier(nn.Module):
    """N SequenceClassifiers of one architecture as one module: every parameter of theirs stacked
    along a new first axis. forward(x) with x `[B, k, I]` (shared) returns logits `[N, B, C]`."""

    def __init__(self, models: list[SequenceClassifier]):
        super().__init__()
        first = models[0]
        self.count = len(models)
        self.cell = first.cell
        recurrent = first.recurrent
        self.layers = recurrent.num_layers
        self.hidden = recurrent.hidden_size
        self.nonlinearity = getattr(recurrent, "nonlinearity", "tanh")
        self._keys = list(first.state_dict())
        states = [m.state_dict() for m in models]
        # ParameterDict keys may not hold dots; the state_dict key is kept in self._keys.
        self.stacked = nn.ParameterDict({
            key.replace(".", "__"): nn.Parameter(torch.stack([s[key].detach() for s in states]).clone())
            for key in self._keys
        })

    def parameter(self, key: str) -> nn.Parameter:
        """The stacked parameter of a SequenceClassifier state_dict key, e.g. recurrent.weight_hh_l0."""
        return self.stacked[key.replace(".", "__")]

    def state_dict_of(self, index: int) -> dict[str, torch.Tensor]:
        """Model `index`'s weights, under a SequenceClassifier's state_dict keys."""
        return {key: self.parameter(key)[index].detach().clone() for key in self._keys}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, _ = x.shape
        inputs = x.reshape(1, batch * steps, -1)  # shared by all N models in layer 0
        h = None
        for layer in range(self.layers):
            w_ih = self.parameter(f"recurrent.weight_ih_l{layer}")
            w_hh = self.parameter(f"recurrent.weight_hh_l{layer}")
            b_ih = self.parameter(f"recurrent.bias_ih_l{layer}")
            b_hh = self.parameter(f"recurrent.bias_hh_l{layer}")
            # The input projection of every step at once: [N, B*k, G*H], then per step [N, B, G*H].
            projected = torch.baddbmm(b_ih[:, None, :], inputs.expand(self.count, -1, -1), w_ih.transpose(1, 2))
            projected = projected.view(self.count, batch, steps, -1)
            last_layer = layer == self.layers - 1
            h, outputs = self._run_layer(projected, w_hh.transpose(1, 2), b_hh[:, None, :], keep=not last_layer)
            if not last_layer:
                inputs = outputs.reshape(self.count, batch * steps, self.hidden)
        readout_w, readout_b = self.parameter("readout.weight"), self.parameter("readout.bias")
        return torch.baddbmm(readout_b[:, None, :], h, readout_w.transpose(1, 2))

    def _run_layer(self, projected: torch.Tensor, w_hh_t: torch.Tensor, b_hh: torch.Tensor,
                   keep: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        count, batch, _, _ = projected.shape
        h = projected.new_zeros(count, batch, self.hidden)
        c = projected.new_zeros(count, batch, self.hidden) if self.cell == "lstm" else None
        outputs = []
        # unbind, not projected[:, :, t]: the backward of k slices would write k full-size
        # gradients of `projected` (72x slower for an LSTM at k = 400); unbind's writes one.
        for step in projected.unbind(2):
            recurrent = torch.baddbmm(b_hh, h, w_hh_t)  # [N, B, G*H]: W_hh h + b_hh
            if self.cell == "rnn":
                pre = step + recurrent
                h = torch.tanh(pre) if self.nonlinearity == "tanh" else torch.relu(pre)
            elif self.cell == "lstm":
                i, f, g, o = (step + recurrent).chunk(4, dim=2)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
            else:  # GRU: the reset gate scales the recurrent part of n, bias b_hn included
                x_r, x_z, x_n = step.chunk(3, dim=2)
                h_r, h_z, h_n = recurrent.chunk(3, dim=2)
                r = torch.sigmoid(x_r + h_r)
                z = torch.sigmoid(x_z + h_z)
                n = torch.tanh(x_n + r * h_n)
                h = (1 - z) * n + z * h
            if keep:
                outputs.append(h)
        return h, (torch.stack(outputs, dim=2) if keep else None)


def StackedMasks(model: StackedClassifier, masks: dict[str, torch.Tensor]) -> MaskHolder:  # noqa: N802
    """Masks `[N, ...]` on a stacked model's parameters (by SequenceClassifier state_dict key),
    held as masks.MaskHolder holds one model's: it is elementwise, so stacking changes nothing."""
    return MaskHolder({key: model.parameter(key) for key in masks}, masks)


@torch.no_grad()
def clip_each_model(parameters: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Scale each model's gradient (slice n of every stacked parameter) to global L2 norm at most
    `max_norm`, with torch.nn.utils.clip_grad_norm_'s formula (coefficient max_norm / (norm + 1e-6),
    at most 1). Returns the N norms before clipping."""
    grads = [p.grad for p in parameters if p.grad is not None]
    squares = torch.stack([g.flatten(1).pow(2).sum(1) for g in grads]).sum(0)  # [N]
    norms = squares.sqrt()
    coefficient = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coefficient.view(-1, *([1] * (g.dim() - 1))))
    return norms


@dataclass
class BatchedFit:
    """What fit_batched returns: per model, its epochs (up to the one it diverged in) and, for a
    model that diverged, the error its trial fails with."""

    histories: list[list[EpochStats]]
    errors: list[BaseException | None] = field(default_factory=list)


def fit_batched(
    model: StackedClassifier,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    phase: str,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    masks: MaskHolder | None = None,
    noise_fraction: float = 0.0,
    noise_variance: float = 0.0,
    on_epoch: Callable[[int, EpochStats], None] | None = None,
    on_batch: Callable[[], None] | None = None,
    clip_grad_norm: float | None = None,
) -> BatchedFit:
    """train.fit for N stacked models at once; `on_epoch(model index, stats)` per live model."""
    device = x.device
    count = model.count
    parameters = list(model.parameters())
    optimizer = adam(parameters, lr, device)
    generator = torch.Generator(device=device).manual_seed(seed)
    histories: list[list[EpochStats]] = [[] for _ in range(count)]
    errors: list[BaseException | None] = [None] * count
    model.train()
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(x), generator=generator, device=device)
        loss_sum = torch.zeros(count, device=device)
        correct = torch.zeros(count, device=device, dtype=torch.long)
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            inputs, targets = x[index], y[index]
            if noise_variance > 0.0:
                inputs = add_noise(inputs, noise_fraction, noise_variance, generator)
            logits = model(inputs)  # [N, B, C]
            losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.repeat(count),
                                     reduction="none").view(count, -1).mean(1)  # each model's mean loss
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            if masks is not None:
                masks.mask_gradients()
            if clip_grad_norm is not None:
                clip_each_model(parameters, clip_grad_norm)
            optimizer.step()
            if masks is not None:
                masks.apply()
            loss_sum += losses.detach() * len(index)
            correct += (logits.detach().argmax(2) == targets).sum(1)
            if on_batch is not None:
                on_batch()
        losses_now = (loss_sum / len(x)).tolist()  # one sync per epoch, as in train.fit
        accuracies = (correct.double() / len(x)).tolist()
        for n in range(count):
            if errors[n] is not None:
                continue
            stats = EpochStats(phase, epoch, epochs, losses_now[n], accuracies[n])
            if not math.isfinite(stats.loss):
                errors[n] = FloatingPointError(
                    f"the {phase} loss became {stats.loss} in epoch {epoch}; the weights diverged "
                    f"({divergence_hint(x.shape[1], clip_grad_norm)})")
                continue
            histories[n].append(stats)
            if on_epoch is not None:
                on_epoch(n, stats)
    model.eval()
    return BatchedFit(histories, errors)


@torch.no_grad()
def correct_predictions_batched(model: StackedClassifier, x: torch.Tensor, y: torch.Tensor,
                                batch_size: int) -> torch.Tensor:
    """Per model and example, whether the model classifies it correctly: bool `[N, len(x)]`."""
    was_training = model.training
    model.eval()
    right = torch.empty(model.count, len(x), device=x.device, dtype=torch.bool)
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size])
        right[:, start : start + batch_size] = logits.argmax(2) == y[start : start + batch_size]
    model.train(was_training)
    return right


def per_model_bytes(model: SequenceClassifier, batch_size: int, steps: int) -> int:
    """A generous estimate of what one more model in a stacked group costs on the device while
    training: its weights four times (weights, gradients, Adam's two moments) and the activations
    autograd keeps per step (the gates' pre-activations and outputs, h and c), in float32."""
    recurrent = model.recurrent
    gates = _GATES[model.cell]
    hidden = recurrent.hidden_size
    weights = sum(p.numel() for p in model.parameters())
    per_step = batch_size * recurrent.num_layers * (4 * gates * hidden + 4 * hidden)
    return 4 * (4 * weights + per_step * steps)
