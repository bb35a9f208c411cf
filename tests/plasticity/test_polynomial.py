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


# --- the 29-term layer rule (Sanger's target) ---


def _sanger_by_hand(x, W, eta):
    """η y_i (x − Σ_{k≤i} y_k w_k) for each row i: x (B, N), W (B, M, N)."""
    y = torch.einsum("bmn,bn->bm", W, x)
    out = torch.zeros_like(W)
    for b in range(W.shape[0]):
        for i in range(W.shape[1]):
            out[b, i] = eta * y[b, i] * (x[b] - sum(y[b, k] * W[b, k] for k in range(i + 1)))
    return out


def test_sanger_theta_is_sanger_update():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(4, 5, generator=g, dtype=torch.float64)
    W = torch.randn(4, 3, 5, generator=g, dtype=torch.float64)
    dW = P.layer_update(P.sanger_theta(dtype=torch.float64), x, W, eta=0.1)
    torch.testing.assert_close(dW, _sanger_by_hand(x, W, 0.1))


def test_lateral_terms_on_a_hand_example():
    # M = 3 outputs, N = 1 input: y = (2, -1, 3)·x with x = 1, W = (2, -1, 3)
    x = torch.tensor([1.0], dtype=torch.float64)
    W = torch.tensor([[2.0], [-1.0], [3.0]], dtype=torch.float64)
    y = [2.0, -1.0, 3.0]
    below = [0.0, y[1] * (y[0] * 2.0), y[2] * (y[0] * 2.0 + y[1] * -1.0)]  # y_i Σ_{k<i} y_k w_k
    above = [y[0] * (y[1] * -1.0 + y[2] * 3.0), y[1] * (y[2] * 3.0), 0.0]  # y_i Σ_{k>i} y_k w_k
    for idx, expected in ((27, below), (28, above)):
        theta = torch.zeros(29, dtype=torch.float64)
        theta[idx] = 1.0
        assert P.layer_update(theta, x, W, eta=0.5)[:, 0].tolist() == pytest.approx(
            [0.5 * e for e in expected]
        )
        assert P.layer_monomials(x, W)[:, 0, idx].tolist() == pytest.approx(expected)
    assert P.term_name(27) == "λ_<" and P.term_name(28) == "λ_>"


def test_layer_local_terms_equal_the_neuron_rule_per_row():
    g = torch.Generator().manual_seed(7)
    theta = torch.randn(29, generator=g, dtype=torch.float64)
    theta[27:] = 0
    x, W = torch.randn(3, 4, generator=g).double(), torch.randn(3, 2, 4, generator=g).double()
    dW = P.layer_update(theta, x, W, eta=0.2)
    for i in range(2):
        torch.testing.assert_close(dW[:, i], P.update(theta[:27], x, W[:, i], eta=0.2))


def test_batched_layer_rules_equal_one_at_a_time():
    g = torch.Generator().manual_seed(8)
    theta = torch.randn(4, 29, generator=g)
    x, W = torch.randn(3, 5, generator=g), torch.randn(4, 3, 2, 5, generator=g)
    batched = P.layer_update(theta, x, W, eta=0.05)
    for p in range(4):
        torch.testing.assert_close(batched[p], P.layer_update(theta[p], x, W[p], eta=0.05))


def test_sanger_converges_to_the_first_two_pcs():
    g = torch.Generator().manual_seed(9)
    tasks = D.sample_layer_tasks(16, n_inputs=5, n_outputs=2, steps=4000, generator=g)
    WT = P.run_layer_rule(P.sanger_theta(), tasks.w0, tasks.xs, eta=0.01)
    assert D.cos2_pc1(WT, tasks.pcs).min() > 0.9  # stochastic jitter about u_i is O(η)
    assert D.cos2_pc1(WT, tasks.pcs).mean() > 0.97
    assert (WT.norm(dim=-1) - 1).abs().max() < 0.1
    # Oja's subspace rule (λ_> = −1 too) finds the plane, not the components in order
    sub = P.sanger_theta()
    sub[28] = -1.0
    WS = P.run_layer_rule(sub, tasks.w0, tasks.xs, eta=0.01)
    proj = (torch.einsum("bmn,bkn->bmk", WS, tasks.pcs) ** 2).sum(-1)  # |P_plane w_i|²/|w_i|²
    assert (proj / WS.pow(2).sum(-1)).min() > 0.95
    assert D.cos2_pc1(WS, tasks.pcs).mean() < 0.9


def test_layer_oracle_recovers_sanger_and_a_random_rule():
    g = torch.Generator().manual_seed(10)
    x = torch.randn(200, 5, generator=g, dtype=torch.float64)
    W = torch.randn(200, 2, 5, generator=g, dtype=torch.float64) * 0.7
    for theta in (P.sanger_theta(dtype=torch.float64), torch.randn(29, generator=g).double()):
        dW = P.layer_update(theta, x, W, eta=0.05)
        assert (P.fit_layer_rule(x, W, dW, eta=0.05) - theta).abs().max() < 1e-6
    with pytest.raises(ValueError, match="not identified"):  # one output: no lateral data
        P.fit_layer_rule(x, W[:, :1], W[:, :1])


def test_layer_tasks_spectrum():
    g = torch.Generator().manual_seed(11)
    t = D.sample_layer_tasks(3, n_inputs=5, n_outputs=2, steps=20000, generator=g, gap=0.45)
    assert t.xs.shape == (20000, 3, 5) and t.pcs.shape == (3, 2, 5) and t.w0.shape == (3, 2, 5)
    C = torch.einsum("tbi,tbj->bij", t.xs.double(), t.xs.double()) / 20000
    for i, lam in enumerate((1.0, 0.55)):
        u = t.pcs[:, i].double()
        assert torch.einsum("bi,bij,bj->b", u, C, u).tolist() == pytest.approx([lam] * 3, abs=0.05)
    with pytest.raises(ValueError, match="gap"):
        D.sample_layer_tasks(2, n_inputs=5, n_outputs=2, steps=3, generator=g, gap=0.5)
    with pytest.raises(ValueError, match="n_outputs"):
        D.sample_layer_tasks(2, n_inputs=2, n_outputs=2, steps=3, generator=g)


def test_layer_meta_loss_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(12)
    tasks = D.sample_layer_tasks(2, n_inputs=3, n_outputs=2, steps=10, generator=g)
    tasks = D.LayerTasks(*(t.double() for t in tasks))
    theta = P.sanger_theta(dtype=torch.float64) + 0.05 * torch.randn(29, generator=g).double()
    theta.requires_grad_(True)
    (grad,) = torch.autograd.grad(D.layer_meta_loss(theta, tasks, eta=0.05, cap=1e6), theta)
    h = 1e-6
    for i in (7, 12, 27, 28):
        e = torch.zeros(29, dtype=torch.float64)
        e[i] = h
        with torch.no_grad():
            fd = (D.layer_meta_loss(theta + e, tasks, eta=0.05, cap=1e6)
                  - D.layer_meta_loss(theta - e, tasks, eta=0.05, cap=1e6)) / (2 * h)  # fmt: skip
        assert float(grad[i]) == pytest.approx(float(fd), rel=1e-5, abs=1e-8)


def test_layer_inputs_are_checked():
    with pytest.raises(ValueError, match="29"):
        P.layer_update(torch.zeros(27), torch.zeros(5), torch.zeros(2, 5), eta=0.1)
    with pytest.raises(ValueError, match="same N"):
        P.layer_update(P.sanger_theta(), torch.zeros(4), torch.zeros(2, 5), eta=0.1)
    with pytest.raises(ValueError, match="index"):
        P.term_name(29)
