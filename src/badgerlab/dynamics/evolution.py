"""Multi-level learning dynamics: an outer evolution strategy shapes the reward an inner learner
optimises, judged only by the true objective — the tutorial's "designing learning dynamics".

Garnelo, Balduzzi & Czarnecki, "Designing Learning Dynamics", NeurIPS 2020 tutorial (the
internal-reward evolution of Jaderberg et al. 2019, https://arxiv.org/abs/1807.01281, on a
small game). Inner loop: a policy ``x = softmax(z)`` plays a symmetric zero-sum game ``A``
against itself and ascends the *evolved* reward

    r_θ(x) = θ_0 · xᵀ A sg(x) + θ_1 · H(x) + θ_2 · xᵀ A sg(x̄),

(payoff against its current self, an entropy bonus, payoff against the running average
``x̄`` of its past selves; ``sg`` stops gradients). Outer loop: antithetic ES with centred
ranks on ``θ`` maximises the true fitness ``-exploitability(x_T) = -max_i (A x_T)_i``.
Plain self-play on the payoff (``θ = (1, 0, 0)``) circles the Nash of cyclic games forever.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from badgerlab.dynamics.games import _int_arg, _positive, check_antisymmetric

__all__ = ["RewardEvolution", "evolve_reward", "inner_learning", "reward_fitness"]

SELF_PLAY = (1.0, 0.0, 0.0)


def inner_learning(
    A: torch.Tensor, theta: torch.Tensor, z0: torch.Tensor, *, steps: int = 200, lr: float = 0.5
) -> torch.Tensor:
    """Run the inner learner for every reward ``theta`` ``(P, 3)`` from every start ``z0``
    ``(R, n)``; returns the final policies ``(P, R, n)``."""
    P, R = theta.shape[0], z0.shape[0]
    z = z0.expand(P, R, -1).clone()  # (P, R, n)
    th = theta[:, None, :]  # (P, 1, 3)
    avg = torch.softmax(z, -1)
    for t in range(steps):
        z = z.detach().requires_grad_(True)
        x = torch.softmax(z, -1)
        xs = x.detach()
        payoff_self = torch.einsum("pri,ij,prj->pr", x, A, xs)
        entropy = -(x * torch.log(x.clamp_min(1e-30))).sum(-1)
        payoff_avg = torch.einsum("pri,ij,prj->pr", x, A, avg)
        reward = th[..., 0] * payoff_self + th[..., 1] * entropy + th[..., 2] * payoff_avg
        (g,) = torch.autograd.grad(reward.sum(), z)
        z = z.detach() + lr * g
        avg = avg + (xs - avg) / (t + 2)
    return torch.softmax(z.detach(), -1)


def reward_fitness(
    A: torch.Tensor, theta: torch.Tensor, z0: torch.Tensor, **inner
) -> torch.Tensor:
    """True fitness of each reward ``theta`` ``(P, 3)``: ``-max_i (A x_T)_i`` averaged over
    starts, ``(P,)``."""
    x = inner_learning(A, theta, z0, **inner)  # (P, R, n)
    return -(x @ A.T).amax(-1).mean(-1)


class RewardEvolution(NamedTuple):
    """The evolved reward weights, the fitness history of the ES mean, and plain self-play's."""

    theta: np.ndarray
    fitness: list[float]
    self_play_fitness: float


def _centred_ranks(f: torch.Tensor) -> torch.Tensor:
    ranks = torch.empty_like(f)
    ranks[torch.argsort(f)] = torch.arange(len(f), dtype=f.dtype)
    return ranks / (len(f) - 1) - 0.5


def evolve_reward(
    A: np.ndarray | torch.Tensor,
    *,
    generations: int = 30,
    population: int = 16,
    sigma: float = 0.1,
    lr: float = 0.05,
    starts: int = 4,
    inner_steps: int = 200,
    inner_lr: float = 0.5,
    seed: int = 0,
) -> RewardEvolution:
    """Evolve ``θ`` from plain self-play ``(1, 0, 0)`` with antithetic ES (centred ranks).

    Each generation draws ``population/2`` antithetic pairs ``θ ± σε``, scores them on the same
    ``starts`` random initial policies, and steps ``θ += lr/(Pσ) Σ rank_i ε_i``.
    """
    A = torch.as_tensor(check_antisymmetric(A))
    population = _int_arg("population", population, 2)
    if population % 2:
        raise ValueError(f"population must be even and >= 2, got {population}")
    generations = _int_arg("generations", generations, 0)
    starts = _int_arg("starts", starts, 1)
    inner_steps = _int_arg("inner_steps", inner_steps, 0)
    sigma, lr = _positive("sigma", sigma), _positive("lr", lr)
    inner_lr = _positive("inner_lr", inner_lr)
    gen = torch.Generator().manual_seed(seed)
    n = A.shape[0]
    theta = torch.tensor(SELF_PLAY, dtype=torch.float64)
    inner = {"steps": inner_steps, "lr": inner_lr}
    z_eval = torch.randn(starts, n, generator=gen, dtype=torch.float64)
    base = float(reward_fitness(A, theta[None], z_eval, **inner)[0])
    history = [base]
    for _ in range(generations):
        eps = torch.randn(population // 2, 3, generator=gen, dtype=torch.float64)
        eps = torch.cat([eps, -eps])  # (P, 3)
        z0 = torch.randn(starts, n, generator=gen, dtype=torch.float64)
        f = reward_fitness(A, theta + sigma * eps, z0, **inner)
        theta = theta + lr / (population * sigma) * (_centred_ranks(f) @ eps)
        history.append(float(reward_fitness(A, theta[None], z_eval, **inner)[0]))
    return RewardEvolution(theta.numpy(), history, base)
