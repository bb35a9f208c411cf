"""Hebbian vs static on a shaped-reward control task: reward per step rises within an episode."""

from __future__ import annotations

from typing import Any, Literal

import matplotlib.pyplot as plt
import torch
from pydantic import Field

from badgerlab.experiment import Count, Experiment
from badgerlab.experiments._hebbian import HebbianESConfig, agents, train_policies
from badgerlab.hebbian import BIBTEX, PAPER, RULES, SHARING, HebbianPolicy
from badgerlab.hebbian.tasks import get_task, vector_env
from badgerlab.hebbian.train import evaluate
from badgerlab.plots import curve_plot
from badgerlab.runs import Claim, RunLike

Sharing = Literal["synapse", "layer", "post", "pre", "random_k"]
assert set(Sharing.__args__) == set(SHARING)  # type: ignore[attr-defined]


class Config(HebbianESConfig):
    env: Literal["HalfCheetah-v5", "LunarLanderContinuous-v3"] = Field(
        "HalfCheetah-v5", description="shaped-reward continuous-control task"
    )
    hidden: list[Count] = Field(
        [32, 32], min_length=1, max_length=4, description="hidden layer widths (paper: 128, 64)"
    )
    rule: RULES.field_type() = Field(  # type: ignore[valid-type]
        "ABCD_lr", description="registered Hebbian rule (ABCD family: A, AD, ..., ABCD_lr)"
    )
    sharing: Sharing = Field("synapse", description="which synapses share a rule")
    popsize: int = Field(32, ge=2, le=4096, multiple_of=2, description="ES population (even)")
    generations: int = Field(70, ge=1, le=10_000, description="ES generations per agent")
    episode_steps: int = Field(200, ge=10, le=1000, description="steps per training episode")
    eval_rollouts: int = Field(10, ge=1, le=1000, description="rollouts of the final agents")
    sigma: float = Field(0.1, gt=0, le=10, description="initial ES noise σ (reference 0.1)")
    normalise: bool = Field(True, description="divide each layer by its max |w| every step")
    traced_synapses: int = Field(
        12, ge=1, le=100, description="weights of layer 1 drawn in the trajectory plot"
    )


def _policies(cfg: Config, task) -> dict[str, HebbianPolicy]:
    spec = task.spec(
        cfg.hidden, plastic=True, rule=cfg.rule, sharing=cfg.sharing, normalise=cfg.normalise
    )
    return {
        "hebbian": HebbianPolicy(spec),
        "static": HebbianPolicy(task.spec(cfg.hidden, plastic=False)),
    }


def _evaluate(cfg: Config, policy, theta, ev, seed: int, *, trace: bool) -> dict[str, Any]:
    """Rewards per step of `eval_rollouts` lifetimes, and member 0's first-layer weights."""
    seeds = [10_000 * (seed + 1) + n for n in range(cfg.eval_rollouts)]
    recorded: list[torch.Tensor] = []

    def hook(t, state, members):
        if trace and members.numel() and members[0] == 0:
            recorded.append(state.weights[0][0].flatten()[: cfg.traced_synapses].clone())

    out = evaluate(policy, theta, ev, seeds=seeds, record=True, hook=hook)
    weights = torch.stack(recorded) if recorded else torch.zeros(0)
    return {"rewards": out.rewards.float(), "returns": out.returns.tolist(), "trace": weights}


def train(cfg: Config, run: RunLike) -> dict[str, Any]:
    """Evolve both agents per seed, then roll out the final (and the generation-0) agents."""
    task = get_task(cfg.env)
    policies = _policies(cfg, task)
    trained = train_policies(
        cfg, run, task, policies, max_steps=cfg.episode_steps,
        description=f"ES on {cfg.env}", es_options={"sigma": cfg.sigma},
    )  # fmt: skip
    ev = vector_env(task, cfg.eval_rollouts, max_steps=cfg.episode_steps)
    evals: dict[str, list[dict[str, Any]]] = {"hebbian": [], "static": [], "hebbian gen 0": []}
    history: dict[str, list[list[float]]] = {"hebbian": [], "static": []}
    for name, seed, res in agents(trained):
        history[name].append(res["history"]["return_mean"])
        pol = policies[name]
        evals[name].append(_evaluate(cfg, pol, res["center"], ev, seed, trace=name == "hebbian"))
        if name == "hebbian":
            gen0 = _evaluate(cfg, pol, res["initial_center"], ev, seed, trace=False)
            evals["hebbian gen 0"].append(gen0)
    ev.close()
    return {"evals": evals, "history": history}


