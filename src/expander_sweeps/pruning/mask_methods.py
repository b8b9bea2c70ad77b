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

__all__ = ["MaskRequest", "ModelMaskRequest", "MaskChoice", "MaskMethod", "STARTS", "SCOPES", "register_mask_method", "unregister_mask_method", "mask_method", "mask_method_names",
           "UnknownMaskMethod", "BUILT_IN_METHODS"]


@dataclass(frozen=True)
class MaskRequest:
    """What a mask method may use to mask one matrix.

    layer: the matrix's name (W_xh, W_hh); weight: its trained dense weights (on the model's
    device); remaining: the fraction of entries to keep, in (0, 1); generator: a CPU generator
    seeded per layer, mask seed and training seed (random methods draw from it, nothing else);
    options: the spec's `masks` section (min_degree, ...); model: the dense model itself (the
    model at initialisation for a method that starts there); batch: `masks.score_batch` training
    examples and their labels (x, y), on the model's device, for data-dependent scores.
    """

    layer: str
    weight: torch.Tensor
    remaining: float
    generator: torch.Generator
    options: Any
    model: Any = None
    batch: tuple[torch.Tensor, torch.Tensor] | None = None


@dataclass(frozen=True)
class ModelMaskRequest:
    """What a method of scope "model" gets: every pruned matrix at once (scores that depend on
    the whole network, like SynFlow's, or a chain of trainings, like a lottery ticket's).

    model: the model (its weights as `start` says; the method may change them in place: they are
    what the trial then trains); remaining: fraction to keep per matrix name; generator, options,
    batch: as in MaskRequest; steps: the sequence length; epochs: `training.epochs`;
    train(model, masks, epochs): train in place with the masks held,
    exactly as the trial trains (data, seed, noise, clipping); checkpoints: a store in the run's
    cache folder for weights a method can reuse across trials (a training.dense_cache.DenseCache:
    get_or_train(key, config, train), locked and checksummed); cache_key names the dense model's
    training setup (same key, same initial weights and training)."""

    model: Any
    remaining: dict[str, float]
    generator: torch.Generator
    options: Any
    batch: tuple[torch.Tensor, torch.Tensor] | None
    train: Callable[[Any, dict[str, torch.Tensor], int], Any]
    checkpoints: Any
    cache_key: str
    steps: int  # the sequence length k
    epochs: int  # training.epochs


@dataclass(frozen=True)
class MaskChoice:
    """A model-scope method's answer when it has also trained the weights it leaves in the model:
    `trained_epochs` of the trial's `training.epochs` are done (a lottery ticket rewound to epoch
    r); the trial trains the rest with the masks held."""

    masks: dict[str, torch.Tensor]
    trained_epochs: int = 0


# Where a trial starts: "trained": the dense model trained `training.epochs`, masked, then
# fine-tuned `training.finetune_epochs` (one-shot pruning after training); "init": the model at
# initialisation, masked, then trained `training.epochs` with the mask held (pruning at
# initialisation; no dense model is trained).
STARTS = ("trained", "init")
# "layer": make(MaskRequest) is called once per pruned matrix; "model": make(ModelMaskRequest)
# once per trial, returning {matrix: mask} or a MaskChoice.
SCOPES = ("layer", "model")


@dataclass(frozen=True)
class MaskMethod:
    """name: the spec's word for it; make: request -> bool mask of the weight's shape (scope
    "model": -> {matrix: mask} or MaskChoice); description: one line for `expander-sweeps methods`
    and the docs; options: the `masks.*` fields it reads, recorded as trial parameters (so the
    dashboards show them); start and scope: see STARTS and SCOPES; needs_batch: whether the
    request carries a batch of training data; reference: the paper it follows (docs, report)."""

    name: str
    make: Callable[[Any], Any]
    description: str
    options: tuple[str, ...] = ()
    start: str = "trained"
    scope: str = "layer"
    needs_batch: bool = False
    reference: str = ""

    def __post_init__(self) -> None:
        if self.start not in STARTS:
            raise ValueError(f"mask method {self.name!r}: start must be one of {STARTS}, but got {self.start!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"mask method {self.name!r}: scope must be one of {SCOPES}, but got {self.scope!r}")


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
# Pruning at initialisation and lottery tickets (scores.py, lottery.py: see docs/definitions.md).
def _snip(r: MaskRequest) -> torch.Tensor:
    from .scores import keep_largest, snip_scores
    return keep_largest(snip_scores(r.model, r.batch)[r.layer], r.remaining)


def _grasp(r: MaskRequest) -> torch.Tensor:
    from .scores import grasp_scores, keep_largest
    return keep_largest(-grasp_scores(r.model, r.batch)[r.layer], r.remaining)  # GraSP removes the largest


def _synflow(r: ModelMaskRequest) -> dict[str, torch.Tensor]:
    from .scores import synflow_masks
    return synflow_masks(r.model, r.remaining, r.options.synflow_rounds, r.steps)


def _lottery(r: ModelMaskRequest) -> MaskChoice:
    from .lottery import lottery_ticket
    masks, trained_epochs = lottery_ticket(r)
    return MaskChoice(masks, trained_epochs)


register_mask_method(MaskMethod(
    "snip", _snip, "at initialisation: keep the largest |g * w| of each layer, g the loss gradient on a batch",
    options=("score_batch",), start="init", needs_batch=True,
    reference="Lee, Ajanthan, Torr, SNIP: single-shot network pruning based on connection sensitivity, ICLR 2019"))
register_mask_method(MaskMethod(
    "grasp", _grasp, "at initialisation: remove the largest -w * (H g) of each layer (gradient-flow preserving), "
    "H g the Hessian-gradient product on a batch", options=("score_batch",), start="init", needs_batch=True,
    reference="Wang, Zhang, Grosse, Picking winning tickets before training by preserving gradient flow, ICLR 2020"))
register_mask_method(MaskMethod(
    "synflow", _synflow, "at initialisation, data-free: iterative synaptic flow on the network's linearised "
    "unrolled graph, each layer pruned to remaining^(i/rounds) in round i", options=("synflow_rounds",),
    start="init", scope="model",
    reference="Tanaka, Kunin, Yamins, Ganguli, Pruning neural networks without any data by iteratively "
              "conserving synaptic flow, NeurIPS 2020"))
register_mask_method(MaskMethod(
    "lottery", _lottery, "iterative magnitude pruning with rewinding: prune `lottery_share` of the remaining "
    "weights of each layer, rewind to epoch `rewind_epoch`, retrain; repeated until the fraction is reached",
    options=("lottery_share", "rewind_epoch"), start="init", scope="model",
    reference="Frankle, Carbin, The lottery ticket hypothesis, ICLR 2019; Frankle, Dziugaite, Roy, Carbin, "
              "Linear mode connectivity and the lottery ticket hypothesis, ICML 2020 (rewinding)"))
BUILT_IN_METHODS = mask_method_names()  # the report defines the others (plug-ins') in its header
