"""DEQ module, the contractive layer, the MDEQ, configs, and agreement with torchdeq."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from badgerlab.deq import (
    DEQ,
    MDEQ,
    ContractiveLayer,
    DEQConfig,
    MDEQConfig,
    implicit_solve,
    spectral_radius,
    unrolled_solve,
)

f64 = torch.float64


def test_config_rejects_unknown_keys_and_options():
    with pytest.raises(ValidationError, match="extra"):
        DEQConfig(tolerance=1e-3)
    with pytest.raises(ValidationError, match="mm"):
        DEQConfig(solver="anderson", solver_options={"mm": 3})
    with pytest.raises(ValidationError, match="solver"):
        DEQConfig(solver="newton")
    with pytest.raises(ValidationError, match="m"):
        DEQConfig(solver="fixed_point", solver_options={"m": 3})
    with pytest.raises(ValidationError, match="extra"):
        MDEQConfig(chanels=(8, 16))
    with pytest.raises(ValidationError, match="2 or 3"):
        MDEQConfig(channels=(8,))
    cfg = DEQConfig(solver="anderson", solver_options={"m": 3, "beta": 0.8})
    assert cfg.solver_options == {"m": 3, "beta": 0.8}
    with pytest.raises(ValidationError):
        DEQ(ContractiveLayer(3, 4), tol=-1.0)


def test_contractive_layer_is_contractive():
    torch.manual_seed(0)
    layer = ContractiveLayer(5, 32, gamma=0.9)
    assert layer.exact_lipschitz() <= 0.9 * (1 + 1e-4)
    # after a large weight change the power iteration catches up within a few refreshes
    with torch.no_grad():
        layer.weight.add_(0.3 * torch.randn_like(layer.weight))
    for _ in range(20):
        layer.refresh()
    assert layer.exact_lipschitz() <= 0.9 * (1 + 1e-3)
    with pytest.raises(ValueError, match="gamma"):
        ContractiveLayer(5, 32, gamma=1.0)


@pytest.mark.parametrize("grad", ["implicit", "phantom", "unrolled"])
def test_deq_module_grad_modes(grad):
    torch.manual_seed(0)
    layer = ContractiveLayer(6, 16)
    deq = DEQ(layer, grad=grad, tol=1e-5, max_steps=60)
    x = torch.randn(5, 6)
    z = deq(x)
    assert z.shape == (5, 16) and z.requires_grad
    assert deq.stats.converged.all()
    z.square().sum().backward()
    for p in layer.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    if grad == "implicit":
        assert deq.backward_stats is not None and deq.backward_stats.converged.all()


def test_deq_module_implicit_matches_unrolled_float64():
    torch.manual_seed(1)
    layer = ContractiveLayer(6, 16).double()
    layer.eval()  # no refresh between the two solves: the same f
    x = torch.randn(4, 6, dtype=f64)
    c = torch.randn(4, 16, dtype=f64)
    deq = DEQ(layer, tol=1e-13, max_steps=300)
    (deq(x) * c).sum().backward()
    g_imp = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    u = layer.inject(x)
    z, _ = unrolled_solve(lambda z: layer(z, u), layer.init_z(x), depth=300)
    (z * c).sum().backward()
    for a, p in zip(g_imp, layer.parameters(), strict=True):
        assert (a - p.grad).norm() <= 1e-9 * p.grad.norm()


def test_contractive_layer_spectral_radius_below_gamma():
    torch.manual_seed(2)
    layer = ContractiveLayer(6, 24, gamma=0.8).double()
    x = torch.randn(3, 6, dtype=f64)
    with torch.no_grad():
        z = DEQ(layer, tol=1e-10, max_steps=100).eval()(x)
    z = z.requires_grad_()
    rho = spectral_radius(layer(z, layer.inject(x)), z, iters=100)
    assert (rho <= 0.8 * (1 + 1e-3)).all()


def test_mdeq_shapes_converges_and_trains_all_parameters():
    torch.manual_seed(0)
    cfg = MDEQConfig(channels=(4, 8), num_classes=3, solver=DEQConfig(tol=1e-4, max_steps=40))
    model = MDEQ(cfg, 8, 8)
    x = torch.rand(6, 1, 8, 8)
    logits, mask = model(x)
    assert logits.shape == (6, 3) and mask.shape == (6, 8, 8)
    assert model.stats.converged.all()
    (logits.square().sum() + mask.square().sum()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    with pytest.raises(ValueError, match="x must be"):
        model(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="divisible"):
        MDEQ(MDEQConfig(channels=(4, 8, 8)), 6, 6)


def test_mdeq_cell_is_contractive():
    torch.manual_seed(3)
    cfg = MDEQConfig(channels=(2, 4, 4), gamma=0.9)
    cell = MDEQ(cfg, 8, 8).cell.double()
    D = sum(cell.sizes)
    with torch.no_grad():
        L = cell.linear(torch.eye(D, dtype=f64)).T  # the linear map as a (D, D) matrix
    exact = torch.linalg.matrix_norm(L, ord=2)
    # power iteration approaches ‖L‖₂ from below; even after the 50 steps of __init__ (here the
    # top singular values are within 0.5% of each other) f stays a contraction
    sigma0 = cell.sigma().detach()
    assert sigma0 <= exact * (1 + 1e-9)
    assert float(cell.gamma / sigma0 * exact) < 1.0
    cell.refresh(iters=3000)
    torch.testing.assert_close(cell.sigma(), exact, rtol=1e-6, atol=0)


def test_agrees_with_torchdeq(require):
    require(module="torchdeq")
    import torchdeq

    g = torch.Generator().manual_seed(0)
    d, b = 16, 4
    W = torch.randn(d, d, generator=g, dtype=f64)
    W = (0.8 * W / torch.linalg.matrix_norm(W, ord=2)).requires_grad_()
    x = torch.randn(b, d, generator=g, dtype=f64).requires_grad_()
    c = torch.randn(b, d, generator=g, dtype=f64)

    def f(z):
        return torch.tanh(z @ W.T + x)

    ref = torchdeq.get_deq(
        f_solver="anderson",
        b_solver="anderson",
        ift=True,
        f_max_iter=200,
        b_max_iter=200,
        f_tol=1e-12,
        b_tol=1e-12,
        f_stop_mode="rel",
        b_stop_mode="rel",
    )
    ref.train()
    z_out, _ = ref(f, torch.zeros(b, d, dtype=f64))
    g_ref = torch.autograd.grad((z_out[-1] * c).sum(), (W, x))
    z, st = implicit_solve(f, torch.zeros(b, d, dtype=f64), tol=1e-12, max_steps=200)
    g_ours = torch.autograd.grad((z * c).sum(), (W, x))
    assert st.converged.all()
    torch.testing.assert_close(z, z_out[-1].detach(), rtol=0, atol=1e-10)
    for a, r in zip(g_ours, g_ref, strict=True):
        assert (a - r).norm() <= 1e-9 * r.norm()


def test_non_convergence_is_logged(caplog):
    torch.manual_seed(0)
    deq = DEQ(ContractiveLayer(4, 8), tol=1e-12, max_steps=2)
    with caplog.at_level("INFO", logger="badgerlab.deq.layers"):
        deq(torch.randn(3, 4)).sum().backward()
    assert not deq.stats.converged.any()
    assert "3/3 samples not converged" in caplog.text
    assert "backward solve" in caplog.text
