"""PSRO: every meta-solver and response scheme, fictitious play against a hand-written one;
Blotto, the disc game, Kuhn and Leduc poker."""

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
    fictitious_play,
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


# --- fictitious play: counts over the multiset of iterations' best responses


def _hand_fictitious_play(A: np.ndarray, start: int, iterations: int) -> list[float]:
    """Brown's fictitious play on a symmetric matrix game, written out: exploitabilities."""
    counts = np.zeros(A.shape[0])
    counts[start] = 1
    out = [float((A @ (counts / counts.sum())).max())]
    for _ in range(iterations):
        counts[int(np.argmax(A @ (counts / counts.sum())))] += 1
        out.append(float((A @ (counts / counts.sum())).max()))
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_fictitious_play_is_brown_fictitious_play(seed):
    A = G.random_skew_symmetric(8, rng=seed)  # generic payoffs: no ties in any argmax
    ps = PSRO(MatrixOracle(A, start=3), meta_solver="fictitious_play", response="nash")
    hist = ps.run(40)
    expected = _hand_fictitious_play(A, 3, 40)
    np.testing.assert_allclose([h["exploitability"] for h in hist], expected, atol=1e-12)
    # every iteration's response is counted, duplicates included
    assert sum(ps.counts[0]) == 41
    assert len(ps.populations[0]) < 41  # some responses were already in the population
    np.testing.assert_allclose(ps.sigmas()[0], np.array(ps.counts[0]) / 41)


def test_fictitious_play_keeps_improving_where_uniform_freezes():
    A = G.blotto(10, 3)
    curves = {}
    for solver, response in [("uniform", "nash"), ("fictitious_play", "nash"), ("nash", "nash")]:
        hist = PSRO(MatrixOracle(A), meta_solver=solver, response=response).run(66)
        curves[solver] = [h["exploitability"] for h in hist]
    self_play = PSRO(MatrixOracle(A), response="self_play").run(66)[-1]["exploitability"]
    uni, fp = curves["uniform"], curves["fictitious_play"]
    assert uni[6:] == [uni[6]] * len(uni[6:])  # uniform over distinct policies: frozen
    assert fp[-1] < 0.5 * fp[5] and fp[-1] < self_play
    first = {k: next((i for i, e in enumerate(c) if e <= 1e-6), len(c)) for k, c in curves.items()}
    assert first["nash"] < first["fictitious_play"]


def test_fictitious_play_on_kuhn_poker_counts_each_player(pyspiel):
    ps = PSRO(OpenSpielOracle("kuhn_poker"), meta_solver="fictitious_play", response="nash")
    hist = ps.run(15)
    assert [sum(c) for c in ps.counts] == [16, 16]
    assert any(len(p) < 16 for p in ps.populations)  # a best response came back
    e = [h["exploitability"] for h in hist]
    assert e[-1] < 0.5 * e[5]
    x, y = ps.sigmas()
    np.testing.assert_allclose(x, np.array(ps.counts[0]) / 16)
    np.testing.assert_allclose(y, np.array(ps.counts[1]) / 16)


def test_fictitious_play_solver_weighs_by_counts():
    M = np.zeros((3, 2))
    x, y = fictitious_play(M, False, counts=[np.array([1, 2, 1]), np.array([3, 1])])
    np.testing.assert_allclose(x, [0.25, 0.5, 0.25])
    np.testing.assert_allclose(y, [0.75, 0.25])
    np.testing.assert_allclose(fictitious_play(M, False)[0], 1 / 3)  # no counts: each once
    with pytest.raises(ValueError, match="counts"):
        fictitious_play(M, False, counts=[np.array([1, 2]), np.array([3, 1])])


def test_a_registered_solver_with_counts_receives_them():
    seen = []

    def solver(M, symmetric, *, counts=None):
        seen.append([list(c) for c in counts])
        return fictitious_play(M, symmetric, counts=counts)

    register_meta_solver("spy", solver)
    try:
        PSRO(MatrixOracle(G.rock_paper_scissors()), meta_solver="spy").run(3)
    finally:
        META_SOLVERS.pop("spy")
    assert seen[0] == [[1]] and all(sum(c[0]) >= 1 for c in seen)
