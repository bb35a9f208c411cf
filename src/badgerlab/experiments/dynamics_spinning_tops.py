"""Spinning tops: the population size fictitious play needs to pass a game's cyclic middle."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from badgerlab.dynamics.games import cyclic_share, spinning_top
from badgerlab.dynamics.psro import fixed_memory_fictitious_play
from badgerlab.experiment import Count, Experiment, ExperimentConfig, Fraction
from badgerlab.runs import Claim, Run


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


def run(cfg: Config, run: Run) -> list[Claim]:
    shares, sizes = sorted(cfg.shares), sorted(cfg.sizes)
    if shares != list(cfg.shares) or sizes != list(cfg.sizes):
        raise ValueError("shares and sizes must be ascending")
    jobs = [(c, cfg.seed + s) for c in cfg.shares for s in range(cfg.seeds)]
    ckpt = run.load_checkpoint()
    rows: list[dict] = ckpt.state["rows"] if ckpt else []
    with run.progress(len(jobs), "spinning tops", completed=len(rows)) as bar:
        for share, seed in jobs[len(rows) :]:
            needed, best = _needed(cfg, share, seed)
            row = {"share": share, "seed": seed, "needed": needed, "best": best}
            rows.append(row)
            run.log(len(rows) - 1, share=share, seed=seed, needed=needed, best_levels=best)
            bar.update(1, share=share, needed=needed)
            run.save_checkpoint(len(rows), state={"rows": rows})

    def needed_at(c: float) -> list[float]:
        return [r["needed"] for r in rows if r["share"] == c]

    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    means = [np.mean(needed_at(c)) for c in cfg.shares]
    stds = [np.std(needed_at(c)) for c in cfg.shares]
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
    run.save_figure(fig, "population_size")

    lo, hi = cfg.shares[0], cfg.shares[-1]
    claims = [
        Claim.measure(
            "needed-at-max-share",
            f"population size needed to pass the cyclic middle at cyclic share {hi} "
            f"(2 x {max(cfg.sizes)} when no size tried does)",
            needed_at(hi),
            paper="larger populations are needed as non-transitivity grows "
            "(Czarnecki et al. 2020, §4)",
            op=">",
            threshold={"ref": "needed-at-min-share"},
        ),
        Claim.measure(
            "needed-at-min-share",
            f"population size needed at cyclic share {lo}",
            needed_at(lo),
        ),
    ]
    corr = np.corrcoef([r["share"] for r in rows], [np.log2(r["needed"]) for r in rows])[0, 1]
    claims.append(
        Claim.measure(
            "share-size-correlation",
            "correlation of cyclic share with log2 of the needed population size",
            float(corr) if np.isfinite(corr) else None,
        )
    )
    for c in cfg.shares[1:-1]:
        claims.append(
            Claim.measure(
                f"needed-at-share-{c}", f"population size needed at share {c}", needed_at(c)
            )
        )
    return claims


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
    run=run,
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
