"""PSRO variants on Blotto, the disc game and Kuhn poker: exploitability and diversity."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from badgerlab.dynamics.games import DiscGame, blotto
from badgerlab.dynamics.psro import (
    META_SOLVERS,
    PSRO,
    FunctionalOracle,
    MatrixOracle,
    OpenSpielOracle,
)
from badgerlab.experiment import Experiment, ExperimentConfig
from badgerlab.runs import Claim, RunLike

RESPONSES = ("self_play", "nash", "rectified", "pipeline")
GAMES = ("blotto", "disc", "kuhn")


class Config(ExperimentConfig):
    coins: int = Field(10, ge=2, le=30, description="Blotto coins")
    fields: int = Field(3, ge=2, le=6, description="Blotto fields")
    blotto_iterations: int = Field(
        66, ge=1, le=2000, description="PSRO iterations on Blotto (66 = its pure strategies)"
    )
    disc_iterations: int = Field(30, ge=1, le=2000, description="PSRO iterations, disc game")
    kuhn_iterations: int = Field(15, ge=1, le=500, description="PSRO iterations, Kuhn poker")
    meta_solver: META_SOLVERS.field_type() = Field(
        "nash", description="meta-solver of the population's meta-game (any registered)"
    )
    n_active: int = Field(2, ge=1, le=16, description="active policies of pipeline PSRO")
    disc_steps: int = Field(5, ge=1, le=10_000, description="gradient steps per disc response")
    disc_lr: float = Field(0.1, gt=0, le=10, description="step size of the disc oracle")
    disc_init_scale: float = Field(
        1.0, gt=0, le=1, description="radius scale of the first disc-game agent"
    )
    games: list[Literal["blotto", "disc", "kuhn"]] = Field(
        list(GAMES), min_length=1, description="games to run"
    )

    @model_validator(mode="after")
    def _check(self) -> Config:
        if len(set(self.games)) != len(self.games):
            raise ValueError(f"games must not repeat, got {self.games}")
        return self


# Fixed by the issue before measuring.
NASH_MAX = 1e-6  # Blotto: PSRO-Nash exploitability at most this
SELF_PLAY_MIN = 0.1  # Blotto: self-play exploitability at least this after as many iterations


def _oracle(cfg: Config, game: str, seed: int):
    if game == "blotto":
        return MatrixOracle(blotto(cfg.coins, cfg.fields))
    if game == "disc":
        return FunctionalOracle(
            DiscGame(),
            steps=cfg.disc_steps,
            lr=cfg.disc_lr,
            init_scale=cfg.disc_init_scale,
            seed=seed,
        )
    return OpenSpielOracle("kuhn_poker")


def _job(cfg: Config, game: str, response: str, seed: int) -> list[dict]:
    iters = {"blotto": cfg.blotto_iterations, "disc": cfg.disc_iterations}
    iters["kuhn"] = cfg.kuhn_iterations
    psro = PSRO(
        _oracle(cfg, game, seed),
        meta_solver=cfg.meta_solver,
        response=response,
        n_active=cfg.n_active,
    )
    psro.run(iters[game])
    return psro.history


def train(cfg: Config, run: RunLike) -> dict:
    """One unit per seed × game × response: a whole PSRO run and its per-iteration history."""
    jobs = [(g, r, cfg.seed + s) for s in range(cfg.seeds) for g in cfg.games for r in RESPONSES]
    keys = [f"{g}-{r}-s{seed}" for g, r, seed in jobs]
    for unit in run.units(keys, description="psro"):
        game, response, seed = jobs[unit.index]
        hist = _job(cfg, game, response, seed)
        step = sum(len(run.results[k]["exploitability"]) for k in keys[: unit.index])
        for it, h in enumerate(hist):
            run.log(step + it, game=game, response=response, seed=seed, iteration=it, **h)
        unit.finish(
            {
                "game": game,
                "response": response,
                "seed": seed,
                "exploitability": [h["exploitability"] for h in hist],
                "diversity": [h.get("diversity", float("nan")) for h in hist],
                "population": [h["population"] for h in hist],
            }
        )
    return {"done": [run.results[k] for k in keys]}


def plots(cfg: Config, results: dict, run: RunLike) -> None:
    import matplotlib.pyplot as plt

    done = results["done"]
    fig, axes = plt.subplots(1, len(cfg.games), figsize=(4.2 * len(cfg.games), 3.6))
    axes = np.atleast_1d(axes)
    for ax, game in zip(axes, cfg.games, strict=True):
        for response, style in zip(RESPONSES, ("-", "--", "-.", ":"), strict=True):
            curves = np.array(
                [
                    d["exploitability"]
                    for d in done
                    if d["game"] == game and d["response"] == response
                ]
            )
            ax.plot(np.maximum(curves.mean(0), 1e-8), style, label=response, linewidth=2)
        ax.set_yscale("log")
        ax.set_title(game)
        ax.set_xlabel("PSRO iteration")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("exploitability of the meta-strategy")
    axes[0].legend(fontsize="small", loc="lower left")
    run.save_figure(
        fig,
        "exploitability",
        caption="Exploitability of the population's meta-strategy after each PSRO iteration, "
        "per game and response rule (log scale, mean over seeds): look for the Nash-based "
        "variants falling towards zero while self-play stays high on the cyclic games.",
    )


def claims(cfg: Config, results: dict) -> list[Claim]:
    done = results["done"]

    def final(game: str, response: str, key: str = "exploitability") -> list[float] | None:
        vals = [d[key][-1] for d in done if d["game"] == game and d["response"] == response]
        return vals or None

    claims: list[Claim] = []
    if "blotto" in cfg.games:
        n = cfg.blotto_iterations
        claims += [
            Claim.measure(
                "blotto-psro-nash",
                f"on Blotto ({cfg.coins} coins, {cfg.fields} fields) PSRO-Nash reaches "
                f"exploitability <= {NASH_MAX} within {n} iterations",
                final("blotto", "nash"),
                paper="Nash-PSRO reaches exploitability 0 (Lanctot 2017; Balduzzi 2019)",
                op="<=",
                threshold=NASH_MAX,
            ),
            Claim.measure(
                "blotto-self-play",
                f"self-play's exploitability after the same {n} iterations is >= {SELF_PLAY_MIN}",
                final("blotto", "self_play"),
                paper="self-play cycles on non-transitive games",
                op=">=",
                threshold=SELF_PLAY_MIN,
            ),
        ]
    for game in cfg.games:
        for response in RESPONSES:
            if game == "blotto" and response in ("nash", "self_play"):
                continue
            claims.append(
                Claim.measure(
                    f"{game}-{response}-exploitability",
                    f"final exploitability of {response} on {game}",
                    final(game, response),
                )
            )
        if game != "kuhn":
            for response in RESPONSES:
                claims.append(
                    Claim.measure(
                        f"{game}-{response}-diversity",
                        f"effective diversity p^T[A]_+p of the final {response} population",
                        final(game, response, "diversity"),
                        paper="PSRO-rN grows more diverse populations (Balduzzi 2019, §4)",
                    )
                )
    return claims


EXPERIMENT = Experiment(
    name="dynamics-psro",
    paper="Balduzzi et al., Open-ended Learning in Symmetric Zero-sum Games, ICML 2019; "
    "Lanctot et al., A Unified Game-Theoretic Approach to Multiagent RL, NeurIPS 2017; "
    "McAleer et al., Pipeline PSRO, NeurIPS 2020",
    bibtex="""@inproceedings{balduzzi2019openended,
  title={Open-ended Learning in Symmetric Zero-sum Games},
  author={Balduzzi, David and Garnelo, Marta and Bachrach, Yoram and Czarnecki, Wojciech M. and
          Perolat, Julien and Jaderberg, Max and Graepel, Thore},
  booktitle={International Conference on Machine Learning},
  year={2019},
  note={arXiv:1901.08106}
}""",
    description="Exploitability against iteration for self-play, PSRO-Nash, PSRO-rN and "
    "pipeline PSRO on Colonel Blotto, the disc game and Kuhn poker (two populations), and the "
    "effective diversity of the populations they grow.",
    minutes={"smoke": 0.15, "quick": 2},
    Config=Config,
    train=train,
    plots=plots,
    claims=claims,
    scales={
        "smoke": {"blotto_iterations": 40, "disc_iterations": 4, "kuhn_iterations": 2},
        "paper": {"seeds": 5, "disc_iterations": 100, "kuhn_iterations": 30},
    },
)
