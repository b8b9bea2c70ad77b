"""Long sequences (pixel MNIST, k = 784): gradient clipping, orthogonal and IRNN inits, and a
divergence message that says what helps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from expander_sweeps.data import load_dataset
from expander_sweeps.models import build_model
from expander_sweeps.spec import ModelSpec, SpecError, TrainingSpec, load_spec, spec_from_dict
from expander_sweeps.training.train import divergence_hint, fit

REPO = Path(__file__).resolve().parents[1]


def test_orthogonal_init_gives_orthogonal_gate_blocks():
    model = build_model(ModelSpec(cell="lstm", hidden=8, init="orthogonal"), 3, 10, seed=0)
    w_hh = model.matrices()["W_hh"].detach()
    for block in w_hh.split(8):
        assert torch.allclose(block @ block.T, torch.eye(8), atol=1e-5)
    assert all(torch.count_nonzero(b) == 0 for n, b in model.named_parameters() if "bias" in n)


def test_identity_init_is_the_irnn():
    model = build_model(ModelSpec(hidden=6, nonlinearity="relu", init="identity"), 3, 10, seed=0)
    matrices = model.matrices()
    assert torch.equal(matrices["W_hh"].detach(), torch.eye(6))
    assert matrices["W_xh"].detach().std().item() == pytest.approx(0.001, rel=0.5)


def test_identity_init_needs_a_relu_rnn():
    with pytest.raises(ValueError, match="nonlinearity: relu"):
        ModelSpec(cell="rnn", nonlinearity="tanh", init="identity")
    with pytest.raises(ValueError, match="cell 'lstm'"):
        ModelSpec(cell="lstm", nonlinearity="relu", init="identity")


def test_clip_grad_norm_must_be_positive_and_finite():
    assert TrainingSpec().clip_grad_norm is None
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            TrainingSpec(clip_grad_norm=bad)


def test_clipping_bounds_every_step_of_the_optimizer():
    # Clipping to 1e-3 with plain Adam: every step moves each weight by at most ~lr, but the
    # norm of the gradient Adam sees must be <= 1e-3. Record it with a hook after clipping.
    torch.manual_seed(0)
    model = build_model(ModelSpec(hidden=8), 4, 3, seed=0)
    x, y = torch.randn(32, 20, 4) * 10, torch.randint(0, 3, (32,))
    norms = []
    original_step = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())
        return original_step(self, *args, **kwargs)

    torch.optim.Adam.step = spy
    try:
        fit(model, x, y, phase="dense", epochs=2, batch_size=8, lr=1e-3, seed=0, clip_grad_norm=1e-3)
    finally:
        torch.optim.Adam.step = original_step
    assert len(norms) == 8 and max(norms) <= 1e-3 * (1 + 1e-5)


def test_divergence_hint_fits_the_case():
    long = divergence_hint(784, None)
    assert "k = 784" in long and "training.clip_grad_norm" in long and "model.init: orthogonal" in long
    assert "training.clip_grad_norm" not in divergence_hint(784, 1.0)
    short = divergence_hint(28, None)
    assert short.startswith("a lower training.lr") and "model.init" not in short


@pytest.fixture(scope="module")
def pixel_mnist(mnist_dir):
    spec = spec_from_dict({"name": "px", "data": {"root": str(mnist_dir), "download": False,
                                                  "sequence": "pixels", "limit_train": 256, "limit_test": 20}})
    return load_dataset(spec.data)


@pytest.mark.slow
def test_kaiming_uniform_diverges_at_k_784_and_the_message_names_the_cure(pixel_mnist):
    # The reproduction: a tanh RNN with Kaiming-uniform W_hh (spectral radius > 1).
    model = build_model(ModelSpec(hidden=128, init="kaiming_uniform"), 1, 10, seed=0)
    with pytest.raises(FloatingPointError, match=r"k = 784 .*clip_grad_norm"):
        fit(model, pixel_mnist.x_train, pixel_mnist.y_train, phase="dense", epochs=1, batch_size=64,
            lr=1e-3, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("init,nonlinearity,lr", [("orthogonal", "tanh", 1e-3), ("identity", "relu", 1e-4)])
def test_long_sequence_trains_with_clipping_and_a_radius_one_init(pixel_mnist, init, nonlinearity, lr):
    model = build_model(ModelSpec(hidden=16, init=init, nonlinearity=nonlinearity), 1, 10, seed=0)
    history = fit(model, pixel_mnist.x_train[:128], pixel_mnist.y_train[:128], phase="dense", epochs=3, batch_size=32,
                  lr=lr, seed=0, clip_grad_norm=1.0)
    losses = [s.loss for s in history]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]


def test_the_shipped_pixel_spec_uses_the_remedies():
    spec = load_spec(REPO / "sweeps" / "mnist_pixels.yaml")
    assert spec.data.sequence == "pixels"
    assert spec.training.clip_grad_norm is not None
    assert spec.model.init in {"orthogonal", "identity"}


def test_every_shipped_spec_is_valid():
    paths = sorted((REPO / "sweeps").rglob("*.yaml"))
    assert len(paths) >= 10
    for path in paths:
        try:
            load_spec(path)
        except SpecError as err:  # pragma: no cover - the message is the failure
            pytest.fail(f"{path.relative_to(REPO)}: {err}")
