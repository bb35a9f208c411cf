"""Multi-level evolution: an evolved inner reward beats plain self-play on the true objective."""

from __future__ import annotations

import pytest
import torch

from badgerlab.dynamics import games as G
from badgerlab.dynamics.evolution import evolve_reward, inner_learning, reward_fitness


def test_inner_learning_shapes_and_plain_self_play_cycles():
    A = torch.as_tensor(G.rock_paper_scissors())
    z0 = torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    theta = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    x = inner_learning(A, theta, z0, steps=50)
    assert x.shape == (2, 3, 3)
    torch.testing.assert_close(x.sum(-1), torch.ones(2, 3, dtype=torch.float64))
    f = reward_fitness(A, theta, z0, steps=200)
    assert f[1] > -1e-6  # pure entropy drives RPS to its uniform Nash
    assert f[0] < -0.1  # the payoff alone does not


def test_evolved_reward_beats_self_play_on_rps():
    res = evolve_reward(
        G.rock_paper_scissors(), generations=12, population=8, inner_steps=100, seed=0
    )
    assert res.self_play_fitness < -0.3
    assert res.fitness[-1] > -0.1
    with pytest.raises(ValueError, match="population"):
        evolve_reward(G.rock_paper_scissors(), population=3)
