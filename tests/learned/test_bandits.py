"""The bandit family, its Bayes-optimal oracle, behaviour metrics, RL^2 rollouts and A2C."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from badgerlab.learned import (
    BanditFamily,
    a2c_loss,
    behaviour,
    init_params,
    normalise_advantages,
    oracle,
    oracle_actions,
    rollout,
    sample_tasks,
    step_rewards,
)


@pytest.mark.parametrize("sigma_p", [1.0, 3.0, 5.0])
def test_two_step_oracle_equals_the_closed_form(sigma_p):
    # T = 2: explore once iff mu0 + E[max(r_d, m1)] > 2 r_d, with m1 ~ N(mu0, v0 - v1).
    f = BanditFamily(2, sigma_p, mu0=-1.0, r_d=0.0)
    s = math.sqrt(sigma_p**2 - 1 / (1 / sigma_p**2 + 1))
    a = f.mu0
    exact = max(0.0, a + a * norm.cdf(a / s) + s * norm.pdf(a / s))
    assert oracle(f).expected_return == pytest.approx(exact, abs=2e-4)


def test_oracle_matches_brute_force_simulation_of_its_policy():
    f = BanditFamily(10, 2.0)
    orc = oracle(f)
    g = np.random.default_rng(0)
    n = 200_000
    mu = f.mu0 + f.sigma_p * g.standard_normal(n)
    noise = g.standard_normal((n, f.T))
    acts = oracle_actions(orc, mu, noise)
    ret = np.where(acts == 1, mu[:, None] + noise, f.r_d).sum(1)
    se = ret.std() / math.sqrt(n)
    assert abs(ret.mean() - orc.expected_return) < 4 * se
    # Once the oracle quits the risky arm it never returns (one-armed bandit stopping rule).
    assert np.all(np.diff(acts, axis=1) <= 0)


def test_oracle_beats_every_fixed_explore_then_commit_rule():
    f = BanditFamily(20, 2.0)
    g = np.random.default_rng(1)
    n = 100_000
    mu = f.mu0 + f.sigma_p * g.standard_normal(n)
    noise = g.standard_normal((n, f.T))
    best = oracle(f).expected_return
    for k in range(0, f.T + 1, 2):
        # pull the risky arm k times, then keep it iff its sample mean beats r_d
        first = (mu[:, None] + noise[:, :k]).sum(1)
        keep = (first / max(k, 1) > f.r_d) if k else np.zeros(n, bool)
        later = np.where(keep, mu * (f.T - k), f.r_d * (f.T - k))
        assert (first + later).mean() <= best + 0.05


def test_no_learning_regimes_never_explore_and_learning_regime_does():
    assert not oracle(BanditFamily(50, 0.1)).act(0, np.array([-1.0]))[0]
    assert not oracle(BanditFamily(2, 3.0)).act(0, np.array([-1.0]))[0]
    assert oracle(BanditFamily(50, 3.0)).act(0, np.array([-1.0]))[0]
    with pytest.raises(ValueError, match="T must"):
        BanditFamily(0, 1.0)
    with pytest.raises(ValueError, match="sigma_p"):
        BanditFamily(5, -1.0)


def test_vectorised_bandit_equals_a_loop():
    fams = [BanditFamily(3, 1.0, r_d=0.5), BanditFamily(5, 2.0, mu0=0.3, sigma_r=2.0)]
    g = torch.Generator().manual_seed(0)
    mu, noise = sample_tasks(fams, 4, generator=g)
    assert mu.shape == (2, 4) and noise.shape == (2, 4, 5)
    action = torch.tensor([[0, 1, 1, 0], [1, 0, 1, 1]])
    got = step_rewards(fams, action, mu, noise[..., 2])
    for c, f in enumerate(fams):
        for i in range(4):
            want = mu[c, i] + f.sigma_r * noise[c, i, 2] if action[c, i] else f.r_d
            assert got[c, i].item() == pytest.approx(float(want))


def test_behaviour_metrics_on_a_hand_example():
    # one condition, T = 4, two tasks: the better-arm task pulls risky late, the other never.
    actions = torch.tensor([[[1, 0, 1, 1], [1, 0, 0, 0]]])
    rewards = torch.tensor([[[1.0, 0.0, 2.0, 3.0], [-1.0, 0.0, 0.0, 0.0]]])
    mu = torch.tensor([[1.0, -1.0]])
    b = behaviour(actions, rewards, mu, torch.tensor([4]), torch.tensor([0.0]))
    assert b["return"].item() == pytest.approx((6.0 - 1.0) / 2)
    assert b["exploration"].item() == pytest.approx(1 / 4)  # worse task: 1 of 4 pulls risky
    assert b["learning_index"].item() == pytest.approx(1.0)  # late half: 1 vs 0


def test_advantage_normalisation_and_value_loss_on_a_hand_example():
    adv = torch.tensor([[[1.0, 3.0, 99.0]]])
    alive = torch.tensor([[[1.0, 1.0, 0.0]]])
    got = normalise_advantages(adv, alive)
    assert got[0, 0].tolist() == pytest.approx([-1.0, 1.0, 0.0], abs=1e-6)
    # rewards (1, 2), values (0, 0), T = 2: G = (3, 2), A = (3, 2) -> normalised (1, -1);
    # policy loss -mean(logp * A_hat); value loss mean(((G - V) / T)^2) = (2.25 + 1) / 2.
    ro = {
        "rewards": torch.tensor([[[1.0, 2.0]]]),
        "values": torch.zeros(1, 1, 2),
        "logp": torch.tensor([[[math.log(0.5), math.log(0.25)]]]),
        "entropy": torch.zeros(1, 1, 2),
        "alive": torch.ones(1, 1, 2),
    }
    loss, parts = a2c_loss(ro, torch.tensor([2]), value_coef=0.5)
    policy = -(math.log(0.5) * 1.0 + math.log(0.25) * -1.0) / 2
    assert parts["policy"].item() == pytest.approx(policy, rel=1e-5)
    assert parts["value"].item() == pytest.approx((2.25 + 1.0) / 2)
    assert loss.item() == pytest.approx(policy + 0.5 * 1.625, rel=1e-5)


def test_rollout_masks_steps_past_each_lifetime_and_gradients_flow():
    fams = [BanditFamily(2, 1.0), BanditFamily(4, 1.0)]
    g = torch.Generator().manual_seed(0)
    p = init_params(2, 5, generator=g)
    mu, noise = sample_tasks(fams, 3, generator=g)
    ro = rollout(p, fams, mu.float(), noise.float(), generator=g, t_ref=4.0)
    assert ro["actions"].shape == (2, 3, 4)
    assert ro["alive"][0, 0].tolist() == [1, 1, 0, 0] and ro["alive"][1, 0].tolist() == [1] * 4
    loss, _ = a2c_loss(ro, torch.tensor([2, 4]))
    loss.backward()
    assert all(torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0 for v in p.values())


def test_agents_are_independent_across_conditions():
    # Condition 1's loss must not move condition 0's gradient: the grid is many agents at once.
    fams = [BanditFamily(3, 1.0), BanditFamily(3, 2.0)]
    g = torch.Generator().manual_seed(0)
    p = init_params(2, 4, generator=g)
    mu, noise = sample_tasks(fams, 5, generator=g)
    ro = rollout(p, fams, mu.float(), noise.float(), generator=torch.Generator().manual_seed(1),
                 t_ref=3.0)  # fmt: skip
    _, parts = a2c_loss(ro, torch.tensor([3, 3]))
    (parts["policy"][1] + parts["value"][1]).backward()
    assert all(v.grad[0].abs().max() == 0 for v in p.values())
