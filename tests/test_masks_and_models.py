import math

import pytest
import torch

from expander_sweeps.models import build_model
from expander_sweeps.pruning.masks import (
    MaskHolder,
    kept_count,
    magnitude_mask,
    magnitude_min_degree_mask,
    random_mask,
    regular_mask,
)
from expander_sweeps.spec import ModelSpec
from expander_sweeps.training.train import accuracy, fit


@pytest.mark.parametrize("remaining", [1.0, 0.5, 0.1, 0.013, 1e-6])
def test_magnitude_mask_keeps_the_exact_count_of_largest_weights(remaining):
    w = torch.randn(128, 28, generator=torch.Generator().manual_seed(0))
    mask = magnitude_mask(w, remaining)
    assert mask.sum().item() == kept_count(w.numel(), remaining) == max(1, round(remaining * w.numel()))
    if remaining < 1:
        assert w.abs()[mask].min() >= w.abs()[~mask].max()


def test_random_mask_has_the_same_density_and_is_seeded():
    a = random_mask((64, 64), 0.1, torch.Generator().manual_seed(1))
    b = random_mask((64, 64), 0.1, torch.Generator().manual_seed(1))
    assert a.sum().item() == round(0.1 * 64 * 64)
    assert torch.equal(a, b)


def test_remaining_out_of_range_is_refused():
    with pytest.raises(ValueError, match="but got 0"):
        kept_count(10, 0.0)


@pytest.mark.parametrize("cell,gates", [("rnn", 1), ("lstm", 4), ("gru", 3)])
def test_matrices_map_the_paper_names_to_parameters(cell, gates):
    model = build_model(ModelSpec(cell=cell, hidden=8), input_size=5, num_classes=10, seed=0)
    m = model.matrices()
    assert list(m) == ["W_xh", "W_hh", "W_hy"]
    assert m["W_xh"] is model.recurrent.weight_ih_l0
    assert m["W_xh"].shape == (gates * 8, 5) and m["W_hh"].shape == (gates * 8, 8)
    assert m["W_hy"].shape == (10, 8)
    assert model(torch.zeros(3, 7, 5)).shape == (3, 10)


def test_kaiming_uniform_init_and_the_pytorch_default_differ():
    kaiming = build_model(ModelSpec(hidden=64, init="kaiming_uniform"), 28, 10, seed=0)
    default = build_model(ModelSpec(hidden=64, init="pytorch_default"), 28, 10, seed=0)
    w_k, w_d = kaiming.matrices()["W_hh"], default.matrices()["W_hh"]
    assert w_k.abs().max() <= math.sqrt(6 / 64) and w_k.abs().max() > 0.9 * math.sqrt(6 / 64)
    assert w_d.abs().max() <= 1 / math.sqrt(64)
    assert torch.count_nonzero(kaiming.recurrent.bias_hh_l0) == 0
    again = build_model(ModelSpec(hidden=64), 28, 10, seed=0)
    assert torch.equal(again.matrices()["W_hh"], w_k)


def _toy_task(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 6, 4, generator=g)
    y = (x[:, :, 0].sum(1) > 3).long()
    return x, y


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_mask_is_held_through_finetuning_with_adam(cell):
    x, y = _toy_task()
    model = build_model(ModelSpec(cell=cell, hidden=12), 4, 2, seed=0)
    fit(model, x, y, phase="dense", epochs=2, batch_size=32, lr=1e-2, seed=0)
    params = model.matrices()
    masks = {"W_xh": magnitude_mask(params["W_xh"], 0.3), "W_hh": magnitude_mask(params["W_hh"], 0.1)}
    holder = MaskHolder(params, masks)
    before = {n: params[n].detach().clone() for n in masks}
    fit(model, x, y, phase="finetune", epochs=3, batch_size=32, lr=1e-2, seed=1, masks=holder)
    for name, mask in masks.items():
        weight = params[name].detach()
        assert torch.count_nonzero(weight[~mask]) == 0, f"{name} revived a masked weight"
        assert not torch.equal(weight[mask], before[name][mask]), f"{name} kept weights did not train"
    assert accuracy(model, x, y, batch_size=100) > 0.5


