"""Implicit gradients against unrolled solves and gradcheck; phantom gradients; regularisers."""

from __future__ import annotations

import pytest
import torch

from badgerlab.deq import (
    implicit_solve,
    jacobian_frobenius,
    phantom_grad,
    saved_bytes,
    spectral_radius,
    unrolled_solve,
)

f64 = torch.float64


def _params(d=12, b=3, gamma=0.7, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d, d, generator=g, dtype=f64)
    W = (gamma * W / torch.linalg.matrix_norm(W, ord=2)).requires_grad_()
    x = torch.randn(b, d, generator=g, dtype=f64).requires_grad_()
    c = torch.randn(b, d, generator=g, dtype=f64)
    return W, x, c


@pytest.mark.parametrize("solver", ["fixed_point", "anderson", "broyden"])
def test_implicit_gradient_equals_converged_unrolled(solver):
    W, x, c = _params()

    def f(z):
        return torch.tanh(z @ W.T + x)

    z0 = torch.zeros_like(c)
    z, st = implicit_solve(f, z0, solver=solver, tol=1e-13, max_steps=300)
    assert st.converged.all() and z.requires_grad
    g_imp = torch.autograd.grad((z * c).sum(), (W, x))
    zu, _ = unrolled_solve(f, z0, depth=300)
    g_unr = torch.autograd.grad((zu * c).sum(), (W, x))
    for a, b in zip(g_imp, g_unr, strict=True):
        assert (a - b).norm() / b.norm() < 1e-9


def test_implicit_gradcheck():
    W, x, _ = _params(d=4, b=2)

    def fn(W, x):
        z, _ = implicit_solve(
            lambda z: torch.tanh(z @ W.T + x), torch.zeros_like(x), tol=1e-14, max_steps=400
        )
        return z

    assert torch.autograd.gradcheck(fn, (W, x), eps=1e-6, atol=1e-6)


def test_backward_stats_and_other_backward_solver():
    W, x, c = _params()
    seen = []
    z, _ = implicit_solve(
        lambda z: torch.tanh(z @ W.T + x),
        torch.zeros_like(c),
        solver="anderson",
        tol=1e-12,
        max_steps=200,
        backward_solver="broyden",
        backward_tol=1e-12,
        on_backward=seen.append,
    )
    (z * c).sum().backward()
    assert len(seen) == 1 and seen[0].converged.all()


def test_no_grad_returns_fixed_point_without_graph():
    W, x, c = _params()
    with torch.no_grad():
        z, _ = implicit_solve(lambda z: torch.tanh(z @ W.T + x), torch.zeros_like(c), tol=1e-10)
    assert not z.requires_grad


def test_phantom_gradient_approaches_implicit():
    W, x, c = _params(gamma=0.5)

    def f(z):
        return torch.tanh(z @ W.T + x)

    z, _ = implicit_solve(f, torch.zeros_like(c), tol=1e-13, max_steps=300)
    g_imp = torch.autograd.grad((z * c).sum(), W)[0]
    z_star = z.detach()
    errs = []
    for k in (1, 3, 10):
        zk = phantom_grad(f, z_star, steps=k)
        errs.append(float((torch.autograd.grad((zk * c).sum(), W)[0] - g_imp).norm()))
    # ‖J‖ <= 0.5, so the truncated Neumann series error shrinks at least like 0.5^k
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.5**9 * g_imp.norm()
    # 1 step at τ = 1 is exactly the gradient through one application of f at z*
    z1 = phantom_grad(f, z_star)
    torch.testing.assert_close(z1, f(z_star))
    with pytest.raises(ValueError, match="tau"):
        phantom_grad(f, z_star, tau=1.5)


def test_hutchinson_is_unbiased_for_frobenius_norm():
    torch.manual_seed(0)
    A = torch.randn(8, 8, dtype=f64)
    z = torch.randn(4000, 8, dtype=f64, requires_grad=True)
    est = jacobian_frobenius(z @ A.T, z, create_graph=False)
    exact = float(A.pow(2).sum())
    # per-sample variance is 2‖AAᵀ‖²_F; 4000 samples put the mean within a few % of exact
    se = float((2 * (A @ A.T).pow(2).sum()) ** 0.5) / 4000**0.5
    assert abs(float(est.mean()) - exact) < 4 * se


def test_jacobian_regulariser_is_differentiable():
    W, x, _ = _params()
    z = torch.zeros(3, 12, dtype=f64, requires_grad=True)
    est = jacobian_frobenius(torch.tanh(z @ W.T + x), z, samples=2)
    (gW,) = torch.autograd.grad(est.sum(), W)
    assert torch.isfinite(gW).all() and gW.abs().sum() > 0


def test_spectral_radius_power_method():
    g = torch.Generator().manual_seed(2)
    Q, _ = torch.linalg.qr(torch.randn(10, 10, generator=g, dtype=f64))
    eig = torch.linspace(-0.3, 0.8, 10, dtype=f64)
    A = Q @ torch.diag(eig) @ Q.T
    z = torch.randn(2, 10, generator=g, dtype=f64, requires_grad=True)
    rho = spectral_radius(z @ A.T, z, iters=200)
    torch.testing.assert_close(rho, torch.full((2,), 0.8, dtype=f64), atol=1e-4, rtol=0)


def test_saved_bytes_flat_for_implicit_linear_for_unrolled():
    W, x, c = _params(d=32, b=16)

    def f(z):
        return torch.tanh(z @ W.T + x)

    z0 = torch.zeros_like(c)
    imp = [
        saved_bytes(lambda n=n: implicit_solve(f, z0, tol=0.0, max_steps=n))[1] for n in (8, 32)
    ]
    unr = [saved_bytes(lambda n=n: unrolled_solve(f, z0, depth=n))[1] for n in (8, 32)]
    assert imp[0] == imp[1] > 0
    # each unrolled step holds one new (B, d) float64 tensor: its tanh output, which is also
    # the next step's matmul input (one storage, counted once); W is shared by all steps
    per_step = 16 * 32 * 8
    assert unr[1] - unr[0] == 24 * per_step
