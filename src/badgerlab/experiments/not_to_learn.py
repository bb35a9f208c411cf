"""Learning not to learn: RL^2 agents meta-trained over a grid of bandit lifetimes and priors."""

from __future__ import annotations

from functools import cache
from typing import Annotated

import numpy as np
import torch
from pydantic import Field, model_validator

from badgerlab.experiment import Count, Experiment, ExperimentConfig
from badgerlab.learned import (
    NOT_TO_LEARN_BIBTEX,
    NOT_TO_LEARN_PAPER,
    BanditFamily,
    a2c_loss,
    behaviour,
    init_params,
    oracle,
    oracle_actions,
    rollout,
    sample_tasks,
)
from badgerlab.runs import Claim, RunLike, condition

PriorStd = Annotated[float, Field(gt=0.0, le=100.0)]


class Config(ExperimentConfig):
    seeds: int = Field(3, ge=1, le=100, description="seeds run inside one Run")
    lifetimes: list[Count] = Field(
        [2, 10, 50], min_length=2, max_length=8, description="lifetimes T of the grid, ascending"
    )
    prior_stds: list[PriorStd] = Field(
        [0.1, 1.0, 3.0], min_length=2, max_length=8,
        description="prior widths sigma_p of the risky arm's mean, ascending",
    )  # fmt: skip
    mu0: float = Field(-1.0, ge=-10, le=10, description="prior mean of the risky arm's mean")
    r_d: float = Field(0.0, ge=-10, le=10, description="reward of the deterministic arm")
    sigma_r: float = Field(1.0, gt=0, le=10, description="reward noise of the risky arm")
    hidden: int = Field(32, ge=1, le=1024, description="GRU units of each RL^2 agent")
    lr: float = Field(3e-3, gt=0, le=1, description="Adam learning rate of the meta-training")
    updates: int = Field(500, ge=1, le=1_000_000, description="A2C updates per seed")
    batch: int = Field(128, ge=2, le=65536, description="tasks per condition in each update")
    entropy_coef: float = Field(
        0.05, ge=0, le=1, description="entropy bonus at the start, annealed to 0 at 70%"
    )
    eval_tasks: int = Field(2000, ge=10, le=1_000_000, description="test tasks per condition")
    checkpoint_every: int = Field(100, ge=1, le=1_000_000, description="updates per checkpoint")

    @model_validator(mode="after")
    def _grid(self) -> Config:
        for name in ("lifetimes", "prior_stds"):
            v = getattr(self, name)
            if list(v) != sorted(set(v)):
                raise ValueError(f"{name} must be ascending without repeats, got {v}")
        return self

    def families(self) -> list[BanditFamily]:
        """The grid, lifetime-major: condition index = i_T * len(prior_stds) + i_sigma."""
        return [
            BanditFamily(T, sp, mu0=self.mu0, r_d=self.r_d, sigma_r=self.sigma_r)
            for T in self.lifetimes
            for sp in self.prior_stds
        ]

    def regimes(self) -> dict[str, int]:
        """Condition indices: predictable (long life, narrow prior), short lifetime (wide
        prior), learning (long life, wide prior)."""
        S = len(self.prior_stds)
        last = len(self.lifetimes) - 1
        return {"predictable": last * S, "short": S - 1, "learning": last * S + S - 1}


def _meta_train(cfg: Config, unit, run: RunLike, families, seed: int) -> dict:
    lengths = torch.tensor([f.T for f in families])
    r_d = torch.tensor([f.r_d for f in families])
    t_ref = float(max(cfg.lifetimes))
    state = unit.restore()
    if state is None:
        g = torch.Generator().manual_seed(seed)
        params = init_params(len(families), cfg.hidden, generator=g)
        opt = torch.optim.Adam(params.values(), lr=cfg.lr)
        state = {"params": params, "opt": opt.state_dict(), "g": g, "k": 0}
    params = {k: v.detach().clone().requires_grad_() for k, v in state["params"].items()}
    opt = torch.optim.Adam(params.values(), lr=cfg.lr)
    opt.load_state_dict(state["opt"])
    g, k0 = state["g"], state["k"]
    for k in range(k0, cfg.updates):
        mu, noise = sample_tasks(families, cfg.batch, generator=g)
        ro = rollout(params, families, mu.float(), noise.float(), generator=g, t_ref=t_ref)
        ent = cfg.entropy_coef * max(0.0, 1 - k / (0.7 * cfg.updates))
        loss, _ = a2c_loss(ro, lengths, entropy_coef=ent)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ret = behaviour(ro["actions"], ro["rewards"], mu.float(), lengths, r_d)["return"]
        run.log(k, seed=seed, **{f"return_c{c}": float(r) for c, r in enumerate(ret)})
        if (k + 1) % cfg.checkpoint_every == 0 and k + 1 < cfg.updates:
            unit.checkpoint({"params": params, "opt": opt.state_dict(), "g": g, "k": k + 1})
    return {name: v.detach() for name, v in params.items()}


