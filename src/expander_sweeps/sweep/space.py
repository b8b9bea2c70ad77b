"""THE search space of a sweep: what one trial does (a `TrialPlan`), every plan of a grid, a
plan suggested from an Optuna trial, a plan as Optuna parameters and back, the parameters a
`wandb agent` passes, and the space as a W&B sweep config.

Adding a study dimension means changing this module (and the spec): every other module asks
it. Optuna parameter names: `remaining` + `layer` (schedule each; the all-dense point has no `layer`), `remaining` (tied),
`remaining_W_xh`, `remaining_W_hh` (independent), `train_noise_variance` (noise at training),
`mask_method` and `seed` (only when the spec lists several, so single-valued studies keep the
parameters they always had).

Only the spec and Optuna: no torch, no training stack.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import optuna

from ..pruning.mask_methods import mask_method_names
from ..spec import RangeSpec, SweepSpec

__all__ = ["TrialPlan", "grid_plans", "suggest_plan", "params_of", "plan_of", "agent_point", "AgentArgumentError",
           "point_label", "point_key", "wandb_sweep_config"]


@dataclass(frozen=True)
class TrialPlan:
    """What one trial does: the remaining fraction of each maskable layer, the training noise,
    the mask method and the seed."""

    remaining: dict[str, float]  # every layer in spec.masks.layers; 1.0 = left dense
    train_variance: float = 0.0
    mask_method: str = "magnitude"
    seed: int = 0

    @property
    def pruned_layers(self) -> list[str]:
        return [name for name, r in self.remaining.items() if r < 1.0]

    def label(self) -> str:
        parts = [f"{name} {100 * r:g}%" for name, r in self.remaining.items()]
        noise = f", train noise var {self.train_variance:g}" if self.train_variance else ""
        method = f", {self.mask_method}" if self.pruned_layers else ""
        return ", ".join(parts) + noise + method + f", seed {self.seed}"


def _is_dense(remaining: dict[str, float]) -> bool:
    return all(r >= 1.0 for r in remaining.values())


def dense_method(method: str, spec: SweepSpec) -> str:
    """The method whose all-dense trial stands for `method`'s: the first of the spec's methods
    that starts where it does (mask_methods.STARTS). A one-shot method's dense trial is the dense
    model fine-tuned; a method at initialisation has its own, trained from initialisation."""
    from ..pruning.mask_methods import mask_method

    start = mask_method(method).start
    return next(m for m in spec.masks.methods if mask_method(m).start == start) if method in spec.masks.methods \
        else method


def _canonical(plan: TrialPlan, spec: SweepSpec) -> TrialPlan:
    """The all-dense point is one trial whatever the layer or mask method: no method changes a
    layer that keeps every edge, so it carries the first method (one per trial shape: see
    dense_method)."""
    if _is_dense(plan.remaining):
        first = dense_method(plan.mask_method, spec)
        if plan.mask_method != first:
            return TrialPlan(plan.remaining, plan.train_variance, first, plan.seed)
    return plan


def grid_plans(spec: SweepSpec) -> list[TrialPlan]:
    """Every distinct trial of a grid sweep, densest first, the all-dense point once per seed."""
    fractions = sorted(spec.masks.remaining, reverse=True)
    layers = spec.masks.layers
    if spec.masks.schedule == "each":
        remainings = [{n: (f if n == pruned else 1.0) for n in layers} for pruned in layers for f in fractions]
    elif spec.masks.schedule == "tied":
        remainings = [dict.fromkeys(layers, f) for f in fractions]
    else:
        remainings = [dict(zip(layers, combo, strict=True))
                      for combo in itertools.product(fractions, repeat=len(layers))]
    variances = list(spec.noise.variances) if spec.noise.at_training else [0.0]
    plans, seen = [], set()
    for seed in spec.training.seeds:
        for variance in variances:
            for remaining in remainings:
                for method in spec.masks.methods:
                    plan = _canonical(TrialPlan(remaining, variance, method, seed), spec)
                    key = (tuple(plan.remaining.items()), variance, plan.mask_method, seed)
                    if key not in seen:
                        seen.add(key)
                        plans.append(plan)
    return plans


def _suggest_fraction(trial: optuna.Trial, name: str, spec: SweepSpec, log_scale: bool) -> float:
    space = spec.masks.remaining
    if isinstance(space, RangeSpec):
        return trial.suggest_float(name, space.low, space.high, log=space.log)
    if spec.study.sampler == "grid":
        # Grid points arrive as fixed parameters. A float distribution over (0, 1], unlike a
        # categorical one, lets a later launch add fractions to the grid of an existing study;
        # on a log scale, as the fractions are spaced (optuna-dashboard draws its axes so).
        # Studies begun before this kept their linear one (Optuna refuses to switch). Its low end
        # is the grid's smallest fraction, so that optuna-dashboard's plots span the fractions
        # swept, not six decades (Optuna compares only the scale, not the range, between trials:
        # a grid extended with a smaller fraction is still accepted).
        low = min(space) if log_scale else 0.0
        return trial.suggest_float(name, low, 1.0, log=log_scale)
    return trial.suggest_categorical(name, list(space))


def suggest_plan(trial: optuna.Trial, spec: SweepSpec, log_scale: bool = True,
                 method_choices: tuple[str, ...] | None = None) -> TrialPlan:
    """The plan of an Optuna trial: fixed parameters for a grid point, sampled otherwise.
    `log_scale=False` only for a grid study whose trials recorded linear fractions
    (`study.fractions_on_log_scale`); `method_choices`: the mask-method choices a grid study's
    trials recorded (`study.recorded_method_choices`), kept when the tool has more methods now."""
    layers = spec.masks.layers
    if spec.masks.schedule == "each":
        # The fraction first: the all-dense point prunes no layer, so it has no `layer`
        # parameter (dashboards show it as dense, not as "layer W_xh at 100%").
        fraction = _suggest_fraction(trial, "remaining", spec, log_scale)
        pruned = trial.suggest_categorical("layer", list(layers)) if fraction < 1.0 else None
        remaining = {name: (fraction if name == pruned else 1.0) for name in layers}
    elif spec.masks.schedule == "tied":
        fraction = _suggest_fraction(trial, "remaining", spec, log_scale)
        remaining = dict.fromkeys(layers, fraction)
    else:
        remaining = {name: _suggest_fraction(trial, f"remaining_{name}", spec, log_scale) for name in layers}
    grid = spec.study.sampler == "grid"
    variance = 0.0
    if spec.noise.at_training and grid:
        variance = trial.suggest_float("train_noise_variance", 0.0, max(1.0, *spec.noise.variances))
    elif spec.noise.at_training:
        variance = trial.suggest_categorical("train_noise_variance", list(spec.noise.variances))
    methods, seeds = spec.masks.methods, spec.training.seeds
    method = methods[0]
    if len(methods) > 1:
        # Grid: every known method as a choice, so a later launch may add one to the study.
        # (An existing study keeps the choices it recorded: Optuna refuses a changed list.)
        choices = list(method_choices or mask_method_names()) if grid else methods
        method = trial.suggest_categorical("mask_method", choices)
    seed = seeds[0]
    if len(seeds) > 1:
        seed = (trial.suggest_int("seed", -(2**31), 2**31 - 1) if grid
                else trial.suggest_categorical("seed", seeds))
    return TrialPlan(remaining, variance, method, seed)


def params_of(plan: TrialPlan, spec: SweepSpec) -> dict[str, Any]:
    """The Optuna parameters that make `suggest_plan` return `plan`."""
    layers = spec.masks.layers
    if spec.masks.schedule == "each":
        pruned = plan.pruned_layers
        params: dict[str, Any] = ({"layer": pruned[0], "remaining": plan.remaining[pruned[0]]} if pruned
                                  else {"remaining": 1.0})  # the dense point: no layer is pruned
    elif spec.masks.schedule == "tied":
        params = {"remaining": plan.remaining[layers[0]]}
    else:
        params = {f"remaining_{n}": plan.remaining[n] for n in layers}
    if spec.noise.at_training:
        params["train_noise_variance"] = plan.train_variance
    if len(spec.masks.methods) > 1:
        params["mask_method"] = plan.mask_method
    if len(spec.training.seeds) > 1:
        params["seed"] = plan.seed
    return params


def plan_of(params: dict[str, Any], spec: SweepSpec) -> TrialPlan:
    """The plan a set of Optuna parameters stands for (the inverse of `params_of`). Parameters
    of studies begun by earlier versions (the dense point with a `layer`) are read too."""
    return suggest_plan(optuna.trial.FixedTrial(params), spec)


def point_key(params: dict[str, Any], spec: SweepSpec) -> tuple:
    """What makes two sets of parameters the same trial: the canonical plan they stand for (so
    the dense point recorded with a `layer` by an earlier version is the dense point). Parameters
    this spec cannot read (a space since narrowed) are compared as they are."""
    try:
        plan = _canonical(plan_of(params, spec), spec)
    except ValueError:
        return ("params",) + tuple(sorted((k, float(v) if isinstance(v, (int, float)) else v)
                                          for k, v in params.items()))
    return ("plan", tuple(plan.remaining.items()), plan.train_variance, plan.mask_method, plan.seed)


class AgentArgumentError(ValueError):
    """An argument of `agent-trial` that is not --name=value, or not a value of the space."""


_TEXT_PARAMS = ("layer", "mask_method")


def point_label(plan: TrialPlan, spec: SweepSpec) -> str:
    """One grid point as a W&B parameter value: its Optuna parameters as `name=value,...`."""
    return ",".join(f"{name}={value}" for name, value in params_of(plan, spec).items())


def _expand_points(arguments: list[str]) -> list[str]:
    """`--point=layer=W_xh,remaining=0.3` (a grid point as exported) -> `--layer=W_xh --remaining=0.3`."""
    expanded = []
    for argument in arguments:
        if argument.startswith("--point="):
            expanded.extend(f"--{part}" for part in argument.removeprefix("--point=").split(",") if part)
        else:
            expanded.append(argument)
    return expanded


def agent_point(arguments: list[str], spec: SweepSpec) -> dict[str, Any]:
    """The Optuna parameters of `--name=value` arguments (what `wandb agent` passes; a grid's
    `--point=name=value,...` too), with the all-dense point made canonical (one trial, whichever
    layer and mask method the agent drew)."""
    raw: dict[str, Any] = {}
    for argument in _expand_points(arguments):
        name, sep, value = argument.removeprefix("--").partition("=")
        if not sep:
            raise AgentArgumentError(f"agent-trial expects --name=value arguments, but got {argument!r}")
        if name in _TEXT_PARAMS:
            raw[name] = value
            continue
        try:
            raw[name] = int(value) if name == "seed" else float(value)
        except ValueError:
            raise AgentArgumentError(f"agent-trial: --{name} must be a number, but got {value!r}") from None
    names = set().union(*(params_of(plan, spec) for plan in grid_plans(spec))) if spec.study.sampler == "grid" else None
    wrong = f"agent-trial: this spec's parameters are {sorted(names or [])}, but got {sorted(raw)}"
    if names is not None and not set(raw) <= names:
        raise AgentArgumentError(wrong)
    try:
        plan = plan_of(raw, spec)
    except ValueError as err:
        missing = names is not None and "not found" in str(err)
        raise AgentArgumentError(wrong if missing else f"agent-trial: {err}") from None
    return params_of(_canonical(plan, spec), spec)


def wandb_sweep_config(spec: SweepSpec, spec_path: str) -> dict[str, Any]:
    """The sweep as a W&B sweep config, for people who run `wandb agent`: each agent run calls
    `expander-sweeps agent-trial SPEC --name=value ...`, which runs that point into the study.

    A grid is one parameter, `point`, whose values are the study's distinct grid points: W&B's
    grid is the product of its parameters, which would hold the all-dense point once per layer,
    mask method and so on. Sampled studies keep one W&B parameter per dimension."""
    if spec.study.sampler == "grid":
        return _wandb_config(spec, spec_path, {"point": {"values": [point_label(p, spec) for p in grid_plans(spec)]}})
    remaining = spec.masks.remaining
    if isinstance(remaining, RangeSpec):
        fraction = {"min": remaining.low, "max": remaining.high,
                    "distribution": "log_uniform_values" if remaining.log else "uniform"}
    else:
        fraction = {"values": sorted(remaining, reverse=True)}
    parameters: dict[str, Any] = {}
    if spec.masks.schedule == "each":
        parameters["layer"] = {"values": list(spec.masks.layers)}
        parameters["remaining"] = fraction
    elif spec.masks.schedule == "tied":
        parameters["remaining"] = fraction
    else:
        parameters.update({f"remaining_{layer}": fraction for layer in spec.masks.layers})
    if spec.noise.at_training:
        parameters["train_noise_variance"] = {"values": list(spec.noise.variances)}
    if len(spec.masks.methods) > 1:
        parameters["mask_method"] = {"values": list(spec.masks.methods)}
    if len(spec.training.seeds) > 1:
        parameters["seed"] = {"values": list(spec.training.seeds)}
    return _wandb_config(spec, spec_path, parameters)


def _wandb_config(spec: SweepSpec, spec_path: str, parameters: dict[str, Any]) -> dict[str, Any]:
    method = {"grid": "grid", "tpe": "bayes"}.get(spec.study.sampler, "random")
    config = {
        "name": spec.name,
        "project": spec.tracking.wandb.project or spec.name,
        "method": method,
        # W&B sweeps optimise one metric: a multi-objective study's first objective (accuracy).
        "metric": {"name": "acc/clean", "goal": "maximize"},
        "parameters": parameters,
        "program": "expander-sweeps",  # the command below spells it out; W&B shows it as the sweep's program
        "command": ["${env}", "expander-sweeps", "agent-trial", str(spec_path), "${args}"],
    }
    if len(spec.study.objectives) > 1:
        config["description"] = (f"W&B optimises acc/clean only; the study's other objective(s) "
                                 f"({', '.join(o for o in spec.study.objectives if o != 'accuracy')}) are in "
                                 "every run's config and summary for the parallel-coordinates panel")
    if spec.study.n_trials is not None:
        config["run_cap"] = spec.study.n_trials
    return config
