"""Spinning tops: the population size fictitious play needs to pass a game's cyclic middle."""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from badgerlab.dynamics.games import cyclic_share, spinning_top
from badgerlab.dynamics.psro import fixed_memory_fictitious_play
from badgerlab.experiment import Count, Experiment, ExperimentConfig, Fraction
from badgerlab.runs import Claim, RunLike, condition


class Config(ExperimentConfig):
    seeds: int = Field(10, ge=1, le=100, description="random games per cyclic share")
    strategies: int = Field(200, ge=10, le=5000, description="pure strategies of each game")
    shares: list[Fraction] = Field(
        [0.0, 0.01, 0.02, 0.05, 0.1, 0.2],
        min_length=2,
        description="cyclic shares ‖cyclic‖²/‖A‖² of the games, ascending",
    )
    sizes: list[Count] = Field(
        [1, 2, 4, 8, 16, 32, 64], min_length=1, description="population sizes tried, ascending"
    )
    iterations: int = Field(200, ge=1, le=100_000, description="fictitious-play iterations")
    window: float = Field(
        0.05, ge=0, le=1, description="how far above the population's best level a response may go"
    )
    width: float = Field(0.2, gt=0, le=1, description="width of the cyclic bump around t = 1/2")
    target: float = Field(
        0.9, gt=0, le=1, description="transitive level that counts as past the cyclic middle"
    )

    @model_validator(mode="after")
    def _check(self) -> Config:
        for name in ("shares", "sizes"):
            values = list(getattr(self, name))
            if values != sorted(set(values)):
                raise ValueError(f"{name} must be strictly ascending, got {values}")
        return self


def _needed(cfg: Config, share: float, seed: int) -> tuple[float, list[float]]:
    """The smallest population size that reaches the target level, and each size's best level
    (``2 × max(sizes)`` when none does)."""
    A, t = spinning_top(cfg.strategies, share, rng=seed, width=cfg.width)
    assert abs(cyclic_share(A) - share) < 1e-6
    best = []
    for k in cfg.sizes:
        curve = fixed_memory_fictitious_play(
            A, t, memory=k, iterations=cfg.iterations, window=cfg.window
        )
        best.append(float(curve[-1]))
    reached = [k for k, b in zip(cfg.sizes, best, strict=True) if b >= cfg.target]
    return float(reached[0] if reached else 2 * max(cfg.sizes)), best


def train(cfg: Config, run: RunLike) -> dict:
    """One unit per (cyclic share, game seed): the population size that game needs."""
    jobs = [(c, cfg.seed + s) for c in cfg.shares for s in range(cfg.seeds)]
    keys = [f"share{c}-seed{seed}" for c, seed in jobs]
    for unit in run.units(keys, description="spinning tops"):
        share, seed = jobs[unit.index]
        needed, best = _needed(cfg, share, seed)
        run.log(unit.index, share=share, seed=seed, needed=needed, best_levels=best)
        unit.finish({"share": share, "seed": seed, "needed": needed, "best": best})
    return {"rows": [run.results[k] for k in keys]}


def _needed_at(results: dict, c: float) -> list[float]:
    return [r["needed"] for r in results["rows"] if r["share"] == c]


def plots(cfg: Config, results: dict, run: RunLike) -> None:
    import matplotlib.pyplot as plt

    rows = results["rows"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    means = [np.mean(_needed_at(results, c)) for c in cfg.shares]
    stds = [np.std(_needed_at(results, c)) for c in cfg.shares]
    ax1.errorbar(cfg.shares, means, yerr=stds, marker="o")
    ax1.set_yscale("log", base=2)
    ax1.set_xlabel("cyclic share of the game")
    ax1.set_ylabel(f"population size to reach level {cfg.target}")
    ax1.grid(alpha=0.3)
    for c in cfg.shares:
        best = np.mean([r["best"] for r in rows if r["share"] == c], axis=0)
        ax2.plot(cfg.sizes, best, marker="o", label=f"share {c}")
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("population size (fictitious-play memory)")
    ax2.set_ylabel("best transitive level reached")
    ax2.legend(fontsize="small")
    ax2.grid(alpha=0.3)
    run.save_figure(
        fig,
        "population_size",
        caption="Left: the smallest fictitious-play population that climbs past the cyclic "
        "middle, against the game's cyclic share (log scale; mean ± std over games). Right: the "
        "best transitive level each population size reaches. Look for the needed size growing "
        "with the cyclic share.",
    )


def claims(cfg: Config, results: dict) -> list[Claim]:
    lo, hi = cfg.shares[0], cfg.shares[-1]
    rows = results["rows"]
    # The comparison needs the purely transitive end to be climbable with a size tried:
    # every game at the smallest share must reach the target (fixed before measuring).
    at_lo = _needed_at(results, lo)
    climbable = condition(
        f"fraction of games at share {lo} passed by some size tried",
        float(np.mean([n < 2 * max(cfg.sizes) for n in at_lo])),
        ">=",
        1.0,
    )
    out = [
        Claim.measure(
            "needed-at-max-share",
            f"population size needed to pass the cyclic middle at cyclic share {hi} "
            f"(2 x {max(cfg.sizes)} when no size tried does)",
            _needed_at(results, hi),
            paper="larger populations are needed as non-transitivity grows "
            "(Czarnecki et al. 2020, §4)",
            op=">",
            threshold={"ref": "needed-at-min-share"},
            requires=[climbable],
        ),
        Claim.measure(
            "needed-at-min-share", f"population size needed at cyclic share {lo}", at_lo
        ),
    ]
    corr = np.corrcoef([r["share"] for r in rows], [np.log2(r["needed"]) for r in rows])[0, 1]
    out.append(
        Claim.measure(
            "share-size-correlation",
            "correlation of cyclic share with log2 of the needed population size",
            float(corr) if np.isfinite(corr) else None,
        )
    )
    for c in cfg.shares[1:-1]:
        out.append(
            Claim.measure(
                f"needed-at-share-{c}",
                f"population size needed at share {c}",
                _needed_at(results, c),
            )
        )
    return out


EXPERIMENT = Experiment(
    name="dynamics-spinning-tops",
    paper="Czarnecki et al., Real World Games Look Like Spinning Tops, NeurIPS 2020",
    bibtex="""@inproceedings{czarnecki2020spinning,
  title={Real World Games Look Like Spinning Tops},
  author={Czarnecki, Wojciech M. and Gidel, Gauthier and Tracey, Brendan and Tuyls, Karl and
          Omidshafiei, Shayegan and Balduzzi, David and Jaderberg, Max},
  booktitle={Advances in Neural Information Processing Systems},
  year={2020},
  note={arXiv:2004.09468}
}""",
    description="Synthetic spinning-top games (transitive levels with a cyclic bump in the "
    "middle, cyclic share set exactly): the smallest fixed-memory fictitious-play population "
    "that climbs past the middle, as the cyclic share grows.",
    minutes={"smoke": 0.1, "quick": 2},
    Config=Config,
    train=train,
    plots=plots,
    claims=claims,
    scales={
        "smoke": {
            "seeds": 1,
            "strategies": 80,
            "shares": [0.0, 0.1],
            "sizes": [1, 4, 16],
            "iterations": 60,
        },
        "paper": {"seeds": 20, "strategies": 1000, "iterations": 1000},
    },
)
