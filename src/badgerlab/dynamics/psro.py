"""Policy-space response oracles: PSRO with meta-solvers and response schemes in registries.

PSRO (Lanctot et al. 2017, https://arxiv.org/abs/1711.00832) grows a population per player:
each iteration solves the meta-game ``M`` (payoffs between population members) with a
meta-solver, then adds best responses chosen by a response scheme. A best response that is
already in the population is not added again but counted: ``PSRO.counts`` holds, per
population, how many iterations produced each policy, which is what fictitious play averages
over (``meta_solver="fictitious_play"``, Brown 1951: the uniform mixture of every iteration's
best response, duplicates included). The response schemes:

- ``self_play``: a best response to the opponent's newest policy;
- ``nash``: a best response to the meta-strategy ``σ`` (PSRO-Nash when the solver is Nash);
- ``rectified``: PSRO-rN (Balduzzi et al. 2019, https://arxiv.org/abs/1901.08106, §4): every
  agent ``v`` with ``σ_v > 0`` is trained against the opponents it beats or ties,
  ``∝ σ_w [M_vw >= σᵀMσ]₊``, amplifying its strengths;
- ``pipeline``: P2SRO (McAleer et al. 2020, https://arxiv.org/abs/2006.08555): ``n_active``
  policies train in parallel, the ``j``-th against the meta-strategy of the fixed population
  and the ``j - 1`` active policies below it; the lowest is fixed once it stops changing.

Oracles: exact best responses on matrix games, gradient best responses on functional-form
games, and OpenSpiel's exact best response on two-player games such as Kuhn and Leduc poker
(never treated as symmetric: each player has its own population).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from badgerlab.dynamics.alpharank import alpharank
from badgerlab.dynamics.games import FunctionalGame, _int_arg, _positive, check_antisymmetric
from badgerlab.dynamics.metrics import effective_diversity
from badgerlab.dynamics.nash import solve_zero_sum
from badgerlab.registry import Registry

__all__ = [
    "META_SOLVERS",
    "RESPONSES",
    "FunctionalOracle",
    "MatrixOracle",
    "OpenSpielOracle",
    "Oracle",
    "PSRO",
    "fictitious_play",
    "fixed_memory_fictitious_play",
    "get_meta_solver",
    "projected_replicator_dynamics",
    "register_meta_solver",
]

MetaSolver = Callable[[np.ndarray, bool], tuple[np.ndarray, np.ndarray]]


# ---------------------------------------------------------------------------------------------
# meta-solvers: (M (k0, k1) row payoffs of a zero-sum meta-game, symmetric) -> (σ_row, σ_col)


def uniform_solver(M: np.ndarray, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """Uniform over the *distinct* policies: not fictitious play.

    A best response that is already in the population leaves this meta-strategy unchanged,
    so PSRO with it can freeze (Kuhn at exploitability 0.4896 from iteration 1, 10,3-Blotto at
    0.833 from iteration 6). Kept because it is the "uniform" of papers whose oracles never
    return a policy twice (gradient responses on functional forms), and as the baseline the
    freezing is measured against; use ``fictitious_play`` for fictitious play.
    """
    k0, k1 = M.shape
    return np.full(k0, 1.0 / k0), np.full(k1, 1.0 / k1)


def fictitious_play(
    M: np.ndarray, symmetric: bool, *, counts: list[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Fictitious play's meta-strategy: ``σ_i = c_i / Σ_j c_j`` with ``c_i`` the number of
    iterations whose best response was policy ``i`` (the initial policy counts once).

    The uniform mixture over the multiset of all responses so far, duplicates included
    (Brown 1951; PSRO with this solver and Nash responses is fictitious play, Lanctot 2017
    §3). ``counts``: one ``(k_p,)`` array per population (one when ``symmetric``); without
    them every policy counts once.
    """
    k0, k1 = M.shape
    if counts is None:
        return uniform_solver(M, symmetric)
    c0 = np.asarray(counts[0], dtype=np.float64)
    c1 = c0 if symmetric else np.asarray(counts[1], dtype=np.float64)
    if c0.shape != (k0,) or c1.shape != (k1,):
        raise ValueError(
            f"counts must have shapes ({k0},) and ({k1},), got {c0.shape} and {c1.shape}"
        )
    if not (np.all(np.isfinite(c0)) and np.all(np.isfinite(c1))) or min(c0.min(), c1.min()) < 1:
        raise ValueError(f"counts must be >= 1 for every policy, got {c0} and {c1}")
    return c0 / c0.sum(), c1 / c1.sum()


