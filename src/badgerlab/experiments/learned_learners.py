"""Learned learners meta-trained on digits tasks, meta-tested on unseen tasks against tuned
SGD and Adam: the per-parameter MLP learned optimizer (Metz et al. 2020,
https://arxiv.org/abs/2009.11243).

Meta-training (one unit per seed, checkpointed every ``checkpoint_every`` generations): OpenAI-ES
(antithetic, centred ranks, Adam) or PES over truncations (raw differences) on
`metatrain.TaskFamily` digits tasks; the meta-loss is the final log training loss after T steps,
floored at ``min_loss`` (a solved task stops pulling). The head starts random except two hidden
units set to a per-tensor normalised momentum step of size ``init_step`` (0 = fully random), and
``lopt-init`` reports that starting head on the meta-test, so what meta-training added is
visible. Meta-test (one unit per seed): wine, breast_cancer, iris, mnist1d (an MLP of
``test_width``), a digits task with a ``wide_width`` network and one run for ``horizon_factor``×T,
all from digits' test split or datasets never trained on. SGD and Adam run the same steps with
the lr of their grid that gives the lowest final training loss on that task.

MPLP (Randazzo, Niklasson & Mordvintsev 2020, https://arxiv.org/abs/2007.00970) runs as two
more families of units (few-shot sinusoids, classification), meta-trained through the unrolled
inner loop and tested on their own tasks: see `badgerlab.experiments._mplp` (``--set mplp=false``
leaves them out).

Another learner family plugs in as its own group of units: an entry in `META_TRAIN` (its unit
meta-trains it for one seed) and its learner in `_test_seed`.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from pydantic import Field, model_validator

from badgerlab.evolve.openai_es import openai_es_ask, openai_es_init, openai_es_tell
from badgerlab.experiment import Experiment, ExperimentConfig
from badgerlab.experiments import _mplp
from badgerlab.learned.lopt import (
    DECAYS,
    adam_head,
    init_theta,
    lopt_step,
    mlp_head,
    theta_from_vector,
    theta_to_vector,
)
from badgerlab.learned.metatrain import (
    LOPT_BIBTEX,
    LOPT_PAPER,
    TaskFamily,
    dataset_task,
    hidden_of,
    init_inner,
    pes_generation,
    pes_init,
    population_unroll,
    replicate,
    sample_task,
    unroll,
    unroll_head,
)
from badgerlab.runs import Claim, RunLike, condition

DATASETS = ("wine", "breast_cancer", "iris", "mnist1d")
# Fixed by the issue before measuring.
ADAM_FACTOR = 1.1  # (1) learned final loss <= 1.1 x tuned Adam's on held-out tasks
LEARNED_FRACTION = 0.5  # a baseline learned: final loss <= half the initial loss
LearningRate = Annotated[float, Field(gt=0, le=100)]
Dim = Annotated[int, Field(ge=1, le=64)]


class Config(ExperimentConfig):
    seeds: int = Field(3, ge=1, le=20, description="seeds run inside one Run")
    method: Literal["es", "pes"] = Field("es", description="outer estimator: ES or PES")
    hidden: int = Field(8, ge=1, le=64, description="hidden units of the learned head")
    init_out_scale: float = Field(
        100.0, gt=0, le=1e4, description="multiplier of the head's output weights at init"
    )
    init_step: float = Field(
        0.03,
        ge=0,
        le=1,
        description="0: random head; > 0: two hidden units start as a per-tensor normalised "
        "momentum step of this size (the rest random)",
    )
    popsize: int = Field(16, ge=2, le=256, description="ES population (even)")
    tasks_per_generation: int = Field(
        2, ge=1, le=64, description="digits tasks each ES generation is scored on"
    )
    generations: int = Field(40, ge=1, le=10_000, description="outer updates (ES generations)")
    steps: int = Field(40, ge=2, le=2000, description="meta-training horizon T (inner steps)")
    truncation: int = Field(10, ge=1, le=2000, description="PES truncation length K")
    sigma: float = Field(0.05, gt=0, le=1, description="ES noise scale σ")
    shaping: Literal["none", "centred_ranks"] = Field(
        "centred_ranks", description="ES fitness shaping (PES needs 'none': raw differences)"
    )
    es_lr: float = Field(0.05, gt=0, le=1, description="Adam step of the outer update")
    max_examples: int = Field(256, ge=16, le=2000, description="examples per digits task")
    dims: tuple[Dim, ...] = Field(
        (8, 16, 32), min_length=1, description="input dimensions of the digits projections"
    )
    objective: Literal["mean", "final"] = Field(
        "final", description="meta-loss: final log-loss of the unroll, or its mean over steps"
    )
    normalise: bool = Field(
        True, description="scale the head's features by their second moment per tensor"
    )
    min_loss: float = Field(
        1e-3, gt=0, le=1, description="floor of the meta-loss log L: a task below it is solved"
    )
    test_examples: int = Field(512, ge=16, le=5000, description="max examples per test task")
    datasets: tuple[Literal["wine", "breast_cancer", "iris", "mnist1d"], ...] = Field(
        DATASETS, min_length=1, description="unseen datasets of the meta-test"
    )
    test_width: int = Field(32, ge=1, le=1024, description="hidden width on unseen datasets")
    wide_width: int = Field(128, ge=1, le=4096, description="hidden width of the wide task")
    horizon_factor: int = Field(5, ge=2, le=50, description="long-horizon test: factor × T")
    sgd_grid: tuple[LearningRate, ...] = Field(
        (0.1, 0.3, 1.0, 3.0, 10.0, 30.0), min_length=1, description="SGD learning rates tried"
    )
    adam_grid: tuple[LearningRate, ...] = Field(
        (3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0), min_length=1, description="Adam learning rates tried"
    )
    checkpoint_every: int = Field(10, ge=1, le=10_000, description="generations per checkpoint")
    mplp: bool = Field(True, description="also meta-train and test MPLP (sinusoids, classes)")
    mplp_inner: int = Field(5, ge=1, le=200, description="MPLP's inner learner steps")
    mplp_sine_steps: int = Field(
        100, ge=1, le=100_000, description="MPLP meta-steps on sinusoids (8 tasks each)"
    )
    mplp_class_steps: int = Field(
        80, ge=1, le=100_000, description="MPLP meta-steps on digits subsets (8 tasks each)"
    )
    mplp_sine_hidden: tuple[Annotated[int, Field(ge=1, le=512)], ...] = Field(
        (20, 20), min_length=1, description="hidden widths of the sinusoid networks"
    )
    mplp_meta_lr: float = Field(1e-2, gt=0, le=1, description="MPLP's outer Adam step")
    mplp_checkpoint: int = Field(
        20, ge=1, le=100_000, description="MPLP meta-steps per checkpoint"
    )

    @model_validator(mode="after")
    def _check(self) -> Config:
        if self.popsize % 2:
            raise ValueError(f"popsize must be even (antithetic pairs), got {self.popsize}")
        if self.method == "pes" and self.shaping != "none":
            raise ValueError(f"PES needs shaping 'none' (unbiased), got {self.shaping!r}")
        if self.init_step > 0 and self.hidden < 2:
            raise ValueError(f"init_step > 0 needs hidden >= 2, got hidden={self.hidden}")
        if self.method == "pes" and self.steps % self.truncation:
            raise ValueError(f"truncation ({self.truncation}) must divide steps ({self.steps})")
        return self


def _family(cfg: Config, split: str = "train") -> TaskFamily:
    return TaskFamily(split=split, max_examples=cfg.max_examples, dims=cfg.dims)


# -- meta-training ------------------------------------------------------------------------------


def _fresh_lopt(cfg: Config, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    theta = init_theta(cfg.hidden, generator=g)
    theta["w2"] = theta["w2"] * cfg.init_out_scale
    if cfg.init_step > 0:
        # units 0, 1 read ±(m_0.5/√v) (feature K+4), normalised per tensor: d = −c·that, so
        # Δp = −init_step · m/√v / rms(m/√v), the magnitude output left at 0
        c, k = cfg.init_step / 0.001, len(DECAYS) + 4
        theta["w1"][:, :2] = 0.0
        theta["w1"][k, 0], theta["w1"][k, 1] = 1.0, -1.0
        theta["w2"][:2] = torch.tensor([[-c, 0.0], [c, 0.0]])
    es = openai_es_init(
        theta_to_vector(theta),
        popsize=cfg.popsize,
        sigma=cfg.sigma,
        lr=cfg.es_lr,
        shaping=cfg.shaping,
    )
    return {
        "es": es,
        "theta0": es.center.clone(),
        "generator": g,
        "generation": 0,
        "history": [],
        "pes": None,
        "task_seed": 0,
    }


def _pes_round(cfg: Config, st: dict):
    """One PES truncation; a new task (and fresh particles) whenever an unroll is complete."""
    per_unroll = cfg.steps // cfg.truncation
    if st["generation"] % per_unroll == 0:
        st["task_seed"] = int(torch.randint(2**31 - 1, (), generator=st["generator"]))
    tg = torch.Generator().manual_seed(st["task_seed"])
    task = sample_task(_family(cfg), tg)
    if st["generation"] % per_unroll == 0:
        dim = st["es"].center.shape[0]
        st["pes"] = pes_init(init_inner(task, tg), cfg.popsize, dim)
    fn = population_unroll(
        task, cfg.truncation, kind=cfg.objective, min_loss=cfg.min_loss, normalise=cfg.normalise
    )
    st["es"], st["pes"], losses = pes_generation(st["es"], st["pes"], fn, st["generator"])
    return losses


def _es_round(cfg: Config, st: dict):
    """One ES generation: every member's meta-loss averaged over ``tasks_per_generation`` new
    digits tasks (all members on the same tasks, from the same initial parameters)."""
    x = openai_es_ask(st["es"], generator=st["generator"])  # (P, D)
    total = torch.zeros(x.shape[0], dtype=x.dtype)
    for _ in range(cfg.tasks_per_generation):
        task = sample_task(_family(cfg), st["generator"])
        inner = replicate(init_inner(task, st["generator"]), x.shape[0])
        fn = population_unroll(
            task, cfg.steps, kind=cfg.objective, min_loss=cfg.min_loss, normalise=cfg.normalise
        )
        total = total + fn(x, inner)[1]
    losses = total / cfg.tasks_per_generation
    st["es"] = openai_es_tell(st["es"], x, losses)
    return losses


def _meta_train_lopt(cfg: Config, run: RunLike, unit, seed: int) -> None:
    """A unit: ES or PES on the digits family for one seed, checkpointed every few generations;
    its result holds the meta-trained head ``theta (num_theta(H),)``."""
    st = unit.restore() or _fresh_lopt(cfg, seed)
    offset = (seed - cfg.seed) * cfg.generations
    while st["generation"] < cfg.generations:
        losses = (_es_round if cfg.method == "es" else _pes_round)(cfg, st)
        st["generation"] += 1
        st["history"].append(float(losses.mean()))
        run.log(
            offset + st["generation"],
            seed=seed,
            generation=st["generation"],
            meta_loss=st["history"][-1],
        )
        if st["generation"] % cfg.checkpoint_every == 0 and st["generation"] < cfg.generations:
            unit.checkpoint(st, step=st["generation"])
    unit.finish({"theta": st["es"].center, "theta0": st["theta0"], "history": st["history"]})


#: Learner families: name → the unit that meta-trains it for one seed (result: its weights, or
#: for MPLP its own meta-test numbers; see `badgerlab.experiments._mplp`).
META_TRAIN = {
    "lopt": _meta_train_lopt,
    "mplp-sine": _mplp.sine_unit,
    "mplp-class": _mplp.class_unit,
}


# -- meta-test ----------------------------------------------------------------------------------


def _test_tasks(cfg: Config, seed: int) -> dict[str, tuple]:
    """(task, initial inner state, steps) for every meta-test task of a seed; never trained on:
    other datasets, a wider network and a longer horizon on digits' test split."""
    g = torch.Generator().manual_seed(10_000 + seed)
    out = {}
    for name in cfg.datasets:
        task = dataset_task(
            name, widths=(cfg.test_width,), max_examples=cfg.test_examples, generator=g
        )
        out[name] = (task, init_inner(task, g), cfg.steps)
    fam = _family(cfg, "test")
    wide = sample_task(fam, g)
    wide = type(wide)(wide.x, wide.y, wide.num_classes, (cfg.wide_width,), wide.activation,
                      wide.init_scale, f"{wide.name}-wide")  # fmt: skip
    out["digits-wide"] = (wide, init_inner(wide, g), cfg.steps)
    long = sample_task(fam, g)
    out["digits-long"] = (long, init_inner(long, g), cfg.horizon_factor * cfg.steps)
    return out


