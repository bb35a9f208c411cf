"""Rediscover Oja's rule: ES over the 27-term polynomial rule, an L1 phase, a refit, an oracle."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from pydantic import Field, model_validator

from badgerlab.evolve import ES, get_es
from badgerlab.experiment import Experiment, ExperimentConfig
from badgerlab.plasticity import discover as D
from badgerlab.plasticity import polynomial as P
from badgerlab.plots import curve_plot
from badgerlab.runs import Claim, RunLike, condition

PAPER = (
    "Confavreux, Zenke, Agnes, Lillicrap & Vogels, A meta-learning approach to (re)discover "
    "plasticity rules that carve a desired function into a neural network, NeurIPS 2020"
)
BIBTEX = """@inproceedings{confavreux2020metalearning,
  title={A meta-learning approach to (re)discover plasticity rules that carve a desired
         function into a neural network},
  author={Confavreux, Basile and Zenke, Friedemann and Agnes, Everton J. and Lillicrap,
          Timothy and Vogels, Tim P.},
  booktitle={Advances in Neural Information Processing Systems},
  year={2020}
}"""
I110, I021 = P.term_index(1, 1, 0), P.term_index(0, 2, 1)


class Config(ExperimentConfig):
    seeds: int = Field(3, ge=1, le=100, description="seeds run inside one Run")
    n_inputs: int = Field(5, ge=2, le=100, description="inputs N of the linear neuron")
    steps: int = Field(200, ge=5, le=10_000, description="inner-loop steps T per lifetime")
    eta: float = Field(0.05, gt=0, le=1, description="inner learning rate η")
    cap: float = Field(2.0, gt=0, le=100, description="meta-loss cap per task")
    batch: int = Field(16, ge=1, le=1024, description="covariances per generation")
    es: ES.field_type() = Field("openai-es", description="ES of badgerlab.evolve")
    popsize: int = Field(32, ge=2, le=4096, multiple_of=2, description="ES population (even)")
    sigma: float = Field(0.1, gt=0, le=10, description="ES noise σ")
    lr: float = Field(0.02, gt=0, le=10, description="ES Adam learning rate α")
    generations: int = Field(250, ge=1, le=100_000, description="plain ES generations")
    l1_generations: int = Field(100, ge=1, le=100_000, description="generations with L1 prox")
    refit_generations: int = Field(
        100, ge=0, le=100_000, description="generations refitting the kept terms (no L1)"
    )
    l1: float = Field(1.0, gt=0, le=100, description="L1 weight λ (prox step α·λ)")
    keep: float = Field(
        0.1, gt=0, lt=1, description="after the L1 phase a term is kept if |θ| > keep·max|θ|"
    )
    eval_tasks: int = Field(64, ge=1, le=10_000, description="unseen covariances evaluated")
    oracle_trajectories: int = Field(64, ge=1, le=10_000, description="Oja runs regressed")
    checkpoint_every: int = Field(25, ge=1, le=10_000, description="generations per checkpoint")

    @model_validator(mode="after")
    def _es_is_openai(self):
        if self.es not in ("openai-es", "openai-es-ranks"):
            raise ValueError(f"es must be an OpenAI-ES (the L1 prox uses its lr), got {self.es}")
        return self


def _phase(cfg: Config, gen: int) -> str:
    if gen < cfg.generations:
        return "es"
    return "l1" if gen < cfg.generations + cfg.l1_generations else "refit"


def _search(cfg: Config, run: RunLike, unit, seed: int, total: int) -> dict:
    es = get_es(cfg.es)
    state = unit.restore()
    if state is None:
        g = torch.Generator().manual_seed(seed)
        theta0 = 0.01 * torch.randn(P.NUM_TERMS, generator=g)
        es_state = es.init(
            theta0, popsize=cfg.popsize, sigma=cfg.sigma, lr=cfg.lr, shaping="centred_ranks"
        )
        state = {"es": es_state, "g": g, "gen": 0, "thetas": [], "losses": [], "mask": None}
    es_state, g = state["es"], state["g"]
    for gen in range(state["gen"], total):
        phase = _phase(cfg, gen)
        if phase == "refit" and state["mask"] is None:
            c = es.center(es_state)
            state["mask"] = (c.abs() > cfg.keep * c.abs().max()).float()
        es_state, loss = D.es_generation(
            cfg.es, es_state, g, batch=cfg.batch, n_inputs=cfg.n_inputs, steps=cfg.steps,
            eta=cfg.eta, cap=cfg.cap, l1=cfg.l1 if phase == "l1" else 0.0,
            mask=state["mask"] if phase == "refit" else None,
        )  # fmt: skip
        state["thetas"].append(es.center(es_state).clone())
        state["losses"].append(loss)
        c = state["thetas"][-1]
        run.log(unit.index * total + gen, seed=seed, gen=gen, phase=phase, meta_loss=loss,
                theta_110=float(c[I110]), theta_021=float(c[I021]))  # fmt: skip
        if (gen + 1) % cfg.checkpoint_every == 0 and gen + 1 < total:
            state.update(es=es_state, g=g, gen=gen + 1)
            unit.checkpoint(state)
    c = es.center(es_state)
    mask = state["mask"] if state["mask"] is not None else (c.abs() > cfg.keep * c.abs().max())
    return {"theta": c, "thetas": torch.stack(state["thetas"]),
            "losses": torch.tensor(state["losses"]), "support": mask.float()}  # fmt: skip


def _evaluate(cfg: Config, theta: torch.Tensor, seed: int) -> dict:
    """cos²(w_T, u₁) on unseen covariances (a generator no training step used)."""
    g = torch.Generator().manual_seed(10_000 + seed)
    tasks = D.sample_tasks(cfg.eval_tasks, n_inputs=cfg.n_inputs, steps=cfg.steps, generator=g)
    out = {}
    for name, th in (("discovered", theta), ("oja", P.oja_theta())):
        traj = P.run_rule(th, tasks.w0, tasks.xs, eta=cfg.eta, trace=True)  # (T+1, B, N)
        out[name] = {"cos2": D.cos2_pc1(traj, tasks.pc1).mean(1), "norm": traj.norm(dim=-1)[:, 0]}
    return out


def _oracle(cfg: Config, seed: int) -> float:
    """Simulate Oja from random w (several steps each), regress Δw: max |θ̂ − θ_Oja|."""
    g = torch.Generator().manual_seed(20_000 + seed)
    n, s = cfg.oracle_trajectories, 5
    tasks = D.sample_tasks(n, n_inputs=cfg.n_inputs, steps=s, generator=g)
    # Spread |w| over (0, 1.5) so every monomial varies; larger |w| makes Oja's y²w diverge.
    scale = 1.5 * torch.rand(n, 1, generator=g, dtype=torch.float64)
    w0 = scale * torch.randn(n, cfg.n_inputs, generator=g, dtype=torch.float64) / cfg.n_inputs**0.5
    traj = P.run_rule(P.oja_theta(dtype=torch.float64), w0, tasks.xs.double(), eta=cfg.eta,
                      clip=1e9, trace=True)  # fmt: skip  # (s+1, n, N)
    x = tasks.xs.double().reshape(-1, cfg.n_inputs)
    w, dw = traj[:-1].reshape(-1, cfg.n_inputs), (traj[1:] - traj[:-1]).reshape(-1, cfg.n_inputs)
    theta = P.fit_rule(x, w, dw, eta=cfg.eta)
    return float((theta - P.oja_theta(dtype=torch.float64)).abs().max())


def train(cfg: Config, run: RunLike) -> dict:
    """One unit per seed: ES → L1 phase → refit on the kept terms; then unseen tasks, oracle."""
    total = cfg.generations + cfg.l1_generations + cfg.refit_generations
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    for unit in run.units([f"seed{s}" for s in seeds], description="rule discovery"):
        seed = seeds[unit.index]
        out = _search(cfg, run, unit, seed, total)
        out["eval"] = _evaluate(cfg, out["theta"], seed)
        out["oracle_error"] = _oracle(cfg, seed)
        unit.finish(out)
    return {"per_seed": [run.results[f"seed{s}"] for s in seeds], "seeds": seeds}


def plots(cfg: Config, results: dict, run: RunLike) -> None:
    r0 = results["per_seed"][0]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    th = r0["thetas"]  # (G, 27)
    for i in range(P.NUM_TERMS):
        if i not in (I110, I021):
            ax.plot(th[:, i].numpy(), color="grey", lw=0.6, alpha=0.6)
    ax.plot(th[:, I110].numpy(), color="C0", lw=2, label="θ_110 (Oja: +1)")
    ax.plot(th[:, I021].numpy(), color="C3", lw=2, label="θ_021 (Oja: −1)")
    for x in (cfg.generations, cfg.generations + cfg.l1_generations):
        ax.axvline(x, color="k", ls=":", lw=0.8)
    ax.set_xlabel("generation")
    ax.set_ylabel("coefficient")
    ax.set_title(f"27 coefficients over meta-training (seed {results['seeds'][0]})")
    ax.legend()
    run.save_figure(fig, "theta", caption="Each θ_αβγ over ES generations (dotted: start of the "
                    "L1 phase and of the refit); look for θ_110 and θ_021 settling at equal and "
                    "opposite values while the grey terms are driven to 0.")  # fmt: skip
    run.save_figure(
        curve_plot({"meta-loss": torch.stack([r["losses"] for r in results["per_seed"]])},
                   xlabel="generation", ylabel="population mean meta-loss",
                   title="meta-loss (1 − cos² + (|w|−1)², capped)", logy=True),
        "meta_loss",
        caption="Mean meta-loss of the ES population per generation (band: seeds); look for a "
        "fall by an order of magnitude, a bump when the L1 prox starts, recovery in the refit.",
    )  # fmt: skip
    ev = r0["eval"]
    curves = {f"{k} cos²(w, PC1)": ev[k]["cos2"] for k in ("discovered", "oja")}
    curves |= {f"{k} |w| (task 0)": ev[k]["norm"] for k in ("discovered", "oja")}
    run.save_figure(
        curve_plot(curves, xlabel="inner step", ylabel="value",
                   title="w under the discovered rule vs Oja's, unseen covariances"),
        "trajectory",
        caption="cos²(w_t, PC1) averaged over unseen covariances and |w_t| of one of them; look "
        "for the discovered rule's curves lying on top of Oja's, both reaching 1.",
    )  # fmt: skip


def claims(cfg: Config, results: dict) -> list[Claim]:
    per = results["per_seed"]
    t110 = [float(r["theta"][I110]) for r in per]
    ratio_err = [abs(float(r["theta"][I021]) / t + 1) if t != 0 else float("nan")
                 for r, t in zip(per, t110, strict=True)]  # fmt: skip
    kept = [float(r["support"].sum()) for r in per]
    cos2 = [float(r["eval"]["discovered"]["cos2"][-1]) for r in per]
    oja = [float(r["eval"]["oja"]["cos2"][-1]) for r in per]
    return [
        Claim.measure("oja-ratio", "the discovered rule is Oja's: |θ_021/θ_110 + 1| < 0.1 "
                      "(θ_110 > 0)", ratio_err, paper="Oja: θ_110 = 1, θ_021 = −1", op="<",
                      threshold=0.1,
                      requires=[condition("smallest θ_110 over seeds", min(t110), ">", 0.0)]),
        Claim.measure("sparse-terms", f"after the L1 phase at most 3 terms have |θ| > "
                      f"{cfg.keep}·max|θ|", kept, paper="Oja has 2 terms", op="<=", threshold=3),
        Claim.measure("oja-cos2", f"oja's own cos²(w_T, PC1) after T = {cfg.steps} on unseen "
                      "covariances (does T suffice?)", oja, op=">", threshold=0.95),
        Claim.measure("unseen-cos2", "the discovered rule on unseen covariances: cos²(w_T, PC1) "
                      "> 0.95", cos2, op=">", threshold=0.95, requires=["oja-cos2"]),
        Claim.measure("oracle", "least squares of simulated Oja Δw on the 27 monomials recovers "
                      "θ_Oja: max error < 1e-6", [r["oracle_error"] for r in per], op="<",
                      threshold=1e-6),
        Claim.measure("final-meta-loss", "population meta-loss in the last generation",
                      [float(r["losses"][-1]) for r in per]),
    ]  # fmt: skip


EXPERIMENT = Experiment(
    name="plasticity-discovery",
    paper=PAPER,
    bibtex=BIBTEX,
    description="ES over the 27 coefficients of a polynomial plasticity rule for a linear "
    "neuron, scored by how well the neuron finds the first principal component; an L1 phase "
    "makes the rule sparse and it comes out as Oja's. A regression oracle shows θ is "
    "identifiable.",
    minutes={"smoke": 0.2, "quick": 3},
    Config=Config,
    train=train,
    plots=plots,
    claims=claims,
    scales={
        "smoke": {
            "seeds": 2,
            "steps": 40,
            "batch": 4,
            "popsize": 8,
            "generations": 6,
            "l1_generations": 4,
            "refit_generations": 4,
            "eval_tasks": 8,
            "checkpoint_every": 4,
        },
        "paper": {
            "seeds": 5,
            "generations": 1000,
            "l1_generations": 300,
            "refit_generations": 300,
            "batch": 32,
            "popsize": 64,
        },
    },  # fmt: skip
)
