"""What a trial's results are called, when a layer counts as Ramanujan, and the format of a
pruned checkpoint: one home for the names every other module reads and writes.

Result names are flat and human-readable; the same names land in the Optuna study, in MLflow
and W&B, and in the report:
    acc/clean, acc/var_0.15, ...        test accuracy, clean and per noise variance
    dense/acc/clean, ...                the dense model before masking
    masked/acc/clean                    right after masking, before fine-tuning
    n_test                              test examples behind every accuracy
    n_train                             training examples (dense training and fine-tuning)
    correct (study only, a dict)        per accuracy name, which test examples were right
                                        (base64 of packed bits): the report pairs a pruned trial
                                        with the dense trial of its seed on the same images
    W_xh/binary/lambda_2, step/weighted/delta_s, ...   spectra per graph and weighting, of the
                                        weights that were evaluated (after fine-tuning)
    W_xh/weighted_at_mask/lambda_2, ... the weighted layer and step graphs at masking time
    W_xh.i/binary/delta_r, ...          per gate block of a stacked LSTM/GRU matrix
    unrolled/binary/lambda_2, ...       the whole network unrolled over k steps
    W_xh/kept_fraction                  edges the mask actually kept

Only the standard library at import time: the report reads these names without torch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .graphs.graph_measures import quantity

__all__ = [
    "CORRECT_ATTR",
    "PHASE_SECONDS_ATTR",
    "timing_metrics",
    "GATES",
    "RAMANUJAN_BOUNDS",
    "bound_label",
    "accuracy_key",
    "spectrum_key",
    "kept_key",
    "ramanujan",
    "trial_label",
    "for_trackers",
    "ALIAS_RULES",
    "choose_aliases",
    "save_checkpoint",
    "load_checkpoint",
]

# Gate order of PyTorch's stacked weight matrices.
GATES = {"rnn": ("h",), "lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}
# The bounds whose signs make a layer Ramanujan (Hoang et al.); every bound the report tracks,
# built-in or a plug-in's, is in the registry (graph_measures.bound_names).
RAMANUJAN_BOUNDS = ("delta_r", "delta_s")
CHECKPOINT_FORMAT = 1
CORRECT_ATTR = "correct"


PHASE_SECONDS_ATTR = "phase_seconds"  # trial user attribute: wall seconds per step of the trial


def timing_metrics(phase_seconds: dict[str, float] | None, started: float | None, ended: float | None) -> dict[str, float]:
    """What the trackers get of a trial's timing: `seconds/<step>` per step (dense, prepare,
    finetune, finish; in a batched group all but finish are the group's) and `seconds/trial`, from
    the trial's start to its end (Unix seconds). Not results: they go to trackers, not to reports."""
    metrics = {f"seconds/{step}": float(value) for step, value in (phase_seconds or {}).items()}
    if started is not None and ended is not None:
        metrics["seconds/trial"] = round(ended - started, 3)
    return metrics


def accuracy_key(variance: float) -> str:
    """`acc/clean` for clean data, `acc/var_0.3` at noise variance 0.3."""
    return "acc/clean" if variance == 0 else f"acc/var_{variance:g}"


def spectrum_key(graph: str, weighting: str, quantity: str) -> str:
    """`W_hh/binary/delta_r`: a quantity of one graph (layer, gate block, step, unrolled)."""
    return f"{graph}/{weighting}/{quantity}"


def bound_label(name: str) -> str:
    """How reports write a bound (`delta_r` -> `Delta_R`), from its registration."""
    return quantity(name).label


def kept_key(layer: str) -> str:
    return f"{layer}/kept_fraction"


def ramanujan(metrics: dict[str, Any], layer: str) -> bool | None:
    """Whether a layer's binary graph has the Ramanujan property: both Delta_R and Delta_S > 0.
    None when it cannot be said: a bound is missing or undefined (a degenerate graph). A dense
    layer's unbounded (+inf) bounds count as having it."""
    values = [metrics.get(spectrum_key(layer, "binary", b)) for b in RAMANUJAN_BOUNDS]
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
        return None
    return all(float(v) > 0 for v in values)


# Each registry alias's rule, in the words put on the model version (or artifact) it points at.
ALIAS_RULES = {
    "dense": "the trial with every maskable layer dense",
    "best": "the highest clean test accuracy",
    "sparsest-ramanujan": "the fewest kept edges among versions whose every pruned layer keeps Delta_R > 0 "
                          "and Delta_S > 0 (binary layer graph) and whose clean accuracy is within {points} "
                          "point(s) (report.drop_threshold) of the dense trial of the same seed; ties: the "
                          "higher accuracy",
}


