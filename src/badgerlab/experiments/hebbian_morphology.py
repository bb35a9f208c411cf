"""Bodies: evolve on two, test on a held-out altered body; Hebbian rules vs static weights.

Quick scale runs HalfCheetah-v5 bodies (a static agent learns to run there within minutes);
paper scale is Ant-v5 with the paper's settings.
"""

from __future__ import annotations

from typing import Any, Literal

import matplotlib.pyplot as plt
from pydantic import Field, model_validator

from badgerlab.experiment import Count, Experiment
from badgerlab.experiments._hebbian import HebbianESConfig, agents, train_policies
from badgerlab.hebbian import BIBTEX, PAPER, HebbianPolicy
from badgerlab.hebbian.envs import ANT_LEGS, CHEETAH_LIMBS
from badgerlab.hebbian.tasks import get_task, vector_env
from badgerlab.hebbian.train import evaluate
from badgerlab.runs import Claim, RunLike, condition

#: Body family → (task, the parts an edit may alter).
FAMILIES = {
    "half-cheetah": ("HalfCheetah-v5/distance", CHEETAH_LIMBS),
    "ant": ("Ant-v5", tuple(ANT_LEGS)),
}
Part = Literal["bthigh", "bshin", "bfoot", "fthigh", "fshin", "ffoot",
               "front_left", "front_right", "back_left", "back_right"]  # fmt: skip
assert set(Part.__args__) == {p for _, parts in FAMILIES.values() for p in parts}  # type: ignore[attr-defined]
#: Fixed before measuring (issue 13): an agent that covers less than this in one episode does
#: not walk, and a comparison between two such agents says nothing about the paper's claim.
WALKS = 2.0


class Config(HebbianESConfig):
    family: Literal["half-cheetah", "ant"] = Field(
        "half-cheetah", description="body family (paper: ant)"
    )
    hidden: list[Count] = Field(
        [32, 32], min_length=1, max_length=4, description="hidden widths (paper: 128, 64)"
    )
    seeds: int = Field(3, ge=1, le=100, description="seeds run inside one Run")
    popsize: int = Field(24, ge=2, le=4096, multiple_of=2, description="ES population (even)")
    # Chosen per agent on the training bodies, by the mean final distance over two tuning seeds
    # (100, 101) the reported seeds do not use, from σ 0.1 with lr 0.007 / 0.02 / 0.07 (the
    # reference's scaled to 24) / 0.2 and σ 0.01 / 0.03 / 0.2 beside: Hebbian 0.07 (10.9 m),
    # static 0.007 (19.4 m); both agents the same budget (see the README).
    lr: float | None = Field(
        0.07, gt=0, le=10, description="Hebbian agent's ES lr (None: the reference's scaled)"
    )
    static_lr: float | None = Field(
        0.007, gt=0, le=10, description="static agent's ES lr (None: the same as lr)"
    )
    generations: int = Field(80, ge=1, le=10_000, description="ES generations per agent")
    episode_steps: int = Field(200, ge=10, le=1000, description="steps per episode")
    train_part: Part = Field(
        "bthigh", description="limb (cheetah) or leg (ant) altered in the second training body"
    )
    test_part: Part = Field("fthigh", description="limb or leg altered in the held-out body")
    factor: float = Field(
        0.5, gt=0, le=5, description="length factor of the altered part: < 1 shortened"
    )
    eval_rollouts: int = Field(10, ge=1, le=1000, description="rollouts per body of each agent")

    @model_validator(mode="after")
    def _parts(self) -> Config:
        parts = FAMILIES[self.family][1]
        for name in ("train_part", "test_part"):
            if getattr(self, name) not in parts:
                raise ValueError(
                    f"{name}={getattr(self, name)!r} is not a part of the {self.family} body; "
                    f"expected one of {list(parts)}"
                )
        if self.train_part == self.test_part:
            raise ValueError("test_part must differ from train_part: the test body is held out")
        return self


def _bodies(cfg: Config) -> dict[str, dict[str, float] | None]:
    return {
        "standard": None,
        f"{cfg.train_part} x{cfg.factor:g}": {cfg.train_part: cfg.factor},
        f"{cfg.test_part} x{cfg.factor:g} (held out)": {cfg.test_part: cfg.factor},
    }


def train(cfg: Config, run: RunLike) -> dict[str, Any]:
    """Evolve both agents on the two training bodies per seed, then test them on all three."""
    task = get_task(FAMILIES[cfg.family][0])
    bodies = _bodies(cfg)
    names = list(bodies)
    policies = {
        "hebbian": HebbianPolicy(task.spec(cfg.hidden, plastic=True)),
        "static": HebbianPolicy(task.spec(cfg.hidden, plastic=False)),
    }
    trained = train_policies(
        cfg, run, task, policies, max_steps=cfg.episode_steps,
        bodies=[bodies[n] for n in names[:2]], description=f"ES on {task.env_id} bodies",
        policy_options={"static": {"lr": cfg.static_lr}}
        if cfg.static_lr is not None and cfg.es.startswith("openai-es") else None,
    )  # fmt: skip
    scale = task.return_scale
    dist: dict[str, dict[str, list[float]]] = {k: {n: [] for n in names} for k in policies}
    for body, legs in bodies.items():
        ev = vector_env(task, cfg.eval_rollouts, max_steps=cfg.episode_steps, bodies=[legs])
        for name, seed, res in agents(trained):
            seeds = [30_000 * (seed + 1) + n for n in range(cfg.eval_rollouts)]
            out = evaluate(policies[name], res["center"], ev, seeds=seeds)
            dist[name][body] += (out.returns * scale).tolist()
        ev.close()
    for kind in policies:
        run.log(0, agent=kind, **{b: sum(v) / len(v) for b, v in dist[kind].items()})
    history = {
        key: [r * scale for r in res["history"]["return_mean"]] for key, res in trained.items()
    }
    return {"env": task.env_id, "bodies": names, "distances": dist, "history": history}


