"""Hebbian vs static on a shaped-reward control task: reward per step rises within an episode."""

from __future__ import annotations

from typing import Literal

import matplotlib.pyplot as plt
import torch
from pydantic import Field

from badgerlab.experiment import Count, Experiment
from badgerlab.experiments._hebbian import HebbianESConfig
from badgerlab.hebbian.policy import HebbianPolicy
from badgerlab.hebbian.rules import rules
from badgerlab.hebbian.tasks import get_task, vector_env
from badgerlab.hebbian.train import (
    build_phases,
    evaluate,
    scaled_lr,
    train_phases,
)
from badgerlab.plots import curve_plot
from badgerlab.runs import Claim, Run

RuleName = Literal["A", "AD", "AD_lr", "ABC", "ABC_lr", "ABCD", "ABCD_lr"]
assert set(RuleName.__args__) == set(rules())  # type: ignore[attr-defined]


class Config(HebbianESConfig):
    env: Literal["HalfCheetah-v5", "LunarLanderContinuous-v3"] = Field(
        "HalfCheetah-v5", description="shaped-reward continuous-control task"
    )
    hidden: list[Count] = Field(
        [32, 32], min_length=1, max_length=4, description="hidden layer widths (paper: 128, 64)"
    )
    rule: RuleName = Field("ABCD_lr", description="Hebbian rule of the ABCD family")
    sharing: Literal["synapse", "layer", "post", "pre", "random_k"] = Field(
        "synapse", description="which synapses share a rule"
    )
    popsize: int = Field(32, ge=2, le=4096, multiple_of=2, description="ES population (even)")
    generations: int = Field(70, ge=1, le=10_000, description="ES generations per agent")
    episode_steps: int = Field(200, ge=10, le=1000, description="steps per training episode")
    eval_rollouts: int = Field(10, ge=1, le=1000, description="rollouts of the final agents")
    sigma: float = Field(0.1, gt=0, le=10, description="initial ES noise σ (reference 0.1)")
    normalise: bool = Field(True, description="divide each layer by its max |w| every step")
    traced_synapses: int = Field(
        12, ge=1, le=100, description="weights of layer 1 drawn in the trajectory plot"
    )


def _phases(cfg: Config, envs):
    task = get_task(cfg.env)
    hebb = HebbianPolicy(
        task.spec(
            cfg.hidden, plastic=True, rule=cfg.rule, sharing=cfg.sharing, normalise=cfg.normalise
        )
    )
    static = HebbianPolicy(task.spec(cfg.hidden, plastic=False))
    return build_phases(
        {"hebbian": hebb, "static": static},
        envs,
        seed=cfg.seed,
        seeds=cfg.seeds,
        popsize=cfg.popsize,
        l2=cfg.l2,
        es_options={"sigma": cfg.sigma, "lr": cfg.lr or scaled_lr(cfg.popsize)},
    )


