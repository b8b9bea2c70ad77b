"""Trials fine-tuned together: which engine a launch uses, how many trials a group takes, and
running one group end to end with the batched engine (batched.py).

A group is trials that share a dense model (seed and training noise) and every fine-tuning
setting, and differ only in their masks (layer, fraction, method). Each still ends as its own
trial, with exactly the files and results `trial.run_trial` gives it (`trial.finish_trial`
writes both). A failure while a trial is prepared or finished fails that trial alone; a failure
of the shared fine-tuning fails every trial of the group; a model that diverges fails its own.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..pruning.mask_methods import mask_method
from ..reporting.claim_stats import pack_correct
from ..results import accuracy_key
from ..spec import SweepSpec
from ..training.batched import (
    StackedClassifier,
    StackedMasks,
    correct_predictions_batched,
    fit_batched,
    per_model_bytes,
)
from .space import TrialPlan
from .trial import (
    PreparedTrial,
    SweepContext,
    TrialHooks,
    TrialResult,
    finish_trial,
    phase_seconds,
    prepare_trial,
)
from .workers import WORKER_COUNT_VARIABLE  # set by `launch --workers N` for its workers

__all__ = ["EngineChoice", "choose_engine", "group_key", "group_limit", "run_group", "WORKER_COUNT_VARIABLE"]

# Of the device memory free when a group starts, the share one worker's group may plan to use.
MEMORY_SHARE = 0.8
# Cells the batched engine fine-tunes faster than one model after another on a CPU (see choose_engine).
CPU_BATCHED_CELLS = ("rnn", "gru")


@dataclass(frozen=True)
class EngineChoice:
    engine: str  # "per_trial" or "batched"
    why: str  # one line for the launch


def choose_engine(spec: SweepSpec, device: torch.device, point_given: bool) -> EngineChoice:
    """`training.engine` resolved for this launch. `auto`: batched on CUDA; on a CPU batched for
    RNN and GRU cells and per trial for LSTM, as measured on 2 cores (benchmarks/batched_engine.py,
    8 models: RNN 1.6x, GRU 1.15x, LSTM 0.47x of one model after another)."""
    asked = spec.training.engine
    if asked == "per_trial":
        return EngineChoice("per_trial", "training.engine: per_trial")
    reason = None
    if spec.model.factory is not None:
        reason = "a model from model.factory is the user's own code; the batched engine stacks the built-in models only"
    if reason is None and spec.study.sampler != "grid":
        reason = f"study.sampler {spec.study.sampler} asks for one trial at a time; only grid points can be grouped"
    if reason is None and point_given:
        reason = "this launch runs one point"
    if reason is not None:
        return EngineChoice("per_trial", f"per_trial, not batched: {reason}")
    if asked == "auto" and device.type != "cuda" and spec.model.cell not in CPU_BATCHED_CELLS:
        return EngineChoice("per_trial", f"per_trial: training.engine auto, an {spec.model.cell.upper()} on a CPU "
                                         "(stacked, its gates ran at half the speed of one model after another)")
    return EngineChoice("batched", f"batched: trials of one dense model fine-tuned together, up to "
                                   f"{spec.training.group_size} at a time (training.engine: {asked})")


def group_key(plan: TrialPlan) -> tuple | None:
    """Trials with equal keys share a dense model and every fine-tuning setting; None for a trial
    that starts at initialisation (it trains alone: its method may train a chain of its own)."""
    if mask_method(plan.mask_method).start != "trained":
        return None
    return (plan.seed, plan.train_variance)


def group_limit(spec: SweepSpec, ctx: SweepContext, waiting: int) -> int:
    """How many trials this worker takes into its next group, `waiting` (its first one included)
    being the trials of that dense model still waiting: at most `training.group_size`, at most
    its fair share when several workers take trials of one study (so that no worker idles while
    another holds everything), and no more than fits in its share of the free device memory
    (MEMORY_SHARE of it, divided among the workers)."""
    workers = _worker_count()
    limit = min(spec.training.group_size, max(1, math.ceil(waiting / workers)))
    if ctx.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(ctx.device)
        one = per_model_bytes(ctx.new_model(0), spec.training.batch_size, ctx.seq_len)
        limit = min(limit, max(1, int(free * MEMORY_SHARE / workers) // max(1, one)))
    return limit


def _worker_count() -> int:
    value = os.environ.get(WORKER_COUNT_VARIABLE, "")
    return int(value) if value.isdigit() and int(value) >= 1 else 1


def _matrix_keys(model: torch.nn.Module) -> dict[str, str]:
    """The paper's matrix names -> the model's state_dict keys (W_hh -> recurrent.weight_hh_l0)."""
    by_id = {id(param): key for key, param in model.named_parameters()}
    return {name: by_id[id(param)] for name, param in model.matrices().items()}


def run_group(ctx: SweepContext, plans: list[TrialPlan], trial_dirs: list[Path],
              hooks: TrialHooks | None = None) -> list[TrialResult | Exception]:
    """Fine-tune `plans` (one group_key) as one stacked model; per trial, its result or the error
    it failed with, in the order of `plans`. `hooks.on_epoch` sees the dense epochs and, for the
    progress display, the first live model's fine-tuning epochs."""
    hooks = hooks or TrialHooks()
    started = time.perf_counter()
    outcomes: list[TrialResult | Exception | None] = [None] * len(plans)
    first = plans[0]
    spec = ctx.spec.for_trial(first.seed, first.mask_method)
    model, trained, meta, dense_file = ctx.dense_model(spec, first.train_variance, hooks)
    dense_seconds = time.perf_counter() - started
    state = model.state_dict()
    prepared: dict[int, PreparedTrial] = {}
    for index, plan in enumerate(plans):
        try:  # the dense model was trained (if at all) for the first trial of the group
            prepared[index] = prepare_trial(ctx, plan, hooks, dense=(state, trained and index == 0, meta, dense_file))
        except Exception as err:  # noqa: BLE001 - this trial fails, the others go on
            outcomes[index] = err
    for one in prepared.values():
        one.dense_seconds, one.started = dense_seconds, started  # the group's, shared
    live = sorted(prepared)
    tuning = time.perf_counter()
    if live:
        try:
            _fine_tune_together(ctx, [prepared[i] for i in live], hooks)
        except Exception as err:  # noqa: BLE001 - the shared fine-tuning failed: every live trial fails
            for index in live:
                outcomes[index] = err
            live = []
    finishing = time.perf_counter()
    share = (finishing - started) / max(1, len(plans))
    for index in live:
        result = prepared[index]
        if isinstance(result.outcome, Exception):
            outcomes[index] = result.outcome
            continue
        history, accuracies, correct = result.outcome
        finished_at = time.perf_counter()
        try:
            outcome = finish_trial(ctx, result, history, accuracies, correct, trial_dirs[index], share)
        except Exception as err:  # noqa: BLE001
            outcomes[index] = err
            continue
        times = phase_seconds(result, tuning, finishing)
        times["finish"] = round(time.perf_counter() - finished_at, 3)  # this trial's own
        outcome.phase_seconds = times
        outcomes[index] = outcome
    return outcomes  # type: ignore[return-value]