def test_training_is_reproducible_on_cpu():
    x, y = _toy_task()
    runs = []
    for _ in range(2):
        model = build_model(ModelSpec(hidden=10), 4, 2, seed=5)
        history = fit(model, x, y, phase="dense", epochs=2, batch_size=32, lr=1e-2, seed=7,
                      noise_fraction=0.2, noise_variance=0.3)
        runs.append((model.matrices()["W_hh"].detach().clone(), history[-1].loss))
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]


@pytest.mark.parametrize("shape,remaining", [((128, 28), 0.1), ((64, 64), 0.05), ((32, 128), 0.5)])
def test_regular_mask_has_equal_row_degrees_and_balanced_columns(shape, remaining):
    mask = regular_mask(shape, remaining, torch.Generator().manual_seed(0))
    rows = mask.sum(dim=1)
    cols = mask.sum(dim=0)
    assert (rows == round(remaining * shape[1])).all()
    assert int(cols.max() - cols.min()) <= 1
    again = regular_mask(shape, remaining, torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)


def test_regular_mask_is_a_good_expander_where_magnitude_is_not():
    # A square biregular random graph of degree 6 is Ramanujan with high probability.
    from expander_sweeps.graphs.spectral import layer_spectrum

    mask = regular_mask((128, 128), 6 / 128, torch.Generator().manual_seed(1))
    s = layer_spectrum(mask.numpy().astype(float))
    assert s.lambda_1 == pytest.approx(6.0)
    assert s.lambda_2 < 2 * (6 - 1) ** 0.5 and s.delta_r > 0
    # A magnitude mask of the same size on Gaussian weights has irregular degrees: not Ramanujan.
    for seed in range(3):
        weight = torch.randn(128, 128, generator=torch.Generator().manual_seed(seed))
        magnitude = layer_spectrum(magnitude_mask(weight, 6 / 128).numpy().astype(float))
        assert magnitude.edges == s.edges == 768
        assert magnitude.delta_r < 0 < s.delta_r


@pytest.mark.parametrize("remaining,min_degree", [(0.02, 1), (0.3, 2), (0.05, 3)])
def test_magnitude_with_minimum_degree_honours_it(remaining, min_degree):
    weight = torch.randn(128, 28, generator=torch.Generator().manual_seed(2))
    mask = magnitude_min_degree_mask(weight, remaining, min_degree)
    assert int(mask.sum(dim=1).min()) >= min_degree
    assert int(mask.sum(dim=0).min()) >= min_degree
    budget = round(remaining * weight.numel())
    # The guaranteed edges: each row's and each column's min_degree largest |w|.
    forced = torch.zeros_like(mask)
    order_r = weight.abs().argsort(dim=1, descending=True)[:, :min_degree]
    forced.scatter_(1, order_r, True)
    order_c = weight.abs().argsort(dim=0, descending=True)[:min_degree, :]
    forced.scatter_(0, order_c, True)
    assert bool((mask | ~forced).all())  # every guaranteed edge is kept
    # Exactly the budget, or the guarantees alone when they need more.
    assert int(mask.sum()) == max(budget, int(forced.sum()))
    if int(forced.sum()) < budget:
        # Beyond its guarantees it is a magnitude mask: every kept free edge outweighs every cut one.
        free_kept = weight.abs()[mask & ~forced]
        cut = weight.abs()[~mask]
        assert len(free_kept) > 0 and free_kept.min() >= cut.max()


def test_magnitude_with_minimum_degree_zero_is_plain_magnitude():
    weight = torch.randn(40, 30, generator=torch.Generator().manual_seed(5))
    assert torch.equal(magnitude_min_degree_mask(weight, 0.1, 0), magnitude_mask(weight, 0.1))
