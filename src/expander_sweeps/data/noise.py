"""Zero-mean Gaussian input noise on a fraction p of the values, its spread given as a VARIANCE."""

from __future__ import annotations

import math

import torch

from ..spec import NoiseSpec

__all__ = ["add_noise", "noise_std", "noisy_test_sets"]


def noise_std(variance: float) -> float:
    """The paper gives the spread as a variance (sigma); torch.randn needs a standard deviation."""
    return math.sqrt(variance)


def add_noise(x: torch.Tensor, fraction: float, variance: float, generator: torch.Generator) -> torch.Tensor:
    """A copy of x with zero-mean Gaussian noise of the given VARIANCE on a random `fraction` of its values.

    Each value is chosen independently with probability `fraction`; values are not clipped.
    The generator must live on x's device.
    """
    if variance == 0.0 or fraction == 0.0:
        return x.clone()
    chosen = torch.rand(x.shape, generator=generator, device=x.device) < fraction
    noise = torch.randn(x.shape, generator=generator, device=x.device) * noise_std(variance)
    return x + noise * chosen


def noisy_test_sets(x: torch.Tensor, noise: NoiseSpec) -> dict[float, torch.Tensor]:
    """The noisy test inputs, one per variance (0 = clean), identical in every trial of a sweep."""
    sets = {}
    for index, variance in enumerate(noise.test_variances):
        generator = torch.Generator(device=x.device).manual_seed(noise.seed * 1000 + index)
        sets[variance] = add_noise(x, noise.fraction, variance, generator)
    return sets
