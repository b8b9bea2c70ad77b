"""The batched engine: a stacked model computes what the per-trial models compute (forward, fine-
tuning with masks, noise and clipping, evaluation), each model's gradient is clipped on its own,
a failing or diverging model fails its own trial only, and a launch with `training.engine:
batched` records the same trials, files and numbers as one with `per_trial`."""

from __future__ import annotations

import copy
import subprocess

import numpy as np
import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

from conftest import CLI, tiny_spec_dict
from expander_sweeps.models import build_model
from expander_sweeps.pruning.masks import MaskHolder, magnitude_mask, random_mask
from expander_sweeps.spec import ModelSpec, spec_from_dict
from expander_sweeps.sweep.space import TrialPlan
from expander_sweeps.sweep.study import is_metric_name
from expander_sweeps.sweep.trial import SweepContext, run_trial
from expander_sweeps.sweep.trial_group import choose_engine, group_limit, run_group
from expander_sweeps.training.batched import (
    StackedClassifier,
    StackedMasks,
    clip_each_model,
    correct_predictions_batched,
    fit_batched,
)
from expander_sweeps.training.train import correct_predictions, fit

CELLS = [("rnn", "tanh", 1), ("rnn", "relu", 2), ("lstm", "tanh", 1), ("lstm", "tanh", 2), ("gru", "tanh", 1),
         ("gru", "tanh", 2)]


def _masked_copies(cell, nonlinearity, layers, fractions):
    extra = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
    base = build_model(ModelSpec(cell=cell, hidden=12, layers=layers, **extra), 5, 4, seed=3)
    models, holders = [], []
    for fraction in fractions:
        model = copy.deepcopy(base)
        matrices = model.matrices()
        holders.append(MaskHolder(matrices, {"W_hh": magnitude_mask(matrices["W_hh"], fraction),
                                             "W_xh": random_mask(matrices["W_xh"].shape, fraction,
                                                                 torch.Generator().manual_seed(7))}))
        models.append(model)
    return models, holders


def _stacked_masks(stacked, holders):
    """The holders' masks (W_hh first, then W_xh, as _masked_copies gave them), stacked."""
    return StackedMasks(stacked, {
        "recurrent.weight_hh_l0": torch.stack([h._pairs[0][1] for h in holders]),
        "recurrent.weight_ih_l0": torch.stack([h._pairs[1][1] for h in holders]),
    })


@pytest.mark.parametrize("cell,nonlinearity,layers", CELLS)
def test_stacked_models_fine_tune_as_the_per_trial_trainer_does(cell, nonlinearity, layers):
    """Forward, three epochs of fine-tuning (masks held, training noise, clipping that bites) and
    per-example evaluation: within float rounding of nn.RNN/LSTM/GRU trained one at a time."""
    torch.manual_seed(0)
    x, y = torch.randn(160, 9, 5), torch.randint(0, 4, (160,))
    models, holders = _masked_copies(cell, nonlinearity, layers, [1.0, 0.5, 0.2])
    stacked = StackedClassifier(models)
    masks = _stacked_masks(stacked, holders)
    with torch.no_grad():
        expected = torch.stack([m(x) for m in models])
        assert torch.allclose(stacked(x), expected, atol=1e-5)
    settings = dict(phase="finetune", epochs=3, batch_size=32, lr=1e-2, seed=1, noise_fraction=0.5,
                    noise_variance=0.2, clip_grad_norm=0.3)
    histories = [fit(m, x, y, masks=h, **settings) for m, h in zip(models, holders, strict=True)]
    fitted = fit_batched(stacked, x, y, masks=masks, **settings)
    assert fitted.errors == [None, None, None]
    for n, model in enumerate(models):
        state = stacked.state_dict_of(n)
        for key, value in model.state_dict().items():
            assert torch.allclose(state[key], value, atol=2e-5), (cell, n, key)
            if key.endswith("weight_hh_l0"):  # the mask held: masked entries exactly zero
                assert torch.equal(state[key] == 0, value == 0)
        for mine, theirs in zip(fitted.histories[n], histories[n], strict=True):
            assert mine.loss == pytest.approx(theirs.loss, rel=1e-4)
            assert mine.train_accuracy == pytest.approx(theirs.train_accuracy, abs=1.5 / len(x))
    right = correct_predictions_batched(stacked, x, y, batch_size=50)
    for n, model in enumerate(models):
        assert (right[n] != correct_predictions(model, x, y, 50)).sum() <= 1


