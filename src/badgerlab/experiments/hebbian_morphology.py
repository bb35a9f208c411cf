"""Ant bodies: evolve on two, test on a held-out damaged body; Hebbian rules vs static weights."""

from __future__ import annotations

from typing import Literal

import matplotlib.pyplot as plt
from pydantic import Field, model_validator

from badgerlab.experiment import Count, Experiment
from badgerlab.experiments._hebbian import HebbianESConfig
from badgerlab.experiments.hebbian_quick import EXPERIMENT as QUICK
from badgerlab.hebbian.envs import ANT_LEGS
from badgerlab.hebbian.policy import HebbianPolicy
from badgerlab.hebbian.tasks import get_task, vector_env
from badgerlab.hebbian.train import (
    build_phases,
    evaluate,
    scaled_lr,
    train_phases,
)
from badgerlab.runs import Claim, Run

Leg = Literal["front_left", "front_right", "back_left", "back_right"]
assert set(Leg.__args__) == set(ANT_LEGS)  # type: ignore[attr-defined]


class Config(HebbianESConfig):
    hidden: list[Count] = Field(
        [32, 32], min_length=1, max_length=4, description="hidden widths (paper: 128, 64)"
    )
    popsize: int = Field(24, ge=2, le=4096, multiple_of=2, description="ES population (even)")
    generations: int = Field(80, ge=1, le=10_000, description="ES generations per agent")
    episode_steps: int = Field(200, ge=10, le=1000, description="steps per episode")
    train_leg: Leg = Field("front_left", description="leg altered in the second training body")
    test_leg: Leg = Field("front_right", description="leg altered in the held-out body")
    leg_factor: float = Field(
        0.5, gt=0, le=5, description="lower-leg length factor: < 1 damaged, > 1 lengthened"
    )
    eval_rollouts: int = Field(10, ge=1, le=1000, description="rollouts per body of each agent")

    @model_validator(mode="after")
    def _distinct(self) -> Config:
        if self.train_leg == self.test_leg:
            raise ValueError("test_leg must differ from train_leg: the test body is held out")
        return self


def _bodies(cfg: Config) -> dict[str, dict[str, float] | None]:
    return {
        "standard": None,
        f"{cfg.train_leg} x{cfg.leg_factor:g}": {cfg.train_leg: cfg.leg_factor},
        f"{cfg.test_leg} x{cfg.leg_factor:g} (held out)": {cfg.test_leg: cfg.leg_factor},
    }


def run(cfg: Config, run: Run) -> list[Claim]:
    task = get_task("Ant-v5")
    bodies = _bodies(cfg)
    names = list(bodies)
    seen, unseen = names[:2], names[2]
    envs = vector_env(
        task, cfg.popsize, max_steps=cfg.episode_steps, bodies=[bodies[n] for n in seen]
    )
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
        bodies=len(seen),
    )
    history = train_phases(
        run,
        phases,
        cfg.generations,
        description="ES on Ant-v5 bodies",
        actors=cfg.actors,
        address=cfg.ray_address,
        task=task,
        max_steps=cfg.episode_steps,
        bodies=[bodies[n] for n in seen],
    )

    scale = task.return_scale
    dist: dict[str, dict[str, list[float]]] = {k: {n: [] for n in names} for k in policies}
    for body, legs in bodies.items():
        ev = vector_env(task, cfg.eval_rollouts, max_steps=cfg.episode_steps, bodies=[legs])
        for name, tr in phases:
            kind, seed = name.split("@")
            seeds = [30_000 * (int(seed) + 1) + n for n in range(cfg.eval_rollouts)]
            out = evaluate(tr.policy, tr.center, ev, seeds=seeds)
            dist[kind][body] += (out.returns * scale).tolist()
        ev.close()
    for kind in policies:
        run.log(0, agent=kind, **{b: sum(v) / len(v) for b, v in dist[kind].items()})
    run.save_json("distances", dist)

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4))
    for kind in policies:
        for name, _ in phases:
            if name.startswith(kind):
                ax0.plot([m["return_mean"] * scale for m in history[name]], label=name)
    ax0.set_xlabel("generation")
    ax0.set_ylabel("population mean distance (m), seen bodies")
    ax0.legend(fontsize="small")
    ax0.grid(alpha=0.3)
    width = 0.38
    for k, kind in enumerate(policies):
        means = [sum(dist[kind][b]) / len(dist[kind][b]) for b in names]
        ax1.bar([i + (k - 0.5) * width for i in range(len(names))], means, width, label=kind)
    ax1.set_xticks(range(len(names)), names, fontsize="small")
    ax1.set_ylabel(f"distance walked (m), {cfg.eval_rollouts} rollouts")
    ax1.legend(fontsize="small")
    ax1.grid(alpha=0.3, axis="y")
    run.save_figure(fig, "morphology")

    n = f"{cfg.eval_rollouts} rollouts per body" + (
        f" × {cfg.seeds} seeds" if cfg.seeds > 1 else ""
    )
    budget = f"after {cfg.generations} generations of {cfg.popsize}"
    claims = [
        Claim.measure(
            "hebbian-seen",
            f"Hebbian agent's distance walked on the two training bodies ({n}, {budget})",
            dist["hebbian"][seen[0]] + dist["hebbian"][seen[1]],
            paper="Table 2: static is better on the bodies seen in training",
        ),
        Claim.measure(
            "static-seen",
            f"static >= Hebbian on the training bodies ({n}, {budget})",
            dist["static"][seen[0]] + dist["static"][seen[1]],
            paper="Table 2: static is better on the bodies seen in training",
            op=">=",
            threshold={"ref": "hebbian-seen"},
        ),
        Claim.measure(
            "static-unseen",
            f"static agent's distance on the held-out body ({unseen}; {n})",
            dist["static"][unseen],
            paper="Table 2: the static network fails on the unseen morphology",
        ),
        Claim.measure(
            "hebbian-unseen",
            f"Hebbian > static on the held-out body ({unseen}; {n}, {budget})",
            dist["hebbian"][unseen],
            paper="Table 2: the Hebbian network walks on the unseen morphology",
            op=">",
            threshold={"ref": "static-unseen"},
        ),
    ]
    return claims


EXPERIMENT = Experiment(
    name="hebbian-morphology",
    paper=QUICK.paper,
    bibtex=QUICK.bibtex,
    description="MuJoCo Ant-v5 (fitness: distance walked): Hebbian rules and static weights "
    "evolved on the standard body and one with an altered lower leg, both tested on a "
    "held-out body with another leg altered (MJCF edited through a temporary xml_file).",
    minutes={"smoke": 0.25, "quick": 6},
    Config=Config,
    run=run,
    scales={
        "smoke": {
            "hidden": [8],
            "popsize": 4,
            "generations": 2,
            "episode_steps": 30,
            "eval_rollouts": 2,
        },
        "paper": {
            "lr": 0.2,
            "hidden": [128, 64],
            "popsize": 500,
            "generations": 500,
            "episode_steps": 1000,
            "eval_rollouts": 100,
        },
    },
)
