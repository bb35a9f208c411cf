"""CarRacing-v3 from pixels: an evolved static CNN front, then a Hebbian or static MLP."""

from __future__ import annotations

import dataclasses

import matplotlib.pyplot as plt
from pydantic import Field

from badgerlab.experiment import Count, Experiment
from badgerlab.experiments._hebbian import HebbianESConfig
from badgerlab.experiments.hebbian_quick import EXPERIMENT as QUICK
from badgerlab.hebbian.policy import HebbianPolicy
from badgerlab.hebbian.tasks import box2d_available, get_task, vector_env
from badgerlab.hebbian.train import (
    build_phases,
    evaluate,
    scaled_lr,
    train_phases,
)
from badgerlab.runs import Claim, Run

PAPER_HEBBIAN, PAPER_STATIC = "872 ± 11 (100 rollouts)", "711 ± 16 (100 rollouts)"


class Config(HebbianESConfig):
    hidden: list[Count] = Field(
        [128, 64], min_length=1, max_length=4, description="hidden widths (reference: 128, 64)"
    )
    popsize: int = Field(10, ge=2, le=4096, multiple_of=2, description="ES population (even)")
    generations: int = Field(6, ge=1, le=10_000, description="ES generations per agent")
    episode_steps: int = Field(150, ge=10, le=1000, description="step cap of training episodes")
    eval_steps: int = Field(300, ge=10, le=1000, description="step cap of evaluation episodes")
    eval_rollouts: int = Field(3, ge=1, le=1000, description="rollouts of the final agents")
    negative_patience: int = Field(
        20, ge=1, le=1000, description="stop after this many consecutive negative rewards"
    )


def _missing_claims(reason: str) -> list[Claim]:
    note = f"CarRacing-v3 cannot be made: {reason} (pip install 'gymnasium[box2d]')"
    return [
        Claim.measure("hebbian-return", "Hebbian CarRacing return", None, paper=PAPER_HEBBIAN,
                      op=">", threshold={"ref": "static-return"}, note=note),
        Claim.measure("static-return", "static CarRacing return", None, paper=PAPER_STATIC,
                      note=note),
    ]  # fmt: skip


def run(cfg: Config, run: Run) -> list[Claim]:
    reason = box2d_available()
    if reason is not None:
        return _missing_claims(reason)
    task = dataclasses.replace(get_task("CarRacing-v3"), negative_patience=cfg.negative_patience)
    envs = vector_env(task, cfg.popsize, max_steps=cfg.episode_steps)
    policies = {
        "hebbian": HebbianPolicy(task.spec(cfg.hidden, plastic=True)),
        "static": HebbianPolicy(task.spec(cfg.hidden, plastic=False)),
    }
    phases = build_phases(
        policies,
        envs,
        seed=cfg.seed,
        seeds=cfg.seeds,
        popsize=cfg.popsize,
        l2=cfg.l2,
        es_options={"lr": cfg.lr or scaled_lr(cfg.popsize)},
    )
    history = train_phases(
        run,
        phases,
        cfg.generations,
        description="ES on CarRacing-v3",
        actors=cfg.actors,
        address=cfg.ray_address,
        task=task,
        max_steps=cfg.episode_steps,
    )
    envs.close()

    ev = vector_env(task, cfg.eval_rollouts, max_steps=cfg.eval_steps)
    returns: dict[str, list[float]] = {k: [] for k in policies}
    for name, tr in phases:
        kind, seed = name.split("@")
        seeds = [40_000 * (int(seed) + 1) + n for n in range(cfg.eval_rollouts)]
        out = evaluate(tr.policy, tr.center, ev, seeds=seeds)
        returns[kind] += out.returns.tolist()
        run.log(0, agent=name, eval_return=float(out.returns.mean()), steps=int(out.lengths.sum()))
    ev.close()

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, _ in phases:
        ax.plot([m["return_mean"] for m in history[name]], marker="o", label=name)
    ax.axhline(872, color="C0", ls=":", label="paper Hebbian 872")
    ax.axhline(711, color="C1", ls=":", label="paper static 711")
    ax.set_xlabel("generation")
    ax.set_ylabel("population mean return")
    ax.set_title(f"CarRacing-v3, popsize {cfg.popsize}, episodes capped at {cfg.episode_steps}")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    run.save_figure(fig, "carracing")

    n = f"{cfg.eval_rollouts} rollouts of ≤ {cfg.eval_steps} steps" + (
        f" × {cfg.seeds} seeds" if cfg.seeds > 1 else ""
    )
    budget = f"{cfg.generations} generations of {cfg.popsize}"
    return [
        Claim.measure(
            "hebbian-return",
            f"Hebbian > static on CarRacing-v3 ({n}; {budget}; paper: 300 × 200)",
            returns["hebbian"],
            paper=PAPER_HEBBIAN,
            op=">",
            threshold={"ref": "static-return"},
        ),
        Claim.measure(
            "static-return",
            f"static-weight CarRacing-v3 return ({n}; {budget})",
            returns["static"],
            paper=PAPER_STATIC,
        ),
    ]


EXPERIMENT = Experiment(
    name="hebbian-carracing",
    paper=QUICK.paper,
    bibtex=QUICK.bibtex,
    description="CarRacing-v3 from 84×84 RGB: evolved CNN front (3→6 k3, pool, 6→8 k5 s2, pool) "
    "and a plastic 648→128→64→3 MLP; episodes stop after 20 consecutive negative rewards. "
    "Quick scale is a working check; paper scale is 200 × 300 generations.",
    minutes={"smoke": 0.25, "quick": 3},
    Config=Config,
    run=run,
    scales={
        "smoke": {
            "hidden": [8],
            "popsize": 2,
            "generations": 1,
            "episode_steps": 20,
            "eval_steps": 20,
            "eval_rollouts": 1,
        },
        "paper": {
            "lr": 0.2,
            "popsize": 200,
            "generations": 300,
            "episode_steps": 1000,
            "eval_steps": 1000,
            "eval_rollouts": 100,
        },
    },
)
