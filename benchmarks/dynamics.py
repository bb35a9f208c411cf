"""alpha-Rank (local and Moran), Nash averaging and PSRO on Blotto against OpenSpiel, same inputs.

Prints one JSON object: seconds for badgerlab and OpenSpiel and their ratio
(``openspiel_s / ours_s``, > 1 means badgerlab is faster), plus the largest difference of the
answers. Run: ``python benchmarks/dynamics.py [--sizes 100 300 1000] [--moran-sizes 10 30]
[--nash-sizes ...]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from badgerlab.dynamics.alpharank import alpharank  # noqa: E402
from badgerlab.dynamics.games import blotto, random_skew_symmetric  # noqa: E402
from badgerlab.dynamics.nash import nash_averaging  # noqa: E402
from badgerlab.dynamics.psro import PSRO, MatrixOracle  # noqa: E402


def _time(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench_alpharank(n: int, *, alpha: float = 1.0, m: int = 50) -> dict:
    from open_spiel.python.egt import alpharank as osa

    M = np.random.default_rng(n).uniform(size=(n, n))
    ours_s, ours = _time(lambda: alpharank([M], alpha=alpha, m=m).pi, repeat=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs_s, theirs = _time(lambda: osa.compute([M], alpha=alpha, m=m)[2])
    return {
        "n": n,
        "ours_s": ours_s,
        "openspiel_s": theirs_s,
        "ratio": theirs_s / ours_s,
        "max_abs_diff": float(np.abs(ours - theirs).max()),
    }


def bench_alpharank_moran(n: int, *, alpha: float = 1.0, m: int = 50) -> dict:
    """The finite-population (Moran) model: OpenSpiel's double loop over l and p per pair."""
    from open_spiel.python.egt import alpharank as osa

    M = np.random.default_rng(n).uniform(size=(n, n))
    ours_s, ours = _time(lambda: alpharank([M], alpha=alpha, m=m, selection="moran").pi, repeat=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs_s, theirs = _time(
            lambda: osa.compute([M], alpha=alpha, m=m, use_local_selection_model=False)[2]
        )
    return {
        "n": n,
        "ours_s": ours_s,
        "openspiel_s": theirs_s,
        "ratio": theirs_s / ours_s,
        "max_abs_diff": float(np.abs(ours - theirs).max()),
    }


def bench_nash_averaging(n: int) -> dict:
    from open_spiel.python.algorithms import nash_averaging as na

    A = random_skew_symmetric(n, rng=n)
    ours_s, ours = _time(lambda: nash_averaging(A).nash)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            theirs_s, theirs = _time(lambda: np.ravel(na._max_entropy_symmetric_nash(A)))
            diff = float(np.abs(ours - theirs).max())
        except Exception as err:  # cvxpy's solvers can fail on these problems
            return {"n": n, "ours_s": ours_s, "openspiel_error": f"{type(err).__name__}: {err}"}
    return {
        "n": n,
        "ours_s": ours_s,
        "openspiel_s": theirs_s,
        "ratio": theirs_s / ours_s,
        "max_abs_diff": diff,
        "ours_violation": float((A @ ours).max()),
        "openspiel_violation": float((A @ theirs).max()),
    }


def bench_psro_blotto(iterations: int = 10, coins: int = 10, fields: int = 3) -> dict:
    import pyspiel
    from open_spiel.python import policy
    from open_spiel.python.algorithms.psro_v2 import best_response_oracle, psro_v2

    # badgerlab: PSRO with exact best responses; building the payoff matrix is setup
    setup_s, A = _time(lambda: blotto(coins, fields))
    # both sides average every iteration's response: OpenSpiel's "uniform" meta-strategy over
    # its policy list, which keeps repeated best responses, is our fictitious play (OpenSpiel's
    # Nash LP fails, cvxpy returning no solution, on the first 1x1 meta-game here)
    ps = PSRO(MatrixOracle(A), meta_solver="fictitious_play", response="nash")
    ours_s, _ = _time(lambda: ps.run(iterations))
    # OpenSpiel: psro_v2 with its exact (tabular) best-response oracle on turn-based Blotto
    game = pyspiel.load_game_as_turn_based(f"blotto(coins={coins},fields={fields},players=2)")
    t0 = time.perf_counter()
    random_policy = policy.TabularPolicy(game)
    oracle = best_response_oracle.BestResponseOracle(game=game, policy=random_policy)
    with contextlib.redirect_stdout(io.StringIO()):  # OpenSpiel prints its settings
        solver = psro_v2.PSROSolver(
            game,
            oracle,
            initial_policies=[random_policy.__copy__() for _ in range(2)],
            training_strategy_selector="probabilistic",
            rectifier="",
            meta_strategy_method="uniform",
            sims_per_entry=1,
            number_policies_selected=1,
            sample_from_marginals=True,
            symmetric_game=False,
        )
    theirs_setup = time.perf_counter() - t0
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        theirs_s, _ = _time(lambda: [solver.iteration() for _ in range(iterations)])
    return {
        "iterations": iterations,
        "ours_s_per_iteration": ours_s / iterations,
        "openspiel_s_per_iteration": theirs_s / iterations,
        "ratio": theirs_s / ours_s,
        "ours_setup_s": setup_s,
        "openspiel_setup_s": theirs_setup,
        "ours_final_exploitability": ps.history[-1]["exploitability"],
        "meta_solver": "fictitious_play (ours), uniform over the policy list (OpenSpiel)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--moran-sizes", type=int, nargs="+", default=[10, 30])
    parser.add_argument("--nash-sizes", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--psro-iterations", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = {
        "alpharank": [bench_alpharank(n) for n in args.sizes],
        "alpharank_moran": [bench_alpharank_moran(n) for n in args.moran_sizes],
        "nash_averaging": [bench_nash_averaging(n) for n in args.nash_sizes],
        "psro_blotto": bench_psro_blotto(args.psro_iterations),
        "note": "ratio = openspiel_s / ours_s (> 1: badgerlab faster); one thread each",
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
