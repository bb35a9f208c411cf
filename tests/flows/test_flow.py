"""Bounds and units of `Flow`: ELBO ≤ exact log-likelihood, IWBO rising with K towards it,
bits per dimension by hand, dequantisation applied once, and a small learning run."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from badgerlab.flows import (
    MLP,
    TRANSFORMS,
    VAE,
    Abs,
    AffineCoupling,
    Augment,
    ConditionalNormal,
    Conv1x1,
    Flow,
    InverseSoftplus,
    Logit,
    Reverse,
    StandardNormal,
    StandardUniform,
    UniformDequantization,
    VariationalDequantization,
    elbo_bpd,
    iwbo,
    iwbo_bpd,
    loglik_bpd,
    nats_to_bpd,
)

torch.set_num_threads(1)


def _normal_lp(x, mean=0.0, var=1.0):
    return -0.5 * ((x - mean) ** 2 / var + torch.log(2 * math.pi * torch.as_tensor(var)))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _check_bounds(flow: Flow, x: torch.Tensor, exact: torch.Tensor, *, tol: float) -> None:
    """Mean ELBO < IWBO_10 < IWBO_100 < IWBO_2000 ≈ exact (within `tol`), each averaged over
    repeats of `x` so that the Monte Carlo noise is well below the gaps."""
    assert not flow.exact
    g = _gen(0)

    def bound(k: int, repeats: int) -> float:
        xr = x.repeat(repeats, *([1] * (x.dim() - 1)))
        return float(iwbo(flow, xr, k, generator=g).mean())

    with torch.no_grad():
        bounds = [bound(1, 2000), bound(10, 200), bound(100, 20), bound(2000, 5)]
    truth = float(exact.mean())
    assert bounds[0] < bounds[1] < bounds[2] <= truth + tol
    assert bounds[0] < truth - 5 * tol, "the test needs a bound gap to see"
    assert bounds[3] == pytest.approx(truth, abs=tol)


def _linear_vae(a: float, b: float, s: float, enc_w: float, enc_c: float, enc_ls: float) -> Flow:
    """p(z) = N(0,1), p(x|z) = N(a z + b, s²), q(z|x) = N(enc_w x + enc_c, exp(enc_ls)²)."""
    enc, dec = nn.Linear(1, 2), nn.Linear(1, 2)
    with torch.no_grad():
        dec.weight.copy_(torch.tensor([[a], [0.0]]))
        dec.bias.copy_(torch.tensor([b, math.log(s)]))
        enc.weight.copy_(torch.tensor([[enc_w], [0.0]]))
        enc.bias.copy_(torch.tensor([enc_c, enc_ls]))
    layer = VAE(ConditionalNormal(enc, scale_bound=None), ConditionalNormal(dec, scale_bound=None))
    return Flow(StandardNormal(1), [layer]).double()


def test_vae_elbo_is_the_exact_likelihood_minus_the_kl_to_the_posterior():
    a, b, s = 1.0, 0.3, 1.0
    x = torch.linspace(-2, 2, 9, dtype=torch.float64).view(-1, 1)
    exact = _normal_lp(x, b, a * a + s * s).squeeze(1)
    # the true posterior: the gap E vanishes for every sample
    post_var = s * s / (a * a + s * s)
    w_post, c_post = a / (a * a + s * s), -a * b / (a * a + s * s)
    exact_q = _linear_vae(a, b, s, w_post, c_post, 0.5 * math.log(post_var))
    for seed in range(3):
        torch.testing.assert_close(exact_q.log_prob(x, generator=_gen(seed)), exact)
    # a worse q: the mean ELBO is log p(x) − KL(q ‖ p(z|x)), in closed form
    w, c, ls = 0.2, -0.1, math.log(0.9)
    flow = _linear_vae(a, b, s, w, c, ls)
    post_mean = w_post * x.squeeze(1) + c_post
    q_mean, q_var = w * x.squeeze(1) + c, math.exp(2 * ls)
    r = q_var / post_var
    kl = 0.5 * (r + (q_mean - post_mean) ** 2 / post_var - 1 - math.log(r))
    g = _gen(1)
    with torch.no_grad():
        draws = torch.stack([flow.log_prob(x, generator=g) for _ in range(40_000)])
    stderr = draws.std(0) / math.sqrt(len(draws))
    assert (stderr < 1e-2).all()
    assert ((draws.mean(0) - (exact - kl)).abs() < 4 * stderr + 1e-3).all()
    assert (kl > 0.05).all()
    _check_bounds(flow, x, exact, tol=1e-2)


@pytest.mark.parametrize("learned", [False, True])
def test_augment_bounds_approach_the_marginal(learned):
    # z = A (x, e) with A = [[1, 0], [0.5, 1.5]]: p(x, e) = N(x) N(0.5x + 1.5e)·1.5, p(x) = N(x)
    mix = Conv1x1(2)
    with torch.no_grad():
        mix.weight.copy_(torch.tensor([[1.0, 0.0], [0.5, 1.5]]))
    encoder = None
    if learned:  # q(e|x) = N(0.2x − 0.1, 0.8²), not the posterior N(−x/3, (2/3)²)
        net = nn.Linear(1, 2)
        with torch.no_grad():
            net.weight.copy_(torch.tensor([[0.2], [0.0]]))
            net.bias.copy_(torch.tensor([-0.1, math.log(0.8)]))
        encoder = ConditionalNormal(net, scale_bound=None)
    flow = Flow(StandardNormal(2), [Augment(1, encoder=encoder), mix]).double()
    x = torch.linspace(-2.5, 2.5, 11, dtype=torch.float64).view(-1, 1)
    _check_bounds(flow, x, _normal_lp(x).squeeze(1), tol=1e-2)


# the layers whose bounds a test above checks against an exact likelihood
BOUNDED = {Augment, UniformDequantization, VariationalDequantization, VAE}


@pytest.mark.parametrize(
    "name",
    [n for n in TRANSFORMS.names() if TRANSFORMS.get(n).build().stochastic_forward],
)
def test_every_registered_stochastic_forward_has_a_bounds_test(name):
    assert type(TRANSFORMS.get(name).build()) in BOUNDED


def _discrete_logit_model(levels: int, deq: nn.Module) -> tuple[Flow, torch.Tensor, torch.Tensor]:
    """`z = logit((x + u)/L) ~ N(0, 1)`: `P(x = k) = Φ(logit((k+1)/L)) − Φ(logit(k/L))`."""
    flow = Flow(StandardNormal(1), [deq, Logit()]).double()
    k = torch.arange(levels, dtype=torch.float64).view(-1, 1)
    edges = torch.linspace(0, 1, levels + 1, dtype=torch.float64)
    cdf = torch.special.ndtr(torch.logit(edges))
    exact = (cdf[1:] - cdf[:-1]).log()
    assert float(exact.exp().sum()) == pytest.approx(1.0)
    return flow, k, exact


def test_uniform_dequantization_bounds_approach_the_discrete_likelihood():
    flow, k, exact = _discrete_logit_model(5, UniformDequantization(5))
    _check_bounds(flow, k, exact, tol=1e-2)


def test_variational_dequantization_bounds_approach_the_discrete_likelihood():
    net = MLP(1, 2, (8,))
    deq = VariationalDequantization(5, net)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=_gen(3)))
        # a wide logit-normal q(u|x): a narrow one has unbounded weights p/q near u = 0, 1
        net[-1].bias[1] += 0.5
    flow, k, exact = _discrete_logit_model(5, deq)
    _check_bounds(flow, k, exact, tol=1e-2)


@pytest.mark.parametrize("bits", [1, 3, 5, 8])
def test_a_uniform_model_over_2_to_the_bits_levels_costs_bits_per_dimension(bits):
    flow = Flow(StandardUniform((1, 2, 2)), [UniformDequantization(2**bits)]).double()
    x = torch.randint(2**bits, (64, 1, 2, 2), generator=_gen(0)).double()
    assert float(elbo_bpd(flow, x, generator=_gen(1))) == pytest.approx(bits, abs=1e-12)
    assert float(iwbo_bpd(flow, x, 4, generator=_gen(2))) == pytest.approx(bits, abs=1e-12)


def test_seventeen_levels_cost_log2_17_bits():
    flow = Flow(StandardUniform(3), [UniformDequantization(17)]).double()
    x = torch.randint(17, (16, 3), generator=_gen(0)).double()
    assert float(elbo_bpd(flow, x, generator=_gen(1))) == pytest.approx(math.log2(17))


def test_dequantization_is_applied_exactly_once():
    with pytest.raises(ValueError, match="dequantizer"):
        Flow(StandardUniform(2), [UniformDequantization(4), UniformDequantization(4)])
    with pytest.raises(ValueError, match="dequantizer"):
        Flow(StandardUniform(2), [Reverse(2), UniformDequantization(4)])
    flow = Flow(StandardUniform(2), [UniformDequantization(256)])
    with pytest.raises(ValueError, match="exact"):
        loglik_bpd(flow, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="integers in 0..255"):
        flow.log_prob(torch.full((3, 2), 0.5))
    # the sample of a dequantised flow is back on the integer grid
    s = flow.sample(5, generator=_gen(0))
    assert torch.equal(s, s.floor()) and s.min() >= 0 and s.max() <= 255


def test_bits_per_dimension_by_hand():
    flow = Flow(StandardNormal(6), [AffineCoupling(6, hidden=(8,))]).double()
    x = torch.randn(7, 6, generator=_gen(0), dtype=torch.float64)
    nats = -_normal_lp(x).sum(1).mean()  # the coupling starts as the identity
    by_hand = nats / (6 * math.log(2))
    torch.testing.assert_close(loglik_bpd(flow, x), by_hand)
    torch.testing.assert_close(elbo_bpd(flow, x), by_hand)
    torch.testing.assert_close(iwbo_bpd(flow, x, 3), by_hand)
    assert nats_to_bpd(math.log(256) * 10, 10) == pytest.approx(8.0)
    with pytest.raises(ValueError, match="dims"):
        nats_to_bpd(1.0, 0)
    with pytest.raises(ValueError, match="k must"):
        iwbo(flow, x, 0)


def test_flow_refuses_a_non_transform_and_a_bad_sample_size():
    with pytest.raises(TypeError, match=r"transforms\[0\]"):
        Flow(StandardNormal(2), [nn.Linear(2, 2)])
    with pytest.raises(ValueError, match="n must"):
        Flow(StandardNormal(2), []).sample(0)


def _four_blobs(n: int, g: torch.Generator) -> torch.Tensor:
    signs = torch.randint(2, (n, 2), generator=g) * 2 - 1
    return 2.0 * signs + 0.5 * torch.randn(n, 2, generator=g)


def test_an_abs_flow_learns_four_blobs_better_than_the_best_gaussian():
    """Margin fixed in advance: 0.5 nats below the maximum-likelihood Gaussian's test NLL."""
    torch.manual_seed(0)
    flow = Flow(
        StandardNormal(2),
        [
            Abs(),
            InverseSoftplus(),
            AffineCoupling(2, hidden=(32,)),
            Reverse(2),
            AffineCoupling(2, hidden=(32,)),
        ],
    )
    g = _gen(0)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    for _ in range(300):
        loss = -flow.log_prob(_four_blobs(256, g)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    train, test = _four_blobs(4000, g), _four_blobs(4000, g)
    with torch.no_grad():
        nll = float(-flow.log_prob(test).mean())
    mu, var = train.mean(0), train.var(0)
    gauss = float(-_normal_lp(test, mu, var).sum(1).mean())
    assert nll < gauss - 0.5
