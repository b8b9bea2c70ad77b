"""Pruning at initialisation (SNIP, GraSP, SynFlow) and lottery tickets, each against an answer
computed by hand or by an independent method, and the trial shape they make, through the real CLI."""

from __future__ import annotations

import subprocess

import numpy as np
import optuna
import pytest
import torch
import yaml

from conftest import CLI, tiny_spec_dict
from expander_sweeps.models import build_model
from expander_sweeps.pruning.lottery import MASK_PREFIX, chain_fractions, lottery_ticket
from expander_sweeps.pruning.mask_methods import ModelMaskRequest, mask_method
from expander_sweeps.pruning.masks import kept_count
from expander_sweeps.pruning.scores import (
    grasp_scores,
    snip_scores,
    synflow_log_scores,
    synflow_masks,
)
from expander_sweeps.spec import MaskSpec, ModelSpec
from expander_sweeps.training.dense_cache import DenseCache


def _model(cell="rnn", hidden=2, inputs=2, classes=2, seed=0, dtype=torch.float64):
    return build_model(ModelSpec(cell=cell, hidden=hidden), inputs, classes, seed).to(dtype)


# ----------------------------------------------------------------------------- SNIP
def test_snip_scores_a_2x2_layer_as_the_gradient_computed_by_hand():
    model = _model()
    w_xh = np.array([[0.5, -1.0], [2.0, 0.25]])
    w_hy = np.array([[1.0, -0.5], [-2.0, 1.5]])
    with torch.no_grad():
        model.recurrent.weight_ih_l0.copy_(torch.tensor(w_xh))
        model.recurrent.weight_hh_l0.copy_(torch.tensor([[0.3, 0.1], [-0.2, 0.4]]))
        for bias in (model.recurrent.bias_ih_l0, model.recurrent.bias_hh_l0, model.readout.bias):
            bias.zero_()
        model.readout.weight.copy_(torch.tensor(w_hy))
    x = np.array([0.8, -0.6])
    label = 1
    # By hand: one step from h_0 = 0, h = tanh(W_xh x), logits = W_hy h, cross entropy.
    h = np.tanh(w_xh @ x)
    logits = w_hy @ h
    p = np.exp(logits - logits.max())
    p /= p.sum()
    d_logits = p - np.eye(2)[label]
    d_pre = (w_hy.T @ d_logits) * (1 - h**2)
    gradient = np.outer(d_pre, x)
    scores = snip_scores(model, (torch.tensor(x).reshape(1, 1, 2), torch.tensor([label])))
    np.testing.assert_allclose(scores["W_xh"].numpy(), np.abs(gradient * w_xh), rtol=1e-12)
    assert not scores["W_hh"].any()  # h_0 = 0: the recurrent weights have no gradient after one step
    # The mask keeps the two largest scores of the four.
    expected = np.zeros(4, dtype=bool)
    expected[np.argsort(-np.abs(gradient * w_xh).ravel(), kind="stable")[:2]] = True
    mask = mask_method("snip").make(_layer_request(model, "W_xh", 0.5, (torch.tensor(x).reshape(1, 1, 2),
                                                                          torch.tensor([label]))))
    assert mask.numpy().ravel().tolist() == expected.tolist()


def _layer_request(model, layer, remaining, batch):
    from expander_sweeps.pruning.mask_methods import MaskRequest
    return MaskRequest(layer, model.matrices()[layer], remaining, torch.Generator().manual_seed(0), MaskSpec(),
                       model, batch)


