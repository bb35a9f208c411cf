"""Score against the number of distinct Hebbian rules: per synapse, neuron, layer, or K shared."""

from __future__ import annotations

from typing import Any, Literal

import matplotlib.pyplot as plt
from pydantic import Field, model_validator

from badgerlab.experiment import Count, Experiment
from badgerlab.experiments._hebbian import HebbianESConfig, agents, train_policies
from badgerlab.hebbian import BIBTEX, PAPER, RULES, SHARING, HebbianPolicy
from badgerlab.hebbian.tasks import get_task, vector_env
from badgerlab.hebbian.train import evaluate
from badgerlab.runs import Claim, RunLike

Scheme = Literal["synapse", "post", "pre", "layer", "random_k"]
assert set(Scheme.__args__) == set(SHARING)  # type: ignore[attr-defined]


class Config(HebbianESConfig):
    env: Literal["HalfCheetah-v5", "LunarLanderContinuous-v3"] = Field(
        "HalfCheetah-v5", description="the quick task"
    )
    hidden: list[Count] = Field(
        [32, 32], min_length=1, max_length=4, description="hidden layer widths"
    )
    schemes: list[Scheme] = Field(
        ["synapse", "post", "pre", "layer", "random_k"],
        min_length=1,
        description="sharing schemes compared",
    )
    k: int = Field(16, ge=1, le=100_000, description="rules shared network-wide by random_k")
    rule: RULES.field_type() = Field(  # type: ignore[valid-type]
        "ABCD_lr", description="registered Hebbian rule"
    )
    popsize: int = Field(24, ge=2, le=4096, multiple_of=2, description="ES population (even)")
    generations: int = Field(50, ge=1, le=10_000, description="ES generations per scheme")
    episode_steps: int = Field(200, ge=10, le=1000, description="steps per episode")
    eval_rollouts: int = Field(10, ge=1, le=1000, description="rollouts of each final rule")

    @model_validator(mode="after")
    def _reference(self) -> Config:
        if "synapse" not in self.schemes:
            raise ValueError(
                f"schemes={self.schemes} must include 'synapse', the reference every score "
                "is put beside"
            )
        if len(set(self.schemes)) != len(self.schemes):
            raise ValueError(f"schemes={self.schemes} lists a scheme twice")
        return self


def _policies(cfg: Config, task) -> dict[str, HebbianPolicy]:
    return {
        s: HebbianPolicy(task.spec(cfg.hidden, plastic=True, rule=cfg.rule, sharing=s, k=cfg.k))
        for s in cfg.schemes
    }


def train(cfg: Config, run: RunLike) -> dict[str, Any]:
    """Evolve one rule set per sharing scheme and seed, then roll out each final rule."""
    task = get_task(cfg.env)
    policies = _policies(cfg, task)
    trained = train_policies(
        cfg, run, task, policies, max_steps=cfg.episode_steps,
        description="ES per sharing scheme",
    )  # fmt: skip
    ev = vector_env(task, cfg.eval_rollouts, max_steps=cfg.episode_steps)
    returns: dict[str, list[float]] = {s: [] for s in cfg.schemes}
    for scheme, seed, res in agents(trained):
        seeds = [50_000 * (seed + 1) + n for n in range(cfg.eval_rollouts)]
        out = evaluate(policies[scheme], res["center"], ev, seeds=seeds)
        returns[scheme] += out.returns.tolist()
    ev.close()
    n_rules = {s: policies[s].layout.num_rules for s in cfg.schemes}
    n_params = {s: policies[s].num_params for s in cfg.schemes}
    for s in cfg.schemes:
        run.log(0, scheme=s, rules=n_rules[s], eval_return=sum(returns[s]) / len(returns[s]))
    return {"rules": n_rules, "params": n_params, "returns": returns}


def plots(cfg: Config, results: dict[str, Any], run: RunLike) -> None:
    n_rules, returns = results["rules"], results["returns"]
    run.save_json("sharing", {"rules": n_rules, "returns": returns})
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for s in cfg.schemes:
        r = returns[s]
        mean = sum(r) / len(r)
        std = (sum((v - mean) ** 2 for v in r) / max(1, len(r) - 1)) ** 0.5
        ax.errorbar([n_rules[s]], [mean], yerr=[std], fmt="o", capsize=3, label=s)
    ax.set_xscale("log")
    ax.set_xlabel("distinct rules in the network")
    ax.set_ylabel(f"return ({cfg.eval_rollouts} rollouts)")
    ax.set_title(f"{cfg.env}: sharing of {cfg.rule} rules")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    run.save_figure(
        fig,
        "sharing",
        caption="Return of the final rule against the number of distinct rules in the network "
        "(log scale; bars: std over rollouts and seeds): a flat row means sharing costs little.",
    )


def claims(cfg: Config, results: dict[str, Any]) -> list[Claim]:
    n_rules, returns = results["rules"], results["returns"]
    n = f"{cfg.eval_rollouts} rollouts" + (f" × {cfg.seeds} seeds" if cfg.seeds > 1 else "")
    out = [
        Claim.measure(
            f"return-{s}",
            f"return with sharing '{s}': {n_rules[s]} distinct rules, "
            f"{results['params'][s]} coefficients ({n}, {cfg.generations} generations)",
            returns[s],
            paper="the paper evolves one rule per synapse" if s == "synapse" else None,
        )
        for s in cfg.schemes
    ]
    shared = [s for s in cfg.schemes if s != "synapse"]
    if shared:
        best = max(shared, key=lambda s: sum(returns[s]) / len(returns[s]))
        out.append(
            Claim.measure(
                "best-shared",
                f"the best shared scheme ('{best}', {n_rules[best]} rules) scores at least "
                f"as well as one rule per synapse ({n_rules['synapse']} rules)",
                returns[best],
                paper="the authors told GoodAI that extensive parameter sharing keeps results "
                "good (source post, section 3)",
                op=">=",
                threshold={"ref": "return-synapse"},
            )
        )
    return out


EXPERIMENT = Experiment(
    name="hebbian-sharing",
    paper=PAPER,
    bibtex=BIBTEX,
    description="The source post's open question: how much can Hebbian rules be shared? "
    "Evolve ABCD_lr rules per synapse, per post- or pre-synaptic neuron, per layer, or K "
    "rules with a fixed random assignment, on the quick task, and plot score against the "
    "number of distinct rules.",
    minutes={"smoke": 0.25, "quick": 3},
    Config=Config,
    train=train,
    plots=plots,
    claims=claims,
    scales={
        "smoke": {
            "hidden": [8],
            "popsize": 4,
            "generations": 1,
            "episode_steps": 30,
            "eval_rollouts": 2,
            "k": 4,
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