def _sgd_head(lr: float):
    return lambda p, g, m, v, t: -lr * g


def _tuned(make_head, grid, task, inner, steps) -> tuple[float, torch.Tensor]:
    """The lr of ``grid`` with the lowest final training loss after ``steps``, and its curve."""
    best = None
    for lr in grid:
        _, losses = unroll_head(make_head(lr), task, inner, steps)
        final = float(torch.nan_to_num(losses[-1], nan=math.inf))
        if best is None or final < best[0]:
            best = (final, lr, losses)
    return best[1], best[2]


def _introspect(cfg: Config, theta: torch.Tensor, task, inner, steps: int) -> dict:
    """Gradient and learned update of every parameter at the last step of a ``steps`` unroll."""
    (params, state), _ = unroll(theta, task, inner, steps - 1, normalise=cfg.normalise)
    grads = torch.func.grad(task.loss)(params)
    head = mlp_head(theta_from_vector(theta, hidden_of(theta)), normalise=cfg.normalise)
    new, _ = lopt_step(params, grads, state, head=head)
    g = torch.cat([x.reshape(-1) for x in grads])
    d = torch.cat([(b - a).reshape(-1) for a, b in zip(params, new, strict=True)])
    return {"grad": g, "update": d}


def _with_start(task, inner, losses: torch.Tensor) -> torch.Tensor:
    """The curve L(p_0), L(p_1), …, L(p_T): ``(T+1,)``."""
    return torch.cat([task.loss(inner[0]).reshape(1), losses]).detach()