def test_each_model_s_gradient_is_clipped_to_its_own_norm():
    """Model 0 with a huge gradient beside two small ones: each is clipped as
    torch.nn.utils.clip_grad_norm_ clips it alone, so the small ones are left exactly as they were
    (one norm over the group would have scaled them down by a factor of ~1000)."""
    torch.manual_seed(0)
    shapes = [(3, 4, 5), (3, 7)]
    grads = [torch.randn(s) * 0.01 for s in shapes]
    for g in grads:
        g[0] *= 1e5  # model 0: norm ~ 5000
    params = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    norms = clip_each_model(params, max_norm=2.0)
    assert norms[0] > 1000 and (norms[1:] < 2.0).all()
    for n in range(3):
        alone = [torch.nn.Parameter(torch.zeros(s[1:])) for s in shapes]
        for p, g in zip(alone, grads, strict=True):
            p.grad = g[n].clone()
        norm = torch.nn.utils.clip_grad_norm_(alone, 2.0)
        assert norms[n].item() == pytest.approx(norm.item(), rel=1e-6)
        for p, q in zip(params, alone, strict=True):
            assert torch.allclose(p.grad[n], q.grad, rtol=1e-6, atol=1e-9)
    for p, g in zip(params, grads, strict=True):
        assert torch.equal(p.grad[1:], g[1:])
    clipped = torch.sqrt(sum(p.grad[0].pow(2).sum() for p in params))
    assert clipped.item() == pytest.approx(2.0, rel=1e-5)


def test_a_diverging_model_fails_alone_and_the_others_train_as_without_it():
    torch.manual_seed(0)
    x, y = torch.randn(96, 6, 5), torch.randint(0, 4, (96,))
    models, holders = _masked_copies("rnn", "tanh", 1, [1.0, 0.5, 0.2])
    with torch.no_grad():
        models[1].recurrent.weight_hh_l0.fill_(float("inf"))  # model 1's loss becomes NaN at once
    settings = dict(phase="finetune", epochs=2, batch_size=32, lr=1e-2, seed=1, clip_grad_norm=1.0)
    together = StackedClassifier(models)
    fitted = fit_batched(together, x, y, masks=_stacked_masks(together, holders), **settings)
    assert isinstance(fitted.errors[1], FloatingPointError) and "diverged" in str(fitted.errors[1])
    assert fitted.histories[1] == [] and fitted.errors[0] is None and fitted.errors[2] is None
    pair = [models[0], models[2]]
    apart = StackedClassifier(pair)
    fit_batched(apart, x, y, masks=_stacked_masks(apart, [holders[0], holders[2]]), **settings)
    for mine, theirs in ((0, 0), (2, 1)):
        for key, value in apart.state_dict_of(theirs).items():
            assert torch.equal(together.state_dict_of(mine)[key], value), key


def _spec(tmp_path, mnist_dir, **training):
    return spec_from_dict(tiny_spec_dict(
        tmp_path / "run", mnist_dir, training={"finetune_epochs": 2, "clip_grad_norm": 1.0, **training},
        masks={"remaining": [1.0, 0.6, 0.3, 0.1], "method": ["magnitude", "random"]},
        noise={"variances": [0.3], "at_training": True}, spectral={"graphs": ["layer", "step"]},
        tracking={"mlflow": {"enabled": False}}))


