"""The per-parameter MLP learned optimizer: exact SGD and Adam special cases, features, errors."""

from __future__ import annotations

import pytest
import torch
from torch.func import grad, vmap

from badgerlab.learned.lopt import (
    DECAYS,
    TIMESCALES,
    adam_head,
    features,
    init_state,
    init_theta,
    lopt_step,
    mlp_head,
    num_features,
    num_theta,
    sgd_theta,
    theta_from_vector,
    theta_to_vector,
)


def _problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (32,), generator=g)
    params = [
        torch.randn(5, 7, generator=g, dtype=torch.float64) * 0.5,
        torch.zeros(7, dtype=torch.float64),
        torch.randn(7, 3, generator=g, dtype=torch.float64) * 0.5,
        torch.zeros(3, dtype=torch.float64),
    ]

    def loss(ps):
        h = torch.tanh(x @ ps[0] + ps[1])
        return torch.nn.functional.cross_entropy(h @ ps[2] + ps[3], y)

    return params, loss


@pytest.mark.parametrize("lr", [0.05, 0.3])
def test_hand_set_mlp_head_reproduces_sgd_step_for_step(lr):
    params, loss = _problem()
    ref = [p.clone().requires_grad_() for p in params]
    opt = torch.optim.SGD(ref, lr=lr)
    head = mlp_head(sgd_theta(lr), normalise=False)
    state = init_state(params)
    for _ in range(6):
        grads = grad(loss)(params)
        params, state = lopt_step(params, grads, state, head=head)
        opt.zero_grad()
        loss(ref).backward()
        opt.step()
        for p, r in zip(params, ref, strict=True):
            torch.testing.assert_close(p, r.detach(), rtol=0, atol=1e-13)


def test_adam_head_reproduces_torch_adam_with_bias_correction():
    params, loss = _problem(1)
    ref = [p.clone().requires_grad_() for p in params]
    opt = torch.optim.Adam(ref, lr=0.01, betas=(DECAYS[1], 0.999), eps=1e-8)
    head = adam_head(0.01, eps=1e-8)
    state = init_state(params)
    for _ in range(25):
        grads = grad(loss)(params)
        params, state = lopt_step(params, grads, state, head=head)
        opt.zero_grad()
        loss(ref).backward()
        opt.step()
        for p, r in zip(params, ref, strict=True):
            torch.testing.assert_close(p, r.detach(), rtol=0, atol=1e-10)
    assert float(state.step) == 25.0


def test_momenta_are_the_closed_form_emas():
    g = torch.tensor([1.0, -2.0], dtype=torch.float64)
    p = [torch.zeros(2, dtype=torch.float64)]
    state = init_state(p)
    for _ in range(3):
        p, state = lopt_step(p, [g], state, head=lambda p, g, m, v, t: torch.zeros_like(p))
    for k, beta in enumerate(DECAYS):
        torch.testing.assert_close(state.momenta[0][k], (1 - beta**3) * g)
    torch.testing.assert_close(state.rms[0], (1 - 0.999**3) * g * g)


def test_features_shape_normalisation_and_step_embedding():
    g = torch.Generator().manual_seed(0)
    p = torch.randn(4, 6, generator=g) * 100
    grd = torch.randn(4, 6, generator=g) * 0.1
    m = torch.randn(len(DECAYS), 4, 6, generator=g)
    v = torch.rand(4, 6, generator=g)
    t = torch.tensor(7.0)
    f = features(p, grd, m, v, t)
    assert f.shape == (24, num_features())
    k = len(DECAYS) + 5
    # every per-parameter feature has unit second moment over the tensor, whatever its scale
    torch.testing.assert_close((f[:, :k] ** 2).mean(0), torch.ones(k), atol=1e-4, rtol=0)
    emb = torch.tanh(7.0 / torch.tensor(TIMESCALES))
    torch.testing.assert_close(f[:, k:], emb.expand(24, -1))


def test_learned_head_output_shape_scale_and_vector_round_trip():
    theta = init_theta(8, generator=torch.Generator().manual_seed(0))
    vec = theta_to_vector(theta)
    assert vec.shape == (num_theta(8),)
    back = theta_from_vector(vec, 8)
    for k in theta:
        torch.testing.assert_close(back[k], theta[k])
    p = torch.randn(3, 5)
    gr = torch.randn(3, 5)
    state = init_state([p])
    new, _ = lopt_step([p], [gr], state, head=mlp_head(theta))
    assert new[0].shape == p.shape
    # |Δp| = |d|·exp(0.001 a)·0.001 with a small-init head: a few 1e-3 at most
    assert float((new[0] - p).abs().max()) < 5e-2


def test_unrolled_loss_is_differentiable_and_vmaps_over_heads():
    params, loss = _problem(2)
    params = [p.float() for p in params]
    hidden = 4
    gens = [torch.Generator().manual_seed(s) for s in range(3)]
    thetas = torch.stack([theta_to_vector(init_theta(hidden, generator=g)) for g in gens])

    def final_loss(vec):
        head = mlp_head(theta_from_vector(vec, hidden))
        ps, state = params, init_state(params)
        for _ in range(3):
            ps, state = lopt_step(
                ps, grad(lambda q: loss([a.double() for a in q]).float())(ps), state, head=head
            )
        return loss([a.double() for a in ps]).float()

    batched = vmap(final_loss)(thetas)
    single = torch.stack([final_loss(v) for v in thetas])
    torch.testing.assert_close(batched, single, atol=1e-6, rtol=1e-5)
    meta_grad = grad(final_loss)(thetas[0])
    assert meta_grad.shape == thetas[0].shape and bool(meta_grad.abs().sum() > 0)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: init_state([]), "params"),
        (lambda: init_theta(0), "hidden"),
        (lambda: sgd_theta(-0.1), "lr"),
        (lambda: sgd_theta(float("nan")), "lr"),
        (lambda: adam_head(0.0), "lr"),
        (lambda: adam_head(1e-3, eps=0.0), "eps"),
        (lambda: theta_from_vector(torch.zeros(5), 8), "vec"),
        (lambda: mlp_head({"w1": torch.zeros(3, 2)}), "theta"),
        (lambda: theta_to_vector({"w1": torch.zeros(1)}), "theta"),
        (
            lambda: lopt_step(
                [torch.zeros(2)], [torch.zeros(3)], init_state([torch.zeros(2)]), head=adam_head()
            ),
            "grads",
        ),
        (
            lambda: lopt_step(
                [torch.zeros(2)], [], init_state([torch.zeros(2)]), head=adam_head()
            ),
            "same length",
        ),
    ],
)
def test_bad_inputs_raise_value_errors_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