def _test_seed(cfg: Config, lopt_unit: dict, seed: int) -> dict:
    """Every learner on every meta-test task of a seed: curves, and the baselines' tuned lrs;
    ``lopt-init`` is the learned optimizer's head before meta-training."""
    out, theta = {}, lopt_unit["theta"]
    for name, (task, inner, steps) in _test_tasks(cfg, seed).items():
        _, lopt = unroll(theta, task, inner, steps, normalise=cfg.normalise)
        _, init = unroll(lopt_unit["theta0"], task, inner, steps, normalise=cfg.normalise)
        sgd_lr, sgd = _tuned(_sgd_head, cfg.sgd_grid, task, inner, steps)
        adam_lr, adam = _tuned(adam_head, cfg.adam_grid, task, inner, steps)
        out[name] = {
            "lopt": _with_start(task, inner, lopt),
            "lopt-init": _with_start(task, inner, init),
            "sgd": _with_start(task, inner, sgd),
            "adam": _with_start(task, inner, adam),
            "sgd_lr": sgd_lr,
            "adam_lr": adam_lr,
        }
        if name == cfg.datasets[0]:
            out["introspect"] = _introspect(cfg, theta, task, inner, max(2, steps // 4))
    return out


def _meta_test(cfg: Config, run: RunLike, unit, seed: int) -> None:
    """A unit: the meta-trained learners and the tuned baselines on one seed's unseen tasks."""
    res = _test_seed(cfg, run.results[f"lopt-seed{seed}"], seed)
    tasks = [k for k in res if k != "introspect"]
    for j, name in enumerate(tasks):
        r = res[name]
        run.log(
            cfg.seeds * cfg.generations + (seed - cfg.seed) * len(tasks) + j + 1,
            seed=seed,
            task=name,
            **{f"{k}_final": float(r[k][-1]) for k in ("lopt", "lopt-init", "sgd", "adam")},
            sgd_lr=r["sgd_lr"],
            adam_lr=r["adam_lr"],
        )
    unit.finish(res)


def train(cfg: Config, run: RunLike) -> dict:
    """Units: every learner family meta-trained per seed, then a meta-test per seed."""
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    fams = [f for f in META_TRAIN if cfg.mplp or not f.startswith("mplp")]
    keys = [f"{fam}-seed{s}" for fam in fams for s in seeds]
    keys += [f"test-seed{s}" for s in seeds]
    for unit in run.units(keys, description=f"learned learners ({cfg.method})"):
        fam, seed = unit.key.rsplit("-seed", 1)
        step = _meta_test if fam == "test" else META_TRAIN[fam]
        step(cfg, run, unit, int(seed))
    history = [run.results[f"lopt-seed{s}"]["history"] for s in seeds]
    out = {"test": [run.results[f"test-seed{s}"] for s in seeds], "lopt_history": history}
    for fam in fams[1:]:
        out[fam] = [run.results[f"{fam}-seed{s}"] for s in seeds]
    return out


LEARNERS = {
    "lopt": "learned optimizer",
    "lopt-init": "its head before meta-training",
    "sgd": "SGD (tuned lr)",
    "adam": "Adam (tuned lr)",
}


def _curves(results: dict, task: str) -> dict[str, torch.Tensor]:
    """``{learner: (seeds, T+1)}`` on one meta-test task."""
    return {k: torch.stack([r[task][k] for r in results["test"]]) for k in LEARNERS}


def _plot_curves(cfg: Config, results: dict, run: RunLike) -> None:
    import matplotlib.pyplot as plt

    tasks = [k for k in results["test"][0] if k != "introspect"]
    cols = 3
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks, strict=False):
        for key, curve in _curves(results, task).items():
            mean = curve.double().clamp(min=1e-8).log().mean(0).exp()  # geometric mean
            ax.plot(mean.numpy(), label=LEARNERS[key])
        if task == "digits-long":
            ax.axvline(cfg.steps, color="grey", linestyle=":", label="meta-training T")
        ax.set_yscale("log")
        ax.set_title(task, fontsize="small")
        ax.set_xlabel("inner step")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(tasks) :]:
        ax.axis("off")
    axes.flat[0].set_ylabel("training loss")
    axes.flat[0].legend(fontsize="x-small")
    fig.tight_layout()
    run.save_figure(
        fig,
        "meta_test_curves",
        caption=f"Training loss on meta-test tasks never seen in meta-training (geometric mean "
        f"over {cfg.seeds} seeds): the learned optimizer against SGD and Adam with lrs tuned "
        "per task. Look for the learned curve at or below Adam's, and on digits-long for no "
        "rise after the meta-training horizon (dotted line).",
    )


