"""Two-armed bandits with a known safe arm, their Bayes-optimal oracle, and behaviour metrics.

The task family of Lange & Sprekeler, "Learning not to learn: Nature versus nurture in silico"
(arXiv 2010.04466): arm 0 pays a known deterministic reward `r_d`; arm 1 pays
`r ~ N(mu, sigma_r^2)` with `mu ~ N(mu0, sigma_p^2)` drawn once per task; a lifetime is `T`
pulls. Whether meta-learning should find a learning algorithm (explore, then commit) or
hard-code "always pull the safe arm" depends on `(T, sigma_p)`; `oracle` computes the
Bayes-optimal answer for each condition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "BanditFamily",
    "Oracle",
    "behaviour",
    "oracle",
    "oracle_actions",
    "sample_tasks",
    "step_rewards",
]


@dataclass(frozen=True)
class BanditFamily:
    """A prior over bandit tasks: safe reward `r_d`, risky arm mean `mu ~ N(mu0, sigma_p^2)`,
    reward noise `sigma_r`, lifetime `T`."""

    T: int
    sigma_p: float
    mu0: float = -1.0
    r_d: float = 0.0
    sigma_r: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.T, int) or self.T < 1:
            raise ValueError(f"T must be an int >= 1, got {self.T!r}")
        for name in ("sigma_p", "sigma_r"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        for name in ("mu0", "r_d"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)!r}")


def sample_tasks(
    families: list[BanditFamily], n: int, *, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Draw `n` tasks per family and all their risky-arm rewards in advance.

    Returns `mu (C, n)` and `noise (C, n, T_max)` standard normals; the reward of pulling the
    risky arm at step t is `mu + sigma_r * noise[..., t]`. Drawing everything up front makes a
    batch of lifetimes a pure function of the generator state (exact resume, fair comparisons:
    every agent meets the same tasks).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    t_max = max(f.T for f in families)
    z = torch.randn(len(families), n, generator=generator, dtype=torch.float64)
    mu0 = torch.tensor([f.mu0 for f in families], dtype=torch.float64)
    sp = torch.tensor([f.sigma_p for f in families], dtype=torch.float64)
    mu = mu0[:, None] + sp[:, None] * z  # (C, n)
    noise = torch.randn(len(families), n, t_max, generator=generator, dtype=torch.float64)
    return mu, noise


def step_rewards(
    families: list[BanditFamily], action: Tensor, mu: Tensor, noise_t: Tensor
) -> Tensor:
    """Rewards of one step for every condition and task: `action (C, n)` in {0, 1}."""
    r_d = torch.tensor([f.r_d for f in families], dtype=mu.dtype)[:, None]
    s_r = torch.tensor([f.sigma_r for f in families], dtype=mu.dtype)[:, None]
    risky = mu + s_r * noise_t  # (C, n)
    return torch.where(action.bool(), risky, r_d.expand_as(mu))


@dataclass(frozen=True)
class Oracle:
    """The Bayes-optimal policy of one `BanditFamily`, as a table over (t, posterior mean).

    `value` (T+1, M) holds V(t, m) on the grid `grid` (M,), `explore` (T, M) is True where
    pulling the risky arm is optimal at step t with posterior mean m after t risky pulls.
    `expected_return` is V(0, mu0): the Bayes-optimal expected lifetime return.
    """

    family: BanditFamily
    grid: np.ndarray
    value: np.ndarray
    explore: np.ndarray

    @property
    def expected_return(self) -> float:
        return float(np.interp(self.family.mu0, self.grid, self.value[0]))

    @property
    def no_learning_return(self) -> float:
        """The best return without learning: always the a-priori better arm."""
        f = self.family
        return f.T * max(f.r_d, f.mu0)

    def act(self, t: int, m: np.ndarray) -> np.ndarray:
        """Whether to pull the risky arm at step `t` for posterior means `m`."""
        idx = np.clip(np.searchsorted(self.grid, m), 0, len(self.grid) - 1)
        return self.explore[t][idx]


def _posterior_var(f: BanditFamily, n: int) -> float:
    return 1.0 / (1.0 / f.sigma_p**2 + n / f.sigma_r**2)


def _expect_piecewise_linear(grid: np.ndarray, f: np.ndarray, m: np.ndarray, s: float):
    """E[f(X)], X ~ N(m, s^2), for the piecewise-linear interpolant of `f` on `grid`, extended
    linearly beyond both ends with its edge slopes. Exact: writing
    f(x) = f_0 + s_0 (x - g_0) + sum_k ds_k max(0, x - g_k), each hinge has the closed form
    E max(0, X - g) = d Phi(d/s) + s phi(d/s) with d = m - g."""
    from scipy.special import ndtr

    slopes = np.diff(f) / np.diff(grid)  # (M-1,)
    ds = np.diff(slopes)  # (M-2,) slope changes at the inner grid points
    d = m[:, None] - grid[None, 1:-1]  # (n, M-2)
    z = d / s
    hinge = d * ndtr(z) + s * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return f[0] + slopes[0] * (m - grid[0]) + hinge @ ds


def oracle(family: BanditFamily, *, grid_size: int = 801) -> Oracle:
    """Bayes-optimal play by dynamic programming over the posterior of the risky arm.

    The safe arm is known, so pulling it teaches nothing and leaves the posterior unchanged:
    once the optimal policy pulls it, it pulls it for the rest of the lifetime (the classic
    one-armed bandit result). The problem is therefore optimal stopping over the posterior mean
    m_t after t risky pulls, whose variance is deterministic,
    v_t = 1 / (1/sigma_p^2 + t/sigma_r^2). With h = T - t steps left,

        V(t, m) = max( h * r_d,  m + E[ V(t+1, m') ] ),   V(T, m) = 0,

    where, before the (t+1)-th risky reward is seen, m' ~ N(m, v_t - v_{t+1}) (the predictive
    spread of the posterior mean). V(t, .) is convex and piecewise linear between breakpoints;
    it is kept on a grid of `grid_size` means over mu0 +- 8 sigma_p, and the expectation of its
    linear interpolant under the Gaussian is taken in closed form (a sum of hinge expectations),
    which stays exact at the kinks where quadrature rules fail. Outside the grid V continues
    with its edge slopes, 0 (safe arm) below and h above, which are its true asymptotes.
    """
    f = family
    lo, hi = f.mu0 - 8 * f.sigma_p, f.mu0 + 8 * f.sigma_p
    grid = np.linspace(min(lo, f.r_d - 1), max(hi, f.r_d + 1), grid_size)
    value = np.zeros((f.T + 1, grid_size))
    explore = np.zeros((f.T, grid_size), dtype=bool)
    for t in range(f.T - 1, -1, -1):
        spread = math.sqrt(_posterior_var(f, t) - _posterior_var(f, t + 1))
        risky = grid + _expect_piecewise_linear(grid, value[t + 1], grid, spread)
        safe = (f.T - t) * f.r_d
        explore[t] = risky > safe
        value[t] = np.maximum(risky, safe)
    return Oracle(f, grid, value, explore)


def oracle_actions(orc: Oracle, mu: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Play the oracle on tasks `mu (n,)` with reward noise `noise (n, >=T)`: actions (n, T)."""
    f = orc.family
    n = mu.shape[0]
    actions = np.zeros((n, f.T), dtype=np.int64)
    total = np.zeros(n)
    stopped = np.zeros(n, dtype=bool)
    for t in range(f.T):
        v = _posterior_var(f, t)
        m = v * (f.mu0 / f.sigma_p**2 + total / f.sigma_r**2)  # posterior mean after t pulls
        go = orc.act(t, m) & ~stopped
        stopped |= ~go
        actions[:, t] = go
        reward = mu + f.sigma_r * noise[:, t]
        total = total + np.where(go, reward, 0.0)
    return actions


def behaviour(
    actions: Tensor,
    rewards: Tensor,
    mu: Tensor,
    lengths: Tensor,
    r_d: Tensor,
    *,
    late: float = 0.5,
) -> dict[str, Tensor]:
    """Per-condition behaviour of a batch of lifetimes.

    `actions`, `rewards` (C, n, T_max) (entries at t >= lengths[c] ignored), `mu` (C, n),
    `lengths` (C,), `r_d` (C,). Returns, each of shape (C,):

    - `return`: mean lifetime return;
    - `exploration`: fraction of pulls of the risky arm in tasks where it is worse (mu < r_d);
    - `learning_index`: P(risky arm in the last `late` fraction of life | mu > r_d)
      - P(risky arm late | mu < r_d): 1 for an agent that found out which arm is better, 0 for
      fixed behaviour. A condition with no task on one side gets NaN.
    """
    C, n, t_max = actions.shape
    t = torch.arange(t_max)
    alive = (t[None, :] < lengths[:, None]).to(rewards.dtype)[:, None, :]  # (C, 1, T)
    late_mask = (t[None, :] >= torch.ceil((1 - late) * lengths[:, None])).to(rewards.dtype)
    late_mask = late_mask[:, None, :] * alive  # (C, 1, T)
    a = actions.to(rewards.dtype)
    ret = (rewards * alive).sum(-1).mean(-1)
    worse = (mu < r_d[:, None]).to(rewards.dtype)  # (C, n)
    better = 1.0 - worse
    per_task = (a * alive).sum(-1) / lengths[:, None]  # (C, n)
    explor = (per_task * worse).sum(-1) / worse.sum(-1)
    late_rate = (a * late_mask).sum(-1) / late_mask.sum(-1)  # (C, n)
    p_good = (late_rate * better).sum(-1) / better.sum(-1)
    p_bad = (late_rate * worse).sum(-1) / worse.sum(-1)
    return {"return": ret, "exploration": explor, "learning_index": p_good - p_bad}