@pytest.mark.slow
def test_a_group_of_four_trials_matches_the_same_trials_run_one_by_one(tmp_path, mnist_dir):
    """Three magnitude fractions of W_hh and a random W_xh mask, on real MNIST with training noise
    and clipping: the same masks, spectra, final weights (to float rounding) and accuracies."""
    spec = _spec(tmp_path, mnist_dir)
    ctx = SweepContext(spec)
    plans = [TrialPlan({"W_xh": 1.0, "W_hh": r}, 0.3, "magnitude") for r in (0.6, 0.3, 0.1)]
    plans.append(TrialPlan({"W_xh": 0.3, "W_hh": 1.0}, 0.3, "random"))
    grouped = run_group(ctx, plans, [tmp_path / "batched" / str(i) for i in range(4)])
    for index, plan in enumerate(plans):
        alone = run_trial(ctx, plan, tmp_path / "alone" / str(index))
        together = grouped[index]
        masks_alone, masks_together = np.load(alone.files["masks"]), np.load(together.files["masks"])
        for name in masks_alone:
            assert np.array_equal(masks_alone[name], masks_together[name])
        weights_alone = torch.load(alone.files["checkpoint"])["state_dict"]
        weights_together = torch.load(together.files["checkpoint"])["state_dict"]
        for key, value in weights_alone.items():
            assert torch.allclose(weights_together[key], value, atol=1e-5), (index, key)
        assert set(alone.metrics) == set(together.metrics)
        for name, value in alone.metrics.items():
            if name.startswith(("acc/", "masked/", "dense/")) or name.endswith("kept_fraction"):
                assert together.metrics[name] == pytest.approx(value, abs=1.5 / metric_size(ctx)), name
            elif "/binary/" in name:
                assert together.metrics[name] == value or (np.isnan(value) and np.isnan(together.metrics[name])), name
            else:
                assert together.metrics[name] == pytest.approx(value, rel=1e-4, abs=1e-6, nan_ok=True), name
        assert set(alone.files) == set(together.files)
        assert len(together.history) == len(alone.history) == spec.training.finetune_epochs


def metric_size(ctx):
    return len(ctx.y_test)


@pytest.mark.slow
def test_a_trial_that_cannot_be_prepared_fails_alone_in_its_group(tmp_path, mnist_dir):
    ctx = SweepContext(_spec(tmp_path, mnist_dir))
    plans = [TrialPlan({"W_xh": 1.0, "W_hh": 0.3}, 0.3), TrialPlan({"W_zz": 0.3}, 0.3),
             TrialPlan({"W_xh": 0.3, "W_hh": 1.0}, 0.3, "random")]
    outcomes = run_group(ctx, plans, [tmp_path / str(i) for i in range(3)])
    assert isinstance(outcomes[1], KeyError)
    assert not isinstance(outcomes[0], Exception) and not isinstance(outcomes[2], Exception)
    assert outcomes[0].metrics["W_hh/kept_fraction"] == pytest.approx(0.3, abs=0.01)


def test_the_engine_choice_says_why(tmp_path, mnist_dir, monkeypatch):
    spec = _spec(tmp_path, mnist_dir)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose_engine(spec, cpu, False).engine == "batched"  # auto, an RNN on a CPU
    lstm = spec.model_copy(update={"model": spec.model.model_copy(update={"cell": "lstm"})})
    assert choose_engine(lstm, cpu, False).engine == "per_trial"  # auto, an LSTM on a CPU
    assert choose_engine(lstm, cuda, False).engine == "batched"
    assert choose_engine(spec, cuda, False).engine == "batched"  # auto on CUDA
    assert choose_engine(spec, cuda, True).engine == "per_trial"  # one point: nothing to group
    forced = _spec(tmp_path, mnist_dir, engine="batched")
    assert choose_engine(forced, cpu, False).engine == "batched"
    factory = forced.model_copy(update={"model": forced.model.model_copy(update={"factory": "my_models:net"})})
    choice = choose_engine(factory, cuda, False)
    assert choice.engine == "per_trial" and "model.factory" in choice.why
    sampled = forced.model_copy(update={"study": forced.study.model_copy(update={"sampler": "tpe"})})
    assert "one trial at a time" in choose_engine(sampled, cuda, False).why
    per_trial = _spec(tmp_path, mnist_dir, engine="per_trial")
    assert choose_engine(per_trial, cuda, False).engine == "per_trial"


