"""Exact likelihoods of the inference surjections: densities that integrate to 1 on a grid (or by
importance sampling where the event is 4-D) and closed forms computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from badgerlab.flows import (
    MLP,
    TRANSFORMS,
    Abs,
    AffineCoupling,
    ConditionalNormal,
    Flow,
    Increments,
    InverseSoftplus,
    MaxPool2d,
    Reshape,
    Slice,
    Sort,
    StandardHalfNormal,
    StandardNormal,
)
from badgerlab.flows.nets import ConvNet

torch.set_num_threads(1)


def _jitter(module: torch.nn.Module, seed: int, scale: float = 0.3) -> torch.nn.Module:
    module = module.double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module.eval()


def _grid_mass(flow: Flow, lim: float = 12.0, n: int = 800) -> float:
    """`∫ exp(log p(x)) dx` over `[−lim, lim]²` by the midpoint rule."""
    h = 2 * lim / n
    c = torch.linspace(-lim + h / 2, lim - h / 2, n, dtype=torch.float64)
    # the second axis is offset by h/3 so that no grid point is a tie x₁ = x₂ (measure zero)
    xy = torch.cartesian_prod(c, c + h / 3)  # (n², 2)
    with torch.no_grad():
        lp = torch.cat([flow.log_prob(chunk) for chunk in xy.split(40_000)])
    return float(lp.exp().sum() * h * h)


def _normal_lp(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * (x**2 + math.log(2 * math.pi))


def _slice_decoder() -> Flow:
    decoder = ConditionalNormal(MLP(1, 2, (8,)))
    return Flow(StandardNormal(1), [AffineCoupling(2, hidden=(8,)), Slice(1, 2, decoder=decoder)])


def _slice_plain() -> Flow:
    return Flow(StandardNormal(1), [AffineCoupling(2, hidden=(8,)), Slice(1, 2)])


def _slice_channels() -> Flow:
    # (B, 2) → (B, 2, 1, 1): a channel slice with a conv decoder, as in a multiscale flow
    decoder = ConditionalNormal(ConvNet(1, 2, 4))
    ts = [AffineCoupling(2, hidden=(8,)), Reshape((2,), (2, 1, 1)), Slice(1, 2, decoder=decoder)]
    return Flow(StandardNormal((1, 1, 1)), ts)


def _abs() -> Flow:
    return Flow(StandardNormal(2), [Abs(), InverseSoftplus(), AffineCoupling(2, hidden=(8,))])


def _sort() -> Flow:
    return Flow(StandardNormal(2), [Sort(), Increments(), AffineCoupling(2, hidden=(8,))])


def _sort_points() -> Flow:
    # two 1-D points (B, 2, 1) sorted by their coordinate, −log 2!
    ts = [Reshape((2,), (2, 1)), Sort(key=0), Increments(key=0), Reshape((2, 1), (2,))]
    return Flow(StandardNormal(2), [*ts, AffineCoupling(2, hidden=(8,))])


GRID_CASES = {
    "slice-decoder": _slice_decoder,
    "slice": _slice_plain,
    "slice-channels": _slice_channels,
    "abs": _abs,
    "sort": _sort,
    "sort-points": _sort_points,
}
# every registered exact inference surjection is normalised by a test here (max-pool's event
# is 4-D: importance sampling below)
NORMALISED = {*GRID_CASES, "max-pool"}


@pytest.mark.parametrize(
    "name", [n for n in TRANSFORMS.names() if TRANSFORMS.get(n).build().kind == "inference"]
)
def test_every_registered_inference_surjection_has_a_normalisation_test(name):
    assert name in NORMALISED


@pytest.mark.parametrize(("seed", "name"), list(enumerate(GRID_CASES)))
def test_exact_surjection_flow_integrates_to_one(seed, name):
    torch.manual_seed(seed)
    flow = GRID_CASES[name]()
    assert flow.exact
    assert _grid_mass(_jitter(flow, seed)) == pytest.approx(1.0, abs=1e-2)


def test_abs_alone_is_missing_the_sign_flips_of_the_base():
    # A Gaussian base puts half its mass per axis where |x| never lands: 2^-D is left
    flow = Flow(StandardNormal(2), [Abs()]).double()
    assert _grid_mass(flow) == pytest.approx(0.25, abs=1e-3)


def test_max_pool_integrates_to_one_by_importance_sampling():
    pool = MaxPool2d(1)
    flow = _jitter(Flow(StandardNormal((1, 1, 1)), [pool]), 3, scale=0.5)
    assert float(pool.log_sigma.detach()) != 0.0
    g = torch.Generator().manual_seed(0)
    s = 2.0  # proposal N(0, s² I₄), wider than the model
    w = []
    for _ in range(10):
        x = s * torch.randn(200_000, 1, 2, 2, generator=g, dtype=torch.float64)
        log_q = _normal_lp(x / s).sum((1, 2, 3)) - 4 * math.log(s)
        with torch.no_grad():
            w.append((flow.log_prob(x) - log_q).exp())
    w = torch.cat(w)
    stderr = float(w.std() / math.sqrt(len(w)))
    assert stderr < 3e-3
    assert float(w.mean()) == pytest.approx(1.0, abs=1e-2)


def test_abs_folds_a_half_normal_into_a_standard_normal():
    x = torch.linspace(-4, 4, 41, dtype=torch.float64).view(-1, 1)
    flow = Flow(StandardHalfNormal(1), [Abs()])
    torch.testing.assert_close(flow.log_prob(x), _normal_lp(x).squeeze(1))


def test_max_pool_log_prob_by_hand():
    pool = _jitter(MaxPool2d(2), 4)
    x = torch.randn(3, 2, 2, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    z, ldj = pool(x)
    sigma = pool.log_sigma.exp()
    expect = torch.zeros(3, dtype=torch.float64)
    for b in range(3):
        for c in range(2):
            for j in range(2):
                block = x[b, c, :, 2 * j : 2 * j + 2].reshape(-1)
                m = block.max()
                assert z[b, c, 0, j] == m
                eps = (m - block)[block != m]
                half_normal = math.log(2) + _normal_lp(eps / sigma[c]) - sigma[c].log()
                expect[b] += half_normal.sum() - math.log(4)
    torch.testing.assert_close(ldj, expect)


def test_sort_log_prob_by_hand():
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    flow = Flow(StandardNormal(6), [Sort()])
    expect = _normal_lp(x).sum(1) - math.log(math.factorial(6))
    torch.testing.assert_close(flow.log_prob(x), expect)
    # exchangeable: every ordering of the same set has the same density
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(flow.log_prob(x[:, perm]), flow.log_prob(x))


def test_sort_of_points_sorts_by_the_key_coordinate_and_keeps_pairs():
    x = torch.randn(2, 5, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    z, ldj = Sort(key=1)(x)
    assert (z[..., 1].diff(dim=1) > 0).all()
    for b in range(2):
        assert sorted(map(tuple, z[b].tolist())) == sorted(map(tuple, x[b].tolist()))
    torch.testing.assert_close(ldj, torch.full((2,), -math.log(120.0), dtype=torch.float64))


def test_slice_without_decoder_scores_the_dropped_part_as_standard_normal():
    x = torch.randn(3, 4, 2, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    z, ldj = Slice(1, 4)(x)
    assert z.shape == (3, 1, 2, 2)
    torch.testing.assert_close(ldj, _normal_lp(x[:, 1:]).sum((1, 2, 3)))


@pytest.mark.parametrize(
    ("make", "x", "match"),
    [
        (lambda: Slice(3, 3), None, "keep"),
        (lambda: Slice(1, 3), torch.zeros(2, 4), "entries on axis 1"),
        (lambda: MaxPool2d(1), torch.zeros(2, 1, 3, 4), "even H and W"),
    ],
)
def test_bad_inputs_name_the_argument(make, x, match):
    with pytest.raises(ValueError, match=match):
        make()(x)
