"""CUDA paths: run where a GPU is, skipped with the reason elsewhere."""

import pytest
import torch

from expander_sweeps.models import build_model
from expander_sweeps.pruning.masks import MaskHolder, magnitude_mask
from expander_sweeps.spec import ModelSpec
from expander_sweeps.training.train import fit, resolve_device

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def test_auto_device_falls_back_to_cpu_and_cuda_request_is_explained():
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
    else:
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(RuntimeError, match="no CUDA device"):
            resolve_device("cuda")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_mask_held_on_cuda_with_cudnn(cell):
    device = torch.device("cuda")
    x = torch.rand(512, 28, 28, device=device)
    y = torch.randint(0, 10, (512,), device=device)
    model = build_model(ModelSpec(cell=cell, hidden=64), 28, 10, seed=0).to(device)
    fit(model, x, y, phase="dense", epochs=1, batch_size=128, lr=1e-3, seed=0)
    params = model.matrices()
    masks = {"W_xh": magnitude_mask(params["W_xh"], 0.2), "W_hh": magnitude_mask(params["W_hh"], 0.05)}
    holder = MaskHolder(params, masks)
    fit(model, x, y, phase="finetune", epochs=2, batch_size=128, lr=1e-3, seed=1, masks=holder)
    for name, mask in masks.items():
        assert torch.count_nonzero(params[name].detach()[~mask]) == 0


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_batched_engine_on_cuda_matches_cudnn_trained_one_by_one(cell):
    """The stacked model (baddbmm per step) on CUDA against cuDNN's per model: the same masked
    fine-tuning to float rounding (cuDNN may use TF32, hence the looser tolerance than on a CPU)."""
    import copy

    from expander_sweeps.training.batched import StackedClassifier, StackedMasks, fit_batched

    device = torch.device("cuda")
    x = torch.rand(512, 28, 28, device=device)
    y = torch.randint(0, 10, (512,), device=device)
    base = build_model(ModelSpec(cell=cell, hidden=64), 28, 10, seed=0).to(device)
    models, masks = [], []
    for remaining in (1.0, 0.3, 0.05):
        model = copy.deepcopy(base)
        mask = magnitude_mask(model.matrices()["W_hh"], remaining)
        MaskHolder(model.matrices(), {"W_hh": mask})
        models.append(model)
        masks.append(mask)
    stacked = StackedClassifier(models)
    held = StackedMasks(stacked, {"recurrent.weight_hh_l0": torch.stack(masks)})
    settings = dict(phase="finetune", epochs=2, batch_size=128, lr=1e-3, seed=1, clip_grad_norm=1.0)
    fitted = fit_batched(stacked, x, y, masks=held, **settings)
    assert fitted.errors == [None] * 3
    for n, (model, mask) in enumerate(zip(models, masks, strict=True)):
        fit(model, x, y, masks=MaskHolder(model.matrices(), {"W_hh": mask}), **settings)
        state = stacked.state_dict_of(n)
        for key, value in model.state_dict().items():
            assert torch.allclose(state[key], value, atol=2e-3), (cell, n, key)
        assert torch.count_nonzero(state["recurrent.weight_hh_l0"][~mask]) == 0


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_scores_at_initialisation_on_cuda_match_the_cpu(cell):
    """SNIP and GraSP on CUDA (GraSP's double backward runs without cuDNN's kernels) give the CPU's
    scores to float rounding; SynFlow's masks are computed on the CPU from the CUDA model's weights."""
    from expander_sweeps.pruning.scores import grasp_scores, snip_scores, synflow_masks

    torch.manual_seed(0)
    x, y = torch.rand(64, 12, 8), torch.randint(0, 10, (64,))
    cpu = build_model(ModelSpec(cell=cell, hidden=32), 8, 10, seed=0)
    gpu = build_model(ModelSpec(cell=cell, hidden=32), 8, 10, seed=0).cuda()
    for score in (snip_scores, grasp_scores):
        on_cpu = score(cpu, (x, y))
        on_gpu = score(gpu, (x.cuda(), y.cuda()))
        for name, value in on_cpu.items():
            torch.testing.assert_close(on_gpu[name].cpu(), value, rtol=2e-3, atol=1e-6)
    masks = synflow_masks(gpu, {"W_hh": 0.2}, rounds=10, steps=12)
    assert masks["W_hh"].device.type == "cuda"
    assert torch.equal(masks["W_hh"].cpu(), synflow_masks(cpu, {"W_hh": 0.2}, rounds=10, steps=12)["W_hh"])