def _plot_introspection(cfg: Config, results: dict, run: RunLike) -> None:
    import matplotlib.pyplot as plt

    intro = results["test"][0]["introspect"]
    g, d = intro["grad"].numpy(), intro["update"].numpy()
    fig, ax = plt.subplots(figsize=(5.0, 4.0))
    ax.scatter(g, d, s=4, alpha=0.4, label="parameters")
    lr = results["test"][0][cfg.datasets[0]]["sgd_lr"]
    xs = torch.linspace(float(g.min()), float(g.max()), 2).numpy()
    ax.plot(xs, -lr * xs, color="C3", label=f"tuned SGD: −{lr:g}·g")
    ax.set_xlabel("gradient g")
    ax.set_ylabel("learned update Δp")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    run.save_figure(
        fig,
        "update_vs_gradient",
        caption=f"Learned optimizer's update against the gradient for every parameter of the "
        f"{cfg.datasets[0]} MLP at step {max(2, cfg.steps // 4)} of {cfg.steps} (seed "
        f"{cfg.seed}). Look for updates opposing the gradient's sign (descent) and for a "
        "sign-like, saturating shape (an Adam-like normalised step) rather than SGD's line.",
    )


def _plot_meta_training(cfg: Config, results: dict, run: RunLike) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    for i, h in enumerate(results["lopt_history"]):
        ax.plot(range(1, len(h) + 1), h, label=f"seed {cfg.seed + i}", alpha=0.8)
    ax.set_xlabel("generation" if cfg.method == "es" else "PES truncation")
    ax.set_ylabel(f"meta-loss ({cfg.objective} log-loss, population mean)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    run.save_figure(
        fig,
        "meta_training",
        caption=f"Meta-loss of the ES population on the digits task it was given, per "
        f"{'generation' if cfg.method == 'es' else 'truncation'} (one new task each, so the "
        "curve is noisy); look for a downward trend down to the floor log L_min.",
    )


