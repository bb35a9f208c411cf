"""CarRacing-v3 from pixels: an evolved static CNN front, then a Hebbian or static MLP."""

from __future__ import annotations

import dataclasses
from typing import Any

import matplotlib.pyplot as plt
from pydantic import Field

from badgerlab.experiment import Count, Experiment
from badgerlab.experiments._hebbian import HebbianESConfig, agents, train_policies
from badgerlab.hebbian import BIBTEX, PAPER, HebbianPolicy
from badgerlab.hebbian.tasks import box2d_available, get_task, vector_env
from badgerlab.hebbian.train import evaluate
from badgerlab.runs import Claim, RunLike, condition

PAPER_HEBBIAN, PAPER_STATIC = "872 ± 11 (100 rollouts)", "711 ± 16 (100 rollouts)"
#: Fixed before measuring (issue 13): below this the static agent does not drive, and
#: comparing the two says nothing about the paper's claim.
STATIC_DRIVES = 100.0


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


def train(cfg: Config, run: RunLike) -> dict[str, Any]:
    """Evolve both agents per seed, then roll out the final ones; `missing` when Box2D is not."""
    reason = box2d_available()
    if reason is not None:
        return {"missing": reason}
    task = dataclasses.replace(get_task("CarRacing-v3"), negative_patience=cfg.negative_patience)
    policies = {
        "hebbian": HebbianPolicy(task.spec(cfg.hidden, plastic=True)),
        "static": HebbianPolicy(task.spec(cfg.hidden, plastic=False)),
    }
    trained = train_policies(
        cfg, run, task, policies, max_steps=cfg.episode_steps, description="ES on CarRacing-v3"
    )
    ev = vector_env(task, cfg.eval_rollouts, max_steps=cfg.eval_steps)
    returns: dict[str, list[float]] = {k: [] for k in policies}
    for name, seed, res in agents(trained):
        seeds = [40_000 * (seed + 1) + n for n in range(cfg.eval_rollouts)]
        out = evaluate(policies[name], res["center"], ev, seeds=seeds)
        returns[name] += out.returns.tolist()
        run.log(0, agent=f"{name}@{seed}", eval_return=float(out.returns.mean()),
                steps=int(out.lengths.sum()))  # fmt: skip
    ev.close()
    history = {key: res["history"]["return_mean"] for key, res in trained.items()}
    return {"missing": None, "returns": returns, "history": history}


def plots(cfg: Config, results: dict[str, Any], run: RunLike) -> None:
    if results["missing"] is not None:
        return
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, curve in results["history"].items():
        ax.plot(curve, marker="o", label=name)
    ax.axhline(872, color="C0", ls=":", label="paper Hebbian 872")
    ax.axhline(711, color="C1", ls=":", label="paper static 711")
    ax.axhline(STATIC_DRIVES, color="grey", ls="--", lw=0.8, label="static must reach 100")
    ax.set_xlabel("generation")
    ax.set_ylabel("population mean return")
    ax.set_title(f"CarRacing-v3, popsize {cfg.popsize}, episodes capped at {cfg.episode_steps}")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    run.save_figure(
        fig,
        "carracing",
        caption="Population mean return per generation of each agent and seed, beside the "
        "paper's final returns: the comparison is judged only once the static agent drives "
        f"(return ≥ {STATIC_DRIVES:g}).",
    )


def claims(cfg: Config, results: dict[str, Any]) -> list[Claim]:
    if results["missing"] is not None:
        note = (
            f"CarRacing-v3 cannot be made: {results['missing']} (pip install 'gymnasium[box2d]')"
        )
        return [
            Claim.measure("hebbian-return", "Hebbian CarRacing return", None,
                          paper=PAPER_HEBBIAN, op=">", threshold={"ref": "static-return"},
                          note=note),
            Claim.measure("static-return", "static CarRacing return", None, paper=PAPER_STATIC,
                          note=note),
        ]  # fmt: skip
    returns = results["returns"]
    static = sum(returns["static"]) / len(returns["static"])
    n = f"{cfg.eval_rollouts} rollouts of ≤ {cfg.eval_steps} steps" + (
        f" × {cfg.seeds} seeds" if cfg.seeds > 1 else ""
    )
    budget = f"{cfg.generations} generations of {cfg.popsize}"
    return [
        Claim.measure(
            "hebbian-return",
            f"Hebbian > static on CarRacing-v3 ({n}; {budget}; paper: 300 × 200), judged once "
            f"the static agent drives (return ≥ {STATIC_DRIVES:g})",
            returns["hebbian"],
            paper=PAPER_HEBBIAN,
            op=">",
            threshold={"ref": "static-return"},
            requires=[condition("static agent's mean return", static, ">=", STATIC_DRIVES)],
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
    paper=PAPER,
    bibtex=BIBTEX,
    description="CarRacing-v3 from 84×84 RGB: evolved CNN front (3→6 k3, pool, 6→8 k5 s2, pool) "
    "and a plastic 648→128→64→3 MLP; episodes stop after 20 consecutive negative rewards. "
    "Quick scale is a working check; paper scale is 200 × 300 generations.",
    minutes={"smoke": 0.25, "quick": 3},
    Config=Config,
    train=train,
    plots=plots,
    claims=claims,
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