# ----------------------------------------------------------------------------- GraSP
def test_grasp_hessian_gradient_product_matches_central_differences_of_the_gradient():
    torch.manual_seed(3)
    model = _model(cell="lstm", hidden=4, inputs=3, classes=3, seed=2)
    x, y = torch.randn(8, 5, 3, dtype=torch.float64), torch.randint(0, 3, (8,))
    scores = grasp_scores(model, (x, y))
    params = list(model.matrices().values())

    def gradient():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        return [g.detach().clone() for g in torch.autograd.grad(loss, params)]

    g = gradient()
    eps = 1e-5
    with torch.no_grad():
        for p, d in zip(params, g, strict=True):
            p.add_(eps * d)
    plus = gradient()
    with torch.no_grad():
        for p, d in zip(params, g, strict=True):
            p.sub_(2 * eps * d)
    minus = gradient()
    with torch.no_grad():
        for p, d in zip(params, g, strict=True):
            p.add_(eps * d)
    for (name, w), a, b in zip(model.matrices().items(), plus, minus, strict=True):
        hg = (a - b) / (2 * eps)
        np.testing.assert_allclose(scores[name].numpy(), (-w * hg).detach().numpy(), rtol=1e-5, atol=1e-9)
    # GraSP removes the largest scores: the kept entries are the smallest.
    mask = mask_method("grasp").make(_layer_request(model, "W_hh", 0.25, (x, y)))
    kept, dropped = scores["W_hh"][mask], scores["W_hh"][~mask]
    assert int(mask.sum()) == kept_count(mask.numel(), 0.25) and kept.max() <= dropped.min()


# ----------------------------------------------------------------------------- SynFlow
def _linear_flow(xh, hh, hy, steps):
    """R of the linear network by torch autograd in float64: R and w * dR/dw."""
    ts = [torch.tensor(m, requires_grad=True) for m in (xh, hh, hy)]
    h = torch.zeros(hh.shape[0], dtype=torch.float64)
    for _ in range(steps):
        h = ts[1] @ h + ts[0] @ torch.ones(xh.shape[1], dtype=torch.float64)
    r = (ts[2] @ h).sum()
    r.backward()
    return float(r.detach()), [(t * t.grad).detach().numpy() for t in ts]


@pytest.mark.parametrize("steps", [1, 2, 6])
def test_synflow_log_scores_equal_autograd_and_conserve_flow_across_layers(steps):
    rng = np.random.default_rng(steps)
    xh, hh, hy = rng.uniform(0, 1, (5, 3)), rng.uniform(0, 0.5, (5, 5)), rng.uniform(0, 1, (2, 5))
    hh[0, :] = 0.0  # a unit without recurrent input, and a pruned entry
    xh[1, 2] = 0.0
    r, autograd_scores = _linear_flow(xh, hh, hy, steps)
    logs = synflow_log_scores(xh, hh, hy, steps)
    assert np.exp(logs["R"]) == pytest.approx(r, rel=1e-12)
    for name, expected in zip(("W_xh", "W_hh", "W_hy"), autograd_scores, strict=True):
        np.testing.assert_allclose(np.exp(logs[name]), expected, rtol=1e-10, atol=1e-300)
    # Every input-to-output path uses one W_xh edge and one W_hy edge: each layer's scores sum to R.
    assert np.exp(logs["W_xh"]).sum() == pytest.approx(r, rel=1e-10)
    assert np.exp(logs["W_hy"]).sum() == pytest.approx(r, rel=1e-10)
    assert np.exp(logs["W_xh"][1, 2]) == 0.0


def test_synflow_scores_a_784_step_recurrence_whose_flow_overflows_a_float():
    rng = np.random.default_rng(0)
    xh, hh, hy = rng.uniform(0, 0.3, (32, 1)), rng.uniform(0, 0.3, (32, 32)), rng.uniform(0, 0.3, (10, 32))
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.linalg.matrix_power(hh, 784).sum())  # R itself is beyond float64
    logs = synflow_log_scores(xh, hh, hy, 784)
    assert np.isfinite(logs["R"]) and logs["R"] > 709  # log of the largest float64
    assert np.isfinite(logs["W_hh"]).all()
    assert np.logaddexp.reduce(logs["W_xh"].ravel()) == pytest.approx(float(logs["R"]), rel=1e-12)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_synflow_masks_keep_each_layers_budget_and_every_gate_block(cell):
    model = _model(cell=cell, hidden=12, inputs=5, classes=3, dtype=torch.float32)
    masks = synflow_masks(model, {"W_xh": 0.3, "W_hh": 0.1}, rounds=20, steps=7)
    for name, fraction in {"W_xh": 0.3, "W_hh": 0.1}.items():
        weight = model.matrices()[name]
        assert masks[name].shape == weight.shape and masks[name].dtype == torch.bool
        assert int(masks[name].sum()) == kept_count(weight.numel(), fraction)


