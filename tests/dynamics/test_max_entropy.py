"""Max-entropy Nash on every game of games.py: finite, an equilibrium, of maximal entropy.

The reference for "maximal" is built without our solver: per-strategy and per-row LPs find the
strategies some Nash plays and the rows no Nash makes slack, and cvxpy (Clarabel) maximises the
entropy over that face with those rows as equalities. cvxpy on the plain problem
``max H(p) s.t. A p <= 0`` is not a usable reference: its interior-point answer puts ~1e-6 mass
on strategies no Nash plays and satisfies ``A p <= 0`` only to ~1e-10, which buys up to 5e-5
of entropy on random tables with copies (measured), more than the 1e-6 asked for.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.optimize
import torch

from badgerlab.dynamics import games as G
from badgerlab.dynamics import nash as nash_module
from badgerlab.dynamics.metrics import effective_diversity, exploitability
from badgerlab.dynamics.nash import MaxEntropyError, max_entropy_nash, nash_averaging


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _copies(A: np.ndarray, idx) -> np.ndarray:
    return A[np.ix_(idx, idx)]


def _graded_blotto(coins: int, fields: int) -> np.ndarray:
    """Blotto paying the margin of fields won over the fields contested: ±1, ±1/2, ±1/3."""
    S = G.blotto_strategies(coins, fields)
    d = np.sign(S[:, None, :] - S[None, :, :])  # (S, S, fields)
    contested = np.abs(d).sum(-1)
    return np.where(contested > 0, d.sum(-1) / np.maximum(contested, 1), 0.0)


def _parity(n: int) -> np.ndarray:
    """``A[i, j] = sign(i - j)·(-1)^(i+j)``: the higher index wins on equal parity, else loses."""
    i = np.arange(n)
    return np.sign(i[:, None] - i[None, :]) * (-1.0) ** (i[:, None] + i[None, :])


def _random_with_copies(n: int, copies: int, seed: int, *, signs: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    A = G.random_skew_symmetric(n, rng=rng)
    if signs:
        A = np.sign(A)
    idx = np.concatenate([np.arange(n), rng.integers(0, n, size=copies)])
    rng.shuffle(idx)
    return _copies(A, idx)


def _functional(game: G.FunctionalGame, n: int, seed: int) -> np.ndarray:
    agents = torch.randn(n, game.dim, generator=torch.Generator().manual_seed(seed))
    return game.matrix(game.project(agents.double()))


GAMES = {
    "rps": G.rock_paper_scissors(),
    "biased-rps": G.biased_rock_paper_scissors(),
    "biased-rps-(1,2,3)": G.biased_rock_paper_scissors((1.0, 2.0, 3.0)),
    **{f"blotto({c},{f})": G.blotto(c, f) for c, f in [(1, 2), (4, 2), (3, 3), (5, 3)]},
    **{f"blotto({c},{f})": G.blotto(c, f) for c, f in [(10, 3), (4, 4), (5, 4), (5, 5)]},
    "graded-blotto(5,4)": _graded_blotto(5, 4),
    "blotto(5,3)+copies": _copies(G.blotto(5, 3), [*range(21), 2, 2, 7, 0]),
    "parity(6)": _parity(6),
    "parity(6)+copy": _copies(_parity(6), [0, 1, 2, 3, 4, 5, 2]),
    **{f"random({n})": G.random_skew_symmetric(n, rng=n) for n in (1, 2, 7, 40)},
    **{f"random({n})+copies": _random_with_copies(n, n, n) for n in (3, 10, 30)},
    "signs(30)+copies": _random_with_copies(30, 17, 7, signs=True),
    "transitive-with-ties": G.transitive_game(np.array([0.0, 2.0, 1.0, 2.0, 2.0, -1.0])),
    "spinning-top(20)": G.spinning_top(20, 0.6, rng=0)[0],
    "cyclic-part(12)": G.hodge_decomposition(G.random_skew_symmetric(12, rng=3)).cyclic,
    "disc(15)": _functional(G.DiscGame(), 15, 0),
    "mixture-rps(12)": _functional(G.MixtureGame(G.rock_paper_scissors()), 12, 1),
    "zero(5)": np.zeros((5, 5)),
}


def _max_mass_lp(A: np.ndarray, c: np.ndarray) -> float:
    """``max cᵀp`` over the Nash set ``{p ∈ Δ : A p <= 0}``."""
    n = A.shape[0]
    res = scipy.optimize.linprog(
        -c, A_ub=A, b_ub=np.zeros(n), A_eq=np.ones((1, n)), b_eq=[1.0], method="highs"
    )
    assert res.status == 0, res.message
    return -res.fun


def _face(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Strategies some Nash plays, rows every Nash makes tight: 2n independent LPs."""
    A = A / max(1.0, np.abs(A).max())
    n = A.shape[0]
    played = np.array([_max_mass_lp(A, np.eye(n)[j]) > 1e-9 for j in range(n)])
    tight = np.array([_max_mass_lp(A, -A[i]) <= 1e-9 for i in range(n)])
    return played, tight


@pytest.mark.parametrize("name", list(GAMES))
def test_max_entropy_nash_is_a_finite_equilibrium_on_the_largest_support(name):
    A = GAMES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning on the way either
        p = max_entropy_nash(A)
    assert np.isfinite(p).all() and p.min() >= 0 and p.sum() == pytest.approx(1.0, abs=1e-12)
    assert exploitability(A, p) <= 1e-8 * max(1.0, np.abs(A).max())
    played, _ = _face(A)
    np.testing.assert_array_equal(p > 0, played)
    # the Nash averaging outputs built on it are finite too
    na = nash_averaging(A)
    assert np.isfinite(na.ratings).all() and np.isfinite(effective_diversity(A))
    np.testing.assert_allclose(na.ratings[p > 0], 0.0, atol=1e-9)  # played agents rate 0


