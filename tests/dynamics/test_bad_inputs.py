"""Bad inputs to the public functions of badgerlab.dynamics: a ValueError naming the argument.

The first rows are the cases of issue 12 that used to misbehave (a nested list read as three
populations, an empty table, m = 2.5 or m = -5 at alpha = inf, NaN strategies accepted,
`PSRO.run(-3)` doing nothing, a player rated against itself).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from badgerlab.dynamics import games as G
from badgerlab.dynamics.alpharank import (
    alpharank,
    fixation_probability,
    moran_fixation_probabilities,
    stationary_distributions,
    transition_matrix,
)
from badgerlab.dynamics.evolution import evolve_reward
from badgerlab.dynamics.metrics import effective_diversity, exploitability, nash_conv
from badgerlab.dynamics.nash import (
    max_entropy_nash,
    max_entropy_point,
    nash_averaging,
    nash_averaging_avt,
    solve_zero_sum,
)
from badgerlab.dynamics.psro import (
    PSRO,
    FunctionalOracle,
    MatrixOracle,
    fictitious_play,
    fixed_memory_fictitious_play,
    get_meta_solver,
    projected_replicator_dynamics,
)
from badgerlab.dynamics.qd import PayoffProfileDomain
from badgerlab.dynamics.ratings import (
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

RPS = G.rock_paper_scissors()
NAN_P = [0.5, float("nan"), 0.5]
WINS = np.array([[0.0, 2.0], [1.0, 0.0]])
STATE = MElo(np.zeros(3), np.zeros((3, 2)))

CASES = [
    # issue 12, part 4
    ("alpharank-empty", lambda: alpharank(np.zeros((0, 0))), "payoffs"),
    ("alpharank-ragged-list", lambda: alpharank([[0.0, 1.0], [1.0]]), "payoffs"),
    ("alpharank-m-float", lambda: alpharank(RPS, m=2.5), "m"),
    ("alpharank-m-negative-inf-alpha", lambda: alpharank(RPS, m=-5, alpha=math.inf), "m"),
    ("exploitability-nan", lambda: exploitability(RPS, NAN_P), "p"),
    ("nash-conv-nan-x", lambda: nash_conv(RPS, NAN_P, [1 / 3] * 3), "x"),
    ("nash-conv-nan-y", lambda: nash_conv(RPS, [1 / 3] * 3, NAN_P), "y"),
    ("psro-run-negative", lambda: PSRO(MatrixOracle(RPS)).run(-3), "iterations"),
    ("psro-run-float", lambda: PSRO(MatrixOracle(RPS)).run(2.5), "iterations"),
    ("elo-self", lambda: elo_update(np.zeros(3), 1, 1, 1.0), "i and j"),
    # games
    ("blotto-coins", lambda: G.blotto(0, 3), "coins"),
    ("blotto-fields-float", lambda: G.blotto(5, 2.5), "fields"),
    ("biased-rps-length", lambda: G.biased_rock_paper_scissors((1.0, 2.0)), "bias"),
    ("biased-rps-sign", lambda: G.biased_rock_paper_scissors((1.0, -2.0, 1.0)), "bias"),
    ("random-skew-n", lambda: G.random_skew_symmetric(0), "n"),
    ("random-skew-n-float", lambda: G.random_skew_symmetric(2.5), "n"),
    ("transitive-2d", lambda: G.transitive_game(np.ones((2, 2))), "ratings"),
    ("transitive-nan", lambda: G.transitive_game([0.0, float("nan")]), "ratings"),
    ("antisymmetric-not", lambda: G.check_antisymmetric(np.ones((2, 2))), "A"),
    ("antisymmetric-empty", lambda: G.check_antisymmetric(np.zeros((0, 0))), "A"),
    ("hodge-nan", lambda: G.hodge_decomposition(np.full((2, 2), np.nan)), "A"),
    ("schur-k", lambda: G.schur_components(RPS, 2), "k"),
    ("spinning-top-n", lambda: G.spinning_top(2, 0.5), "n"),
    ("spinning-top-cyclic", lambda: G.spinning_top(10, 1.5), "cyclic"),
    ("spinning-top-width", lambda: G.spinning_top(10, 0.5, width=0.0), "width"),
    ("mixture-game", lambda: G.MixtureGame(np.ones((3, 3))), "A"),
    (
        "best-response-restarts",
        lambda: G.DiscGame().best_response(torch.zeros(1, 2), [1.0], restarts=0),
        "restarts",
    ),
    # nash
    ("zero-sum-1d", lambda: solve_zero_sum(np.ones(3)), "M"),
    ("zero-sum-nan", lambda: solve_zero_sum(np.full((2, 2), np.nan)), "M"),
    ("max-ent-not-antisymmetric", lambda: max_entropy_nash(np.ones((2, 2))), "A"),
    ("max-ent-point-gap", lambda: max_entropy_point(RPS, gap=0.0), "gap"),
    ("nash-averaging-empty", lambda: nash_averaging(np.zeros((0, 0))), "A"),
    ("avt-nan", lambda: nash_averaging_avt(np.full((2, 3), np.nan)), "S"),
    # metrics
    ("exploitability-shape", lambda: exploitability(RPS, [0.5, 0.5]), "p"),
    ("exploitability-not-distribution", lambda: exploitability(RPS, [1, 1, 0]), "p"),
    ("nash-conv-matrix", lambda: nash_conv(np.ones(3), [1.0], [1.0]), "M"),
    ("diversity-nan", lambda: effective_diversity(RPS, NAN_P), "p"),
    # ratings
    ("bradley-terry-negative", lambda: bradley_terry(-WINS), "wins"),
    ("bradley-terry-empty", lambda: bradley_terry(np.zeros((0, 0))), "wins"),
    ("bradley-terry-prior", lambda: bradley_terry(WINS, prior=-1.0), "prior"),
    ("elo-probability-2d", lambda: elo_probability(np.zeros((2, 2))), "r"),
    ("elo-score", lambda: elo_update(np.zeros(3), 0, 1, 1.5), "score"),
    ("elo-score-nan", lambda: elo_update(np.zeros(3), 0, 1, float("nan")), "score"),
    ("elo-index", lambda: elo_update(np.zeros(3), 0, 3, 1.0), "i and j"),
    ("elo-negative-index", lambda: elo_update(np.zeros(3), -1, 0, 1.0), "i"),
    ("melo-self", lambda: melo_update(STATE, 2, 2, 1.0), "i and j"),
    ("melo-score", lambda: melo_update(STATE, 0, 1, -0.1), "score"),
    ("melo-probability-shape", lambda: melo_probability(np.zeros(3), np.zeros((2, 2))), "c"),
    ("melo-from-logits-odd", lambda: melo_from_logits(RPS, 1), "dim"),
    ("melo-fit-odd", lambda: melo_fit(WINS, dim=1), "dim"),
    ("omega-odd", lambda: omega(3), "dim"),
    # alpharank
    ("alpharank-not-square", lambda: alpharank(np.zeros((2, 3))), "payoffs"),
    ("alpharank-shapes", lambda: alpharank([np.zeros((2, 3)), np.zeros((3, 2))]), "payoffs"),
    ("alpharank-alpha", lambda: alpharank(RPS, alpha=-1.0), "alpha"),
    ("alpharank-alpha-nan", lambda: alpharank(RPS, alpha=float("nan")), "alpha"),
    ("alpharank-nan-table", lambda: alpharank(np.full((2, 2), np.nan)), "payoffs"),
    ("alpharank-eps", lambda: alpharank(RPS, alpha=math.inf, inf_alpha_eps=0.7), "inf_alpha_eps"),
    ("alpharank-method", lambda: alpharank(RPS, method="qr"), "method"),
    ("alpharank-selection", lambda: alpharank(RPS, selection="global"), "selection"),
    ("alpharank-moran-inf", lambda: alpharank(RPS, alpha=math.inf, selection="moran"), "alpha"),
    ("transition-m", lambda: transition_matrix(RPS, m=1), "m"),
    ("fixation-m", lambda: fixation_probability(0.5, 0), "m"),
    ("moran-alpha", lambda: moran_fixation_probabilities(RPS, alpha=0.0, m=10), "alpha"),
    ("stationary-not-square", lambda: stationary_distributions(np.ones((2, 3))), "C"),
    ("stationary-not-stochastic", lambda: stationary_distributions(np.ones((2, 2))), "C"),
    # psro
    ("meta-solver-unknown", lambda: get_meta_solver("nope"), "meta_solver"),
    ("psro-response", lambda: PSRO(MatrixOracle(RPS), response="nope"), "response"),
    ("psro-n-active", lambda: PSRO(MatrixOracle(RPS), n_active=0), "n_active"),
    ("matrix-oracle-start", lambda: MatrixOracle(RPS, start=3), "start"),
    ("functional-oracle-steps", lambda: FunctionalOracle(G.DiscGame(), steps=-1), "steps"),
    ("prd-iterations", lambda: projected_replicator_dynamics(RPS, True, iterations=0), "iter"),
    ("prd-gamma", lambda: projected_replicator_dynamics(RPS, True, gamma=1.0), "gamma"),
    (
        "fictitious-play-counts",
        lambda: fictitious_play(RPS, True, counts=[np.array([1, 0, 1])]),
        "counts",
    ),
    (
        "fixed-memory-start",
        lambda: fixed_memory_fictitious_play(
            RPS, np.zeros(3), memory=2, iterations=3, window=0.1, start=5
        ),
        "start",
    ),
    (
        "fixed-memory-memory",
        lambda: fixed_memory_fictitious_play(RPS, np.zeros(3), memory=0, iterations=3, window=0),
        "memory",
    ),
    # qd, evolution
    (
        "qd-references",
        lambda: PayoffProfileDomain(RPS, np.full(3, 1 / 3), np.zeros((3, 3))),
        "references",
    ),
    (
        "qd-population-nan",
        lambda: PayoffProfileDomain(RPS, np.full(3, np.nan), np.zeros((2, 3))),
        "population",
    ),
    ("evolve-population", lambda: evolve_reward(RPS, population=3), "population"),
    ("evolve-sigma", lambda: evolve_reward(RPS, sigma=0.0), "sigma"),
]


@pytest.mark.parametrize("call, name", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_a_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert message.startswith(name) or f" {name}" in message or f"{name} " in message, message


def test_a_table_given_as_nested_lists_is_one_population():
    for like in (RPS.tolist(), [RPS], torch.as_tensor(RPS), [RPS.tolist()]):
        res = alpharank(like, alpha=10.0)
        assert res.shape == (3,)
        np.testing.assert_allclose(res.pi, alpharank(RPS, alpha=10.0).pi, atol=1e-15)


def test_integral_floats_are_accepted_where_an_integer_is_asked():
    np.testing.assert_allclose(
        alpharank(RPS, m=50.0, alpha=2.0).pi, alpharank(RPS, m=50, alpha=2.0).pi, atol=0
    )
    assert PSRO(MatrixOracle(RPS)).run(2.0)[-1]["population"] >= 1