def nash_solver(M: np.ndarray, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    eq = solve_zero_sum(M)
    # in a symmetric game the row player's maximin strategy is a symmetric Nash
    return (eq.row, eq.row) if symmetric else (eq.row, eq.col)


def projected_replicator_dynamics(
    M: np.ndarray,
    symmetric: bool,
    *,
    iterations: int = 2000,
    dt: float = 2e-2,
    gamma: float = 1e-6,
) -> tuple[np.ndarray, np.ndarray]:
    """Projected replicator dynamics (Lanctot 2017, §3): the average of the trajectory.

    ``ẋ_i = x_i ((M y)_i - xᵀ M y)``, then each coordinate is floored at ``γ / k`` and the
    vector renormalised (the projection onto the γ-exploratory simplex).
    """
    iterations = _int_arg("iterations", iterations, 1)
    dt = _positive("dt", dt)
    if not 0 <= gamma < 1:
        raise ValueError(f"gamma must be in [0, 1), got {gamma}")
    k0, k1 = M.shape
    x, y = np.full(k0, 1.0 / k0), np.full(k1, 1.0 / k1)
    sx, sy = np.zeros(k0), np.zeros(k1)
    for _ in range(iterations):
        u, v = M @ y, -(x @ M)
        x, y = x + dt * x * (u - x @ u), y + dt * y * (v - y @ v)
        x = np.maximum(x, gamma / k0)
        y = np.maximum(y, gamma / k1)
        x, y = x / x.sum(), y / y.sum()
        sx += x
        sy += y
    sx, sy = sx / sx.sum(), sy / sy.sum()
    return (sx, sx) if symmetric else (sx, sy)


def alpharank_solver(
    M: np.ndarray, symmetric: bool, *, alpha: float = 100.0, m: int = 50
) -> tuple[np.ndarray, np.ndarray]:
    if symmetric:
        pi = alpharank(M, alpha=alpha, m=m).pi
        return pi, pi
    res = alpharank([M, -M], alpha=alpha, m=m)
    x, y = res.marginals()
    return x, y


META_SOLVERS: Registry[MetaSolver] = Registry("meta_solver")
META_SOLVERS.register("uniform", uniform_solver)
META_SOLVERS.register("fictitious_play", fictitious_play)
META_SOLVERS.register("nash", nash_solver)
META_SOLVERS.register("prd", projected_replicator_dynamics)
META_SOLVERS.register("alpharank", alpharank_solver)


def get_meta_solver(name: str) -> MetaSolver:
    """The meta-solver registered under `name` (a `ValueError` listing the choices otherwise)."""
    return META_SOLVERS.get(name)


def register_meta_solver(name: str, fn: MetaSolver, *, overwrite: bool = False) -> None:
    """Add a meta-solver ``fn(M, symmetric) -> (σ_row, σ_col)`` under ``name``; it can then be
    chosen by name, e.g. `--set meta_solver=NAME` in `dynamics-psro`. A solver with a
    ``counts`` keyword is given the per-policy response counts (as ``fictitious_play``)."""
    if not callable(fn):
        raise TypeError(f"meta-solver {name!r} must be callable")
    META_SOLVERS.register(name, fn, overwrite=overwrite)


RESPONSES = ("self_play", "nash", "rectified", "pipeline")


def _takes_counts(fn: Callable) -> bool:
    try:
        return "counts" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False


# ---------------------------------------------------------------------------------------------
# oracles


class Oracle:
    """What PSRO needs from a game. ``symmetric`` games have one population, others two."""

    symmetric: bool = True

    def initial(self) -> list[list[Any]]:
        raise NotImplementedError

    def payoff(self, a: Any, b: Any) -> float:
        """The row player's payoff when it plays ``a`` against the column player's ``b``."""
        raise NotImplementedError

    def best_response(self, player: int, opponents: list, weights: np.ndarray, *, init=None):
        raise NotImplementedError

    def exploitability(self, populations: list[list], sigmas: list[np.ndarray]) -> float:
        raise NotImplementedError

    def same(self, a: Any, b: Any) -> bool:
        return a is b


class MatrixOracle(Oracle):
    """Exact best responses (pure strategies) in a symmetric zero-sum matrix game ``A``.

    Ties go to the lowest index, so runs are deterministic.
    """

    def __init__(self, A: np.ndarray, *, start: int = 0) -> None:
        self.A = check_antisymmetric(A)
        start = _int_arg("start", start, 0)
        n = self.A.shape[0]
        if start >= n:
            raise ValueError(f"start must index a strategy of A (n = {n}), got {start}")
        self.start = start

    def initial(self) -> list[list[int]]:
        return [[self.start]]

    def payoff(self, a: int, b: int) -> float:
        return float(self.A[a, b])

    def best_response(self, player: int, opponents: list, weights: np.ndarray, *, init=None):
        return int(np.argmax(self.A[:, opponents] @ weights))

    def exploitability(self, populations: list[list], sigmas: list[np.ndarray]) -> float:
        return float((self.A[:, populations[0]] @ sigmas[0]).max())

    def same(self, a: int, b: int) -> bool:
        return a == b


class FunctionalOracle(Oracle):
    """Gradient best responses in a functional-form game; policies are ``(D,)`` tensors."""

    def __init__(
        self,
        game: FunctionalGame,
        *,
        steps: int = 100,
        lr: float = 0.1,
        restarts: int = 4,
        seed: int = 0,
        tol: float = 1e-4,
        init_scale: float = 1.0,
    ) -> None:
        self.game = game
        self.steps = _int_arg("steps", steps, 0)
        self.restarts = _int_arg("restarts", restarts, 1)
        self.lr, self.tol = _positive("lr", lr), _positive("tol", tol)
        self.init_scale = _positive("init_scale", init_scale)
        self.generator = torch.Generator().manual_seed(seed)

    def initial(self) -> list[list[torch.Tensor]]:
        return [[self.init_scale * self.game.sample(1, self.generator)[0]]]

    def payoff(self, a: torch.Tensor, b: torch.Tensor) -> float:
        with torch.no_grad():
            return float(self.game.phi(a, b))

    def best_response(self, player: int, opponents: list, weights: np.ndarray, *, init=None):
        # a gradient oracle in Balduzzi's sense trains the policy it is given, from there only
        return self.game.best_response(
            torch.stack(opponents),
            weights,
            init=init,
            steps=self.steps,
            lr=self.lr,
            restarts=1 if init is not None else self.restarts,
            generator=self.generator,
        )

    def exploitability(self, populations: list[list], sigmas: list[np.ndarray]) -> float:
        return self.game.exploitability(
            torch.stack(populations[0]),
            sigmas[0],
            steps=4 * self.steps,
            lr=self.lr,
            restarts=4 * self.restarts,
            generator=self.generator,
        )

    def same(self, a: torch.Tensor, b: torch.Tensor) -> bool:
        return bool((a - b).norm() < self.tol)


class OpenSpielOracle(Oracle):
    """Exact best responses in a two-player zero-sum OpenSpiel game (e.g. ``kuhn_poker``).

    Each player keeps its own population of tabular policies; the meta-game ``M[i, j]`` is
    player 0's expected return when its ``i``-th policy meets player 1's ``j``-th.
    Exploitability is OpenSpiel's: ``NashConv / 2`` of the meta-strategy mixture.
    """

    symmetric = False

    def __init__(self, game: str | Any = "kuhn_poker") -> None:
        import pyspiel

        self.game = pyspiel.load_game(game) if isinstance(game, str) else game
        if self.game.num_players() != 2:
            raise ValueError(f"game must have two players, got {self.game.num_players()}")
        from open_spiel.python.algorithms import policy_aggregator

        self._aggregator = policy_aggregator.PolicyAggregator(self.game)

    def initial(self) -> list[list[Any]]:
        from open_spiel.python import policy

        return [[policy.TabularPolicy(self.game)], [policy.TabularPolicy(self.game)]]

    def payoff(self, a: Any, b: Any) -> float:
        from open_spiel.python.algorithms import expected_game_score

        return float(expected_game_score.policy_value(self.game.new_initial_state(), [a, b])[0])

    def mixture(self, populations: list[list], sigmas: list[np.ndarray]) -> Any:
        """The behaviour policy of both players' meta-strategy mixtures."""
        return self._aggregator.aggregate(
            [0, 1], [list(p) for p in populations], [list(map(float, s)) for s in sigmas]
        )

    def best_response(self, player: int, opponents: list, weights: np.ndarray, *, init=None):
        from open_spiel.python import policy
        from open_spiel.python.algorithms import best_response

        other = 1 - player
        pops: list[list] = [[], []]
        sig: list[np.ndarray] = [np.ones(1), np.ones(1)]
        pops[other], sig[other] = list(opponents), np.asarray(weights)
        pops[player] = [opponents[0]]  # the responder's own entry is not used by the BR
        br = best_response.BestResponsePolicy(self.game, player, self.mixture(pops, sig))
        tab = policy.TabularPolicy(self.game)
        for state in tab.states:
            if state.current_player() != player:
                continue
            row = tab.state_lookup[state.information_state_string(player)]
            tab.action_probability_array[row] = 0.0
            for action, prob in br.action_probabilities(state).items():
                tab.action_probability_array[row, action] = prob
        return tab

    def exploitability(self, populations: list[list], sigmas: list[np.ndarray]) -> float:
        from open_spiel.python.algorithms import exploitability

        return float(exploitability.exploitability(self.game, self.mixture(populations, sigmas)))

    def same(self, a: Any, b: Any) -> bool:
        return bool(np.array_equal(a.action_probability_array, b.action_probability_array))


# ---------------------------------------------------------------------------------------------
# the PSRO loop


@dataclass
class PSRO:
    """PSRO over an ``Oracle``; call ``step()`` once per iteration.

    ``populations[p]`` holds player ``p``'s policies (one population when the game is
    symmetric), ``M`` the meta-game between them (row payoffs), ``history`` one record per
    iteration: exploitability of the meta-strategy, population size, effective diversity
    (symmetric games only). ``counts[p][i]``: how many iterations returned policy ``i`` of
    population ``p`` (1 for the initial policy and for each new one; a best response equal
    to a member adds 1 to that member instead of a copy).
    """

    oracle: Oracle
    meta_solver: str = "nash"
    response: str = "nash"
    n_active: int = 2
    plateau_tol: float = 1e-3
    populations: list[list] = field(default_factory=list)
    counts: list[list[int]] = field(default_factory=list)
    n_fixed: list[int] = field(default_factory=list)
    M: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    history: list[dict[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._solver = get_meta_solver(self.meta_solver)
        self._with_counts = _takes_counts(self._solver)
        if self.response not in RESPONSES:
            raise ValueError(f"unknown response {self.response!r}; known: {', '.join(RESPONSES)}")
        self.n_active = _int_arg("n_active", self.n_active, 1)
        self.plateau_tol = _positive("plateau_tol", self.plateau_tol, allow_zero=True)
        if not self.populations:
            self.populations = self.oracle.initial()
            self.n_fixed = [len(p) for p in self.populations]
            self._sync_counts()
            self._rebuild()
            self.history.append(self._measure())

    @property
    def symmetric(self) -> bool:
        return self.oracle.symmetric

    def _rows_cols(self) -> tuple[list, list]:
        pops = self.populations
        return (pops[0], pops[0]) if self.symmetric else (pops[0], pops[1])

    def _rebuild(self) -> None:
        rows, cols = self._rows_cols()
        M = np.zeros((len(rows), len(cols)))
        k0, k1 = self.M.shape
        M[:k0, :k1] = self.M
        for i in range(len(rows)):
            for j in range(len(cols)):
                if i >= k0 or j >= k1:
                    if self.symmetric and j < i:
                        M[i, j] = -M[j, i]
                    elif not (self.symmetric and i == j):
                        M[i, j] = self.oracle.payoff(rows[i], cols[j])
        self.M = M

    def _sync_counts(self) -> None:
        """One count for every policy added without one (initial, new, pipeline copies)."""
        while len(self.counts) < len(self.populations):
            self.counts.append([])
        for c, pop in zip(self.counts, self.populations, strict=True):
            c.extend([1] * (len(pop) - len(c)))

    def sigmas(self, M: np.ndarray | None = None) -> list[np.ndarray]:
        M = self.M if M is None else M
        if self._with_counts:
            self._sync_counts()
            k = M.shape
            counts = [np.asarray(c[: k[min(i, 1)]]) for i, c in enumerate(self.counts)]
            x, y = self._solver(M, self.symmetric, counts=counts)
        else:
            x, y = self._solver(M, self.symmetric)
        return [x] if self.symmetric else [x, y]

    def _measure(self) -> dict[str, float]:
        sig = self.sigmas()
        out = {
            "exploitability": self.oracle.exploitability(self.populations, sig),
            "population": float(sum(len(p) for p in self.populations)),
        }
        if self.symmetric:
            out["diversity"] = effective_diversity((self.M - self.M.T) / 2, sig[0])
        return out

    def _add(self, player: int, policy: Any) -> bool:
        """Add ``policy`` (count 1), or count it once more if the population has it."""
        self._sync_counts()
        pop = self.populations[player]
        for i, q in enumerate(pop):
            if self.oracle.same(policy, q):
                self.counts[player][i] += 1
                return False
        pop.append(policy)
        self.counts[player].append(1)
        return True

    def step(self) -> dict[str, float]:
        """One PSRO iteration; returns (and appends to ``history``) its measurements."""
        players = [0] if self.symmetric else [0, 1]
        sig = self.sigmas()
        new: list[tuple[int, Any]] = []
        if self.response == "pipeline":
            self._pipeline_step(players)
        else:
            for p in players:
                o = p if self.symmetric else 1 - p
                opp = self.populations[o]
                if self.response == "self_play":
                    mine = self.populations[p][-1]
                    new.append((p, self.oracle.best_response(p, [opp[-1]], np.ones(1), init=mine)))
                elif self.response == "nash":
                    mine = self.populations[p][-1]
                    new.append((p, self.oracle.best_response(p, opp, sig[o], init=mine)))
                else:  # rectified
                    value = float(sig[0] @ self.M @ sig[-1])
                    Mp = self.M if p == 0 else -self.M.T  # (mine, theirs) payoffs for p
                    for v, mass in enumerate(sig[p]):
                        if mass <= 1e-9:
                            continue
                        beat = Mp[v] >= (value if p == 0 else -value) - 1e-12
                        w = sig[o] * beat
                        if w.sum() <= 1e-12:
                            continue
                        pol = self.oracle.best_response(
                            p, opp, w / w.sum(), init=self.populations[p][v]
                        )
                        new.append((p, pol))
            for p, pol in new:
                self._add(p, pol)
            self.n_fixed = [len(q) for q in self.populations]
        self._rebuild()
        rec = self._measure()
        self.history.append(rec)
        return rec

    def _pipeline_step(self, players: list[int]) -> None:
        # lazily start the active policies as copies of the newest fixed ones
        for p in players:
            while len(self.populations[p]) < self.n_fixed[p] + self.n_active:
                self.populations[p].append(self.populations[p][-1])
        self._rebuild()
        updates: list[tuple[int, int, Any, list, np.ndarray]] = []
        for j in range(self.n_active):
            # the j-th active policy trains against fixed + active[:j] (parallel: all targets
            # come from the state at the start of the iteration)
            k = [self.n_fixed[p] + j for p in (0, 0 if self.symmetric else 1)]
            sub = self.M[: k[0], : k[1]]
            sig = self.sigmas(sub)
            for p in players:
                o = p if self.symmetric else 1 - p
                opp = self.populations[o][: k[o]]
                cur = self.populations[p][self.n_fixed[p] + j]
                pol = self.oracle.best_response(p, opp, sig[o], init=cur)
                updates.append((p, j, pol, opp, sig[o]))
        plateau = {p: False for p in players}
        for p, j, pol, opp, w in updates:
            idx = self.n_fixed[p] + j
            if j == 0:
                # P2SRO fixes the lowest active policy once training stops improving it
                old = self.populations[p][idx]
                gain = sum(
                    wi * (self._pay(p, pol, q) - self._pay(p, old, q))
                    for q, wi in zip(opp, w, strict=True)
                )
                plateau[p] = self.oracle.same(old, pol) or gain <= self.plateau_tol
            self.populations[p][idx] = pol
        self.M = np.zeros((0, 0))  # active policies changed: recompute the meta-game
        for p in players:
            if plateau[p]:
                self.n_fixed[p] += 1
                self.populations[p].append(self.populations[p][-1])

    def _pay(self, player: int, mine: Any, theirs: Any) -> float:
        if self.symmetric or player == 0:
            return self.oracle.payoff(mine, theirs)
        return -self.oracle.payoff(theirs, mine)

    def run(self, iterations: int) -> list[dict[str, float]]:
        """``iterations`` more steps (an integer >= 0); returns the whole history."""
        iterations = _int_arg("iterations", iterations, 0)
        for _ in range(iterations):
            self.step()
        return self.history


def fixed_memory_fictitious_play(
    A: np.ndarray,
    levels: np.ndarray,
    *,
    memory: int,
    iterations: int,
    window: float,
    start: int = 0,
) -> np.ndarray:
    """Fictitious play that remembers only the last ``memory`` agents, with a local oracle.

    Czarnecki et al. 2020 (https://arxiv.org/abs/2004.09468, §4): each new agent is a best
    response to the uniform mixture of the population; here it may only reach strategies at
    most ``window`` above the population's best transitive ``levels`` (learning improves
    gradually). Returns the best level reached after each iteration, ``(iterations,)``.
    """
    A = check_antisymmetric(A)
    levels = np.asarray(levels, dtype=np.float64)
    if levels.shape != (A.shape[0],):
        raise ValueError(f"levels must have shape ({A.shape[0]},), got {levels.shape}")
    memory = _int_arg("memory", memory, 1)
    iterations = _int_arg("iterations", iterations, 1)
    window = _positive("window", window, allow_zero=True)
    start = _int_arg("start", start, 0)
    if start >= A.shape[0]:
        raise ValueError(f"start must index a strategy of A (n = {A.shape[0]}), got {start}")
    pop = [start]
    best = float(levels[start])
    out = np.zeros(iterations)
    for it in range(iterations):
        cand = np.flatnonzero(levels <= levels[pop].max() + window)
        new = int(cand[np.argmax(A[np.ix_(cand, pop)].mean(axis=1))])
        pop = (pop + [new])[-memory:]
        best = max(best, float(levels[new]))
        out[it] = best
    return out
