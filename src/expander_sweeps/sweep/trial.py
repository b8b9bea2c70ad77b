"""One trial end to end: dense model (cached), one-shot masks, fine-tuning, accuracy, spectra.

Results come back under the names of `results.py`.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt  # imsave only; no figure, no display needed
import numpy as np
import torch

from ..data import SequenceDataset, load_dataset, noisy_test_sets
from ..graphs import spectral
from ..graphs.graph_measures import measure_added
from ..graphs.unrolled_stack import stacked_unrolled_spectrum
from ..models import SequenceClassifier, build_model
from ..pruning.mask_methods import MaskChoice, MaskRequest, ModelMaskRequest, mask_method
from ..pruning.masks import MaskHolder
from ..reporting.claim_stats import pack_correct
from ..results import GATES, accuracy_key, kept_key, save_checkpoint
from ..spec import SweepSpec, matrix_depth
from ..training.dense_cache import DenseCache, dense_key
from ..training.factories import check_forward
from ..training.train import EpochStats, accuracy, correct_predictions, fit, resolve_device
from .provenance import provenance
from .space import TrialPlan
from .workers import dense_threads

__all__ = ["TrialHooks", "TrialResult", "SweepContext", "PreparedTrial", "prepare_trial", "finish_trial", "run_trial", "phase_seconds"]


@dataclass
class TrialHooks:
    """Callbacks for progress and tracking; every one is optional."""

    on_phase: Callable[[str, int, int], None] | None = None  # (phase, epochs, batches per epoch)
    on_batch: Callable[[], None] | None = None
    on_epoch: Callable[[EpochStats], None] | None = None


@dataclass
class TrialResult:
    params: dict[str, str | float | int]
    metrics: dict[str, float]
    spectra: dict[str, dict[str, float | int]]  # "W_xh/binary" -> LayerSpectrum fields
    files: dict[str, str]
    dense_trained: bool  # False when the dense model came from the cache
    seconds: float
    history: list[dict] = field(default_factory=list)
    correct: dict[str, str] = field(default_factory=dict)  # accuracy name -> packed per-example hits
    dense_history: list[dict] = field(default_factory=list)  # the dense epochs, when trained in this trial
    # Wall seconds of each step: getting the dense model (loaded, trained, or waited for), masks and
    # at-mask measures, fine-tuning (a batched group's, shared), the final measures and files.
    phase_seconds: dict[str, float] = field(default_factory=dict)


class SweepContext:
    """What every trial of a sweep shares: the spec, the device, the data on it, the dense cache."""

    def __init__(self, spec: SweepSpec, dataset: SequenceDataset | None = None):
        self.spec = spec
        self.device = resolve_device(spec.training.device)
        dataset = dataset or load_dataset(spec.data, spec.cache_path, spec.spec_dir)
        self.description = dataset.description
        self.num_classes = dataset.num_classes
        self.features = dataset.features
        self.seq_len = dataset.seq_len
        # Data moves to the device once, here; training slices it there.
        self.x_train = dataset.x_train.to(self.device)
        self.y_train = dataset.y_train.to(self.device)
        self.y_test = dataset.y_test.to(self.device)
        self.x_test_by_variance = noisy_test_sets(dataset.x_test.to(self.device), spec.noise)
        self.dense_cache = DenseCache(spec.cache_path)
        # (spec, files, example input, trial folder) -> more files, written beside each trial's
        # checkpoint: installed by the sweep from the enabled trackers (tracking/backends.py).
        self.trial_file_hooks: list[Callable[[SweepSpec, dict[str, str], np.ndarray, Path], dict[str, str]]] = []
        self.data_fingerprint = dataset.fingerprint()
        self.provenance = provenance(spec, self.data_fingerprint)  # recorded with every trial
        if spec.model.factory is not None:
            # A user's model is checked against its contract before anything is trained.
            check_forward(self.new_model(spec.training.seed), self.x_train, self.num_classes)

    def new_model(self, seed: int) -> SequenceClassifier:
        return build_model(self.spec.model, self.features, self.num_classes, seed, self.spec.spec_dir).to(self.device)

    def test_accuracies(self, model: torch.nn.Module, prefix: str = "") -> dict[str, float]:
        batch = self.spec.training.eval_batch_size
        return {
            prefix + accuracy_key(variance): accuracy(model, x, self.y_test, batch)
            for variance, x in self.x_test_by_variance.items()
        }

    def test_predictions(self, model: torch.nn.Module) -> tuple[dict[str, float], dict[str, str]]:
        """Accuracy at every noise level, and which test examples were right (packed, as
        `claim_stats.pack_correct` stores them: the report pairs them with the dense trial's)."""
        batch = self.spec.training.eval_batch_size
        accuracies, correct = {}, {}
        for variance, x in self.x_test_by_variance.items():
            right = correct_predictions(model, x, self.y_test, batch).cpu().numpy()
            accuracies[accuracy_key(variance)] = float(right.mean())
            correct[accuracy_key(variance)] = pack_correct(right)
        return accuracies, correct

    def train_phase(self, model, phase: str, epochs: int, seed: int, hooks: TrialHooks,
             masks: MaskHolder | None, train_variance: float) -> list[EpochStats]:
        t = self.spec.training
        if hooks.on_phase:
            hooks.on_phase(phase, epochs, -(-len(self.x_train) // t.batch_size))
        return fit(model, self.x_train, self.y_train, phase=phase, epochs=epochs,
                   batch_size=t.batch_size, lr=t.lr, seed=seed, masks=masks,
                   noise_fraction=self.spec.noise.fraction, noise_variance=train_variance,
                   on_epoch=hooks.on_epoch, on_batch=hooks.on_batch, clip_grad_norm=t.clip_grad_norm)

    def dense_model(self, spec: SweepSpec, train_variance: float,
                    hooks: TrialHooks) -> tuple[SequenceClassifier, bool, dict, Path]:
        """The trained dense model for this trial's seed and training noise: cached, or trained
        now; whether it was trained now, its metadata, and its file in the cache."""
        key, config = dense_key(spec, train_variance, self.data_fingerprint)
        seed = spec.training.seed

        def train() -> tuple[dict, dict]:
            model = self.new_model(seed)
            with _threads(dense_threads(spec) if self.device.type == "cpu" else None):
                history = self.train_phase(model, "dense", spec.training.epochs, seed, hooks, None, train_variance)
            metadata = {"accuracy": self.test_accuracies(model), "history": [vars(s) for s in history]}
            return model.state_dict(), metadata

        model = self.new_model(seed)
        # A cached file's weights are tried on this very model (another model's file is rebuilt).
        cached = self.dense_cache.get_or_train(key, config, train, fits=model.load_state_dict)
        model.load_state_dict(cached.state_dict)
        return model, cached.trained, cached.metadata, self.dense_cache.path(key)


@contextlib.contextmanager
def _threads(count: int | None):
    """torch's intra-op threads set to `count` for a while (None: unchanged)."""
    if count is None or count == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _masks_for(ctx: SweepContext, spec: SweepSpec, model: SequenceClassifier, plan: TrialPlan,
               hooks: TrialHooks) -> tuple[dict[str, torch.Tensor], int]:
    """The trial's masks from its method (the registry: built-in methods and plug-ins alike), and
    the epochs of `training.epochs` the method already trained the weights it left in `model`."""
    matrices = model.matrices()
    method = mask_method(plan.mask_method)
    batch = _score_batch(ctx, spec) if method.needs_batch else None
    if method.scope == "model":
        request = ModelMaskRequest(
            model, dict(plan.remaining), _mask_generator(spec, plan, 0), spec.masks, batch,
            train=_chain_trainer(ctx, spec, plan, hooks), checkpoints=DenseCache(ctx.dense_cache.folder / "lottery"),
            cache_key=dense_key(spec, plan.train_variance, ctx.data_fingerprint)[0],
            steps=ctx.seq_len, epochs=spec.training.epochs)
        answer = method.make(request)
        choice = answer if isinstance(answer, MaskChoice) else MaskChoice(answer)
        masks, trained = dict(choice.masks), choice.trained_epochs
        missing = set(plan.remaining) - set(masks)
        if missing:
            raise ValueError(f"mask method {method.name!r} returned no mask for {sorted(missing)}")
    else:
        masks, trained = {}, 0
        for index, (name, remaining) in enumerate(plan.remaining.items()):
            if remaining >= 1.0:
                continue
            masks[name] = method.make(MaskRequest(name, matrices[name], remaining, _mask_generator(spec, plan, index),
                                                  spec.masks, model, batch))
    out = {}
    for name, remaining in plan.remaining.items():
        weight = matrices[name]
        if remaining >= 1.0 or name not in masks:
            out[name] = torch.ones_like(weight, dtype=torch.bool)  # a dense layer, whatever the method
            continue
        mask = masks[name]
        if tuple(mask.shape) != tuple(weight.shape):
            raise ValueError(f"mask method {method.name!r} returned a mask of shape {tuple(mask.shape)} for "
                             f"{name}, whose weights are {tuple(weight.shape)}")
        out[name] = mask.bool().to(weight.device)
    return out, trained


def _mask_generator(spec: SweepSpec, plan: TrialPlan, index: int) -> torch.Generator:
    # Random masks vary with the training seed too (seed 0 keeps the masks it always had),
    # so a sweep over seeds shows the spread of random and regular masks as well.
    return torch.Generator().manual_seed(spec.masks.seed * 100 + index + 10007 * plan.seed)


def _score_batch(ctx: SweepContext, spec: SweepSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """`masks.score_batch` training examples, the first of a shuffle seeded by the training seed."""
    order = torch.randperm(len(ctx.x_train), generator=torch.Generator().manual_seed(spec.training.seed))
    chosen = order[: spec.masks.score_batch].to(ctx.x_train.device)
    return ctx.x_train[chosen], ctx.y_train[chosen]


def _chain_trainer(ctx: SweepContext, spec: SweepSpec, plan: TrialPlan, hooks: TrialHooks):
    """train(model, masks, epochs) for a model-scope method: the trial's own training (seed, data,
    noise, clipping) with the masks held. Progress shows; the trackers' per-epoch curves stay the trial's."""
    progress = TrialHooks(on_phase=hooks.on_phase, on_batch=hooks.on_batch)

    def train(model, masks: dict[str, torch.Tensor], epochs: int):
        holder = MaskHolder(model.matrices(), masks) if masks else None
        with _threads(dense_threads(spec) if ctx.device.type == "cpu" else None):
            return ctx.train_phase(model, "lottery", epochs, spec.training.seed, progress, holder, plan.train_variance)
    return train


def _spectra(spec: SweepSpec, masks: dict[str, np.ndarray], weights: dict[str, np.ndarray],
             steps: int, weighted_only: bool = False, unrolled: bool = True) -> dict[str, dict]:
    """Spectra of every requested graph, binary and (optionally) weighted, keyed "graph/weighting".
    `weighted_only` skips the binary graphs; `unrolled` False skips the (costly) unrolled graph."""
    remove = spec.spectral.remove_isolated
    graphs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if "layer" in spec.spectral.graphs:
        for name in masks:
            graphs[name] = (masks[name], np.abs(weights[name]) * masks[name])
    # The network's graphs (step, unrolled) hold every recurrent matrix: a layer the spec does
    # not mask is dense in them.
    full = {name: masks.get(name, np.ones_like(weights[name], dtype=np.uint8)) for name in ("W_xh", "W_hh")}
    if "step" in spec.spectral.graphs:
        graphs["step"] = (
            spectral.step_biadjacency(full["W_xh"], full["W_hh"]),
            spectral.step_biadjacency(np.abs(weights["W_xh"]) * full["W_xh"],
                                      np.abs(weights["W_hh"]) * full["W_hh"]),
        )
        # A deeper layer with a pruned matrix has its own step graph [W_xh_l | W_hh_l] -> h^l_t,
        # its inputs being the layer below's hidden units.
        for depth in sorted({matrix_depth(n) for n in masks} - {0}):
            xh, hh = f"W_xh_l{depth}", f"W_hh_l{depth}"
            mask_xh = masks.get(xh, np.ones_like(weights[xh], dtype=np.uint8))
            mask_hh = masks.get(hh, np.ones_like(weights[hh], dtype=np.uint8))
            graphs[f"step_l{depth}"] = (
                spectral.step_biadjacency(mask_xh, mask_hh),
                spectral.step_biadjacency(np.abs(weights[xh]) * mask_xh, np.abs(weights[hh]) * mask_hh),
            )
    gates = GATES[spec.model.cell]
    if spec.spectral.gates and len(gates) > 1:
        # PyTorch stacks the gate blocks (LSTM: i, f, g, o) as rows; each block is a graph too.
        for name in [n for n in graphs if n in masks]:
            binary, weighted = graphs[name]
            hidden = binary.shape[0] // len(gates)
            for index, gate in enumerate(gates):
                rows = slice(index * hidden, (index + 1) * hidden)
                graphs[f"{name}.{gate}"] = (binary[rows], weighted[rows])
    result = {}
    for graph, (binary, weighted) in graphs.items():
        # measure_added: the graph quantities plug-ins registered (graph_measures.py), beside the built-ins.
        if not weighted_only:
            result[f"{graph}/binary"] = {**_with_status(spectral.layer_spectrum(binary, remove)),
                                         **measure_added(binary, remove, spec.spectral.measures)}
        if spec.spectral.weighted:
            result[f"{graph}/weighted"] = {**_with_status(spectral.layer_spectrum(weighted, remove)),
                                           **measure_added(weighted, remove, spec.spectral.measures)}
    if unrolled and "unrolled" in spec.spectral.graphs:
        k = spec.spectral.unrolled_steps or steps
        weightings = ["binary", "weighted"] if spec.spectral.weighted else ["binary"]
        # Every recurrent layer (a stacked network's unrolled graph holds them all: unrolled_stack.py).
        depths = sorted({matrix_depth(n) for n in weights})
        for weighting in [w for w in weightings if not (weighted_only and w == "binary")]:
            layers = []
            for depth in depths:
                suffix = f"_l{depth}" if depth else ""
                pair = []
                for kind in ("W_xh", "W_hh"):
                    name = kind + suffix
                    matrix = masks.get(name, np.ones_like(weights[name], dtype=np.uint8)).astype(np.float64)
                    if weighting == "weighted":
                        matrix = np.abs(weights[name]) * matrix
                    if len(gates) > 1:
                        # One vertex per hidden unit: a gate's edge is an edge of the unit. Merging
                        # sums the gates; a binary graph keeps only whether any gate has the edge.
                        matrix = spectral.merge_gates(matrix, len(gates))
                        if weighting == "binary":
                            matrix = (matrix > 0).astype(np.float64)
                    pair.append(matrix)
                layers.append(tuple(pair))
            spectrum = (spectral.unrolled_spectrum(*layers[0], k, remove) if len(layers) == 1
                        else stacked_unrolled_spectrum(layers, k, remove))
            result[f"unrolled/{weighting}"] = {**_with_status(spectrum), "steps": k,
                                               **({"layers": len(layers)} if len(layers) > 1 else {})}
    return result


def _with_status(spectrum: spectral.LayerSpectrum) -> dict:
    """The spectrum's numbers plus its status in words (kept in spectra.json, not in metrics)."""
    return {**spectrum.as_dict(), "status": spectrum.describe_status()}


def _recurrent_weights(model: SequenceClassifier) -> dict[str, np.ndarray]:
    """Every recurrent layer's W_xh and W_hh (W_xh_l1, W_hh_l1, ... for deeper ones), not W_hy."""
    return {n: w.detach().cpu().numpy().copy() for n, w in model.matrices().items() if n != "W_hy"}


def trial_params(spec: SweepSpec, plan: TrialPlan) -> dict[str, str | float | int]:
    """Flat, human-readable parameters of a trial (MLflow params, report columns)."""
    params: dict[str, str | float | int] = {f"remaining_{n}": r for n, r in plan.remaining.items()}
    params.update(
        pruned_layers="+".join(plan.pruned_layers) or "none",
        mask_method=plan.mask_method,
        schedule=spec.masks.schedule,
        cell=spec.model.cell,
        hidden=spec.model.hidden,
        init=spec.model.init_label,
        dataset=spec.data.dataset,
        input=spec.data.input_kind,
        noise_p=spec.noise.fraction,
        train_noise_variance=plan.train_variance,
        epochs=spec.training.epochs,
        finetune_epochs=spec.training.finetune_epochs,
        lr=spec.training.lr,
        batch_size=spec.training.batch_size,
        clipping="off" if spec.training.clip_grad_norm is None else "on",
        seed=plan.seed,
    )
    if spec.training.clip_grad_norm is not None:
        # A number or absent, never a word: one type per key in W&B's config and parallel coordinates.
        params["clip_grad_norm"] = spec.training.clip_grad_norm
    method = mask_method(plan.mask_method)
    for option in method.options:  # the masks.* settings the method reads
        params[option] = getattr(spec.masks, option)
    if method.start == "init":  # the trial's shape differs: said with it, in every tracker
        params["mask_at"] = "initialisation"
    return params


@dataclass
class PreparedTrial:
    """A trial up to its fine-tuning: its dense model with the masks applied (and held), the
    spectra at mask time and the metrics so far."""

    plan: TrialPlan
    spec: SweepSpec
    model: SequenceClassifier
    masks: dict[str, torch.Tensor]
    holder: MaskHolder
    masks_np: dict[str, np.ndarray]
    at_mask: dict[str, dict]
    metrics: dict[str, float]
    dense_trained: bool
    dense_meta: dict
    dense_file: Path | None  # None when the method starts at initialisation
    started: float
    dense_seconds: float
    # What the trial trains with its masks held: `training.finetune_epochs` from the trained dense
    # model, or (a method that starts at initialisation) the epochs of `training.epochs` left.
    train_epochs: int = 0
    train_seed: int = 0
    # Set by a batched group (trial_group.py): (history, accuracies, packed hits), or its error.
    outcome: Any = None


def prepare_trial(ctx: SweepContext, plan: TrialPlan, hooks: TrialHooks,
                  dense: tuple[dict, bool, dict, Path] | None = None) -> PreparedTrial:
    """Dense model (cached or trained now; `dense`: its state_dict, whether it was trained now,
    metadata and file, when the caller already has it) -> masks -> spectra at mask time."""
    spec = ctx.spec.for_trial(plan.seed, plan.mask_method)
    started = time.perf_counter()
    at_init = mask_method(plan.mask_method).start == "init"
    if at_init:  # pruning at initialisation: no dense model
        model, dense_trained, dense_meta, dense_file = ctx.new_model(spec.training.seed), False, {}, None
        dense_seconds = 0.0
    elif dense is None:
        model, dense_trained, dense_meta, dense_file = ctx.dense_model(spec, plan.train_variance, hooks)
        dense_seconds = time.perf_counter() - started
    else:
        dense_seconds = 0.0  # the caller's
        state, dense_trained, dense_meta, dense_file = dense
        model = ctx.new_model(spec.training.seed)
        model.load_state_dict(state)
    metrics = {f"dense/{k}": v for k, v in dense_meta.get("accuracy", {}).items()}
    masks, trained_epochs = _masks_for(ctx, spec, model, plan, hooks)
    holder = MaskHolder(model.matrices(), masks)  # zeroes the masked weights now
    masks_np = {n: m.cpu().numpy().astype(np.uint8) for n, m in masks.items()}
    # The weighted graphs as they were when the mask was chosen; the layer and step graphs only
    # (the unrolled one is the costly one, and its fine-tuned version is what matters).
    at_mask = _spectra(spec, masks_np, _recurrent_weights(model), ctx.seq_len, weighted_only=True, unrolled=False)
    for name, mask in masks_np.items():
        metrics[kept_key(name)] = float(mask.mean())
    if at_init:
        train_epochs, train_seed = spec.training.epochs - trained_epochs, spec.training.seed
    else:
        train_epochs, train_seed = spec.training.finetune_epochs, spec.training.seed + 1
    return PreparedTrial(plan, spec, model, masks, holder, masks_np, at_mask, metrics, dense_trained,
                         dense_meta, dense_file, started, dense_seconds, train_epochs, train_seed)


def run_trial(ctx: SweepContext, plan: TrialPlan, trial_dir: Path, hooks: TrialHooks | None = None) -> TrialResult:
    """Dense model -> masks -> spectra -> fine-tune with masks held -> accuracy at every noise level."""
    hooks = hooks or TrialHooks()
    prepared = prepare_trial(ctx, plan, hooks)
    prepared.metrics.update(ctx.test_accuracies(prepared.model, prefix="masked/"))
    tuning = time.perf_counter()
    history = ctx.train_phase(prepared.model, "finetune", prepared.train_epochs, prepared.train_seed,
                              hooks, prepared.holder, plan.train_variance)
    finishing = time.perf_counter()
    accuracies, correct = ctx.test_predictions(prepared.model)
    result = finish_trial(ctx, prepared, history, accuracies, correct, trial_dir,
                          time.perf_counter() - prepared.started)
    result.phase_seconds = phase_seconds(prepared, tuning, finishing)
    return result


def phase_seconds(prepared: PreparedTrial, tuning: float, finishing: float) -> dict[str, float]:
    """TrialResult.phase_seconds from the perf_counter times when fine-tuning and finishing began
    (fine-tuning may be a group's: `tuning` its start, `finishing` its end)."""
    now = time.perf_counter()
    return {"dense": round(prepared.dense_seconds, 3),
            "prepare": round(max(0.0, tuning - prepared.started - prepared.dense_seconds), 3),
            "finetune": round(finishing - tuning, 3), "finish": round(now - finishing, 3)}


def finish_trial(ctx: SweepContext, prepared: PreparedTrial, history: list[EpochStats],
                 accuracies: dict[str, float], correct: dict[str, str], trial_dir: Path,
                 seconds: float) -> TrialResult:
    """A fine-tuned trial's spectra, files and result (the same for either engine)."""
    spec, plan, model, masks_np = prepared.spec, prepared.plan, prepared.model, prepared.masks_np
    metrics = dict(prepared.metrics)
    metrics.update(accuracies)
    metrics["n_test"] = float(len(ctx.y_test))
    metrics["n_train"] = float(len(ctx.x_train))
    # Spectra of the weights that were evaluated and saved: after fine-tuning.
    spectra = _spectra(spec, masks_np, _recurrent_weights(model), ctx.seq_len)
    spectra.update({key.replace("/weighted", "/weighted_at_mask"): values for key, values in prepared.at_mask.items()})
    for graph, values in spectra.items():
        for quantity, value in values.items():
            if quantity != "status":
                metrics[f"{graph}/{quantity}"] = float(value)

    trial_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "masks": str(trial_dir / "masks.npz"),
        "checkpoint": str(trial_dir / "model.pt"),
        "spectra": str(trial_dir / "spectra.json"),
        "history": str(trial_dir / "history.json"),
        "example": str(trial_dir / "example.npy"),
    }
    if prepared.dense_file is not None:
        files["dense_checkpoint"] = str(prepared.dense_file)  # lineage, not uploaded per trial
    np.savez_compressed(files["masks"], **masks_np)
    for name, mask in masks_np.items():
        # A picture of each mask (rows = outputs, black = kept edge), for trackers and eyes.
        files[f"mask_picture_{name}"] = str(trial_dir / f"mask_{name}.png")
        plt.imsave(files[f"mask_picture_{name}"], mask, cmap="gray_r", vmin=0, vmax=1)
    save_checkpoint(files["checkpoint"], model, spec.model.model_dump(), ctx.features, ctx.num_classes,
                    plan.remaining, str(spec.spec_dir) if spec.spec_dir else None)
    Path(files["spectra"]).write_text(json.dumps(spectra, indent=2, allow_nan=True))
    dense_history = prepared.dense_meta.get("history", []) if prepared.dense_trained else []
    Path(files["history"]).write_text(json.dumps(dense_history + [vars(s) for s in history], indent=2))
    # A real test input of shape (1, k, features): what a logged model is checked against.
    example = ctx.x_test_by_variance[0.0][:1].cpu().numpy()
    np.save(files["example"], example)
    for hook in ctx.trial_file_hooks:  # what a tracker needs torch for (MLflow's model payload), done here
        files.update(hook(spec, files, example, trial_dir))
    return TrialResult(
        params={**trial_params(spec, plan), **ctx.provenance},
        metrics=metrics,
        spectra=spectra,
        files=files,
        dense_trained=prepared.dense_trained,
        seconds=seconds,
        history=[vars(s) for s in history],
        correct=correct,
        dense_history=dense_history,
    )
