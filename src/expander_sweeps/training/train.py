"""Fit and evaluate loops over tensors that already live on the device.

No DataLoader and no per-sample Python: each epoch is one permutation and a slice per batch.
Reporting goes through a callback; this module knows nothing of trackers or Optuna.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..data import add_noise
from ..pruning.masks import MaskHolder

__all__ = ["EpochStats", "fit", "accuracy", "resolve_device", "divergence_hint", "adam"]

# From about this many steps on, a recurrence whose W_hh has a spectral radius above 1
# multiplies its gradients into overflow long before the learning rate matters.
LONG_SEQUENCE = 100


@dataclass(frozen=True)
class EpochStats:
    phase: str  # "dense" or "finetune"
    epoch: int  # 1-based
    epochs: int
    loss: float
    train_accuracy: float


EpochCallback = Callable[[EpochStats], None]
BatchCallback = Callable[[], None]


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def fit(
    model: nn.Module,
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
    on_epoch: EpochCallback | None = None,
    on_batch: BatchCallback | None = None,
    clip_grad_norm: float | None = None,
) -> list[EpochStats]:
    """Adam + cross entropy for `epochs` epochs; with `masks`, masked weights stay exactly zero.
    `clip_grad_norm` rescales the gradient (masked entries already zeroed) to at most that L2 norm."""
    device = x.device
    optimizer = adam(list(model.parameters()), lr, device)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator(device=device).manual_seed(seed)
    history = []
    model.train()
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(x), generator=generator, device=device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            inputs, targets = x[index], y[index]
            if noise_variance > 0.0:
                inputs = add_noise(inputs, noise_fraction, noise_variance, generator)
            logits = model(inputs)
            loss = loss_fn(logits, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if masks is not None:
                masks.mask_gradients()
            if clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            optimizer.step()
            if masks is not None:
                masks.apply()
            # Accumulate on the device; reading .item() per batch would be a sync point.
            loss_sum += loss.detach() * len(index)
            correct += (logits.detach().argmax(1) == targets).sum()
            if on_batch is not None:
                on_batch()
        stats = EpochStats(phase, epoch, epochs, loss_sum.item() / len(x), correct.item() / len(x))
        if not math.isfinite(stats.loss):  # checked once an epoch: a per-batch check would sync
            raise FloatingPointError(
                f"the {phase} loss became {stats.loss} in epoch {epoch}; the weights diverged "
                f"({divergence_hint(x.shape[1], clip_grad_norm)})"
            )
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
    model.eval()
    return history


def adam(parameters: list[torch.nn.Parameter], lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam as both engines use it: on CUDA the fused kernel (one launch per step for all
    parameters, where the default multi-tensor Adam makes several: a small recurrent model's step
    is bound by launches); on a CPU torch's default, so CPU numbers stay what they were."""
    return torch.optim.Adam(parameters, lr=lr, fused=True if device.type == "cuda" else None)


def divergence_hint(seq_len: int, clip_grad_norm: float | None) -> str:
    """What usually cures a divergence in this case, with the spec fields to set."""
    if seq_len >= LONG_SEQUENCE:
        cures = []
        if clip_grad_norm is None:
            cures.append("gradient clipping (training.clip_grad_norm: 1.0)")
        cures.append("a recurrent init with spectral radius 1 (model.init: orthogonal, or model.init: "
                     "identity with model.nonlinearity: relu)")
        return (f"a sequence of k = {seq_len} steps explodes its gradients: " + " or ".join(cures)
                + " usually helps; a lower training.lr may too")
    hint = "a lower training.lr often helps"
    if clip_grad_norm is None:
        hint += ", and so may training.clip_grad_norm: 1.0"
    return hint


@torch.no_grad()
def correct_predictions(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Per example, whether the model classifies it correctly (a bool tensor on x's device)."""
    was_training = model.training
    model.eval()
    right = torch.empty(len(x), device=x.device, dtype=torch.bool)
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size])
        right[start : start + batch_size] = logits.argmax(1) == y[start : start + batch_size]
    model.train(was_training)
    return right


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """Share of correctly classified examples."""
    return correct_predictions(model, x, y, batch_size).sum().item() / len(x)
