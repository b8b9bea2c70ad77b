"""One-shot masks of weight matrices, and holding them during training.

Masks are plain 0/1 tensors applied in place (`weight *= mask`), not
`torch.nn.utils.prune` hooks: on nn.RNN/nn.LSTM the hooks' reparametrisation is ignored by
the flat cuDNN weight buffer, and on a GPU they force a weight copy on every call.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["magnitude_mask", "random_mask", "kept_count", "MaskHolder"]


def kept_count(numel: int, remaining: float) -> int:
    """Edges kept for a remaining fraction: round(remaining * numel), at least one."""
    if not 0.0 < remaining <= 1.0:
        raise ValueError(f"remaining must lie in (0, 1], but got {remaining}")
    return max(1, min(numel, round(remaining * numel)))


def magnitude_mask(weight: torch.Tensor, remaining: float) -> torch.Tensor:
    """Keep exactly round(remaining * numel) entries of largest |w| (ties broken by index)."""
    flat = weight.detach().abs().flatten()
    keep = kept_count(flat.numel(), remaining)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if keep == flat.numel():
        mask[:] = True
    else:
        # A stable sort makes ties deterministic on every device, unlike topk.
        order = torch.sort(flat, descending=True, stable=True).indices
        mask[order[:keep]] = True
    return mask.reshape(weight.shape)


def random_mask(shape: torch.Size | tuple[int, ...], remaining: float, generator: torch.Generator) -> torch.Tensor:
    """A uniformly random mask with exactly round(remaining * numel) kept entries."""
    numel = int(torch.Size(shape).numel())
    keep = kept_count(numel, remaining)
    chosen = torch.randperm(numel, generator=generator)[:keep]
    mask = torch.zeros(numel, dtype=torch.bool)
    mask[chosen] = True
    return mask.reshape(shape)


class MaskHolder:
    """Holds masks on parameters: zeroes masked weights now, their gradients before every
    optimizer step (so Adam's moments stay zero there), and the weights again after it
    (so nothing, not even numerical drift, revives a masked edge)."""

    def __init__(self, params: dict[str, nn.Parameter], masks: dict[str, torch.Tensor]):
        missing = set(masks) - set(params)
        if missing:
            raise KeyError(f"masks for unknown matrices {sorted(missing)}; known: {sorted(params)}")
        self._pairs = []
        for name, mask in masks.items():
            param = params[name]
            if mask.shape != param.shape:
                raise ValueError(f"mask for {name} has shape {tuple(mask.shape)}, weight has {tuple(param.shape)}")
            self._pairs.append((param, mask.to(device=param.device, dtype=param.dtype)))
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        for param, mask in self._pairs:
            param.mul_(mask)  # in place: cuDNN's flat weight buffer keeps pointing at the same storage

    @torch.no_grad()
    def mask_gradients(self) -> None:
        for param, mask in self._pairs:
            if param.grad is not None:
                param.grad.mul_(mask)