def _plot_mplp(cfg: Config, results: dict, run: RunLike) -> None:
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, fam in enumerate(("mplp-sine", "mplp-class")):
        for j, r in enumerate(results[fam]):
            a.plot(r["history"], color=f"C{i}", alpha=0.7, label=fam if j == 0 else None)
    a.set(xlabel="meta-step", ylabel="meta-loss (query)", yscale="log", title="MPLP meta-training")
    a.legend(fontsize=8)
    names = ["sinusoid MSE / zero", *_mplp.CLASS_DATASETS]
    for k, (key, label) in enumerate((("mplp", "MPLP"), ("sgd", "tuned SGD"))):
        vals = [sum(r[f"{key}_mse"] / r["zero_mse"] for r in results["mplp-sine"]) / cfg.seeds]
        vals += [
            sum(r[d][f"{key}_acc"] for r in results["mplp-class"]) / cfg.seeds
            for d in _mplp.CLASS_DATASETS
        ]
        b.bar([x + 0.4 * k for x in range(len(names))], vals, 0.4, label=label, color=f"C{k + 2}")
    b.set_xticks([x + 0.2 for x in range(len(names))], names, fontsize=8)
    b.set(title="MPLP meta-test (mean over seeds)")
    b.legend(fontsize=8)
    run.save_figure(
        fig,
        "mplp",
        caption="Left: MPLP's meta-loss during meta-training (one line per seed). Right: on "
        "fresh sinusoids the query MSE relative to predicting zero (lower is better), and on "
        "unseen datasets the query accuracy (higher is better), MPLP beside SGD with a tuned "
        "lr, the same inner steps and initial nets.",
    )


