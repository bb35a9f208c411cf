"""Metrics: effective diversity (1/3 for RPS, 0 when transitive), exploitability, RPP."""

from __future__ import annotations

import numpy as np
import pytest

from badgerlab.dynamics import games as G
from badgerlab.dynamics.metrics import (
    effective_diversity,
    exploitability,
    nash_conv,
    relative_population_performance,
)


def test_effective_diversity_exact_values():
    assert effective_diversity(G.rock_paper_scissors()) == pytest.approx(1 / 3, abs=1e-9)
    assert effective_diversity(G.transitive_game(np.array([0.0, 1.0, 3.0]))) == 0.0
    # with an explicit p: uniform over a transitive population still has diversity > 0
    assert effective_diversity(G.transitive_game(np.array([0.0, 1.0])), [0.5, 0.5]) == 0.25


def test_exploitability():
    A = G.rock_paper_scissors()
    assert exploitability(A, np.full(3, 1 / 3)) == pytest.approx(0.0, abs=1e-12)
    assert exploitability(A, [1.0, 0.0, 0.0]) == 1.0
    assert nash_conv(A, [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]) == 2.0
    with pytest.raises(ValueError, match="probability"):
        exploitability(A, [1.0, 1.0, 0.0])


def test_relative_population_performance_is_antisymmetric():
    game = G.DiscGame()
    import torch

    gen = torch.Generator().manual_seed(0)
    B, C = game.sample(6, gen), 0.5 * game.sample(4, gen)
    v_bc = relative_population_performance(game.matrix(B, C))
    v_cb = relative_population_performance(game.matrix(C, B))
    assert v_bc == pytest.approx(-v_cb, abs=1e-9)
