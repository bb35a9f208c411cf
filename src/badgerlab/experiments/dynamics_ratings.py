"""Elo vs mElo_2 on cyclic games, and Nash averaging's invariance to copies of an agent."""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field

from badgerlab.dynamics.games import DiscGame
from badgerlab.dynamics.nash import nash_averaging
from badgerlab.dynamics.ratings import (
    bradley_terry,
    elo_probability,
    melo_fit,
    melo_probability,
    omega,
)
from badgerlab.experiment import Experiment, ExperimentConfig
from badgerlab.runs import Claim, RunLike


class Config(ExperimentConfig):
    seeds: int = Field(5, ge=1, le=100, description="seeds run inside one Run")
    agents: int = Field(40, ge=6, le=1000, description="agents in each evaluated population")
    games: int = Field(20, ge=1, le=10_000, description="games sampled per pair of agents")
    cyclic_strength: float = Field(
        3.0, ge=0, le=20, description="logit scale of the cyclic part of the RPS-like game"
    )
    transitive_std: float = Field(
        0.5, ge=0, le=10, description="std of the transitive logits of the RPS-like game"
    )
    prior: float = Field(0.5, ge=0, le=10, description="pseudo-wins each way for the fits")
    melo_steps: int = Field(300, ge=1, le=10_000, description="L-BFGS iterations of mElo_2")


# Fixed by the issue before measuring.
MELO_RATIO = 0.5  # mElo_2's MAE < half of Elo's on the disc game
COPY_TOL = 1e-3  # Nash averaging: each copy holds half the original mass, to this tolerance
UNIFORM_MIN = 0.1  # uniform averaging misses the half by at least this much


def _disc_population(n: int, gen: torch.Generator) -> np.ndarray:
    """True win probabilities of the disc game, ``P = (1 + φ) / 2``."""
    game = DiscGame()
    return (1.0 + game.matrix(game.sample(n, gen))) / 2.0


def _rps_population(cfg: Config, gen: torch.Generator) -> np.ndarray:
    """Three clusters (rock, paper, scissors) with noise plus a transitive part."""
    n = cfg.agents
    cluster = torch.arange(n) % 3
    angle = 2 * math.pi * cluster / 3 + 0.3 * torch.randn(n, generator=gen, dtype=torch.float64)
    c = torch.stack([torch.cos(angle), torch.sin(angle)], -1).numpy()
    r = cfg.transitive_std * torch.randn(n, generator=gen, dtype=torch.float64).numpy()
    L = r[:, None] - r[None, :] + cfg.cyclic_strength * (c @ omega(2) @ c.T)
    return 1.0 / (1.0 + np.exp(-L))


def _sample_wins(P: np.ndarray, games: int, rng: np.random.Generator) -> np.ndarray:
    up = np.triu(rng.binomial(games, P), 1).astype(float)  # (n, n) wins of i over j > i
    return up + np.triu(games - up, 1).T


def _prediction_errors(cfg: Config, P: np.ndarray, seed: int) -> dict[str, float]:
    W = _sample_wins(P, cfg.games, np.random.default_rng(seed))
    mask = ~np.eye(P.shape[0], dtype=bool)
    elo = elo_probability(bradley_terry(W, prior=cfg.prior))
    melo = melo_probability(*melo_fit(W, dim=2, steps=cfg.melo_steps, prior=cfg.prior, seed=seed))
    return {
        "elo_mae": float(np.abs(elo - P)[mask].mean()),
        "melo_mae": float(np.abs(melo - P)[mask].mean()),
    }


def _copies(P: np.ndarray) -> dict[str, float]:
    """Add a copy of the agent with the most Nash mass; compare Nash and uniform averaging."""
    A = P - P.T  # antisymmetric: expected score margin
    n = A.shape[0]
    na = nash_averaging(A)
    j = int(np.argmax(na.nash))
    idx = np.append(np.arange(n), j)
    A2 = A[np.ix_(idx, idx)]
    na2 = nash_averaging(A2)
    nash_dev = max(abs(na2.nash[j] / na.nash[j] - 0.5), abs(na2.nash[n] / na.nash[j] - 0.5))
    uniform_dev = abs((1.0 / (n + 1)) / (1.0 / n) - 0.5)
    uni, uni2 = A.mean(axis=1), A2.mean(axis=1)
    return {
        "copied_mass": float(na.nash[j]),
        "nash_copy_dev": float(nash_dev),
        "uniform_copy_dev": float(uniform_dev),
        "nash_rating_shift": float(np.abs(na2.ratings[:n] - na.ratings).max()),
        "uniform_rating_shift": float(np.abs(uni2[:n] - uni).max()),
        "nash_support": float((na.nash > 1e-9).sum()),
    }


