"""Games: Blotto against OpenSpiel, the Hodge split, spinning tops, Schur components."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from badgerlab.dynamics import games as G
from badgerlab.dynamics.ratings import omega


def test_blotto_matches_openspiel(pyspiel):
    A = G.blotto(10, 3)
    assert A.shape == (66, 66)
    np.testing.assert_array_equal(A, -A.T)
    game = pyspiel.load_game("blotto(coins=10,fields=3,players=2)")
    S = G.blotto_strategies(10, 3)
    st = game.new_initial_state()
    for a in range(66):
        assert st.action_to_string(0, a) == "[" + ",".join(map(str, S[a])) + "]"
    for a in range(0, 66, 5):
        for b in range(0, 66, 3):
            s = game.new_initial_state()
            s.apply_actions([a, b])
            assert s.returns()[0] == A[a, b]


def test_rps_and_biased():
    np.testing.assert_array_equal(G.rock_paper_scissors(), -G.rock_paper_scissors().T)
    np.testing.assert_array_equal(G.biased_rock_paper_scissors(), G.BIASED_RPS)
    np.testing.assert_array_equal(G.biased_rock_paper_scissors((1, 1, 1)), G.rock_paper_scissors())
    with pytest.raises(ValueError, match="bias"):
        G.biased_rock_paper_scissors((1, -1, 1))


def test_hodge_split_is_orthogonal_and_exact():
    A = G.random_skew_symmetric(12, rng=0) + G.transitive_game(np.arange(12.0))
    h = G.hodge_decomposition(A)
    np.testing.assert_allclose(h.transitive + h.cyclic, A, atol=1e-12)
    assert abs((h.transitive * h.cyclic).sum()) < 1e-9
    np.testing.assert_allclose(h.cyclic.sum(axis=1), 0.0, atol=1e-12)  # div(rot) = 0
    r = np.array([0.0, 2.0, -1.0, 0.5])
    h = G.hodge_decomposition(G.transitive_game(r))
    np.testing.assert_allclose(h.cyclic, 0.0, atol=1e-12)
    np.testing.assert_allclose(h.ratings, r - r.mean(), atol=1e-12)
    assert G.cyclic_share(G.rock_paper_scissors()) == pytest.approx(1.0)
    assert G.cyclic_share(G.transitive_game(r)) == pytest.approx(0.0)


@pytest.mark.parametrize("c", [0.0, 0.3, 0.9, 1.0])
def test_spinning_top_has_the_requested_cyclic_share(c):
    A, t = G.spinning_top(40, c, rng=1)
    np.testing.assert_allclose(A, -A.T, atol=1e-12)
    assert G.cyclic_share(A) == pytest.approx(c, abs=1e-9)
    assert t[0] == 0.0 and t[-1] == 1.0


def test_schur_components_reconstruct_a_rank_two_game():
    game = G.DiscGame()
    V = game.sample(15, torch.Generator().manual_seed(0))
    A = game.matrix(V)  # the disc game's evaluation matrix has rank 2
    C, lam = G.schur_components(A, 1)
    np.testing.assert_allclose(C @ omega(2) @ C.T, A, atol=1e-10)
    assert lam[0] > 0
    with pytest.raises(ValueError, match="k must"):
        G.schur_components(A, 9)


def test_check_antisymmetric_names_the_problem():
    with pytest.raises(ValueError, match="antisymmetric"):
        G.check_antisymmetric(np.ones((3, 3)))
    with pytest.raises(ValueError, match="square"):
        G.check_antisymmetric(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        G.check_antisymmetric(np.full((2, 2), np.nan))


def test_disc_game_gradient_best_response_matches_closed_form():
    game = G.DiscGame()
    gen = torch.Generator().manual_seed(3)
    W = game.sample(5, gen)
    w = np.full(5, 0.2)
    exact = game.exploitability(W, w)
    mean = W.mean(0)
    assert exact == pytest.approx(float(mean.norm()))
    v = G.FunctionalGame.best_response(game, W, w, steps=300, lr=0.2, restarts=4, generator=gen)
    assert float(game.payoff_against(v[None], W, w)[0]) == pytest.approx(exact, abs=1e-6)
    # antisymmetry of the functional form
    a, b = game.sample(2, gen)
    assert float(game.phi(a, b)) == pytest.approx(-float(game.phi(b, a)))


def test_mixture_game_exploitability_bounds_gradient_response():
    game = G.MixtureGame(G.BIASED_RPS)
    gen = torch.Generator().manual_seed(0)
    W = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    w = np.array([0.5, 0.25, 0.25])
    exact = game.exploitability(W, w)
    found = G.FunctionalGame.exploitability(game, W, w, steps=400, lr=1.0, generator=gen)
    assert found <= exact + 1e-12
    assert found == pytest.approx(exact, abs=1e-2)