def plots(cfg: Config, results: dict[str, Any], run: RunLike) -> None:
    evals = results["evals"]
    per_step = {k: torch.cat([e["rewards"] for e in v]) for k, v in evals.items()}
    T = per_step["hebbian"].shape[1]
    run.save_json("rewards_per_step", {k: v.mean(0).tolist() for k, v in per_step.items()})
    run.save_figure(
        curve_plot(
            per_step, xlabel="step of the episode", ylabel="reward per step",
            title=f"{cfg.env}: from random weights, {cfg.eval_rollouts} rollouts",
            smooth=max(1, T // 20),
        ),
        "reward_per_step",
        caption="Reward per step within one lifetime, weights random at step 0: the Hebbian "
        "agent's curve should rise as its rule self-organises the weights; generation 0 is "
        "the rule ES started from, static the evolved fixed weights.",
    )  # fmt: skip
    trace = evals["hebbian"][0]["trace"]
    if trace.numel():
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        ax.plot(trace.numpy(), lw=0.8)
        ax.set_xlabel("step of the episode")
        ax.set_ylabel("weight (layer 1)")
        ax.set_title(f"{cfg.traced_synapses} Hebbian weights over one lifetime")
        ax.grid(alpha=0.3)
        run.save_figure(
            fig, "weight_trajectories",
            caption="First-layer weights of the Hebbian agent over one episode (first seed, "
            "first rollout): they move from random values and settle as the episode goes on.",
        )  # fmt: skip
    curves = {k: torch.tensor(v) for k, v in results["history"].items()}
    run.save_figure(
        curve_plot(
            curves, xlabel="generation", ylabel="population mean return",
            title=f"ES training on {cfg.env} (popsize {cfg.popsize})",
        ),
        "training",
        caption="Population mean return per generation (mean over seeds, band: spread): both "
        "agents get the same ES, population and generations.",
    )  # fmt: skip


def claims(cfg: Config, results: dict[str, Any]) -> list[Claim]:
    evals = results["evals"]
    heb = torch.cat([e["rewards"] for e in evals["hebbian"]])  # (seeds·R, T)
    T = heb.shape[1]
    q = max(1, T // 4)

    def returns(k: str) -> list[float]:
        return [r for e in evals[k] for r in e["returns"]]

    n_roll = f"{cfg.eval_rollouts} rollouts" + (f" × {cfg.seeds} seeds" if cfg.seeds > 1 else "")
    return [
        Claim.measure(
            "hebbian-reward-first-quarter",
            f"Hebbian agent's mean reward per step over the first quarter of a {T}-step "
            f"episode, from random weights ({n_roll})",
            heb[:, :q].mean(1).tolist(),
            paper="weights start random; the agent must learn within its lifetime",
        ),
        Claim.measure(
            "hebbian-reward-last-quarter",
            f"reward per step rises within one episode: last quarter > first quarter ({n_roll})",
            heb[:, -q:].mean(1).tolist(),
            paper="Najarro & Risi: evolved rules self-organise random weights within an episode",
            op=">",
            threshold={"ref": "hebbian-reward-first-quarter"},
        ),
        Claim.measure(
            "hebbian-gen0-return",
            f"return of the generation-0 rule (the ES start), {cfg.env} ({n_roll})",
            returns("hebbian gen 0"),
        ),
        Claim.measure(
            "hebbian-return",
            f"ES raises the Hebbian agent's return above generation 0 after "
            f"{cfg.generations} generations of {cfg.popsize} ({n_roll}; mean ± std over "
            "rollouts)",
            returns("hebbian"),
            op=">",
            threshold={"ref": "hebbian-gen0-return"},
        ),
        Claim.measure(
            "static-return",
            f"static-weight baseline, same ES and budget ({n_roll}; mean ± std over rollouts)",
            returns("static"),
            paper="static baseline",
        ),
    ]


EXPERIMENT = Experiment(
    name="hebbian-quick",
    paper=PAPER,
    bibtex=BIBTEX,
    description="Evolve per-synapse ABCD Hebbian rules (and, as the baseline, static weights) "
    "with ES on a shaped-reward MuJoCo task; weights start random every episode, so reward "
    "per step must rise within the lifetime.",
    minutes={"smoke": 0.25, "quick": 2},
    Config=Config,
    train=train,
    plots=plots,
    claims=claims,
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