# ----------------------------------------------------------------------------- lottery tickets
def test_chain_fractions_follow_the_share_and_stop_at_the_target():
    assert chain_fractions({"W_hh": 1.0}, 0.2) == []
    assert [lv["W_hh"] for lv in chain_fractions({"W_hh": 0.512}, 0.2)] == pytest.approx([0.8, 0.64, 0.512])
    levels = chain_fractions({"W_hh": 0.5, "W_xh": 0.7}, 0.2)
    assert [lv["W_hh"] for lv in levels] == pytest.approx([0.8, 0.64, 0.512, 0.5])
    assert [lv["W_xh"] for lv in levels] == pytest.approx([0.8, 0.7, 0.7, 0.7])


def _lottery_request(model, remaining, folder, calls, share=0.5, rewind=1, epochs=3):
    data = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 4, 3, generator=data), torch.randint(0, 2, (32,), generator=data)

    def train(m, masks, n):  # real training steps, counted: Adam on a fixed batch with the masks held
        from expander_sweeps.pruning.masks import MaskHolder
        calls.append((n, {k: int(v.sum()) for k, v in masks.items()}))
        holder = MaskHolder(m.matrices(), masks) if masks else None
        optimizer = torch.optim.Adam(m.parameters(), lr=0.05)
        for _ in range(n * 5):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(m(x), y).backward()
            if holder:
                holder.mask_gradients()
            optimizer.step()
            if holder:
                holder.apply()

    options = MaskSpec(lottery_share=share, rewind_epoch=rewind)
    return ModelMaskRequest(model, remaining, torch.Generator().manual_seed(0), options, None, train,
                            DenseCache(folder), "key", steps=4, epochs=epochs)


def test_lottery_levels_keep_exactly_the_shares_power_nested_and_are_trained_once(tmp_path):
    calls: list = []
    model = _model(hidden=10, inputs=3, dtype=torch.float32)
    entries = model.matrices()["W_hh"].numel()
    masks, rewound = lottery_ticket(_lottery_request(model, {"W_hh": 0.125}, tmp_path, calls))
    assert rewound == 1
    # W_r (1 epoch), then levels 0, 1 and 2 (each E - r = 2 epochs); level 3 is the trial's own.
    assert [n for n, _ in calls] == [1, 2, 2, 2]
    assert [c.get("W_hh", entries) for _, c in calls[1:]] == [entries, kept_count(entries, 0.5),
                                                               kept_count(entries, 0.25)]
    assert int(masks["W_hh"].sum()) == kept_count(entries, 0.125) == round(0.5**3 * entries)
    # The levels' masks are nested: each keeps a subset of the one before.
    stored = [torch.load(p, weights_only=True)["state_dict"] for p in sorted(tmp_path.glob("dense-level-*.pt"))]
    level_masks = sorted((s[MASK_PREFIX + "W_hh"] for s in stored if MASK_PREFIX + "W_hh" in s), key=lambda m: -m.sum())
    for bigger, smaller in zip(level_masks, [*level_masks[1:], masks["W_hh"]], strict=True):
        assert bool((smaller <= bigger).all())
    # The model holds W_r: the weights after the rewind epoch, as stored.
    rewind_state = torch.load(next(tmp_path.glob("dense-rewind-*.pt")), weights_only=True)["state_dict"]
    assert torch.equal(model.state_dict()["recurrent.weight_hh_l0"], rewind_state["recurrent.weight_hh_l0"])
    # A deeper ticket of the same setup reuses every level trained so far: one new level only.
    calls.clear()
    deeper, _ = lottery_ticket(_lottery_request(_model(hidden=10, inputs=3, dtype=torch.float32),
                                                {"W_hh": 0.0625}, tmp_path, calls))
    assert [n for n, _ in calls] == [2]
    assert bool((deeper["W_hh"] <= masks["W_hh"]).all())
    assert int(deeper["W_hh"].sum()) == round(0.5**4 * entries)


