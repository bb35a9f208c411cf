"""The 27-term rule term by term on a hand example, Oja's fixed point, the regression oracle."""

from __future__ import annotations

import itertools

import pytest
import torch

from badgerlab.plasticity import discover as D
from badgerlab.plasticity import polynomial as P

X, W = [2.0, 3.0], [0.5, -1.0]  # y = 2·0.5 + 3·(−1) = −2
Y = -2.0


@pytest.mark.parametrize("abc", list(itertools.product(range(3), repeat=3)))
def test_each_term_on_a_hand_example(abc):
    a, b, c = abc
    theta = torch.zeros(27, dtype=torch.float64)
    theta[9 * a + 3 * b + c] = 1.0
    x, w = torch.tensor(X, dtype=torch.float64), torch.tensor(W, dtype=torch.float64)
    dw = P.update(theta, x, w, eta=0.5)
    expected = [0.5 * xi**a * Y**b * wi**c for xi, wi in zip(X, W, strict=True)]
    assert dw.tolist() == pytest.approx(expected, rel=1e-12, abs=1e-12)
    m = P.monomials(x, (x * w).sum(), w)  # (2, 27)
    assert m[:, 9 * a + 3 * b + c].tolist() == pytest.approx([e / 0.5 for e in expected])


def test_names_and_indices():
    assert P.term_name(P.term_index(1, 1, 0)) == "θ_110"
    assert P.term_name(7) == "θ_021"
    assert len({P.term_index(*t) for t in P.TERMS}) == 27
    with pytest.raises(ValueError, match="alpha"):
        P.term_index(3, 0, 0)


def test_oja_theta_is_oja_update():
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    y = (x * w).sum(-1, keepdim=True)
    torch.testing.assert_close(P.update(P.oja_theta(), x, w, eta=0.1), 0.1 * y * (x - y * w))


def test_batched_rules_equal_one_at_a_time():
    g = torch.Generator().manual_seed(1)
    theta = torch.randn(4, 27, generator=g)
    x, w = torch.randn(3, 5, generator=g), torch.randn(4, 3, 5, generator=g)
    batched = P.update(theta, x, w, eta=0.05)
    for p in range(4):
        torch.testing.assert_close(batched[p], P.update(theta[p], x, w[p], eta=0.05))


def test_oja_converges_to_pc1_with_unit_norm():
    g = torch.Generator().manual_seed(2)
    tasks = D.sample_tasks(16, n_inputs=5, steps=5000, generator=g)
    wT = P.run_rule(
        P.oja_theta(), tasks.w0, tasks.xs, eta=0.005
    )  # stochastic jitter about u₁ is O(η)
    assert D.cos2_pc1(wT, tasks.pc1).min() > 0.97
    assert (wT.norm(dim=-1) - 1).abs().max() < 0.1


def test_regression_oracle_recovers_oja_and_a_random_rule():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(200, 5, generator=g, dtype=torch.float64)
    w = torch.randn(200, 5, generator=g, dtype=torch.float64) * 0.7
    for theta in (P.oja_theta(dtype=torch.float64), torch.randn(27, generator=g).double()):
        dw = P.update(theta, x, w, eta=0.05)
        assert (P.fit_rule(x, w, dw, eta=0.05) - theta).abs().max() < 1e-6


def test_oracle_reports_unidentifiable_data():
    x = torch.ones(30, 3, dtype=torch.float64)
    w = torch.zeros(30, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="not identified"):
        P.fit_rule(x, w, torch.zeros_like(x))


def test_meta_loss_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(4)
    tasks = D.sample_tasks(3, n_inputs=3, steps=15, generator=g)
    tasks = D.Tasks(*(t.double() for t in tasks))
    theta = P.oja_theta(dtype=torch.float64) + 0.05 * torch.randn(27, generator=g).double()
    theta.requires_grad_(True)
    loss = D.meta_loss(theta, tasks, eta=0.05, cap=1e6)
    (grad,) = torch.autograd.grad(loss, theta)
    h = 1e-6
    for i in (0, 7, 12, 26):
        e = torch.zeros(27, dtype=torch.float64)
        e[i] = h
        with torch.no_grad():
            fd = (D.meta_loss(theta + e, tasks, eta=0.05, cap=1e6)
                  - D.meta_loss(theta - e, tasks, eta=0.05, cap=1e6)) / (2 * h)  # fmt: skip
        assert float(grad[i]) == pytest.approx(float(fd), rel=1e-5, abs=1e-8)


def test_soft_threshold_closed_form():
    t = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.5])
    assert D.soft_threshold(t, 0.5).tolist() == [-1.5, 0.0, 0.0, 0.0, 1.0]


def test_masked_generation_keeps_the_support():
    from badgerlab.evolve import get_es

    es = get_es("openai-es")
    g = torch.Generator().manual_seed(5)
    state = es.init(torch.randn(27, generator=g), popsize=8, shaping="centred_ranks")
    mask = torch.zeros(27)
    mask[[7, 12]] = 1
    for _ in range(3):
        state, _ = D.es_generation("openai-es", state, g, batch=2, n_inputs=3, steps=5,
                                   eta=0.05, mask=mask)  # fmt: skip
    c = es.center(state)
    assert (c[mask == 0] == 0).all() and (c[mask == 1] != 0).all()
