"""Mask methods as plug-ins: one registry of the ways a trial can choose the edges it keeps.

A mask method is one `MaskMethod` object: its name (what `masks.method` says in a spec), a
one-line description, the `masks.*` options it reads, and the function that makes one layer's
mask from a `MaskRequest`. The spec checks `masks.method` against this registry, the search
space offers its names, and the trial dispatches through it; nothing else lists methods.

Adding one (see docs/architecture.md):

    from expander_sweeps.plugins import MaskMethod, register_mask_method

    def largest_rows(request):           # keep the rows of largest norm, say
        ...
        return mask                       # bool tensor of request.weight's shape

    register_mask_method(MaskMethod("largest_rows", largest_rows, "rows of largest L2 norm"))

and name the module under `plugins:` in the spec (so every worker process imports it too).
A grid study records the method choices it began with: a method registered later runs in a new
study, and leaves every older study loadable and relaunchable (study.check_methods).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..registry import Registry

if TYPE_CHECKING:  # torch is imported by the methods when they run, not with the registry:
    import torch  # the spec checks names against it in processes that never train (trackers)

__all__ = ["MaskRequest", "MaskMethod", "register_mask_method", "unregister_mask_method", "mask_method", "mask_method_names",
           "UnknownMaskMethod", "BUILT_IN_METHODS"]


@dataclass(frozen=True)
class MaskRequest:
    """What a mask method may use to mask one matrix.

    layer: the matrix's name (W_xh, W_hh); weight: its trained dense weights (on the model's
    device); remaining: the fraction of entries to keep, in (0, 1); generator: a CPU generator
    seeded per layer, mask seed and training seed (random methods draw from it, nothing else);
    options: the spec's `masks` section (min_degree, ...); model: the dense model itself.
    """

    layer: str
    weight: torch.Tensor
    remaining: float
    generator: torch.Generator
    options: Any
    model: Any = None


@dataclass(frozen=True)
class MaskMethod:
    """name: the spec's word for it; make: request -> bool mask of the weight's shape;
    description: one line for `expander-sweeps methods` and the docs; options: the `masks.*`
    fields it reads, recorded as trial parameters (so the dashboards show them)."""

    name: str
    make: Callable[[MaskRequest], torch.Tensor]
    description: str
    options: tuple[str, ...] = ()


class UnknownMaskMethod(KeyError):
    """A mask method name no registration provides."""


_REGISTRY: Registry[MaskMethod] = Registry("mask method", "it becomes a parameter value and a metric name")


def register_mask_method(method: MaskMethod, replace: bool = False) -> MaskMethod:
    """Add a method (a name already taken is an error unless `replace`)."""
    return _REGISTRY.add(method.name, method, replace)


def unregister_mask_method(name: str) -> None:
    """Remove a method (tests that register one clean up with this)."""
    _REGISTRY.remove(name)


def mask_method(name: str) -> MaskMethod:
    try:
        return _REGISTRY.get(name)
    except KeyError as err:
        raise UnknownMaskMethod(str(err)) from None


def mask_method_names() -> tuple[str, ...]:
    """Every registered method, the built-in ones first, in registration order."""
    return _REGISTRY.names()


# ----------------------------------------------------------------------------- built-in methods
def _magnitude(r: MaskRequest) -> torch.Tensor:
    from .masks import magnitude_mask
    return magnitude_mask(r.weight, r.remaining)


def _random(r: MaskRequest) -> torch.Tensor:
    from .masks import random_mask
    return random_mask(r.weight.shape, r.remaining, r.generator)


def _regular(r: MaskRequest) -> torch.Tensor:
    from .masks import regular_mask
    return regular_mask(r.weight.shape, r.remaining, r.generator)


def _magnitude_min_degree(r: MaskRequest) -> torch.Tensor:
    from .masks import magnitude_min_degree_mask
    return magnitude_min_degree_mask(r.weight, r.remaining, r.options.min_degree)


register_mask_method(MaskMethod("magnitude", _magnitude, "keep the largest |w| of each layer (one-shot, layer-wise)"))
register_mask_method(MaskMethod("random", _random, "a uniformly random mask at the same density (a control)"))
register_mask_method(MaskMethod(
    "regular", _regular, "a random biregular mask: every output keeps round(remaining * inputs) inputs, input "
    "degrees differ by at most one (an expander-preserving control)"))
register_mask_method(MaskMethod(
    "magnitude_min_degree", _magnitude_min_degree, "magnitude, but every row and column keeps at least "
    "`min_degree` edges", options=("min_degree",)))
BUILT_IN_METHODS = mask_method_names()  # the report defines the others (plug-ins') in its header