def plots(cfg: Config, results: dict, run: RunLike) -> None:
    if cfg.mplp:
        _plot_mplp(cfg, results, run)
    _plot_curves(cfg, results, run)
    _plot_introspection(cfg, results, run)
    _plot_meta_training(cfg, results, run)
    run.save_json(
        "tuned_lrs",
        [{k: {"sgd": v["sgd_lr"], "adam": v["adam_lr"]} for k, v in r.items()
          if k != "introspect"} for r in results["test"]],
    )  # fmt: skip


def _heldout(cfg: Config) -> list[str]:
    return [*cfg.datasets, "digits-wide"]


def _at_edge(cfg: Config, r: dict) -> float:
    """Fraction of (task, baseline) pairs whose tuned lr is the grid's smallest or largest."""
    tasks = [k for k in r if k != "introspect"]
    hits = [r[t]["sgd_lr"] in (min(cfg.sgd_grid), max(cfg.sgd_grid)) for t in tasks]
    hits += [r[t]["adam_lr"] in (min(cfg.adam_grid), max(cfg.adam_grid)) for t in tasks]
    return sum(hits) / len(hits)


FLOOR = 1e-12  # float32 losses reach exactly 0; ratios compare max(loss, FLOOR)


def _ratio(a: float, b: float) -> float:
    return max(float(a), FLOOR) / max(float(b), FLOOR)


def _per_seed(cfg: Config, results: dict) -> dict[str, list[float]]:
    """Per-seed numbers the claims are made of."""
    out: dict[str, list[float]] = {}
    held = _heldout(cfg)
    for r in results["test"]:
        final = {k: [float(r[t][k][-1]) for t in held] for k in LEARNERS}
        init = sum(float(r[t]["lopt"][0]) for t in held) / len(held)
        mean = {k: sum(v) / len(v) for k, v in final.items()}
        logr = [math.log(_ratio(a, b)) for a, b in zip(final["lopt"], final["adam"], strict=True)]
        long = r["digits-long"]["lopt"].double()
        row = {
            "ratio": _ratio(mean["lopt"], mean["adam"]),
            "geo": math.exp(sum(logr) / len(logr)),
            "sgd_ratio": _ratio(mean["lopt"], mean["sgd"]),
            "init_ratio": _ratio(mean["lopt"], mean["lopt-init"]),
            "edge": _at_edge(cfg, r),
            "adam_learned": mean["adam"] / init,
            "sgd_learned": mean["sgd"] / init,
            "long": _ratio(long[-1], long[cfg.steps]),
            "diverge": float(long[cfg.steps :].nan_to_num(nan=math.inf).max() / long[0]),
            "long_adam": _ratio(long[-1], r["digits-long"]["adam"][-1]),
            **{f"{k}_final": v for k, v in mean.items()},
            **{
                f"{t}_ratio": _ratio(final["lopt"][i], final["adam"][i])
                for i, t in enumerate(held)
            },
        }
        for k, v in row.items():
            out.setdefault(k, []).append(v)
    return out


def _scale(cfg: Config) -> str:
    held = ", ".join(_heldout(cfg))
    return (
        f"{cfg.seeds} seeds; meta-trained by {cfg.method.upper()} (population {cfg.popsize}, "
        f"{cfg.generations} generations, horizon T = {cfg.steps}); held-out tasks {held}; "
        f"baselines' lrs picked per task from a grid on the final training loss, same steps"
    )