def test_lottery_refuses_a_rewind_point_past_training(tmp_path):
    model = _model(hidden=4, inputs=3, dtype=torch.float32)
    with pytest.raises(ValueError, match="rewind_epoch"):
        lottery_ticket(_lottery_request(model, {"W_hh": 0.5}, tmp_path, [], rewind=4, epochs=3))


# ----------------------------------------------------------------------------- the trial shape, end to end
def test_methods_at_initialisation_run_through_the_cli_with_their_own_dense_trial(tmp_path, mnist_dir):
    spec = tiny_spec_dict(tmp_path / "run", mnist_dir,
                          masks={"method": ["magnitude", "snip", "lottery"], "layers": ["W_hh"],
                                 "remaining": [1.0, 0.5, 0.2], "score_batch": 64, "lottery_share": 0.5},
                          training={"epochs": 2, "finetune_epochs": 1, "batch_size": 64, "engine": "batched"},
                          tracking={"mlflow": {"enabled": False}})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = subprocess.run([*CLI, "launch", str(path), "--workers", "1"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'run' / 'optuna.db'}")
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    by_method: dict[str, list] = {}
    for t in trials:
        by_method.setdefault(t.user_attrs["mask_method"], []).append(t)
    # One dense trial per trial shape: magnitude's (fine-tuned) and snip's (trained from initialisation).
    assert sorted((m, len(ts)) for m, ts in by_method.items()) == [("lottery", 2), ("magnitude", 3), ("snip", 3)]
    for t in by_method["snip"] + by_method["lottery"]:
        attrs = t.user_attrs
        assert attrs["mask_at"] == "initialisation" and attrs["engine"] == "per_trial"
        assert not any(k.startswith("dense/") for k in attrs)  # no dense model was trained for them
        assert "dense_checkpoint" not in attrs["files"] and not attrs["dense_trained"]
    for t in by_method["magnitude"]:
        assert "mask_at" not in t.user_attrs
    kept = {t.user_attrs["remaining_W_hh"]: t.user_attrs["W_hh/kept_fraction"] for t in by_method["lottery"]}
    entries = 16 * 16
    assert kept == {0.5: kept_count(entries, 0.5) / entries, 0.2: kept_count(entries, 0.2) / entries}
    # The lottery chain (share 0.5): 0.5 needs level 0 (its own level 1 the trial trains), 0.2 levels
    # 0, 1 (kept 0.5) and 2 (kept 0.25), then keeps 0.2; level 0 is shared: three levels, one rewind point.
    lottery = tmp_path / "run" / "cache" / "lottery"
    assert len(list(lottery.glob("dense-level-*.pt"))) == 3 and len(list(lottery.glob("dense-rewind-*.pt"))) == 1
    report = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "masks chosen at initialisation (snip, lottery)" in report and "Lee, Ajanthan, Torr" in report


def test_a_spec_whose_rewind_point_is_past_training_is_one_clear_error():
    from expander_sweeps.spec import SpecError, spec_from_dict

    with pytest.raises(SpecError, match=r"masks.rewind_epoch \(5\) is past training.epochs \(3\)"):
        spec_from_dict({"name": "x", "training": {"epochs": 3},
                        "masks": {"method": ["magnitude", "lottery"], "rewind_epoch": 5}})
    assert spec_from_dict({"name": "x", "training": {"epochs": 3}, "masks": {"rewind_epoch": 5}})  # no lottery: unread