@pytest.mark.parametrize("name", list(GAMES))
def test_entropy_matches_cvxpy_on_the_equilibrium_face(name):
    cp = pytest.importorskip("cvxpy")
    A = GAMES[name]
    p = max_entropy_nash(A)
    played, tight = _face(A)
    if played.sum() == 1:
        assert _entropy(p) == 0.0
        return
    B = A / max(1.0, np.abs(A).max())
    y = cp.Variable(int(played.sum()))
    cons = [cp.sum(y) == 1, y >= 0]
    if tight.any():
        cons.append(B[tight][:, played] @ y == 0)
    if (~tight).any():
        cons.append(B[~tight][:, played] @ y <= 0)
    prob = cp.Problem(cp.Maximize(cp.sum(cp.entr(y))), cons)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prob.solve(solver="CLARABEL")
    assert prob.status == "optimal"
    q = np.clip(y.value, 0.0, None)
    assert _entropy(p) == pytest.approx(_entropy(q / q.sum()), abs=1e-6)


def test_the_issue_tables_have_their_known_entropies():
    # OpenSpiel (cvxpy) finds ln 51 on 5,5-Blotto; graded 5,4-Blotto plays 24 strategies evenly
    assert _entropy(max_entropy_nash(G.blotto(5, 5))) == pytest.approx(math.log(51), abs=1e-9)
    assert _entropy(max_entropy_nash(_graded_blotto(5, 4))) == pytest.approx(
        math.log(24), abs=1e-9
    )


def test_even_mixture_of_equilibria_never_has_more_entropy():
    for name in ("blotto(5,3)+copies", "random(10)+copies", "parity(6)+copy"):
        A = GAMES[name] / np.abs(GAMES[name]).max()
        n = A.shape[0]
        mix = np.zeros(n)
        for j in range(n):
            res = scipy.optimize.linprog(
                -np.eye(n)[j], A_ub=A, b_ub=np.zeros(n), A_eq=np.ones((1, n)), b_eq=[1.0]
            )
            mix += np.clip(res.x, 0, None) / n
        mix /= mix.sum()
        assert (A @ mix).max() <= 1e-8  # a Nash (the Nash set is convex)
        assert _entropy(max_entropy_nash(A)) >= _entropy(mix) - 1e-12


@pytest.mark.parametrize("scale", [1e-6, 1e6])
def test_scaling_the_table_leaves_the_answer(scale):
    # unscaled, HiGHS failed ("Solve error") on tables with entries ~1e5
    for name in ("random(40)", "random(30)+copies", "blotto(5,4)"):
        A = GAMES[name]
        np.testing.assert_allclose(max_entropy_nash(scale * A), max_entropy_nash(A), atol=1e-9)


def test_copies_share_mass_evenly_and_move_ratings_only_when_the_nash_set_is_not_a_point():
    A = G.blotto(5, 3)
    base = nash_averaging(A)
    played = np.flatnonzero(base.nash > 0)
    unplayed = np.flatnonzero(base.nash == 0)
    k = int(played[0])
    na = nash_averaging(_copies(A, [*range(21), k]))
    assert na.nash[k] == pytest.approx(na.nash[21], abs=1e-9)
    # 5,3-Blotto's Nash set is a polytope: the copy pulls mass towards k and the ratings of
    # the unplayed strategies move (the maximand became H(q) + q_k log 2)
    assert na.nash[k] + na.nash[21] > base.nash[k] + 0.01
    assert np.abs(na.ratings[:21] - base.ratings).max() > 0.01
    # a copy of an unplayed strategy changes nothing
    j = int(unplayed[0])
    nb = nash_averaging(_copies(A, [*range(21), j]))
    np.testing.assert_allclose(nb.ratings[:21], base.ratings, atol=1e-9)
    assert nb.nash[21] == 0.0


def test_a_failed_solve_raises_a_named_error(monkeypatch):
    def stuck(x0, N, BI, rI0, z, t):
        return z, 1.0  # a Newton solve that never converges

    monkeypatch.setattr(nash_module, "_center", stuck)
    with pytest.raises(MaxEntropyError, match="did not converge"):
        max_entropy_nash(G.blotto(5, 3))
    assert issubclass(MaxEntropyError, RuntimeError)


def test_blotto_10_4_is_finite_and_matches_plain_cvxpy():
    # too large (286 strategies) for the 2n LPs of the face reference: plain cvxpy instead,
    # whose ε-mass costs it only ~2e-7 of entropy on this table (measured)
    A = G.blotto(10, 4)
    p = max_entropy_nash(A)
    assert np.isfinite(p).all() and exploitability(A, p) <= 1e-8
    assert np.isfinite(nash_averaging(A).ratings).all()
    cp = pytest.importorskip("cvxpy")
    x = cp.Variable(A.shape[0])
    prob = cp.Problem(cp.Maximize(cp.sum(cp.entr(x))), [A @ x <= 0, cp.sum(x) == 1, x >= 0])
    prob.solve(solver="CLARABEL")
    q = np.clip(x.value, 0.0, None)
    assert _entropy(p) == pytest.approx(_entropy(q / q.sum()), abs=1e-6)
