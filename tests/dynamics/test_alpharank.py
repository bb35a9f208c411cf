"""alpha-Rank against OpenSpiel's `alpharank.compute`, stability at α = 1e4, reducible chains."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from badgerlab.dynamics import games as G
from badgerlab.dynamics.alpharank import (
    _gth,
    _lu,
    alpharank,
    fixation_probability,
    transition_matrix,
)


@pytest.mark.parametrize("n", [3, 8, 25])
@pytest.mark.parametrize("alpha", [0.1, 5.0, 50.0])
def test_single_population_matches_openspiel(n, alpha, osa):
    rng = np.random.default_rng(n)
    M = rng.uniform(-1, 1, size=(n, n))
    ours = alpharank([M], alpha=alpha, m=20)
    _, _, pi, _, _ = osa.compute([M], alpha=alpha, m=20)
    assert ours.unique
    np.testing.assert_allclose(ours.pi, pi, atol=1e-10)


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 2)])
def test_multi_population_matches_openspiel(shape, osa):
    rng = np.random.default_rng(0)
    tables = [rng.uniform(size=shape) for _ in shape]
    for alpha in (0.5, 3.0):
        ours = alpharank(tables, alpha=alpha)
        _, _, pi, _, _ = osa.compute(tables, alpha=alpha)
        np.testing.assert_allclose(ours.pi, pi, atol=1e-10)
        assert sum(m.sum() for m in ours.marginals()) == pytest.approx(len(shape))
    ours = alpharank(tables, alpha=math.inf, inf_alpha_eps=0.05)
    _, _, pi, _, _ = osa.compute(tables, use_inf_alpha=True, inf_alpha_eps=0.05)
    np.testing.assert_allclose(ours.pi, pi, atol=1e-10)


def test_infinite_alpha_matches_openspiel(osa):
    rng = np.random.default_rng(1)
    M = rng.uniform(size=(6, 6))
    ours = alpharank(M, alpha=math.inf, inf_alpha_eps=0.01)
    _, _, pi, _, _ = osa.compute([M], use_inf_alpha=True, inf_alpha_eps=0.01)
    np.testing.assert_allclose(ours.pi, pi, atol=1e-12)


def test_fixation_probability_is_stable_and_correct():
    m = 50
    u = np.array([-3.0, -0.1, 1e-3, 0.7, 4.0])
    naive = (1 - np.exp(-u)) / (1 - np.exp(-m * u))
    np.testing.assert_allclose(fixation_probability(u, m), naive, rtol=1e-10)
    assert fixation_probability(0.0, m) == 1 / m
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        big = fixation_probability(np.array([-1e6, -800.0, 800.0, 1e6]), m)
    assert np.isfinite(big).all() and big[0] == 0.0 and big[-1] == 1.0


def test_alpha_1e4_gives_no_overflow_and_a_distribution():
    A = G.random_skew_symmetric(30, rng=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = alpharank(A, alpha=1e4)
    assert np.isfinite(res.pi).all() and res.pi.min() >= 0
    assert res.pi.sum() == pytest.approx(1.0)
    r = np.array([0.0, 1.0, 3.0, 2.0])
    np.testing.assert_array_equal(alpharank(G.transitive_game(r), alpha=1e4).pi, np.eye(4)[2])


def test_several_stationary_distributions_answer_gracefully(osa):
    # a 2x2 coordination game: both diagonal profiles are absorbing at large alpha
    T = np.array([[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError):
        osa.compute([T, T], alpha=1e4)
    res = alpharank([T, T], alpha=1e4)
    assert not res.unique
    assert len(res.classes) == 2
    np.testing.assert_allclose(res.stationary.sum(axis=1), 1.0)
    np.testing.assert_allclose(res.pi, [0.5, 0.0, 0.0, 0.5])
    # at small alpha the chain is irreducible again and agrees with OpenSpiel
    small = alpharank([T, T], alpha=0.05)
    assert small.unique
    np.testing.assert_allclose(small.pi, osa.compute([T, T], alpha=0.05)[2], atol=1e-12)


def test_gth_and_lu_agree():
    C, _ = transition_matrix(G.random_skew_symmetric(40, rng=3), alpha=2.0)
    np.testing.assert_allclose(_gth(C), _lu(C), atol=1e-12)


def test_bad_payoffs_raise():
    with pytest.raises(ValueError, match="square"):
        alpharank(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="shape"):
        alpharank([np.zeros((2, 3)), np.zeros((3, 2))])
    with pytest.raises(ValueError, match="alpha"):
        alpharank(np.zeros((2, 2)), alpha=-1.0)