def _evaluate(cfg: Config, params: dict, families, seed: int) -> dict:
    """Agents and oracle on the same test tasks; plus the short-lifetime agent on the long one."""
    lengths = torch.tensor([f.T for f in families])
    r_d = torch.tensor([f.r_d for f in families])
    g = torch.Generator().manual_seed(10_000 + seed)
    mu, noise = sample_tasks(families, cfg.eval_tasks, generator=g)
    t_ref = float(max(cfg.lifetimes))
    with torch.no_grad():
        ro = rollout(params, families, mu.float(), noise.float(), generator=g, t_ref=t_ref)
        agent = behaviour(ro["actions"], ro["rewards"], mu.float(), lengths, r_d)
        reg = cfg.regimes()
        moved = {k: v[[reg["short"]]] for k, v in params.items()}
        long_f = [families[reg["learning"]]]
        sl = slice(reg["learning"], reg["learning"] + 1)
        tr = rollout(moved, long_f, mu[sl].float(), noise[sl].float(), generator=g, t_ref=t_ref)
        transfer = behaviour(tr["actions"], tr["rewards"], mu[sl].float(), lengths[sl], r_d[sl])[
            "exploration"
        ][0]
    orc = _oracle_behaviour(families, mu, noise, lengths, r_d)
    return {
        "agent": {k: v.double() for k, v in agent.items()},
        "oracle": orc,
        "transfer_exploration": float(transfer),
    }


# The oracle depends only on the family (a frozen dataclass): solve each once, not per seed.
_solve = cache(oracle)


def _oracle_behaviour(families, mu, noise, lengths, r_d) -> dict:
    C, n, t_max = noise.shape
    actions = torch.zeros(C, n, t_max, dtype=torch.long)
    rewards = torch.zeros(C, n, t_max, dtype=torch.float64)
    expected, first = [], []
    for c, f in enumerate(families):
        orc = _solve(f)
        a = oracle_actions(orc, mu[c].numpy(), noise[c].numpy())
        actions[c, :, : f.T] = torch.from_numpy(a)
        risky = mu[c, :, None] + f.sigma_r * noise[c, :, : f.T]
        rewards[c, :, : f.T] = torch.where(actions[c, :, : f.T].bool(), risky, f.r_d)
        expected.append(orc.expected_return)
        first.append(float(orc.act(0, np.array([f.mu0]))[0]))
    out = behaviour(actions, rewards, mu, lengths, r_d)
    out["expected_return"] = torch.tensor(expected, dtype=torch.float64)
    out["explores_first"] = torch.tensor(first, dtype=torch.float64)
    return out


def train(cfg: Config, run: RunLike) -> dict:
    """One unit per seed: all conditions' agents meta-trained together, then tested."""
    families = cfg.families()
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    for unit in run.units([f"seed{s}" for s in seeds], description="not-to-learn"):
        params = _meta_train(cfg, unit, run, families, seeds[unit.index])
        unit.finish(_evaluate(cfg, params, families, seeds[unit.index]))
    return {"per_seed": [run.results[f"seed{s}"] for s in seeds]}


def _stack(results: dict, who: str, key: str) -> torch.Tensor:
    return torch.stack([r[who][key] for r in results["per_seed"]])  # (S, C)


def plots(cfg: Config, results: dict, run: RunLike) -> None:
    import matplotlib.pyplot as plt

    shape = (len(cfg.lifetimes), len(cfg.prior_stds))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), constrained_layout=True)
    for ax, who in zip(axes, ("agent", "oracle"), strict=True):
        li = _stack(results, who, "learning_index").nanmean(0).reshape(shape).numpy()
        im = ax.imshow(np.nan_to_num(li, nan=0.0), origin="lower", vmin=-0.1, vmax=1.0)
        for (i, j), v in np.ndenumerate(li):
            ax.text(j, i, "n/a" if np.isnan(v) else f"{v:.2f}", ha="center", va="center")
        ax.set_xticks(range(shape[1]), [str(s) for s in cfg.prior_stds])
        ax.set_yticks(range(shape[0]), [str(t) for t in cfg.lifetimes])
        ax.set_xlabel("prior width sigma_p")
        ax.set_ylabel("lifetime T")
        ax.set_title(f"learning index: {'RL^2 agent' if who == 'agent' else 'Bayes oracle'}")
    fig.colorbar(im, ax=axes, shrink=0.8)
    run.save_figure(
        fig,
        "phase_diagram",
        caption="Learning index (late risky-arm use when it is better minus when it is worse) "
        "over lifetime and prior width. Look for the agent's map matching the oracle's: near 0 "
        "(hard-coded behaviour) for narrow priors or short lives, near 1 (learning) only in the "
        "long-life, wide-prior corner. n/a: no task had a better risky arm.",
    )
    fig, ax = plt.subplots(figsize=(8, 3.5))
    agent = _stack(results, "agent", "return")
    orc = _stack(results, "oracle", "expected_return")
    labels = [f"T={f.T}\ns={f.sigma_p}" for f in cfg.families()]
    x = np.arange(len(labels))
    ax.bar(x - 0.2, agent.mean(0), 0.4, yerr=agent.std(0) if len(agent) > 1 else None,
           label="RL^2 agent (test tasks)")  # fmt: skip
    ax.bar(x + 0.2, orc.mean(0), 0.4, label="Bayes-optimal expected return")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("lifetime return")
    ax.legend()
    run.save_figure(
        fig,
        "return_vs_oracle",
        caption="Mean lifetime return of the meta-learned agent next to the Bayes-optimal "
        "expectation in every condition. Look for the bars to pair up: 0 wherever the oracle "
        "never explores, and close to the oracle where exploring pays.",
    )