def run(cfg: Config, run: Run) -> list[Claim]:
    task = get_task(cfg.env)
    envs = vector_env(task, cfg.popsize, max_steps=cfg.episode_steps)
    phases = _phases(cfg, envs)
    history = train_phases(
        run,
        phases,
        cfg.generations,
        description=f"ES on {cfg.env}",
        actors=cfg.actors,
        address=cfg.ray_address,
        task=task,
        max_steps=cfg.episode_steps,
    )

    ev = vector_env(task, cfg.eval_rollouts, max_steps=cfg.episode_steps)
    rewards: dict[str, list[torch.Tensor]] = {"hebbian": [], "static": [], "hebbian gen 0": []}
    returns: dict[str, list[float]] = {k: [] for k in rewards}
    traces: list[torch.Tensor] = []
    for name, tr in phases:
        kind, seed = name.split("@")
        seeds = [10_000 * (int(seed) + 1) + n for n in range(cfg.eval_rollouts)]
        centers = [(kind, tr.center)]
        if kind == "hebbian":
            centers.append(("hebbian gen 0", tr.initial_center))
        for label, theta in centers:
            recorded: list[torch.Tensor] = []

            def hook(t, state, members, recorded=recorded):
                # Member 0's first-layer weights: the trajectory plot of one lifetime.
                if members.numel() and members[0] == 0:
                    recorded.append(state.weights[0][0].flatten()[: cfg.traced_synapses].clone())

            out = evaluate(tr.policy, theta, ev, seeds=seeds, record=True, hook=hook)
            rewards[label].append(out.rewards)
            returns[label] += out.returns.tolist()
            if label == "hebbian" and recorded:
                traces.append(torch.stack(recorded))

    per_step = {k: torch.cat(v).float() for k, v in rewards.items()}  # (seeds·R, T)
    T = per_step["hebbian"].shape[1]
    q = max(1, T // 4)
    early = per_step["hebbian"][:, :q].mean(1).tolist()
    late = per_step["hebbian"][:, -q:].mean(1).tolist()

    run.save_json("rewards_per_step", {k: v.mean(0).tolist() for k, v in per_step.items()})
    run.save_figure(
        curve_plot(
            per_step,
            xlabel="step of the episode",
            ylabel="reward per step",
            title=f"{cfg.env}: from random weights, {cfg.eval_rollouts} rollouts",
            smooth=max(1, T // 20),
        ),
        "reward_per_step",
    )
    if traces:
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        ax.plot(traces[0].numpy(), lw=0.8)
        ax.set_xlabel("step of the episode")
        ax.set_ylabel("weight (layer 1)")
        ax.set_title(f"{cfg.traced_synapses} Hebbian weights over one lifetime")
        ax.grid(alpha=0.3)
        run.save_figure(fig, "weight_trajectories")
    curves = {
        kind: torch.tensor(
            [[m["return_mean"] for m in history[n]] for n, _ in phases if n.startswith(kind)]
        )
        for kind in ("hebbian", "static")
    }
    run.save_figure(
        curve_plot(
            curves,
            xlabel="generation",
            ylabel="population mean return",
            title=f"ES training on {cfg.env} (popsize {cfg.popsize})",
        ),
        "training",
    )

    n_roll = f"{cfg.eval_rollouts} rollouts" + (f" × {cfg.seeds} seeds" if cfg.seeds > 1 else "")
    return [
        Claim.measure(
            "hebbian-reward-first-quarter",
            f"Hebbian agent's mean reward per step over the first quarter of a {T}-step "
            f"episode, from random weights ({n_roll})",
            early,
            paper="weights start random; the agent must learn within its lifetime",
        ),
        Claim.measure(
            "hebbian-reward-last-quarter",
            f"reward per step rises within one episode: last quarter > first quarter ({n_roll})",
            late,
            paper="Najarro & Risi: evolved rules self-organise random weights within an episode",
            op=">",
            threshold={"ref": "hebbian-reward-first-quarter"},
        ),
        Claim.measure(
            "hebbian-gen0-return",
            f"return of the generation-0 rule (the ES start), {cfg.env} ({n_roll})",
            returns["hebbian gen 0"],
        ),
        Claim.measure(
            "hebbian-return",
            f"ES raises the Hebbian agent's return above generation 0 after "
            f"{cfg.generations} generations of {cfg.popsize} ({n_roll}; mean ± std over "
            "rollouts)",
            returns["hebbian"],
            op=">",
            threshold={"ref": "hebbian-gen0-return"},
        ),
        Claim.measure(
            "static-return",
            f"static-weight baseline, same ES and budget ({n_roll}; mean ± std over rollouts)",
            returns["static"],
            paper="static baseline",
        ),
    ]


EXPERIMENT = Experiment(
    name="hebbian-quick",
    paper="Najarro & Risi, Meta-Learning through Hebbian Plasticity in Random Networks, "
    "NeurIPS 2020",
    bibtex="""@inproceedings{najarro2020hebbian,
  title={Meta-Learning through Hebbian Plasticity in Random Networks},
  author={Najarro, Elias and Risi, Sebastian},
  booktitle={Advances in Neural Information Processing Systems},
  year={2020},
  note={arXiv:2007.02686}
}""",
    description="Evolve per-synapse ABCD Hebbian rules (and, as the baseline, static weights) "
    "with ES on a shaped-reward MuJoCo task; weights start random every episode, so reward "
    "per step must rise within the lifetime.",
    minutes={"smoke": 0.25, "quick": 2},
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
            "popsize": 200,
            "generations": 300,
            "episode_steps": 1000,
            "eval_rollouts": 100,
        },
    },
)
