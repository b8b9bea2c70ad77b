"""Lottery tickets: iterative magnitude pruning with weight rewinding (Frankle & Carbin, ICLR 2019;
rewinding to an early epoch: Frankle, Dziugaite, Roy & Carbin, ICML 2020).

With share p (`masks.lottery_share`), rewind epoch r (`masks.rewind_epoch`) and E =
`training.epochs`:

- W_r: the initial weights trained r epochs (W_0: the initial weights themselves).
- Level 0: W_r trained E - r more epochs, nothing masked. Level j (j >= 1): mask_j keeps, of
  each pruned matrix, the round(f_j * entries) largest |w| of level j-1's trained weights among
  the entries mask_{j-1} kept, f_j = max(target, (1 - p)^j); then W_r with mask_j is trained
  E - r epochs with the mask held.
- A trial whose target fraction is f takes the first level K at which every matrix reached its
  target (K = the least j with (1 - p)^j <= f: f = (1 - p)^K exactly when f lies on the chain);
  its ticket is mask_K on W_r, and the trial trains it the E - r epochs itself.

A level depends on the one before, not on the trial: its trained weights are cached (in the run's
cache, beside the dense models, with the same checksums and lock) under the training setup and
the fractions that led to it, so a grid over fractions trains each level of the chain once for
the levels before the last, and a trial at level K trains its own K-th.
"""

from __future__ import annotations

import hashlib
import json

import torch

from .masks import kept_count

__all__ = ["lottery_ticket", "chain_fractions", "expected_kept", "MASK_PREFIX"]

MASK_PREFIX = "__mask__."  # a cached level's masks travel in its state dict under these keys
_TOLERANCE = 1e-9  # a target within this of (1 - p)^j counts as reached at j (float powers)


def chain_fractions(targets: dict[str, float], share: float) -> list[dict[str, float]]:
    """The fractions each matrix keeps at levels 1..K of the chain toward `targets`."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"masks.lottery_share must lie in (0, 1), but got {share}")
    levels: list[dict[str, float]] = []
    j = 0
    while True:
        reached = all(f >= (1.0 - share) ** j * (1.0 - _TOLERANCE) for f in targets.values())
        if reached:
            return levels
        j += 1
        levels.append({name: max(f, (1.0 - share) ** j) for name, f in targets.items()})


def _next_mask(weight: torch.Tensor, previous: torch.Tensor, fraction: float) -> torch.Tensor:
    """The round(fraction * entries) largest |w| among the entries `previous` kept."""
    score = weight.detach().abs().flatten().masked_fill(~previous.flatten(), -1.0)
    keep = kept_count(score.numel(), fraction)
    if keep > int(previous.sum()):
        raise ValueError("a lottery level cannot keep more entries than the level before it")
    order = torch.sort(score, descending=True, stable=True).indices
    mask = torch.zeros_like(score, dtype=torch.bool)
    mask[order[:keep]] = True
    return mask.reshape(weight.shape)


def _copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict's own tensors: the model's are trained on in place after this (on a CPU a
    cache's `.cpu()` would share their storage)."""
    return {k: v.detach().clone() for k, v in state.items()}


def _level_key(request, fractions: list[dict[str, float]]) -> str:
    what = {"dense": request.cache_key, "rewind_epoch": request.options.rewind_epoch,
            "epochs": request.epochs, "levels": fractions, "format": 1}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def lottery_ticket(request) -> tuple[dict[str, torch.Tensor], int]:
    """The ticket of `request.remaining` (a mask_methods.ModelMaskRequest): its masks, with the
    model's weights set to W_r, and r (the epochs of training W_r has had)."""
    share, rewind, epochs = request.options.lottery_share, request.options.rewind_epoch, request.epochs
    if rewind > epochs:
        raise ValueError(f"masks.rewind_epoch ({rewind}) is past training.epochs ({epochs}); "
                         "the rewind point must lie within training")
    model, cache = request.model, request.checkpoints
    names = list(request.remaining)
    matrices = model.matrices()

    def weights_only(state: dict) -> dict:
        return {k: v for k, v in state.items() if not k.startswith(MASK_PREFIX)}

    def rewind_point() -> tuple[dict, dict]:
        request.train(model, {}, rewind)
        return _copy(model.state_dict()), {"trained_epochs": rewind}

    key = _level_key(request, [])
    rewound = cache.get_or_train("rewind-" + key, {"level": "rewind", "key": key}, rewind_point).state_dict
    levels = chain_fractions(request.remaining, share)
    masks = {n: torch.ones_like(matrices[n], dtype=torch.bool) for n in names}

    def trained_level(index: int, level_masks: dict[str, torch.Tensor]):
        def train() -> tuple[dict, dict]:
            model.load_state_dict(rewound)
            request.train(model, level_masks, epochs - rewind)
            state = _copy(model.state_dict())
            state.update({MASK_PREFIX + n: m.cpu() for n, m in level_masks.items()})
            return state, {"fractions": levels[:index]}
        level = _level_key(request, levels[:index])
        return cache.get_or_train("level-" + level, {"level": index, "key": level}, train).state_dict

    for index, fractions in enumerate(levels):
        trained = weights_only(trained_level(index, masks))  # level `index`, which the next one prunes
        model.load_state_dict(trained)
        current = model.matrices()
        masks = {n: _next_mask(current[n], masks[n].to(current[n].device), fractions[n]) for n in names}
    model.load_state_dict(rewound)
    device = next(model.parameters()).device
    return {n: m.to(device) for n, m in masks.items()}, rewind


def expected_kept(entries: int, share: float, level: int) -> int:
    """Entries kept at level `level` on the chain: round((1 - share)^level * entries)."""
    return kept_count(entries, (1.0 - share) ** level) if level else entries