def claims(cfg: Config, results: dict) -> list[Claim]:
    v, scale = _per_seed(cfg, results), _scale(cfg)
    adam_ok = "adam-learned"
    out = [
        Claim.measure(
            "lopt-vs-adam",
            f"learned optimizer's mean final training loss over the held-out tasks is <= "
            f"{ADAM_FACTOR}x tuned Adam's after T = {cfg.steps} steps (ratio; {scale})",
            v["ratio"],
            paper="learned optimizers outperform tuned Adam on unseen tasks (Metz et al. 2020)",
            op="<=",
            threshold=ADAM_FACTOR,
            requires=[adam_ok],
        ),
        Claim.measure(
            "lopt-long-horizon",
            f"learned optimizer stays stable at {cfg.horizon_factor}x the meta-training "
            f"horizon on an unseen digits task: fraction of seeds with loss at "
            f"{cfg.horizon_factor}T <= loss at T; must be 1, every seed ({scale})",
            [float(x <= 1.0) for x in v["long"]],
            paper="stability beyond the meta-training horizon (Metz et al. 2020, Sec. 5)",
            op=">=",
            threshold=1.0,
        ),
        Claim.measure(
            "lopt-no-divergence",
            f"no divergence past the meta-training horizon: fraction of seeds where, between "
            f"step T and {cfg.horizon_factor}T, the loss exceeds its initial value or is NaN; "
            f"must be 0 ({scale})",
            [float(x > 1.0) for x in v["diverge"]],
            op="<=",
            threshold=0.0,
        ),
        Claim.measure(
            adam_ok,
            f"tuned Adam learned the held-out tasks: mean final loss / mean initial loss <= "
            f"{LEARNED_FRACTION} ({scale})",
            v["adam_learned"],
            paper="baseline",
            op="<=",
            threshold=LEARNED_FRACTION,
        ),
        Claim.measure(
            "sgd-learned",
            f"tuned SGD learned the held-out tasks: mean final loss / mean initial loss <= "
            f"{LEARNED_FRACTION} ({scale})",
            v["sgd_learned"],
            paper="baseline",
            op="<=",
            threshold=LEARNED_FRACTION,
        ),
    ]
    info = {
        "lopt-final-loss": ("learned optimizer's mean final loss, held-out tasks", "lopt_final"),
        "adam-final-loss": ("tuned Adam's mean final training loss, held-out tasks", "adam_final"),
        "sgd-final-loss": ("tuned SGD's mean final training loss, held-out tasks", "sgd_final"),
        "lopt-vs-sgd": ("learned / tuned SGD mean final loss, held-out tasks", "sgd_ratio"),
        "lopt-long-ratio": (f"loss at {cfg.horizon_factor}T / loss at T, digits-long", "long"),
        "lopt-long-max": (f"max loss, T to {cfg.horizon_factor}T, / initial loss", "diverge"),
        "lopt-vs-init": ("learned / its head before meta-training, held-out tasks", "init_ratio"),
        "lopt-vs-adam-geomean": ("geometric mean over held-out tasks of learned / Adam", "geo"),
        "baseline-lr-at-edge": ("fraction of tuned baseline lrs at an end of the grid", "edge"),
        "lopt-vs-adam-long": (f"learned / Adam (tuned at {cfg.horizon_factor}T) at "
                              f"{cfg.horizon_factor}T on digits-long", "long_adam"),
        **{f"lopt-vs-adam-{t}": (f"learned / tuned Adam final loss on {t}", f"{t}_ratio")
           for t in _heldout(cfg)},
    }  # fmt: skip
    out += [Claim.measure(i, f"{s} ({cfg.seeds} seeds)", v[k]) for i, (s, k) in info.items()]
    if cfg.mplp:
        out += _mplp_claims(cfg, results)
    return out


MPLP_MARGIN = 0.2  # (4) MPLP accuracy >= chance + 0.2 on every unseen dataset (fixed before)