def _seed_row(cfg: Config, seed: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(seed)
    disc = _disc_population(cfg.agents, gen)
    rps = _rps_population(cfg, gen)
    row: dict = {"seed": seed}
    row.update({f"disc_{k}": v for k, v in _prediction_errors(cfg, disc, seed).items()})
    row.update({f"rps_{k}": v for k, v in _prediction_errors(cfg, rps, seed).items()})
    row.update(_copies(rps))
    row["disc_nash_copy_dev"] = _copies(disc)["nash_copy_dev"]
    return row


def train(cfg: Config, run: RunLike) -> dict:
    """One unit per seed: fresh populations of both games, rated and copied."""
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    for unit in run.units([f"seed{s}" for s in seeds], description="ratings"):
        row = _seed_row(cfg, seeds[unit.index])
        run.log(unit.index, **row)
        unit.finish(row)
    return {"rows": [run.results[f"seed{s}"] for s in seeds]}


def plots(cfg: Config, results: dict, run: RunLike) -> None:
    import matplotlib.pyplot as plt

    def col(k: str) -> list[float]:
        return [r[k] for r in results["rows"]]

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    names = ["disc game", "RPS-like"]
    for off, (method, key) in enumerate([("Elo", "elo_mae"), ("mElo_2", "melo_mae")]):
        vals = [np.mean(col(f"disc_{key}")), np.mean(col(f"rps_{key}"))]
        errs = [np.std(col(f"disc_{key}")), np.std(col(f"rps_{key}"))]
        ax.bar(np.arange(2) + 0.38 * off, vals, 0.36, yerr=errs, label=method)
    ax.set_xticks(np.arange(2) + 0.19, names)
    ax.set_ylabel("mean |predicted - true| win probability")
    ax.set_title(f"{cfg.agents} agents, {cfg.games} games per pair")
    ax.legend()
    run.save_figure(
        fig,
        "prediction_error",
        caption="Error of the win probabilities Elo and mElo_2 predict from sampled games, on "
        "the disc game and the RPS-like population (mean ± std over seeds): look for mElo_2's "
        "bars far below Elo's where the game is cyclic.",
    )


def claims(cfg: Config, results: dict) -> list[Claim]:
    def col(k: str) -> list[float]:
        return [r[k] for r in results["rows"]]

    ratio = [m / e for m, e in zip(col("disc_melo_mae"), col("disc_elo_mae"), strict=True)]
    return [
        Claim.measure(
            "disc-melo-over-elo",
            f"on the disc game mElo_2's mean absolute error of predicted win probability is "
            f"< {MELO_RATIO} x Elo's (ratio mElo_2 / Elo)",
            ratio,
            paper="mElo_2 predicts cyclic games that Elo cannot (Balduzzi et al. 2018, §3.2)",
            op="<",
            threshold=MELO_RATIO,
        ),
        Claim.measure("disc-elo-mae", "Elo's MAE on the disc game", col("disc_elo_mae")),
        Claim.measure("disc-melo-mae", "mElo_2's MAE on the disc game", col("disc_melo_mae")),
        Claim.measure("rps-elo-mae", "Elo's MAE on the RPS-like game", col("rps_elo_mae")),
        Claim.measure("rps-melo-mae", "mElo_2's MAE on the RPS-like game", col("rps_melo_mae")),
        Claim.measure(
            "nash-copy-half",
            "Nash averaging gives each of two copies of an agent half the mass the original "
            "had (max |copy mass / original mass - 1/2|; RPS-like population, whose Nash is "
            "unique)",
            col("nash_copy_dev"),
            paper="Nash averaging is invariant to redundant copies (Balduzzi et al. 2018, §4)",
            op="<",
            threshold=COPY_TOL,
        ),
        Claim.measure(
            "uniform-copy-not-half",
            "uniform averaging does not: |copy mass / original mass - 1/2|",
            col("uniform_copy_dev"),
            paper="uniform averaging is biased by copies",
            op=">=",
            threshold=UNIFORM_MIN,
        ),
        Claim.measure(
            "disc-nash-copy-dev",
            "the same deviation on the disc game, whose evaluation matrix has rank 2 and a "
            "whole polytope of Nash equilibria: max entropy then moves mass onto the copies",
            col("disc_nash_copy_dev"),
        ),
        Claim.measure(
            "nash-rating-shift",
            "largest change of a Nash-averaged rating when the copy is added",
            col("nash_rating_shift"),
        ),
        Claim.measure(
            "uniform-rating-shift",
            "largest change of a uniform-averaged rating when the copy is added",
            col("uniform_rating_shift"),
        ),
    ]


EXPERIMENT = Experiment(
    name="dynamics-ratings",
    paper="Balduzzi, Tuyls, Perolat & Graepel, Re-evaluating Evaluation, NeurIPS 2018",
    bibtex="""@inproceedings{balduzzi2018reevaluating,
  title={Re-evaluating Evaluation},
  author={Balduzzi, David and Tuyls, Karl and Perolat, Julien and Graepel, Thore},
  booktitle={Advances in Neural Information Processing Systems},
  year={2018},
  note={arXiv:1806.02643}
}""",
    description="Elo against mElo_2 at predicting win probabilities in cyclic games (the disc "
    "game, an RPS-like population) from sampled games; Nash averaging against uniform "
    "averaging when a copy of an agent joins the population.",
    minutes={"smoke": 0.1, "quick": 1},
    Config=Config,
    train=train,
    plots=plots,
    claims=claims,
    scales={
        "smoke": {"seeds": 1, "agents": 12, "games": 10, "melo_steps": 100},
        "paper": {"seeds": 10, "agents": 100, "games": 50},
    },
)
