"""MAP-Elites (pyribs) on Blotto agents described by payoff profiles: coverage and QD-score."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from badgerlab.dynamics.games import blotto, blotto_strategies
from badgerlab.dynamics.qd import PayoffProfileDomain, map_elites, random_search
from badgerlab.experiment import Experiment, ExperimentConfig
from badgerlab.runs import Claim, RunLike


class Config(ExperimentConfig):
    seeds: int = Field(3, ge=1, le=100, description="seeds run inside one Run")
    coins: int = Field(10, ge=2, le=30, description="Blotto coins")
    fields: int = Field(3, ge=2, le=6, description="Blotto fields")
    iterations: int = Field(300, ge=1, le=100_000, description="MAP-Elites iterations")
    batch_size: int = Field(32, ge=1, le=4096, description="solutions per emitter and iteration")
    emitters: int = Field(2, ge=1, le=64, description="Gaussian emitters")
    sigma: float = Field(0.5, gt=0, le=10, description="mutation std of the emitters (logits)")
    random_sigma: float = Field(2.0, gt=0, le=10, description="std of random-search logits")
    cells: int = Field(20, ge=2, le=500, description="archive cells per descriptor axis")


def _domain(cfg: Config) -> PayoffProfileDomain:
    """Objective: mean payoff against the uniform population; descriptors: payoffs against
    everything-on-the-last-field and the most even split."""
    A = blotto(cfg.coins, cfg.fields)
    S = blotto_strategies(cfg.coins, cfg.fields)
    n = A.shape[0]
    refs = np.zeros((2, n))
    refs[0, 0] = 1.0
    refs[1, int(np.argmin(S.max(axis=1) - S.min(axis=1)))] = 1.0
    return PayoffProfileDomain(A, np.full(n, 1.0 / n), refs)


def _seed(cfg: Config, domain: PayoffProfileDomain, seed: int) -> tuple[dict, dict]:
    _, me = map_elites(
        domain,
        iterations=cfg.iterations,
        batch_size=cfg.batch_size,
        emitters=cfg.emitters,
        sigma=cfg.sigma,
        cells=cfg.cells,
        seed=seed,
    )
    # the same number of evaluations per iteration for the baseline
    _, rs = random_search(
        domain,
        iterations=cfg.iterations,
        batch_size=cfg.batch_size * cfg.emitters,
        sigma=cfg.random_sigma,
        cells=cfg.cells,
        seed=seed,
    )
    return vars(me), vars(rs)


def train(cfg: Config, run: RunLike) -> dict:
    """One unit per seed: a MAP-Elites run and a random search with the same evaluations."""
    domain = _domain(cfg)
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    for unit in run.units([f"seed{s}" for s in seeds], description="map-elites"):
        seed = seeds[unit.index]
        me, rs = _seed(cfg, domain, seed)
        for it in range(cfg.iterations):
            run.log(
                unit.index * cfg.iterations + it,
                seed=seed,
                iteration=it,
                evaluations=me["evaluations"][it],
                coverage=me["coverage"][it],
                qd_score=me["qd_score"][it],
                best=me["best"][it],
                random_coverage=rs["coverage"][it],
                random_qd_score=rs["qd_score"][it],
            )
        unit.finish({"seed": seed, "map_elites": me, "random": rs})
    return {"rows": [run.results[f"seed{s}"] for s in seeds]}


def plots(cfg: Config, results: dict, run: RunLike) -> None:
    import matplotlib.pyplot as plt

    rows = results["rows"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    evals = np.array(rows[0]["map_elites"]["evaluations"])
    for name, key in (("MAP-Elites", "map_elites"), ("random search", "random")):
        cov = np.array([r[key]["coverage"] for r in rows])
        qd = np.array([r[key]["qd_score"] for r in rows])
        ax1.plot(evals, cov.mean(0), label=name)
        ax2.plot(evals, qd.mean(0), label=name)
    ax1.set_ylabel("archive coverage")
    ax2.set_ylabel("QD-score (offset: lowest payoff)")
    for ax in (ax1, ax2):
        ax.set_xlabel("evaluations")
        ax.grid(alpha=0.3)
    ax1.legend()
    run.save_figure(
        fig,
        "qd",
        caption="Archive coverage (left) and QD-score (right) against evaluations, MAP-Elites "
        "and random search with the same budget (mean over seeds): look for MAP-Elites filling "
        "more cells with better strategies as evaluations grow.",
    )


def claims(cfg: Config, results: dict) -> list[Claim]:
    rows = results["rows"]

    def last(key: str, metric: str) -> list[float]:
        return [r[key][metric][-1] for r in rows]

    return [
        Claim.measure(
            "map-elites-qd-score",
            f"MAP-Elites' QD-score after {cfg.iterations} iterations exceeds random search's "
            "with the same evaluations",
            last("map_elites", "qd_score"),
            paper="MAP-Elites illuminates the search space (Mouret & Clune 2015)",
            op=">",
            threshold={"ref": "random-qd-score"},
        ),
        Claim.measure("random-qd-score", "random search's QD-score", last("random", "qd_score")),
        Claim.measure(
            "map-elites-coverage", "MAP-Elites' archive coverage", last("map_elites", "coverage")
        ),
        Claim.measure("random-coverage", "random search's coverage", last("random", "coverage")),
        Claim.measure(
            "map-elites-best",
            "best mean payoff against the uniform population in the archive",
            last("map_elites", "best"),
        ),
    ]


EXPERIMENT = Experiment(
    name="dynamics-qd",
    paper="Mouret & Clune, Illuminating Search Spaces by Mapping Elites, arXiv 2015 "
    "(pyribs: Tjanaka et al. 2023)",
    bibtex="""@article{mouret2015illuminating,
  title={Illuminating Search Spaces by Mapping Elites},
  author={Mouret, Jean-Baptiste and Clune, Jeff},
  journal={arXiv preprint arXiv:1504.04909},
  year={2015}
}""",
    description="MAP-Elites through pyribs' ask/tell on mixed Blotto strategies, descriptors "
    "their payoffs against two reference strategies and objective their mean payoff: coverage "
    "and QD-score against evaluations, against random search.",
    minutes={"smoke": 0.1, "quick": 1},
    Config=Config,
    train=train,
    plots=plots,
    claims=claims,
    scales={
        "smoke": {"seeds": 1, "iterations": 15},
        "paper": {"seeds": 10, "iterations": 5000, "cells": 50},
    },
)
