"""PSRO: every meta-solver and response scheme; Blotto, the disc game, Kuhn and Leduc poker."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from badgerlab.dynamics import games as G
from badgerlab.dynamics.psro import (
    META_SOLVERS,
    PSRO,
    RESPONSES,
    FunctionalOracle,
    MatrixOracle,
    OpenSpielOracle,
    get_meta_solver,
    register_meta_solver,
)


@pytest.mark.parametrize("name", sorted(META_SOLVERS))
@pytest.mark.parametrize("symmetric", [True, False])
def test_meta_solvers_return_distributions(name, symmetric):
    M = G.BIASED_RPS if symmetric else np.random.default_rng(0).standard_normal((4, 3))
    x, y = get_meta_solver(name)(M, symmetric)
    assert x.shape == (M.shape[0],) and y.shape == (M.shape[1],)
    for s in (x, y):
        assert s.min() >= 0 and s.sum() == pytest.approx(1.0)
    if symmetric:
        np.testing.assert_allclose(x, y)


def test_nash_and_prd_solve_rps():
    A = G.rock_paper_scissors()
    np.testing.assert_allclose(get_meta_solver("nash")(A, True)[0], 1 / 3, atol=1e-9)
    np.testing.assert_allclose(get_meta_solver("prd")(A, True)[0], 1 / 3, atol=2e-2)
    np.testing.assert_allclose(get_meta_solver("alpharank")(A, True)[0], 1 / 3, atol=1e-9)


def test_registry_errors_and_registration():
    with pytest.raises(ValueError, match="meta_solver"):
        get_meta_solver("nope")
    with pytest.raises(ValueError, match="response"):
        PSRO(MatrixOracle(G.rock_paper_scissors()), response="nope")
    register_meta_solver("first", lambda M, s: (np.eye(M.shape[0])[0], np.eye(M.shape[1])[0]))
    try:
        ps = PSRO(MatrixOracle(G.rock_paper_scissors()), meta_solver="first")
        ps.run(2)
    finally:
        META_SOLVERS.pop("first")


def test_blotto_psro_nash_converges_and_self_play_stalls():
    A = G.blotto(10, 3)
    n = A.shape[0]
    nash = PSRO(MatrixOracle(A), response="nash").run(n)
    self_play = PSRO(MatrixOracle(A), response="self_play").run(n)
    assert nash[-1]["exploitability"] <= 1e-6
    assert self_play[-1]["exploitability"] >= 0.1
    assert nash[-1]["diversity"] > 0


@pytest.mark.parametrize("response", RESPONSES)
def test_every_response_scheme_runs_on_blotto(response):
    A = G.blotto(5, 3)
    ps = PSRO(MatrixOracle(A), response=response)
    hist = ps.run(25)
    sizes = [h["population"] for h in hist]
    assert all(b >= a for a, b in zip(sizes, sizes[1:], strict=False))
    assert all(0 <= h["exploitability"] <= 1 for h in hist)
    M = ps.M
    np.testing.assert_allclose(M, -M.T)
    if response != "self_play":
        assert hist[-1]["exploitability"] < hist[0]["exploitability"]


@pytest.mark.parametrize("response", RESPONSES)
def test_disc_game_gradient_oracle(response):
    oracle = FunctionalOracle(G.DiscGame(), steps=20, lr=0.1, init_scale=0.2, seed=0)
    ps = PSRO(oracle, response=response)
    hist = ps.run(8)
    assert hist[-1]["population"] >= 2
    # the meta-game is the disc game's evaluation matrix of the population
    V = torch.stack(ps.populations[0])
    np.testing.assert_allclose(ps.M, G.DiscGame().matrix(V), atol=1e-12)


def test_kuhn_poker_psro_nash_finds_the_value(pyspiel):
    oracle = OpenSpielOracle("kuhn_poker")
    assert not oracle.symmetric
    ps = PSRO(oracle, response="nash")
    assert len(ps.populations) == 2  # one population per player: Kuhn is not symmetric
    assert 2 * ps.history[0]["exploitability"] == pytest.approx(11 / 12)  # NashConv(uniform)
    hist = ps.run(12)
    assert hist[-1]["exploitability"] < 1e-3
    x, y = ps.sigmas()
    assert float(x @ ps.M @ y) == pytest.approx(-1 / 18, abs=2e-3)


@pytest.mark.slow
def test_leduc_uniform_nash_conv(pyspiel):
    oracle = OpenSpielOracle("leduc_poker")
    pops = oracle.initial()
    assert 2 * oracle.exploitability(pops, [np.ones(1), np.ones(1)]) == pytest.approx(
        4.7472222, abs=1e-6
    )