def _mplp_claims(cfg: Config, results: dict) -> list[Claim]:
    sine, cls = results["mplp-sine"], results["mplp-class"]
    n = len(sine)
    s_scale = (
        f"{n} seeds, {cfg.mplp_sine_steps} meta-steps of 8 tasks, nets (1, "
        f"{', '.join(map(str, cfg.mplp_sine_hidden))}, 1), K = 10, {_mplp.SINE_TEST} test tasks"
    )
    c_scale = (
        f"{n} seeds, {cfg.mplp_class_steps} meta-steps on digits subsets, {cfg.mplp_inner} inner "
        f"steps, {_mplp.CLASS_TEST} tasks per dataset of {_mplp.CLASS_SUPPORT} support examples"
    )
    sgd_vs_zero = sum(r["sgd_mse"] / r["zero_mse"] for r in sine) / n
    out = [
        Claim.measure(
            "mplp-sine-vs-sgd",
            f"MPLP's few-shot sinusoid query MSE after {cfg.mplp_inner} inner steps − plain "
            f"SGD's on the same initial nets with its lr picked on other tasks ({s_scale})",
            [r["mplp_mse"] - r["sgd_mse"] for r in sine],
            paper="MPLP learns few-shot sinusoid regression faster than SGD (Randazzo et al. "
            "2020, Sec. 4.1)",
            op="<",
            threshold=0.0,
            requires=[condition("tuned SGD MSE / predicting zero", sgd_vs_zero, "<", 1.0)],
        ),
        Claim.measure(
            "mplp-classify",
            f"MPLP's lowest accuracy − chance over the unseen datasets "
            f"{', '.join(_mplp.CLASS_DATASETS)} ({c_scale})",
            [min(r[d]["mplp_acc"] - r[d]["chance"] for d in _mplp.CLASS_DATASETS) for r in cls],
            paper="MPLP learns classification tasks in a few steps",
            op=">=",
            threshold=MPLP_MARGIN,
        ),
    ]
    info = {
        "mplp-sine-mse": ("MPLP sinusoid query MSE", [r["mplp_mse"] for r in sine]),
        "sgd-sine-mse": ("tuned SGD sinusoid query MSE", [r["sgd_mse"] for r in sine]),
        "zero-sine-mse": ("predicting zero, sinusoid query MSE", [r["zero_mse"] for r in sine]),
        "mplp-sine-start": (
            "MPLP before meta-training, query MSE",
            [r["start_mse"] for r in sine],
        ),
        "sgd-sine-lr": ("SGD lr picked on other sinusoid tasks", [r["sgd_lr"] for r in sine]),
    }
    for d in _mplp.CLASS_DATASETS:
        info[f"mplp-{d}-acc"] = (f"MPLP accuracy on {d}", [r[d]["mplp_acc"] for r in cls])
        info[f"sgd-{d}-acc"] = (f"tuned SGD accuracy on {d}", [r[d]["sgd_acc"] for r in cls])
    out += [Claim.measure(i, f"{s} ({n} seeds)", v) for i, (s, v) in info.items()]
    return out


EXPERIMENT = Experiment(
    name="learned-learners",
    paper=LOPT_PAPER,
    bibtex=LOPT_BIBTEX,
    description="A per-parameter MLP learned optimizer meta-trained by ES or PES on digits "
    "subsets (random classes, projections and MLPs), meta-tested on unseen datasets, a wider "
    "network and a 5x longer horizon against SGD and Adam tuned per task; and MPLP's shared "
    "GRU learners, meta-trained through the unrolled inner loop, on few-shot sinusoids and on "
    "unseen classification datasets against tuned SGD.",
    minutes={"smoke": 0.3, "quick": 6},  # quick: 259 s of CPU, 5.0 min wall under load 2-4
    Config=Config,
    train=train,
    plots=plots,
    claims=claims,
    scales={
        "smoke": {
            "seeds": 1,
            "popsize": 4,
            "generations": 4,
            "tasks_per_generation": 1,
            "checkpoint_every": 2,
            "steps": 4,
            "truncation": 2,
            "max_examples": 32,
            "dims": (8,),
            "test_examples": 64,
            "datasets": ("iris", "wine"),
            "wide_width": 48,
            "horizon_factor": 2,
            "sgd_grid": (0.1, 1.0),
            "adam_grid": (0.01, 0.1),
            "mplp_sine_steps": 4,
            "mplp_class_steps": 4,
            "mplp_checkpoint": 2,
            "mplp_sine_hidden": (8,),
            "mplp_inner": 2,
        },
        "paper": {"seeds": 5, "generations": 500, "popsize": 32, "steps": 100, "hidden": 32},
    },
)