def _regime_claims(cfg: Config, results: dict, regime: str) -> list[Claim]:
    c = cfg.regimes()[regime]
    f = cfg.families()[c]
    ret = _stack(results, "agent", "return")[:, c]
    expl = _stack(results, "agent", "exploration")[:, c]
    no_learn = f.T * max(f.r_d, f.mu0)
    tol = 0.05 * f.T * abs(f.mu0) + 0.1
    first = float(_stack(results, "oracle", "explores_first")[0, c])
    req = [condition(f"the oracle's first pull in (T={f.T}, sigma_p={f.sigma_p}) is the risky "
                     "arm (1) or not (0)", first, "<", 0.5)]  # fmt: skip
    where = f"{regime} regime (T={f.T}, sigma_p={f.sigma_p})"
    return [
        Claim.measure(
            f"{regime}-return-gap",
            f"{where}: |agent return - no-learning return {no_learn:.3g}| <= 0.05*T*|mu0| + 0.1",
            (ret - no_learn).abs().tolist(), paper="hard-coded behaviour is optimal",
            op="<=", threshold=tol, requires=req,
        ),
        Claim.measure(
            f"{regime}-exploration",
            f"{where}: the agent's exploration rate (risky pulls where the risky arm is worse)"
            " <= 0.05", expl.tolist(), paper="no exploration", op="<=", threshold=0.05,
            requires=req,
        ),
    ]  # fmt: skip


def claims(cfg: Config, results: dict) -> list[Claim]:
    c = cfg.regimes()["learning"]
    f = cfg.families()[c]
    ret = _stack(results, "agent", "return")[:, c]
    orc = _stack(results, "oracle", "expected_return")[:, c]
    li = _stack(results, "agent", "learning_index")[:, c]
    oli = float(_stack(results, "oracle", "learning_index")[:, c].mean())
    explores = condition("the oracle's learning index in the learning regime", oli, ">", 0.5)
    where = f"learning regime (T={f.T}, sigma_p={f.sigma_p})"
    transfer = [r["transfer_exploration"] for r in results["per_seed"]]
    long_expl = _stack(results, "agent", "exploration")[:, c].tolist()
    out = [*_regime_claims(cfg, results, "predictable"), *_regime_claims(cfg, results, "short")]
    out += [
        Claim.measure(
            "learning-return-ratio", f"{where}: agent return / Bayes-optimal return >= 0.8",
            (ret / orc).tolist(), paper="meta-learning finds a learning algorithm", op=">=",
            threshold=0.8, requires=[explores],
        ),
        Claim.measure(
            "learning-index", f"{where}: the agent's learning index >= 0.5", li.tolist(),
            paper="learns which arm is better", op=">=", threshold=0.5, requires=[explores],
        ),
        Claim.measure(
            "long-agent-exploration", f"{where}: exploration rate of the agent trained there",
            long_expl,
        ),
        Claim.measure(
            "lifetime-overfitting",
            f"the agent meta-trained on T={min(cfg.lifetimes)} (sigma_p={f.sigma_p}) and tested"
            f" on T={f.T} explores less than the agent trained on T={f.T}", transfer,
            paper="lifetime overfitting: short-lived agents hard-code not exploring",
            op="<", threshold={"ref": "long-agent-exploration"}, requires=["learning-index"],
        ),
        Claim.measure("learning-oracle-return", f"{where}: Bayes-optimal expected return",
                      orc.tolist()),
    ]  # fmt: skip
    return out


EXPERIMENT = Experiment(
    name="not-to-learn",
    paper=NOT_TO_LEARN_PAPER,
    bibtex=NOT_TO_LEARN_BIBTEX,
    description="RL^2 agents (GRU, A2C) meta-trained on two-armed bandits over a grid of "
    "lifetimes and prior widths: hard-coded behaviour where the world is predictable or life "
    "short, learning where it pays, compared with the Bayes-optimal oracle.",
    minutes={"smoke": 0.2, "quick": 5},
    Config=Config,
    train=train,
    plots=plots,
    claims=claims,
    scales={
        "smoke": {
            "seeds": 2,
            "lifetimes": [2, 6],
            "prior_stds": [0.1, 3.0],
            "updates": 30,
            "batch": 32,
            "hidden": 8,
            "eval_tasks": 200,
            "checkpoint_every": 10,
        },
        "paper": {
            "seeds": 5,
            "updates": 5000,
            "batch": 256,
            "hidden": 64,
            "lifetimes": [2, 5, 10, 25, 50, 100],
            "prior_stds": [0.1, 0.5, 1.0, 2.0, 3.0],
        },
    },  # fmt: skip
)