@pytest.mark.slow
def test_group_size_is_bounded_by_the_setting_and_a_fair_share_of_the_workers(tmp_path, mnist_dir, monkeypatch):
    ctx = SweepContext(_spec(tmp_path, mnist_dir, group_size=8))
    monkeypatch.delenv("EXPANDER_SWEEPS_WORKER_COUNT", raising=False)
    assert group_limit(ctx.spec, ctx, 31) == 8
    monkeypatch.setenv("EXPANDER_SWEEPS_WORKER_COUNT", "8")
    assert group_limit(ctx.spec, ctx, 31) == 4  # ceil(31 / 8)
    assert group_limit(ctx.spec, ctx, 3) == 1


def _launch(tmp_path, mnist_dir, engine: str, workers: int = 1):
    folder = tmp_path / engine
    spec = tiny_spec_dict(folder / "run", mnist_dir, training={"engine": engine, "finetune_epochs": 2, "clip_grad_norm": 1.0},
                          masks={"remaining": [1.0, 0.3, 0.05], "method": ["magnitude", "random"]},
                          noise={"variances": [0.3], "at_training": True}, tracking={"mlflow": {"enabled": False}})
    folder.mkdir()
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    done = subprocess.run([*CLI, "launch", str(folder / "spec.yaml"), "--workers", str(workers)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder / 'run' / 'optuna.db'}")
    trials = {tuple(sorted(t.params.items())): t for t in study.trials}
    return done.stdout, trials, (folder / "run" / "report" / "report.md").read_text()


@pytest.mark.slow
def test_a_batched_launch_records_what_a_per_trial_launch_records(tmp_path, mnist_dir):
    """The real CLI, both engines, two workers for the batched one: the same trials, each with the
    same attributes, files and numbers (to float rounding), and its engine and group size."""
    _, per_trial, report_alone = _launch(tmp_path, mnist_dir, "per_trial")
    output, batched, report = _launch(tmp_path, mnist_dir, "batched", workers=2)
    assert "engine: batched" in output and "batched with" in output
    assert "- fine-tuning engine: per trial for 9 trial(s)" in report_alone
    assert "- fine-tuning engine: batched for " in report
    assert set(per_trial) == set(batched) and len(batched) == 9
    assert sum(t.user_attrs["engine"] == "batched" for t in batched.values()) >= 6
    for point, alone in per_trial.items():
        together = batched[point]
        assert alone.state == together.state == TrialState.COMPLETE
        # A worker left with one trial of a dense model runs it per trial (nothing to stack).
        assert (together.user_attrs["engine"], together.user_attrs["group_size"] >= 2) in {("batched", True),
                                                                                          ("per_trial", False)}
        assert alone.user_attrs["engine"] == "per_trial" and alone.user_attrs["group_size"] == 1
        assert set(alone.user_attrs) == set(together.user_attrs)
        assert set(alone.user_attrs["files"]) == set(together.user_attrs["files"])
        assert len(alone.intermediate_values) == len(together.intermediate_values) == 2
        for name in [k for k in alone.user_attrs if is_metric_name(k)]:
            assert together.user_attrs[name] == pytest.approx(alone.user_attrs[name], rel=1e-4, abs=1e-5,
                                                              nan_ok=True), name


@pytest.mark.slow
def test_a_model_that_diverges_in_a_group_fails_its_trial_alone_in_a_launch(tmp_path, mnist_dir, monkeypatch):
    import math

    import expander_sweeps
    from expander_sweeps.sweep import trial_group

    spec = spec_from_dict(tiny_spec_dict(tmp_path / "run", mnist_dir, masks={"remaining": [1.0, 0.5, 0.2]},
                                         training={"engine": "batched"}, tracking={"mlflow": {"enabled": False}}))
    real_prepare = trial_group.prepare_trial
    calls = {"n": 0}

    def a_nan_in_the_second_model(*args, **kwargs):  # fault injection
        prepared = real_prepare(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            with torch.no_grad():
                prepared.model.matrices()["W_hy"][0, 0] = math.nan
        return prepared

    monkeypatch.setattr(trial_group, "prepare_trial", a_nan_in_the_second_model)
    result = expander_sweeps.launch(spec)
    assert (result.ran, result.failed) == (5, 1)
    failed = [t for t in result.study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and "loss became nan" in failed[0].user_attrs["error"]
    complete = result.study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 4 and {t.user_attrs["engine"] for t in complete} == {"batched"}
    assert "loss became nan" in (spec.run_path / "report" / "report.md").read_text()
