"""Saliency scores for pruning at initialisation: SNIP, GraSP and SynFlow (docs/definitions.md).

Every method keeps each pruned matrix's own budget, round(remaining * entries), as the one-shot
methods do (layer-wise, not one global threshold), so that methods are compared at equal density
per layer: the comparison the claim test makes.

- SNIP (Lee et al., ICLR 2019): S = |g * w|, g = dL/dw of the cross entropy on one batch.
- GraSP (Wang et al., ICLR 2020): S = -w * (H g), H g the Hessian-gradient product of the loss on
  one batch; GraSP removes the LARGEST scores (their removal reduces the gradient flow least).
  Temperature 1 (the paper's code divides the logits by 200; not done here).
- SynFlow (Tanaka et al., NeurIPS 2020): data-free. R = 1^T |W_hy| h_k for the network made
  linear with absolute weights and an input of ones: h_t = |W_hh| h_{t-1} + |W_xh| 1, h_0 = 0,
  over the sequence's k steps, on the graph the tool measures (a gated cell's gate blocks summed
  into one edge per pair of units, as the unrolled graph does). S = w * dR/dw (so every gate's
  entry of a unit pair gets its own |w| times the pair's derivative). Pruned iteratively: in round
  i of n each matrix keeps remaining^(i/n) of its entries, scores recomputed on the kept ones.
  A recurrent R is a polynomial of degree k in |W_hh|: R overflows any float for long sequences,
  so R, its derivatives and the scores are computed as logarithms (exact ranking, no overflow).
  The readout |W_hy| is the model's `readout.weight` when it has one and a single recurrent layer;
  otherwise a vector of ones.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .masks import kept_count

__all__ = ["keep_largest", "snip_scores", "grasp_scores", "synflow_log_scores", "synflow_masks"]


def keep_largest(scores: torch.Tensor, remaining: float) -> torch.Tensor:
    """Keep exactly round(remaining * numel) entries of largest score (ties by index, -inf last)."""
    flat = scores.detach().flatten()
    keep = kept_count(flat.numel(), remaining)
    mask = torch.zeros(flat.shape, dtype=torch.bool, device=flat.device)
    order = torch.sort(flat, descending=True, stable=True).indices  # stable: ties alike on every device
    mask[order[:keep]] = True
    return mask.reshape(scores.shape)


def _loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    if batch is None:
        raise ValueError("this mask method scores weights on a batch of training data, and none was given")
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def snip_scores(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    """|g * w| for every named matrix of `model.matrices()`."""
    matrices = model.matrices()
    model.train()  # cuDNN's recurrent backward runs in training mode only
    grads = torch.autograd.grad(_loss(model, batch), list(matrices.values()))
    return {name: (g * w).abs().detach() for (name, w), g in zip(matrices.items(), grads, strict=True)}


def grasp_scores(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    """-w * (H g) for every named matrix, H the Hessian of the loss in all of them together."""
    matrices = model.matrices()
    params = list(matrices.values())
    model.train()
    # cuDNN's recurrent kernels have no double backward: the Hessian-vector product runs without them.
    with torch.backends.cudnn.flags(enabled=False):
        g = [t.detach() for t in torch.autograd.grad(_loss(model, batch), params)]
        first = torch.autograd.grad(_loss(model, batch), params, create_graph=True)
        inner = sum((a * b).sum() for a, b in zip(first, g, strict=True))
        hg = torch.autograd.grad(inner, params)
    return {name: (-w * h).detach() for (name, w), h in zip(matrices.items(), hg, strict=True)}


# ----------------------------------------------------------------------------- SynFlow
def _log(values: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(values)


def _log_matvec(log_matrix: np.ndarray, log_vector: np.ndarray) -> np.ndarray:
    """log(M v) from log M and log v (entries of -inf are zeros)."""
    terms = log_matrix + log_vector[None, :]
    top = terms.max(axis=1)
    out = np.full(len(top), -np.inf)
    alive = np.isfinite(top)
    out[alive] = top[alive] + np.log(np.exp(terms[alive] - top[alive, None]).sum(axis=1))
    return out


def synflow_log_scores(xh: np.ndarray, hh: np.ndarray, hy: np.ndarray, steps: int) -> dict[str, np.ndarray]:
    """log(w * dR/dw) of the linear network of nonnegative matrices xh (H x I), hh (H x H) and
    hy (C x H) run for `steps` steps on an input of ones (keys W_xh, W_hh, W_hy), log dR/dw
    (d_W_xh, ...), and log R ("R", a 0-d array).

    Forward b_1 = xh 1, b_t = hh b_{t-1} + xh 1; R = 1^T hy b_k. Adjoint a_k = hy^T 1,
    a_{t-1} = hh^T a_t. Then dR/dhh[i, j] = sum_{t=2..k} a_t[i] b_{t-1}[j],
    dR/dxh[i, j] = sum_{t=1..k} a_t[i], dR/dhy[c, i] = b_k[i]."""
    if steps < 1:
        raise ValueError(f"SynFlow needs a sequence of at least one step, but got {steps}")
    log_xh, log_hh, log_hy = _log(xh), _log(hh), _log(hy)
    drive = _log(xh.sum(axis=1))
    forward = [drive]
    for _ in range(1, steps):
        forward.append(np.logaddexp(_log_matvec(log_hh, forward[-1]), drive))
    adjoint = [_log(hy.sum(axis=0))]  # a_k, then a_{k-1}, ..., a_1
    for _ in range(1, steps):
        adjoint.append(_log_matvec(log_hh.T, adjoint[-1]))
    adjoint.reverse()  # adjoint[t - 1] = a_t
    d_hh = np.full(hh.shape, -np.inf)
    for t in range(2, steps + 1):
        d_hh = np.logaddexp(d_hh, adjoint[t - 1][:, None] + forward[t - 2][None, :])
    d_xh_rows = np.logaddexp.reduce(np.stack(adjoint), axis=0)
    log_r = np.logaddexp.reduce(adjoint[-1] + forward[-1])
    d_xh = np.broadcast_to(d_xh_rows[:, None], xh.shape)
    d_hy = np.broadcast_to(forward[-1][None, :], hy.shape)
    return {"W_xh": log_xh + d_xh, "W_hh": log_hh + d_hh, "W_hy": log_hy + d_hy,
            "d_W_xh": d_xh, "d_W_hh": d_hh, "d_W_hy": d_hy, "R": np.asarray(log_r)}


def _merged(weight: np.ndarray, gates: int) -> np.ndarray:
    hidden = weight.shape[0] // gates
    return weight.reshape(gates, hidden, *weight.shape[1:]).sum(axis=0)


def _gate_scores(log_weight: np.ndarray, log_derivative: np.ndarray, gates: int) -> np.ndarray:
    """Per gate entry: log|w| + log dR/d(the merged entry it sums into)."""
    return log_weight + np.tile(log_derivative, (gates,) + (1,) * (log_derivative.ndim - 1))


def synflow_masks(model: nn.Module, remaining: dict[str, float], rounds: int, steps: int) -> dict[str, torch.Tensor]:
    """SynFlow masks of layer 0's matrices named in `remaining`, after `rounds` rounds."""
    unknown = set(remaining) - {"W_xh", "W_hh"}
    if unknown:
        raise ValueError(f"synflow prunes the first layer's W_xh and W_hh, but got {sorted(unknown)}")
    matrices = model.matrices()
    weights = {n: matrices[n].detach().abs().double().cpu().numpy() for n in ("W_xh", "W_hh")}
    hidden = weights["W_hh"].shape[1]
    gates = weights["W_hh"].shape[0] // hidden
    readout = getattr(model, "readout", None)
    recurrent = getattr(model, "recurrent", None)
    if isinstance(readout, nn.Linear) and getattr(recurrent, "num_layers", 1) == 1:
        hy = readout.weight.detach().abs().double().cpu().numpy()
    else:
        hy = np.ones((1, hidden))
    masks = {n: np.ones(w.shape, dtype=bool) for n, w in weights.items()}
    for round_ in range(1, rounds + 1):
        kept = {n: w * masks[n] for n, w in weights.items()}
        logs = synflow_log_scores(_merged(kept["W_xh"], gates), _merged(kept["W_hh"], gates), hy, steps)
        if not np.isfinite(logs["R"]):
            raise ValueError("SynFlow's synaptic flow R is zero: no path from the input to the output is left")
        for name, fraction in remaining.items():
            score = _gate_scores(_log(kept[name]), logs["d_" + name], gates)
            target = fraction ** (round_ / rounds)
            masks[name] = keep_largest(torch.from_numpy(score), target).numpy() & masks[name]
    device = matrices["W_xh"].device
    return {n: torch.from_numpy(masks[n]).to(device) for n in remaining}
