"""CMA-ES, PGPE and SNES through EvoTorch: the issue's thresholds and CMA-ES internals."""

from __future__ import annotations

import math

import torch

from badgerlab.evolve import get_es
from badgerlab.evolve.evotorch_es import cmaes_ask, cmaes_init


def sphere(x: torch.Tensor) -> torch.Tensor:
    return (x**2).sum(-1)


def rastrigin(x: torch.Tensor) -> torch.Tensor:
    return 10 * x.shape[-1] + (x**2 - 10 * torch.cos(2 * math.pi * x)).sum(-1)


def optimise(name, fn, center, gens, *, seed=0, stop=None, **options):
    es = get_es(name)
    g = torch.Generator().manual_seed(seed)
    state = es.init(center, **options)
    for gen in range(1, gens + 1):
        x = es.ask(state, generator=g)
        state = es.tell(state, x, fn(x))
        if stop is not None and float(fn(es.center(state))) <= stop:
            return gen, float(fn(es.center(state)))
    return gens, float(fn(es.center(state)))


def test_cmaes_sphere_10d_reaches_1e_8_within_200_generations():
    gens, value = optimise(
        "cmaes", sphere, torch.full((10,), 3.0), 200, stop=1e-8, popsize=100, sigma=1.0
    )
    assert value <= 1e-8, (gens, value)


def test_cmaes_rastrigin_10d_ends_below_5_within_500_generations():
    x0 = torch.empty(10).uniform_(-5.12, 5.12, generator=torch.Generator().manual_seed(0))
    _, value = optimise("cmaes", rastrigin, x0, 500, popsize=100, sigma=2.0)
    assert value < 5.0


def test_cmaes_maximize_equals_minimize_of_negation():
    a = optimise("cmaes", sphere, torch.ones(4), 30, popsize=8)
    b = optimise("cmaes", lambda x: -sphere(x), torch.ones(4), 30, popsize=8, maximize=True)
    assert a[1] == -b[1]


def test_cmaes_samples_have_covariance_sigma2_C():
    g = torch.Generator().manual_seed(0)
    state = cmaes_init(torch.zeros(3, dtype=torch.float64), popsize=200_000, sigma=0.5)
    L = torch.tensor([[1.0, 0, 0], [0.5, 1.0, 0], [-0.3, 0.2, 0.7]], dtype=torch.float64)
    state = state._replace(A=L, C=L @ L.T)
    x = cmaes_ask(state, generator=g)
    cov = torch.cov(x.T)
    torch.testing.assert_close(cov, 0.25 * state.C, atol=5e-3, rtol=0)


def test_separable_cmaes_learns_axis_scales():
    scale = torch.tensor([1.0, 10.0, 100.0])
    gens, value = optimise(
        "cmaes",
        lambda x: sphere(x * scale),
        torch.ones(3),
        300,
        stop=1e-10,
        popsize=12,
        separable=True,
    )
    assert value <= 1e-10


def test_pgpe_and_snes_cut_the_sphere_100_fold():
    for name in ("pgpe", "snes"):
        _, value = optimise(name, sphere, torch.full((10,), 3.0), 300, popsize=20)
        assert value < 0.01 * 90.0, (name, value)