def choose_aliases(trials: list[dict[str, Any]], layers: list[str], tolerance: float) -> dict[str, dict[str, Any]]:
    """The trial each alias of ALIAS_RULES points at (absent when none qualifies), among
    finished trials' results (user attributes with "trial"). `tolerance`: report.drop_threshold."""
    chosen = {}
    dense = [t for t in trials if all(t.get(f"remaining_{layer}") == 1.0 for layer in layers)]
    if dense:
        chosen["dense"] = dense[0]
    if trials:
        chosen["best"] = max(trials, key=lambda t: t["acc/clean"])

    def edges(t: dict) -> float:
        return sum(t.get(f"{layer}/binary/edges", 0.0) for layer in layers)

    def keeps_the_property(t: dict) -> bool:
        pruned = [layer for layer in layers if t.get(f"remaining_{layer}", 1.0) < 1.0]
        return all(ramanujan(t, layer) is True for layer in pruned)

    # A sparse model that lost the accuracy is no answer: within `tolerance` of the dense trial
    # of the same seed (no dense trial, no alias).
    dense_accuracy = {t.get("seed"): t["acc/clean"] for t in dense}

    def holds_accuracy(t: dict) -> bool:
        reference = dense_accuracy.get(t.get("seed"))
        return reference is not None and t["acc/clean"] >= reference - tolerance

    keeping = [t for t in trials if keeps_the_property(t) and holds_accuracy(t)]
    if keeping:
        chosen["sparsest-ramanujan"] = min(keeping, key=lambda t: (edges(t), -t["acc/clean"]))
    return chosen


def for_trackers(metrics: dict[str, float]) -> dict[str, float]:
    """Metrics as MLflow and W&B get them: every key in every run, a value that is not finite
    as NaN. MLflow would store +inf as 1.8e308 (a convenient infinity) and W&B's summary
    cannot hold it; NaN is "no number" in both. Why a bound has no number is in the run too:
    `<graph>/<weighting>/bounds_unbounded` = 1 for a dense layer (the study and the report keep
    its +inf), `.../bounds_defined` = 0 for a degenerate graph."""
    return {key: (float(value) if math.isfinite(value) else math.nan) for key, value in metrics.items()}


def trial_label(number: int, params: dict[str, Any]) -> str:
    """What a trial is, in words, for run names: `trial 3: W_hh 10% magnitude, seed 0`, and
    `trial 0: dense, seed 0` for the dense trial."""
    pruned = [(key.removeprefix("remaining_"), float(value)) for key, value in params.items()
              if key.startswith("remaining_") and float(value) < 1.0]
    what = ", ".join(f"{layer} {100 * kept:.3g}%" for layer, kept in pruned) or "dense"
    if pruned and params.get("mask_method"):
        what += f" {params['mask_method']}"
    if float(params.get("train_noise_variance", 0) or 0) > 0:
        what += f", train noise var {float(params['train_noise_variance']):g}"
    seed = params.get("seed")
    return f"trial {number}: {what}" + (f", seed {seed}" if seed is not None else "")


def save_checkpoint(path: str | Path, model, model_spec: dict, input_size: int, num_classes: int,
                    remaining: dict[str, float], spec_dir: str | None = None) -> None:
    """A pruned, fine-tuned model: its weights (masked entries are exact zeros) and what rebuilds it.
    A model from `model.factory` is rebuilt by importing the factory again (from `spec_dir`, the
    spec's folder, when it is still there, else the Python path)."""
    import torch

    torch.save({"format": CHECKPOINT_FORMAT, "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
                "model": model_spec, "input_size": input_size, "num_classes": num_classes,
                "remaining": remaining, "spec_dir": spec_dir}, path)


def load_checkpoint(path: str | Path):
    """The model saved by `save_checkpoint`, on the CPU in eval mode, and the checkpoint's metadata."""
    import torch

    from .models import build_model
    from .spec import ModelSpec

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    spec_dir = checkpoint.get("spec_dir")
    model = build_model(ModelSpec(**checkpoint["model"]), checkpoint["input_size"], checkpoint["num_classes"], 0,
                        Path(spec_dir) if spec_dir and Path(spec_dir).is_dir() else None)
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    return model, {k: v for k, v in checkpoint.items() if k != "state_dict"}