def _fine_tune_together(ctx: SweepContext, group: list[PreparedTrial], hooks: TrialHooks) -> None:
    """Stack the group's masked models, measure them masked, fine-tune them, measure them again;
    each PreparedTrial gets `.outcome`: (history, accuracies, packed hits) or its error. Its model
    is loaded with its fine-tuned weights."""
    spec = group[0].spec
    t = spec.training
    keys = _matrix_keys(group[0].model)
    stacked = StackedClassifier([p.model for p in group]).to(ctx.device)
    masked_names = sorted({name for p in group for name in p.masks})
    masks = StackedMasks(stacked, {
        keys[name]: torch.stack([p.masks[name] if name in p.masks else
                                 torch.ones_like(p.model.matrices()[name], dtype=torch.bool) for p in group])
        for name in masked_names
    })
    for variance, x in ctx.x_test_by_variance.items():
        right = correct_predictions_batched(stacked, x, ctx.y_test, t.eval_batch_size)
        for p, hits in zip(group, right.sum(1).tolist(), strict=True):  # as train.accuracy counts
            p.metrics["masked/" + accuracy_key(variance)] = hits / len(x)
    if hooks.on_phase:
        hooks.on_phase("finetune", t.finetune_epochs, -(-len(ctx.x_train) // t.batch_size))

    def on_epoch(index: int, stats) -> None:
        # Progress shows the first model's curve; the trackers get every model's once it is done.
        if hooks.on_epoch and index == 0:
            hooks.on_epoch(stats)

    fitted = fit_batched(stacked, ctx.x_train, ctx.y_train, phase="finetune", epochs=t.finetune_epochs,
                         batch_size=t.batch_size, lr=t.lr, seed=t.seed + 1, masks=masks,
                         noise_fraction=spec.noise.fraction, noise_variance=group[0].plan.train_variance,
                         on_epoch=on_epoch, on_batch=hooks.on_batch, clip_grad_norm=t.clip_grad_norm)
    hits = {variance: correct_predictions_batched(stacked, x, ctx.y_test, t.eval_batch_size).cpu().numpy()
            for variance, x in ctx.x_test_by_variance.items()}
    for n, p in enumerate(group):
        if fitted.errors[n] is not None:
            p.outcome = fitted.errors[n]
            continue
        p.model.load_state_dict(stacked.state_dict_of(n))
        accuracies = {accuracy_key(v): float(np.mean(right[n])) for v, right in hits.items()}
        correct = {accuracy_key(v): pack_correct(right[n]) for v, right in hits.items()}
        p.outcome = (fitted.histories[n], accuracies, correct)
