"""alpha-Rank against OpenSpiel's `alpharank.compute` (local and Moran selection), against a
direct float64 / mpmath evaluation of the Moran sum, stability at α = 1e4, reducible chains."""

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
    moran_fixation_probabilities,
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


# --- the finite-population (Moran) selection model


def _han_2013() -> np.ndarray:
    """The payoffs of Han et al. 2013 that OpenSpiel's own alpha-Rank test uses."""
    r, t, p, s, delta, eps = 1.0, 2.0, 0.0, -1.0, 4.0, 0.25
    return np.array(
        [
            [r - eps / 2, r - eps, 0, s + delta - eps, r - eps],
            [r, r, s, s, s],
            [0, t, p, p, p],
            [t - delta, t, p, p, p],
            [r, t, p, p, p],
        ]
    )


def _moran_direct(M: np.ndarray, s: int, r: int, alpha: float, m: int, exp=math.exp) -> float:
    """``1 / (1 + Σ_{l=1}^{m-1} Π_{p=1}^{l} exp(-α (f_r(p) - f_s(m-p))))`` term by term."""
    total, prod = 1.0, 1.0
    for ell in range(1, m):
        p = ell
        f_r = ((p - 1) * M[r, r] + (m - p) * M[r, s]) / (m - 1)
        f_s = ((m - p - 1) * M[s, s] + p * M[s, r]) / (m - 1)
        prod = prod * exp(-alpha * (f_r - f_s))
        total = total + prod
    return 1 / total


def test_moran_reproduces_openspiels_han_2013_example(osa):
    M = _han_2013()
    ours = alpharank(M, alpha=0.1, m=20, selection="moran")
    _, _, pi, _, _ = osa.compute([M], alpha=0.1, m=20, use_local_selection_model=False)
    np.testing.assert_allclose(ours.pi, pi, atol=1e-12)
    # OpenSpiel's test pins these to 4 decimals
    np.testing.assert_allclose(
        ours.pi, [0.40966787, 0.07959841, 0.20506998, 0.08505983, 0.2206039], atol=1e-8
    )
    # the local model ranks this game differently
    assert np.abs(alpharank(M, alpha=0.1, m=20).pi - ours.pi).max() > 1e-2


@pytest.mark.parametrize("n", [3, 8, 20])
@pytest.mark.parametrize("alpha", [0.01, 0.5, 5.0, 50.0])
def test_moran_single_population_matches_openspiel(n, alpha, osa):
    rng = np.random.default_rng(n)
    M = rng.uniform(-1, 1, size=(n, n))
    for m in (2, 3, 20):
        ours = alpharank(M, alpha=alpha, m=m, selection="moran")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # OpenSpiel's exp overflows at large alpha
            rhos, _, pi, _, _ = osa.compute([M], alpha=alpha, m=m, use_local_selection_model=False)
        np.testing.assert_allclose(ours.pi, pi, atol=1e-9)
        rho = moran_fixation_probabilities(M, alpha=alpha, m=m)
        np.fill_diagonal(rho, 0.0)
        np.testing.assert_allclose(rho, rhos, atol=1e-13, rtol=1e-12)


def test_moran_on_a_constant_sum_game_matches_openspiels_closed_form(osa):
    # OpenSpiel takes a closed-form path for constant-sum single-population games
    A = G.random_skew_symmetric(6, rng=0) + 0.5
    for alpha in (0.1, 10.0, 100.0):
        ours = alpharank(A, alpha=alpha, m=50, selection="moran").pi
        theirs = osa.compute([A], alpha=alpha, m=50, use_local_selection_model=False)[2]
        np.testing.assert_allclose(ours, theirs, atol=1e-9)


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 2)])
def test_moran_multi_population_is_the_closed_form_and_matches_openspiel(shape, osa):
    rng = np.random.default_rng(1)
    tables = [rng.uniform(size=shape) for _ in shape]
    for alpha in (0.5, 3.0, 40.0):
        ours = alpharank(tables, alpha=alpha, selection="moran")
        _, _, pi, _, _ = osa.compute(tables, alpha=alpha, use_local_selection_model=False)
        np.testing.assert_allclose(ours.pi, pi, atol=1e-9)
        np.testing.assert_array_equal(ours.transition, alpharank(tables, alpha=alpha).transition)


def test_moran_fixation_matches_the_direct_sum_in_float64():
    rng = np.random.default_rng(0)
    M = rng.uniform(-1, 1, size=(5, 5))
    for alpha, m in [(0.1, 2), (0.7, 7), (3.0, 30), (10.0, 50)]:
        rho = moran_fixation_probabilities(M, alpha=alpha, m=m)
        direct = np.array([[_moran_direct(M, s, r, alpha, m) for r in range(5)] for s in range(5)])
        np.testing.assert_allclose(rho, direct, rtol=1e-12, atol=0)
        np.testing.assert_allclose(np.diag(rho), 1 / m, rtol=1e-14)


def test_moran_is_stable_at_large_alpha():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 60
    M = np.random.default_rng(2).uniform(-1, 1, size=(4, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning
        rho = moran_fixation_probabilities(M, alpha=1e3, m=50)
        res = alpharank(G.random_skew_symmetric(30, rng=0), alpha=1e4, selection="moran")
    assert np.isfinite(res.pi).all() and res.pi.sum() == pytest.approx(1.0)
    for s in range(4):
        for r in range(4):
            exact = float(_moran_direct(M, s, r, mpmath.mpf(1e3), 50, exp=mpmath.exp))
            if exact < 1e-300:  # below float64's normal range: ours underflows to ~0
                assert rho[s, r] < 1e-290
            else:
                assert rho[s, r] == pytest.approx(exact, rel=1e-11)
    # a dominant strategy takes all the mass in both models at large alpha
    r = np.array([0.0, 1.0, 3.0, 2.0])
    np.testing.assert_allclose(
        alpharank(G.transitive_game(r), alpha=1e4, selection="moran").pi, np.eye(4)[2], atol=1e-12
    )
