"""Fixed-point solvers: closed forms, agreement, per-sample stopping, failure reporting."""

from __future__ import annotations

import pytest
import torch

from badgerlab.deq import SOLVERS, SolverStats, get_solver, register_solver, relative_residual

ALL = sorted(SOLVERS)
f64 = torch.float64


def _tanh_layer(d: int = 24, b: int = 6, gamma: float = 0.8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d, d, generator=g, dtype=f64)
    W = gamma * W / torch.linalg.matrix_norm(W, ord=2)
    x = torch.randn(b, d, generator=g, dtype=f64)
    return (lambda z: torch.tanh(z @ W.T + x)), torch.zeros(b, d, dtype=f64)


@pytest.mark.parametrize("name", ALL)
def test_linear_closed_form(name):
    g = torch.Generator().manual_seed(1)
    A = torch.randn(10, 10, generator=g, dtype=f64)
    A = 0.7 * A / torch.linalg.matrix_norm(A, ord=2)
    b = torch.randn(3, 10, generator=g, dtype=f64)
    z, st = get_solver(name)(
        lambda z: z @ A.T + b, torch.zeros(3, 10, dtype=f64), tol=1e-12, max_steps=200
    )
    exact = torch.linalg.solve(torch.eye(10, dtype=f64) - A, b.T).T
    torch.testing.assert_close(z, exact, rtol=0, atol=1e-10)
    assert st.converged.all()


@pytest.mark.parametrize("name", ["anderson", "broyden"])
def test_accelerated_reach_plain_fixed_point(name):
    f, z0 = _tanh_layer()
    ref, _ = get_solver("fixed_point")(f, z0, tol=1e-13, max_steps=500)
    z, st = get_solver(name)(f, z0, tol=1e-11, max_steps=200)
    assert st.converged.all()
    torch.testing.assert_close(z, ref, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", ALL)
def test_stats_consistent(name):
    f, z0 = _tanh_layer(b=5)
    z, st = get_solver(name)(f, z0, tol=1e-6, max_steps=30)
    assert isinstance(st, SolverStats)
    B, T = st.trace.shape
    assert B == 5 and 1 <= T <= 30
    assert st.steps.dtype == torch.long and st.converged.dtype == torch.bool
    assert (st.steps >= 1).all() and (st.steps <= T).all()
    # lowest is the trace's value at the returned step, and below the tolerance when converged
    picked = st.trace.gather(1, (st.steps - 1)[:, None])[:, 0]
    torch.testing.assert_close(picked, st.lowest)
    assert torch.equal(st.converged, st.lowest < 1e-6)
    # the returned z is f of an iterate whose residual was measured: one more step moves little
    r = relative_residual(z.reshape(5, -1), f(z).reshape(5, -1))
    assert (r[st.converged] < 1e-6).all()


@pytest.mark.parametrize("name", ALL)
def test_per_sample_stop_is_batch_independent(name):
    f_all, z0 = _tanh_layer(b=4, seed=3)
    z_b, st_b = get_solver(name)(f_all, z0, tol=1e-8, max_steps=100)
    g = torch.Generator().manual_seed(3)
    W = torch.randn(24, 24, generator=g, dtype=f64)
    W = 0.8 * W / torch.linalg.matrix_norm(W, ord=2)
    x = torch.randn(4, 24, generator=g, dtype=f64)
    for i in range(4):
        zi, sti = get_solver(name)(
            lambda z, i=i: torch.tanh(z @ W.T + x[i : i + 1]),
            z0[i : i + 1],
            tol=1e-8,
            max_steps=100,
        )
        assert int(sti.steps[0]) == int(st_b.steps[i])
        torch.testing.assert_close(zi[0], z_b[i], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_step_budget(name):
    f, z0 = _tanh_layer()
    _, st = get_solver(name)(f, z0, tol=0.0, max_steps=7)
    assert st.trace.shape[1] == 7
    assert not st.converged.any()


@pytest.mark.parametrize("name", ALL)
def test_no_fixed_point_reported_not_converged(name):
    # f(z) = R z / ‖z‖ with R a rotation by 90° in each plane: R z ⊥ z, so
    # ‖f(z) − z‖ / ‖f(z)‖ = sqrt(1 + ‖z‖²) >= 1 everywhere and no fixed point exists, while f
    # stays bounded (a relative residual cannot be fooled by an iterate running off to infinity)
    def f(z):
        a, b = z[:, 0::2], z[:, 1::2]
        rz = torch.stack([-b, a], dim=2).flatten(1)
        return rz / z.norm(dim=1, keepdim=True).clamp_min(1e-6)

    z0 = torch.randn(3, 6, generator=torch.Generator().manual_seed(0), dtype=f64)
    z, st = get_solver(name)(f, z0, tol=1e-4, max_steps=40)
    assert not st.converged.any()
    assert torch.isfinite(z).all()
    assert st.lowest.min() >= 1.0 - 1e-9


def test_non_contractive_layer_not_converged():
    # an expanding linear map keeps |z| growing under plain iteration
    _, st = get_solver("fixed_point")(
        lambda z: 1.5 * z + 1.0, torch.zeros(2, 3), tol=1e-4, max_steps=50
    )
    assert not st.converged.any()


def test_anderson_singular_system_falls_back():
    # translation: every residual g = f(x) − x is the same vector, so G Gᵀ is rank one and with
    # lam = 0 the least-squares system is singular; the solver must not raise or produce NaN
    z, st = get_solver("anderson")(
        lambda z: z + 1.0, torch.zeros(4, 6), tol=1e-4, max_steps=20, m=4, lam=0.0
    )
    assert torch.isfinite(z).all()
    assert not st.converged.any()
    assert st.trace.shape[1] == 20


def test_anderson_nan_sample_does_not_spoil_batch():
    def f(z):
        out = 0.5 * z + 1.0
        return torch.cat([out[:1] * torch.nan, out[1:]])

    z, st = get_solver("anderson")(f, torch.zeros(3, 4, dtype=f64), tol=1e-10, max_steps=60)
    assert not st.converged[0] and st.converged[1:].all()
    torch.testing.assert_close(z[1:], torch.full((2, 4), 2.0, dtype=f64))


def test_damping_still_converges():
    f, z0 = _tanh_layer()
    ref, _ = get_solver("fixed_point")(f, z0, tol=1e-13, max_steps=500)
    z, st = get_solver("anderson")(f, z0, tol=1e-11, max_steps=200, beta=0.5, m=3)
    assert st.converged.all()
    torch.testing.assert_close(z, ref, rtol=0, atol=1e-9)


def test_unknown_option_and_bad_values_rejected():
    f, z0 = _tanh_layer()
    with pytest.raises(TypeError):
        get_solver("anderson")(f, z0, mm=3)
    with pytest.raises(ValueError, match="beta"):
        get_solver("anderson")(f, z0, beta=0.0)
    with pytest.raises(ValueError, match="max_steps"):
        get_solver("fixed_point")(f, z0, max_steps=0)
    with pytest.raises(ValueError, match="tol"):
        get_solver("broyden")(f, z0, tol=-1.0)
    with pytest.raises(TypeError, match="z0"):
        get_solver("fixed_point")(f, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="solver"):
        get_solver("newton")


def test_register_solver():
    def halve(f, z0, *, tol=1e-4, max_steps=50, early_stop=True):
        return get_solver("fixed_point")(f, z0, tol=tol, max_steps=max_steps)

    register_solver("halve-test", halve)
    try:
        z, st = get_solver("halve-test")(lambda z: 0.5 * z + 1, torch.zeros(1, 2), tol=1e-6)
        torch.testing.assert_close(z, torch.full((1, 2), 2.0), atol=1e-5, rtol=0)
    finally:
        SOLVERS.pop("halve-test")
    with pytest.raises(TypeError):
        register_solver("bad", 3)


def test_anderson_fewer_steps_than_plain_on_slow_contraction():
    # an affine contraction with a real spectrum spread over [0, 0.95]: plain iteration needs
    # about log(1e-6) / log(0.95) ≈ 270 steps, a Krylov-like method far fewer. (With the
    # spectrum spread on a circle instead, no short polynomial beats z^k and Anderson does not
    # help much: that is not a solver bug.)
    g = torch.Generator().manual_seed(5)
    Q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=f64))
    A = Q @ torch.diag(torch.linspace(0, 0.95, 16, dtype=f64)) @ Q.T
    b = torch.randn(2, 16, generator=g, dtype=f64)
    f = lambda z: z @ A.T + b  # noqa: E731
    z0 = torch.zeros(2, 16, dtype=f64)
    _, st_p = get_solver("fixed_point")(f, z0, tol=1e-6, max_steps=1000)
    for name in ("anderson", "broyden"):
        _, st = get_solver(name)(f, z0, tol=1e-6, max_steps=1000)
        assert st_p.converged.all() and st.converged.all()
        assert st.steps.float().mean() < 0.5 * st_p.steps.float().mean()