def plots(cfg: Config, results: dict[str, Any], run: RunLike) -> None:
    names, dist = results["bodies"], results["distances"]
    run.save_json("distances", dist)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4))
    for key, curve in results["history"].items():
        ax0.plot(curve, label=key)
    ax0.axhline(WALKS, color="grey", ls="--", lw=0.8, label=f"walks: {WALKS:g} m")
    ax0.set_xlabel("generation")
    ax0.set_ylabel("population mean distance (m), seen bodies")
    ax0.legend(fontsize="small")
    ax0.grid(alpha=0.3)
    width = 0.38
    for k, kind in enumerate(dist):
        means = [sum(dist[kind][b]) / len(dist[kind][b]) for b in names]
        ax1.bar([i + (k - 0.5) * width for i in range(len(names))], means, width, label=kind)
    ax1.set_xticks(range(len(names)), names, fontsize="small")
    ax1.set_ylabel(f"distance walked (m), {cfg.eval_rollouts} rollouts")
    ax1.legend(fontsize="small")
    ax1.grid(alpha=0.3, axis="y")
    run.save_figure(
        fig,
        "morphology",
        caption=f"{results.get('env', 'Ant-v5')}. Left: distance walked per generation on the "
        "two training bodies (population "
        "mean, each agent and seed). Right: final agents on each body, the held-out one last. "
        f"The comparisons are judged only when the static agent walks ≥ {WALKS:g} m on the "
        "training bodies.",
    )


def claims(cfg: Config, results: dict[str, Any]) -> list[Claim]:
    names, dist = results["bodies"], results["distances"]
    seen, unseen = names[:2], names[2]
    static_seen = dist["static"][seen[0]] + dist["static"][seen[1]]
    walks = condition(
        "static agent's mean distance on the training bodies (m)",
        sum(static_seen) / len(static_seen),
        ">=",
        WALKS,
    )
    n = f"{cfg.eval_rollouts} rollouts per body" + (
        f" × {cfg.seeds} seeds" if cfg.seeds > 1 else ""
    )
    budget = (
        f"{results.get('env', 'Ant-v5')}, after {cfg.generations} generations of "
        f"{cfg.popsize}, ES lr {cfg.lr if cfg.lr is not None else 'scaled'} Hebbian / "
        f"{cfg.static_lr if cfg.static_lr is not None else 'the same'} static"
    )
    return [
        Claim.measure(
            "hebbian-seen",
            f"Hebbian agent's distance walked on the two training bodies ({n}, {budget})",
            dist["hebbian"][seen[0]] + dist["hebbian"][seen[1]],
            paper="Table 2: static is better on the bodies seen in training",
        ),
        Claim.measure(
            "static-seen",
            f"static >= Hebbian on the training bodies ({n}, {budget}); judged when the static "
            f"agent walks >= {WALKS:g} m there",
            static_seen,
            paper="Table 2: static is better on the bodies seen in training",
            op=">=",
            threshold={"ref": "hebbian-seen"},
            requires=[walks],
        ),
        Claim.measure(
            "static-unseen",
            f"static agent's distance on the held-out body ({unseen}; {n})",
            dist["static"][unseen],
            paper="Table 2: the static network fails on the unseen morphology",
        ),
        Claim.measure(
            "hebbian-unseen",
            f"Hebbian > static on the held-out body ({unseen}; {n}, {budget}); judged when the "
            f"static agent walks >= {WALKS:g} m on the training bodies",
            dist["hebbian"][unseen],
            paper="Table 2: the Hebbian network walks on the unseen morphology",
            op=">",
            threshold={"ref": "static-unseen"},
            requires=[walks],
        ),
    ]


EXPERIMENT = Experiment(
    name="hebbian-morphology",
    paper=PAPER,
    bibtex=BIBTEX,
    description="MuJoCo bodies (fitness: distance walked): Hebbian rules and static weights "
    "evolved on the standard body and one with an altered limb, both tested on a held-out "
    "body with another limb altered (MJCF edited through a temporary xml_file). Quick scale: "
    "HalfCheetah-v5 with a halved thigh; paper scale: Ant-v5 with a halved lower leg.",
    minutes={"smoke": 0.25, "quick": 7},
    Config=Config,
    train=train,
    plots=plots,
    claims=claims,
    scales={
        "smoke": {
            "seeds": 1,
            "hidden": [8],
            "popsize": 4,
            "generations": 2,
            "episode_steps": 30,
            "eval_rollouts": 2,
        },
        "paper": {
            "family": "ant",
            "train_part": "front_left",
            "test_part": "front_right",
            "lr": 0.2,
            "static_lr": None,
            "hidden": [128, 64],
            "popsize": 500,
            "generations": 500,
            "episode_steps": 1000,
            "eval_rollouts": 100,
        },
    },
)
