"""PSRO variants and fictitious play on Blotto, the disc game and Kuhn poker: exploitability
and diversity."""

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
# fictitious play: best responses to the meta-strategy that counts every iteration's response
METHODS = (*RESPONSES, "fictitious_play")
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
FP_HALVES = 0.5  # fictitious play: final exploitability below this fraction of iteration 5's
FP_EARLY = 5  # ... the iteration it is compared with


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


def _iterations(cfg: Config, game: str) -> int:
    return {"blotto": cfg.blotto_iterations, "disc": cfg.disc_iterations}.get(
        game, cfg.kuhn_iterations
    )


def _job(cfg: Config, game: str, method: str, seed: int) -> list[dict]:
    fp = method == "fictitious_play"
    psro = PSRO(
        _oracle(cfg, game, seed),
        meta_solver="fictitious_play" if fp else cfg.meta_solver,
        response="nash" if fp else method,
        n_active=cfg.n_active,
    )
    psro.run(_iterations(cfg, game))
    return psro.history


def train(cfg: Config, run: RunLike) -> dict:
    """One unit per seed × game × method (a response rule, or fictitious play): a whole PSRO
    run and its per-iteration history."""
    jobs = [(g, r, cfg.seed + s) for s in range(cfg.seeds) for g in cfg.games for r in METHODS]
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
        for response, style in zip(METHODS, ("-", "--", "-.", ":", "-"), strict=True):
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
        "per game and response rule, and for fictitious play (log scale, mean over seeds): "
        "look for the Nash-based variants falling towards zero, fictitious play falling more "
        "slowly, and self-play staying high on the cyclic games.",
    )


def _first_below(curve: list[float], tol: float) -> int:
    """The first iteration with exploitability <= tol; ``len(curve)`` when none is."""
    return next((i for i, e in enumerate(curve) if e <= tol), len(curve))


def _fictitious_play_claims(cfg: Config, done: list[dict]) -> list[Claim]:
    """Fictitious play improves (halves from iteration 5), beats self-play, and is slower to
    reach ``NASH_MAX`` than PSRO-Nash; on Blotto and Kuhn."""

    def curves(game: str, method: str) -> list[list[float]]:
        return [d["exploitability"] for d in done if d["game"] == game and d["response"] == method]

    out: list[Claim] = []
    for game in [g for g in ("blotto", "kuhn") if g in cfg.games]:
        n = _iterations(cfg, game)
        label = f"{cfg.coins},{cfg.fields}-Blotto" if game == "blotto" else "Kuhn poker"
        fp = curves(game, "fictitious_play")
        self_play = "blotto-self-play" if game == "blotto" else "kuhn-self_play-exploitability"
        seeds = f"{len(fp)} seed(s)"
        halves = f"{game}-fictitious-play-halves"
        out += [
            Claim.measure(
                halves,
                f"on {label} fictitious play's exploitability after {n} iterations is below "
                f"{FP_HALVES} of its value at iteration {FP_EARLY} (ratio; {seeds})",
                [c[-1] / max(c[FP_EARLY], 1e-300) for c in fp] if n > FP_EARLY else None,
                paper="fictitious play converges in zero-sum games (Robinson 1951)",
                op="<",
                threshold=FP_HALVES,
            ),
            Claim.measure(
                f"{game}-fictitious-play-exploitability",
                f"on {label} fictitious play's final exploitability ({n} iterations, {seeds}) "
                "is below self-play's after as many iterations",
                [c[-1] for c in fp] or None,
                paper="averaging every response, not only the last, stops the cycling",
                op="<",
                threshold={"ref": self_play},
            ),
            Claim.measure(
                f"{game}-fictitious-play-iterations",
                f"iterations fictitious play needs on {label} to reach exploitability "
                f"<= {NASH_MAX} ({n + 1} = not within {n})",
                [_first_below(c, NASH_MAX) for c in fp] or None,
            ),
            Claim.measure(
                f"{game}-nash-faster-than-fictitious-play",
                f"PSRO-Nash reaches exploitability <= {NASH_MAX} on {label} in fewer iterations "
                f"than fictitious play ({n + 1} = not within {n}; {seeds})",
                [_first_below(c, NASH_MAX) for c in curves(game, "nash")] or None,
                paper="Lanctot 2017: PSRO with a Nash meta-solver (double oracle) converges in "
                "finitely many iterations on a finite game",
                op="<",
                threshold={"ref": f"{game}-fictitious-play-iterations"},
                requires=[halves],
            ),
        ]
    return out


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
    return claims + _fictitious_play_claims(cfg, done)


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
    description="Exploitability against iteration for self-play, PSRO-Nash, PSRO-rN, "
    "pipeline PSRO and fictitious play (PSRO with the meta-strategy that counts every "
    "iteration's best response) on Colonel Blotto, the disc game and Kuhn poker (two "
    "populations), and the effective diversity of the populations they grow.",
    minutes={"smoke": 0.15, "quick": 0.25},
    Config=Config,
    train=train,
    plots=plots,
    claims=claims,
    scales={
        "smoke": {"blotto_iterations": 40, "disc_iterations": 4, "kuhn_iterations": 6},
        "paper": {"seeds": 5, "disc_iterations": 100, "kuhn_iterations": 30},
    },
)