@pytest.mark.parametrize("name", ALL)
def test_early_stop_off_gives_the_same_answer(name):
    f, z0 = _tanh_layer(b=5, seed=4)
    z1, st1 = get_solver(name)(f, z0, tol=1e-8, max_steps=80)
    z2, st2 = get_solver(name)(f, z0, tol=1e-8, max_steps=80, early_stop=False)
    assert st2.trace.shape[1] == 80 > st1.trace.shape[1]
    assert torch.equal(st1.steps, st2.steps) and torch.equal(st1.converged, st2.converged)
    torch.testing.assert_close(z1, z2, rtol=0, atol=0)


def test_fixed_point_under_vmap():
    # one solve per weight matrix, batched by vmap (e.g. over an ensemble or a population)
    g = torch.Generator().manual_seed(6)
    Ws = torch.randn(3, 8, 8, generator=g, dtype=f64)
    Ws = 0.6 * Ws / torch.linalg.matrix_norm(Ws, ord=2)[:, None, None]
    x = torch.randn(2, 8, generator=g, dtype=f64)

    def solve(W):
        z, st = get_solver("fixed_point")(
            lambda z: torch.tanh(z @ W.T + x),
            torch.zeros(2, 8, dtype=f64),
            tol=1e-10,
            max_steps=120,
            early_stop=False,
        )
        return z, st.converged

    zs, conv = torch.func.vmap(solve)(Ws)
    assert conv.all()
    for W, z in zip(Ws, zs, strict=True):
        torch.testing.assert_close(torch.tanh(z @ W.T + x), z, rtol=0, atol=1e-9)
