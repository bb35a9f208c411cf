"""Nash equilibria: exact values (RPS, biased RPS, Kuhn -1/18) and Nash averaging vs OpenSpiel."""

from __future__ import annotations

import numpy as np
import pytest

from badgerlab.dynamics import games as G
from badgerlab.dynamics.metrics import nash_conv
from badgerlab.dynamics.nash import (
    max_entropy_nash,
    max_entropy_nash_avt,
    nash_averaging,
    nash_averaging_avt,
    solve_zero_sum,
)


def test_rps_nash_is_uniform_with_value_zero():
    eq = solve_zero_sum(G.rock_paper_scissors())
    np.testing.assert_allclose(eq.row, 1 / 3, atol=1e-9)
    np.testing.assert_allclose(eq.col, 1 / 3, atol=1e-9)
    assert eq.value == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(max_entropy_nash(G.rock_paper_scissors()), 1 / 3, atol=1e-9)


def test_biased_rps_nash():
    target = np.array([1, 10, 5]) / 16
    eq = solve_zero_sum(G.BIASED_RPS)
    np.testing.assert_allclose(eq.row, target, atol=1e-9)
    np.testing.assert_allclose(eq.col, target, atol=1e-9)
    np.testing.assert_allclose(max_entropy_nash(G.BIASED_RPS), target, atol=1e-7)


def test_max_entropy_nash_of_a_transitive_game_is_the_best_agent():
    r = np.array([0.3, 2.0, -1.0, 1.9999, 0.0])
    p = max_entropy_nash(G.transitive_game(r))
    np.testing.assert_array_equal(p, np.eye(5)[1])


def test_kuhn_poker_value_is_minus_one_eighteenth(pyspiel):
    game = pyspiel.load_game("kuhn_poker")
    M = np.array(pyspiel.extensive_to_matrix_game(game).row_utilities())  # not symmetric
    eq = solve_zero_sum(M)
    assert eq.value == pytest.approx(-1 / 18, abs=1e-9)
    assert nash_conv(M, eq.row, eq.col) < 1e-9


def test_zero_sum_lp_on_random_rectangular_games():
    rng = np.random.default_rng(0)
    for _ in range(5):
        M = rng.standard_normal((7, 4))
        eq = solve_zero_sum(M)
        assert nash_conv(M, eq.row, eq.col) < 1e-9
        assert eq.value == pytest.approx(float(eq.row @ M @ eq.col))


def test_nash_averaging_splits_mass_between_copies():
    A = G.BIASED_RPS
    p = nash_averaging(A).nash
    for k in range(3):
        idx = [0, 1, 2, k]
        A2 = A[np.ix_(idx, idx)]
        na = nash_averaging(A2)
        assert na.nash[k] == pytest.approx(p[k] / 2, abs=1e-7)
        assert na.nash[3] == pytest.approx(p[k] / 2, abs=1e-7)
        np.testing.assert_allclose(na.ratings[:3], nash_averaging(A).ratings, atol=1e-7)


def _entropy(p):
    p = p[p > 1e-12]
    return float(-(p * np.log(p)).sum())


def _openspiel_maxent(na, A):
    return np.asarray(na._max_entropy_symmetric_nash(A)).ravel()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_max_entropy_nash_with_copies_splits_the_unique_nash(seed):
    rng = np.random.default_rng(seed)
    base = G.random_skew_symmetric(7, rng=rng)  # generic: a unique Nash
    p = solve_zero_sum(base).row
    # copies make the Nash set a polytope: only max entropy picks one point, the one that
    # splits each agent's mass evenly between its copies
    idx = np.concatenate([np.arange(7), rng.integers(0, 7, size=5)])
    A = base[np.ix_(idx, idx)]
    counts = np.bincount(idx, minlength=7)
    ours = max_entropy_nash(A)
    np.testing.assert_allclose(ours, p[idx] / counts[idx], atol=1e-7)
    assert (A @ ours).max() < 1e-9


def test_max_entropy_nash_matches_openspiel_on_blotto(os_nash_averaging):
    A = G.blotto(5, 3)
    ours = max_entropy_nash(A)
    theirs = _openspiel_maxent(os_nash_averaging, A)
    assert (A @ ours).max() < 1e-8
    assert _entropy(ours) == pytest.approx(_entropy(theirs), abs=1e-5)
    np.testing.assert_allclose(ours, theirs, atol=2e-4)


def test_agent_vs_task_matches_openspiel(os_nash_averaging):
    na = os_nash_averaging
    rng = np.random.default_rng(0)
    S = rng.uniform(size=(6, 4))
    S = np.hstack([S, S[:, :1]])  # a copied task
    (pa, pe), (skill, diff) = nash_averaging_avt(S)
    (qa, qe), (skill2, diff2) = na.nash_averaging_avt_matrix(S)
    np.testing.assert_allclose(pa, np.ravel(qa), atol=2e-4)
    np.testing.assert_allclose(pe, np.ravel(qe), atol=2e-4)
    np.testing.assert_allclose(skill, np.ravel(skill2), atol=2e-4)
    np.testing.assert_allclose(diff, np.ravel(diff2), atol=2e-4)
    x, y = max_entropy_nash_avt(S)
    assert y[0] == pytest.approx(y[4], abs=1e-7)  # the copy shares its task's mass


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="antisymmetric"):
        max_entropy_nash(np.ones((2, 2)))
    with pytest.raises(ValueError, match="2-D"):
        solve_zero_sum(np.ones(3))
