"""One-shot masks of weight matrices, and holding them during training.

Masks are plain 0/1 tensors applied in place (`weight *= mask`), not
`torch.nn.utils.prune` hooks: on nn.RNN/nn.LSTM the hooks' reparametrisation is ignored by
the flat cuDNN weight buffer, and on a GPU they force a weight copy on every call.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "magnitude_mask",
    "random_mask",
    "regular_mask",
    "magnitude_min_degree_mask",
    "kept_count",
    "MaskHolder",
]


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


def regular_mask(shape: torch.Size | tuple[int, ...], remaining: float, generator: torch.Generator) -> torch.Tensor:
    """A random biregular mask: every row (output) keeps exactly d = round(remaining * cols)
    inputs (at least one), and column degrees differ by at most one.

    Rows are visited in random order; each takes the d least-used columns, ties broken at
    random. Choosing the least-used keeps column degrees within one of each other at every
    step; the random tie-breaks make the graph a random one (and so, with high probability, a
    good expander) rather than a banded one. The kept fraction is d / cols, the nearest a
    row-regular mask can get to `remaining`.
    """
    rows, cols = int(shape[0]), int(shape[1])
    degree = max(1, min(cols, round(remaining * cols)))
    if not 0.0 < remaining <= 1.0:
        raise ValueError(f"remaining must lie in (0, 1], but got {remaining}")
    mask = torch.zeros(rows, cols, dtype=torch.bool)
    used = torch.zeros(cols, dtype=torch.long)
    for row in torch.randperm(rows, generator=generator).tolist():
        # Sort by (use count, random key): the least-used columns first, in random order.
        key = used.double() + torch.rand(cols, generator=generator, dtype=torch.float64) * 0.5
        chosen = torch.argsort(key)[:degree]
        mask[row, chosen] = True
        used[chosen] += 1
    return mask


def magnitude_min_degree_mask(weight: torch.Tensor, remaining: float, min_degree: int) -> torch.Tensor:
    """Magnitude mask that keeps at least `min_degree` edges in every row and every column.

    Each row's and each column's `min_degree` largest |w| are kept first (no vertex is
    isolated); the rest of the budget round(remaining * numel) goes to the largest |w| left.
    When the guarantees alone need more edges than the budget, they win: the mask then keeps
    more than `remaining` (the trial records the fraction actually kept).
    """
    if min_degree < 0:
        raise ValueError(f"min_degree must be >= 0, but got {min_degree}")
    if weight.dim() != 2:
        raise ValueError(f"a degree guarantee needs a 2-D weight, but got shape {tuple(weight.shape)}")
    magnitude = weight.detach().abs()
    rows, cols = magnitude.shape
    forced = torch.zeros_like(magnitude, dtype=torch.bool)
    if min_degree:
        per_row = torch.sort(magnitude, dim=1, descending=True, stable=True).indices[:, : min(min_degree, cols)]
        forced.scatter_(1, per_row, True)
        per_col = torch.sort(magnitude, dim=0, descending=True, stable=True).indices[: min(min_degree, rows), :]
        forced.scatter_(0, per_col, True)
    budget = kept_count(magnitude.numel(), remaining)
    extra = budget - int(forced.sum())
    mask = forced.clone().flatten()
    if extra > 0:
        # The largest |w| among the edges not yet kept (forced ones sort last).
        free = magnitude.flatten().masked_fill(forced.flatten(), -1.0)
        order = torch.sort(free, descending=True, stable=True).indices
        mask[order[:extra]] = True
    return mask.reshape(rows, cols)


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
