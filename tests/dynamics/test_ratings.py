"""Elo (Bradley-Terry) and mElo: the 400·log10(2) gap, exact recovery, gradients, disc game."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from badgerlab.dynamics import games as G
from badgerlab.dynamics.ratings import (
    ELO_SCALE,
    MElo,
    bradley_terry,
    elo_probability,
    elo_update,
    melo_fit,
    melo_from_logits,
    melo_probability,
    melo_update,
    omega,
)


def test_elo_gap_for_two_wins_against_one():
    r = bradley_terry(np.array([[0.0, 2.0], [1.0, 0.0]]))
    assert (r[0] - r[1]) * ELO_SCALE == pytest.approx(400 * math.log10(2), abs=1e-6)


def test_bradley_terry_recovers_ratings_from_expected_wins():
    r = np.array([-1.0, 0.0, 0.5, 2.0])
    W = 100 * elo_probability(r)
    np.fill_diagonal(W, 0)
    np.testing.assert_allclose(bradley_terry(W), r - r.mean(), atol=1e-8)


def test_bradley_terry_needs_a_connected_win_graph():
    W = np.array([[0.0, 3.0], [0.0, 0.0]])  # agent 1 never wins: no MLE
    with pytest.raises(ValueError, match="prior"):
        bradley_terry(W)
    r = bradley_terry(W, prior=1.0)
    assert r[0] > r[1] and np.isfinite(r).all()


def test_elo_update_is_zero_sum_and_moves_toward_the_result():
    r = np.zeros(3)
    r2 = elo_update(r, 0, 1, 1.0)
    assert r2.sum() == pytest.approx(0.0) and r2[0] > 0 > r2[1] and r2[2] == 0
    assert r2[0] * ELO_SCALE == pytest.approx(8.0)  # K=16, expected score 1/2
    np.testing.assert_array_equal(r, 0)


def test_melo_from_logits_is_exact_for_transitive_plus_rank_two():
    game = G.DiscGame()
    V = game.sample(10, torch.Generator().manual_seed(1))
    L = 2 * game.matrix(V) + G.transitive_game(np.linspace(-1, 1, 10))
    m = melo_from_logits(L, 2)
    P = 1 / (1 + np.exp(-L))
    np.testing.assert_allclose(melo_probability(m.r, m.c), P, atol=1e-10)


def test_melo_update_is_a_gradient_step_on_the_log_likelihood():
    rng = np.random.default_rng(0)
    state = MElo(rng.standard_normal(4), rng.standard_normal((4, 2)))
    i, j, s = 1, 3, 1.0
    lr = 1e-6
    new = melo_update(state, i, j, s, lr_r=lr, lr_c=lr)
    r = torch.tensor(state.r, requires_grad=True)
    c = torch.tensor(state.c, requires_grad=True)
    logit = r[i] - r[j] + c[i] @ torch.as_tensor(omega(2)) @ c[j]
    ll = s * torch.nn.functional.logsigmoid(logit) + (1 - s) * torch.nn.functional.logsigmoid(
        -logit
    )
    ll.backward()
    np.testing.assert_allclose((new.r - state.r) / lr, r.grad.numpy(), atol=1e-9)
    np.testing.assert_allclose((new.c - state.c) / lr, c.grad.numpy(), atol=1e-9)


def test_melo2_predicts_the_disc_game_far_better_than_elo():
    game = G.DiscGame()
    n, games = 24, 30
    V = game.sample(n, torch.Generator().manual_seed(0))
    P = (1 + game.matrix(V)) / 2
    rng = np.random.default_rng(0)
    up = np.triu(rng.binomial(games, P), 1).astype(float)
    W = up + np.triu(games - up, 1).T
    mask = ~np.eye(n, dtype=bool)
    elo = np.abs(elo_probability(bradley_terry(W, prior=0.5)) - P)[mask].mean()
    melo = np.abs(melo_probability(*melo_fit(W, dim=2)) - P)[mask].mean()
    assert melo < 0.5 * elo
