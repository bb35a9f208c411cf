"""Zero a whole layer mid-episode: the Hebbian agent regrows its weights, the static one cannot."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from badgerlab.experiment import Count, Experiment
from badgerlab.experiments._hebbian import HebbianESConfig, agents, train_policies
from badgerlab.hebbian import BIBTEX, PAPER, HebbianPolicy
from badgerlab.hebbian.tasks import get_task, vector_env
from badgerlab.hebbian.train import evaluate
from badgerlab.plots import curve_plot
from badgerlab.runs import Claim, RunLike

#: Fixed by the issue: the reward per step over the 100 steps after the perturbation must reach
#: at least half of its level before it.
RECOVERY = 0.5


class Config(HebbianESConfig):
    env: Literal["HalfCheetah-v5", "LunarLanderContinuous-v3"] = Field(
        "HalfCheetah-v5", description="shaped-reward continuous-control task"
    )
    hidden: list[Count] = Field(
        [32, 32], min_length=1, max_length=4, description="hidden layer widths (paper: 128, 64)"
    )
    popsize: int = Field(24, ge=2, le=4096, multiple_of=2, description="ES population (even)")
    generations: int = Field(40, ge=1, le=10_000, description="ES generations per agent")
    episode_steps: int = Field(300, ge=30, le=1000, description="steps per episode")
    perturb_at: int = Field(150, ge=1, le=999, description="step at which a layer is zeroed")
    perturb_layer: int = Field(0, ge=0, le=4, description="layer zeroed (0: input -> hidden 1)")
    window: int = Field(
        100, ge=1, le=500, description="steps averaged before and after the perturbation"
    )
    early: int = Field(20, ge=1, le=100, description="steps counted as 'just after'")
    eval_rollouts: int = Field(10, ge=1, le=1000, description="rollouts of the final agents")

    @model_validator(mode="after")
    def _fits(self) -> Config:
        if self.perturb_at >= self.episode_steps:
            raise ValueError(f"perturb_at={self.perturb_at} must be < episode_steps")
        if self.perturb_layer > len(self.hidden):
            raise ValueError(f"perturb_layer={self.perturb_layer} exceeds the network's layers")
        return self


def _ratio(after: list[float], before: list[float]) -> float | None:
    b = sum(before) / len(before)
    # A ratio against a level that is not positive says nothing about recovery.
    return sum(after) / len(after) / b if b > 0 else None


def _zero_layer(cfg: Config):
    def hook(t, state, members):
        if t == cfg.perturb_at - 1:  # after this step's update: step perturb_at acts on zeros
            weights = list(state.weights)
            weights[cfg.perturb_layer] = torch.zeros_like(weights[cfg.perturb_layer])
            return state._replace(weights=tuple(weights))
        return None

    return hook


def _windows(cfg: Config, r: torch.Tensor) -> dict[str, float]:
    """Mean reward per step before, just after, after and later than the perturbation."""
    p, w = cfg.perturb_at, cfg.window
    return {
        "before": float(r[:, max(0, p - w) : p].mean()),
        "just_after": float(r[:, p : p + cfg.early].mean()),
        "after": float(r[:, p : p + w].mean()),
        "later": float(r[:, p + w :].mean()) if p + w < r.shape[1] else float("nan"),
    }


def train(cfg: Config, run: RunLike) -> dict[str, Any]:
    """Evolve both agents per seed, then roll each out with and without the zeroed layer."""
    task = get_task(cfg.env)
    policies = {
        "hebbian": HebbianPolicy(task.spec(cfg.hidden, plastic=True)),
        "static": HebbianPolicy(task.spec(cfg.hidden, plastic=False)),
    }
    trained = train_policies(
        cfg, run, task, policies, max_steps=cfg.episode_steps, description=f"ES on {cfg.env}"
    )
    ev = vector_env(task, cfg.eval_rollouts, max_steps=cfg.episode_steps)
    rewards: dict[str, list[torch.Tensor]] = {}
    windows: dict[str, dict[str, list[float]]] = {}
    for kind, seed, res in agents(trained):
        seeds = [20_000 * (seed + 1) + n for n in range(cfg.eval_rollouts)]
        for label, hook in ((kind, _zero_layer(cfg)), (f"{kind} unperturbed", None)):
            out = evaluate(policies[kind], res["center"], ev, seeds=seeds, record=True, hook=hook)
            r = out.rewards.float()  # (R, T); 0 after an early end
            rewards.setdefault(label, []).append(r)
            for part, value in _windows(cfg, r).items():
                windows.setdefault(label, {}).setdefault(part, []).append(value)
    ev.close()
    for label, win in windows.items():
        run.log(0, agent=label, **{k: sum(v) / len(v) for k, v in win.items()})
    return {"rewards": {k: torch.cat(v) for k, v in rewards.items()}, "windows": windows}


def plots(cfg: Config, results: dict[str, Any], run: RunLike) -> None:
    run.save_json("windows", results["windows"])
    run.save_figure(
        curve_plot(
            results["rewards"], xlabel="step of the episode", ylabel="reward per step",
            title=f"layer {cfg.perturb_layer} zeroed at step {cfg.perturb_at} "
            f"({cfg.eval_rollouts} rollouts)",
            smooth=5,
        ),
        "perturbation",
        caption=f"Reward per step with layer {cfg.perturb_layer} zeroed at step "
        f"{cfg.perturb_at}, beside the same agents unperturbed: the Hebbian agent's curve "
        "should dip and come back as its rule regrows the weights; the static one cannot.",
    )  # fmt: skip


def claims(cfg: Config, results: dict[str, Any]) -> list[Claim]:
    windows, w = results["windows"], cfg.window

    def ratios(kind: str) -> list[float] | None:
        vals = [
            _ratio([a], [b])
            for a, b in zip(windows[kind]["after"], windows[kind]["before"], strict=True)
        ]
        return None if any(v is None for v in vals) else vals  # type: ignore[return-value]

    rollouts = f"{cfg.eval_rollouts} rollouts" + (f" × {cfg.seeds} seeds" if cfg.seeds > 1 else "")
    out = [
        Claim.measure(
            "hebbian-recovery",
            f"Hebbian agent: reward per step over the {w} steps after layer {cfg.perturb_layer} "
            f"is zeroed, as a fraction of the {w} steps before, >= {RECOVERY} ({rollouts})",
            ratios("hebbian"),
            paper="Najarro & Risi Fig. 5: the Hebbian agent recovers within a few steps",
            op=">=",
            threshold=RECOVERY,
            note="" if ratios("hebbian") else "reward per step before the perturbation <= 0",
        ),
        Claim.measure(
            "static-recovery",
            f"static agent, the same fraction ({rollouts})",
            ratios("static"),
            paper="the static network cannot regrow zeroed weights",
            note="" if ratios("static") else "reward per step before the perturbation <= 0",
        ),
    ]
    for kind in ("hebbian", "static"):
        for part in ("before", "just_after", "later"):
            vals = windows[kind][part]
            out.append(
                Claim.measure(
                    f"{kind}-reward-{part.replace('_', '-')}",
                    f"{kind} agent's mean reward per step {part.replace('_', ' ')} the "
                    f"perturbation ({rollouts})",
                    None if any(v != v for v in vals) else vals,
                )
            )
    return out


EXPERIMENT = Experiment(
    name="hebbian-perturbation",
    paper=PAPER,
    bibtex=BIBTEX,
    description="Train Hebbian and static agents on the quick task, then zero a whole layer's "
    "weights mid-episode and compare reward per step before, just after and later.",
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
            "episode_steps": 60,
            "perturb_at": 30,
            "window": 20,
            "early": 5,
            "eval_rollouts": 2,
        },
        "paper": {
            "lr": 0.2,
            "hidden": [128, 64],
            "popsize": 200,
            "generations": 300,
            "episode_steps": 1000,
            "perturb_at": 500,
            "eval_rollouts": 100,
        },
    },
)
