"""VSML meta-learned from scratch: an online learning algorithm in the activations of a grid.

`outer=bptt` (default) meta-trains by truncated BPTT; `outer=es` by OpenAI-ES with the quick
preset below (population 64, σ 0.05, centred ranks, Adam 0.05, 120 generations of 4 episodes
per antithetic pair): at population 64 the reference's raw antithetic differences and Adam
0.025 leave two of three seeds on the ln B plateau for 120 generations. `actors=N` /
`ray_address=` score the population's shares on Ray actors; `compare=[...]` adds BPTT or
other ES curves (first seed) to the meta-loss plot.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Annotated, Any, Literal, NamedTuple

import torch
from pydantic import Field, model_validator
from torch.utils.flop_counter import FlopCounterMode

from badgerlab.data import Dataset, TaskSampler, load
from badgerlab.evolve import ES, get_es
from badgerlab.experiment import Experiment, ExperimentConfig, PaperVariant
from badgerlab.online import online_learn
from badgerlab.plots import curve_plot
from badgerlab.runs import Claim, RunLike, condition
from badgerlab.vsml import BIBTEX as VSML_BIBTEX
from badgerlab.vsml import PAPER as VSML_PAPER
from badgerlab.vsml.baselines import Learner, MetaRNN, VSMLLearner
from badgerlab.vsml.metatrain import (
    adam_init,
    bptt_step,
    es_init,
    es_step,
    population_fitness,
    unflatten,
)
from badgerlab.vsml.model import VSMLConfig, episode


class Config(ExperimentConfig):
    dataset: Literal["digits", "mnist"] = Field(
        "digits", description="meta-training data (its train split)"
    )
    ood_datasets: list[str] = Field(
        ["wine", "breast_cancer", "iris"],
        min_length=1,
        max_length=8,
        description="out-of-distribution meta-test sets (never meta-trained on)",
    )
    seeds: int = Field(3, ge=1, le=100, description="seeds run inside one Run")
    outer: Literal["bptt", "es"] = Field("bptt", description="outer loop: truncated BPTT or ES")
    es: ES.field_type() = Field(  # type: ignore[valid-type]
        "openai-es", description="registered ES of badgerlab.evolve, used when outer=es"
    )
    popsize: int = Field(64, ge=2, le=65536, description="ES population (even)")
    sigma: float = Field(0.05, gt=0, le=10, description="ES noise std (reference 0.05)")
    es_lr: float = Field(
        0.05, gt=0, le=10, description="ES Adam learning rate (reference 0.025 at population "
        "1024; at 64 the ln B plateau lasts 2-3x longer with it)",
    )  # fmt: skip
    shaping: Literal["none", "centred_ranks"] = Field(
        "centred_ranks", description="OpenAI-ES fitness shaping: centred ranks, or raw "
        "antithetic differences (reference; at population 64 two of three seeds stay at ln B)",
    )  # fmt: skip
    cmaes_separable: bool = Field(
        True, description="CMA-ES with a diagonal covariance (sep-CMA-ES, Ros & Hansen 2008); "
        "the full 2416x2416 one costs 7-18 s per generation on one core",
    )  # fmt: skip
    generations: int = Field(
        120, ge=1, le=1_000_000, description="ES generations per learner (outer=es)"
    )
    es_batch: int = Field(
        4, ge=1, le=4096, description="episodes per antithetic pair and generation (outer=es); "
        "ES without pairs (CMA-ES, ...) score the whole population on one set of this many",
    )  # fmt: skip
    actors: int = Field(
        0, ge=0, le=4096, description="Ray actors scoring the ES population (0: in process)"
    )
    ray_address: str | None = Field(
        None, description="Ray cluster to join ('auto', 'ray://host:10001'); None: local Ray"
    )
    compare: list[str] = Field(
        [], max_length=4, description="extra VSML meta-trainings on the first seed for the "
        "meta-loss plot: 'bptt' or registered ES names (e.g. 'cmaes'), each for this run's "
        "steps (BPTT) or generations (ES)",
    )  # fmt: skip
    steps: int = Field(220, ge=1, le=1_000_000, description="VSML meta-training steps")
    metarnn_steps: int = Field(
        1500,
        ge=1,
        le=1_000_000,
        description="Meta-RNN meta-training steps: about 2x VSML's seconds, as many as it needs "
        "to leave the ln B plateau (400-900 steps at lr 1e-2 on meta-training episodes)",
    )
    metarnn_lr: float = Field(
        1e-2,
        gt=0,
        le=1,
        description="Meta-RNN BPTT Adam learning rate, picked from 3e-3, 1e-2, 3e-2 on "
        "meta-training episodes (3e-3 stays on the plateau for ~800 steps, 3e-2 diverged)",
    )
    batch: int = Field(16, ge=1, le=4096, description="episodes per BPTT step (per ES pair)")
    inputs: int = Field(16, ge=1, le=4096, description="A: meta-training inputs (projection)")
    classes: int = Field(3, ge=2, le=100, description="B: classes per meta-training task")
    length: int = Field(50, ge=2, le=100_000, description="examples per meta-training episode")
    lr: float = Field(3e-3, gt=0, le=1, description="BPTT Adam learning rate")
    truncation: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="VSML BPTT truncation in examples (None: whole episode)",
    )
    clip: float = Field(25.0, ge=0, le=1e6, description="BPTT gradient-norm clip (reference)")
    layer_norm: bool = Field(True, description="LayerNorm on VSML's message heads (BPTT ref.)")
    backward_pass: bool = Field(
        True,
        description="deliver each error in its own sweep right after the prediction "
        "(the reference's backward_pass option) instead of together with the next input",
    )
    feed_label: bool = Field(True, description="label slot in the error message")
    hidden: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        [], max_length=4, description="VSML hidden layer widths (e.g. [32] for A→32→B)"
    )
    metarnn_hidden: int = Field(128, ge=1, le=4096, description="Meta-RNN LSTM units (ref.)")
    metarnn_outer: Literal["bptt", "run"] = Field(
        "bptt", description="the Meta-RNN's outer loop: 'bptt', its tuned setting, whatever "
        "VSML's (under ES with σ 0.05 on its ~87k parameters it stays at chance), or 'run': "
        "the run's `outer`",
    )  # fmt: skip
    max_inputs: int = Field(32, ge=1, le=100_000, description="Meta-RNN input padding")
    max_classes: int = Field(5, ge=2, le=1000, description="Meta-RNN output padding")
    test_episodes: int = Field(32, ge=1, le=4096, description="meta-test episodes per set")
    test_length: int = Field(100, ge=2, le=100_000, description="examples per meta-test episode")
    other_inputs: int = Field(
        64, ge=1, le=100_000, description="A of the other-size grid (64 = raw digits pixels)"
    )
    other_classes: int = Field(5, ge=2, le=100, description="B of the other-size grid")
    memorise_size: int = Field(20, ge=1, le=10_000, description="random-label set size")
    online_lrs: list[Annotated[float, Field(gt=0, le=10)]] = Field(
        [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0],
        min_length=1,
        max_length=12,
        description="learning-rate grid of the online Adam/SGD baselines, each tuned on "
        "meta-training episodes (train split) for its accuracy over the first examples",
    )
    checkpoint_every: int = Field(25, ge=1, le=1_000_000, description="steps per checkpoint")

    @model_validator(mode="after")
    def _check_outer_loops(self) -> Config:
        for c in self.compare:
            if c != "bptt":
                ES.validate(c)
        antithetic = [e for e in (self.es, *self.compare) if e.startswith("openai-es")]
        if self.popsize % 2 and antithetic and (self.outer == "es" or self.compare):
            raise ValueError(f"popsize must be even for antithetic ES, got {self.popsize}")
        return self


CLAIM_IN, CLAIM_OTHER = 0.2, 0.1  # margins above chance fixed by the issue
EARLY = 25  # the paper's figure: VSML ahead of Adam over the first 25 examples
METHODS = ("vsml", "metarnn")


def _standardised(ds: Dataset, ref: Dataset) -> Dataset:
    x = ds.x.reshape(len(ds), -1)
    r = ref.x.reshape(len(ref), -1)
    x = (x - r.mean(0)) / (r.std(0) + 0.1)
    return Dataset(x, ds.y, ds.num_classes, (x.shape[1],), ds.name)


def _memorise_dataset(size: int, dim: int, classes: int, seed: int) -> Dataset:
    # The reference's `random` task: a few Gaussian inputs with fixed random labels.
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(size) % classes
    y = y[torch.randperm(size, generator=g)]
    return Dataset(torch.randn(size, dim, generator=g), y, classes, (dim,), "random")


def _projection(width: int, ds: Dataset) -> int | None:
    # A fresh random projection per episode (the reference's augmentation) unless the grid
    # takes the raw features.
    return None if width == ds.features else width


def _learners(cfg: Config) -> dict[str, Learner]:
    vcfg = VSMLConfig(
        layer_norm=cfg.layer_norm, backward_pass=cfg.backward_pass, feed_label=cfg.feed_label
    )
    return {
        "vsml": VSMLLearner(vcfg, hidden=cfg.hidden),
        "metarnn": MetaRNN(cfg.max_inputs, cfg.max_classes, hidden=cfg.metarnn_hidden),
    }


def _time_major(e) -> tuple[torch.Tensor, torch.Tensor]:
    return e.x.transpose(0, 1).contiguous(), e.y.transpose(0, 1).contiguous()  # (T, N, ·)


class Outer(NamedTuple):
    """How one unit meta-trains: `kind` "bptt" or "es", and the registered ES for "es"."""

    kind: str
    es: str = ""


def _unit_outer(cfg: Config, variant: str, name: str = "vsml") -> Outer:
    """The run's own outer loop, or one named by `compare` ("bptt" or an ES name); the
    Meta-RNN's is BPTT unless `metarnn_outer` is "run"."""
    if not variant and name == "metarnn" and cfg.metarnn_outer == "bptt":
        return Outer("bptt")
    if not variant:
        return Outer(cfg.outer, cfg.es if cfg.outer == "es" else "")
    return Outer("bptt") if variant == "bptt" else Outer("es", variant)


def _es_init(cfg: Config, learner: Learner, params, es: str):
    options: dict[str, Any] = {"sigma": cfg.sigma}
    if es.startswith("openai-es"):
        options |= {"lr": cfg.es_lr, "shaping": cfg.shaping}
    elif es == "cmaes":
        options["separable"] = cfg.cmaes_separable
    return es_init(learner, params, es=es, popsize=cfg.popsize, **options)


def _groups(cfg: Config, es: str) -> int:
    # Antithetic ES: one episode group per pair (both members on the same episodes, the
    # reference); ranking ES compare all members, so all share one group (common random numbers).
    return cfg.popsize // 2 if es.startswith("openai-es") else 1


def _outer_step(cfg: Config, learner: Learner, name: str, outer: Outer, sampler, state, remote):
    """One meta-training step (BPTT or ES) on fresh episodes; returns (loss, grad norm)."""
    g = state["generator"]
    if outer.kind == "es":
        G = _groups(cfg, outer.es)
        e = sampler.sample(G * cfg.es_batch, generator=g)
        x, y = _time_major(e)
        T = x.shape[0]
        x, y = x.view(T, G, cfg.es_batch, -1), y.view(T, G, cfg.es_batch)  # (T, G, N, ·)
        state["es"], loss = es_step(
            learner, outer.es, state["es"], x, y, e.num_classes, generator=g, evaluate=remote
        )
        return loss, float("nan")
    x, y = _time_major(sampler.sample(cfg.batch, generator=g))
    lr = cfg.lr if name == "vsml" else cfg.metarnn_lr
    state["params"], state["opt"], loss, gnorm = bptt_step(
        learner, state["params"], state["opt"], x, y, cfg.classes, lr=lr, clip=cfg.clip,
        truncation=cfg.truncation if name == "vsml" else None, generator=g,
    )  # fmt: skip
    return loss, gnorm


def _steps(cfg: Config, name: str, outer: Outer | None = None) -> int:
    if (outer or _unit_outer(cfg, "", name)).kind == "es":
        return cfg.generations
    return cfg.steps if name == "vsml" else cfg.metarnn_steps


def _offset(cfg: Config, unit) -> int:
    """First metric step of a unit: units never share steps whatever their lengths."""
    return unit.index * (max(cfg.steps, cfg.metarnn_steps, cfg.generations) + 1)


def _meta_train(cfg: Config, run: RunLike, unit, learner: Learner, name: str, sampler, seed,
                variant: str = "", remote=None):  # fmt: skip
    """Meta-train one learner as a resumable unit; its parameters, meta-loss curve, the
    matmul GFLOP of one step (counted on the first) and the wall-clock seconds spent.
    `variant` names a `compare` outer loop; `remote` scores ES populations on Ray actors."""
    outer = _unit_outer(cfg, variant, name)
    state = unit.restore()
    if state is None:
        # Every outer loop of a seed starts from the same initial parameters.
        g = torch.Generator().manual_seed(seed * 1000 + METHODS.index(name))
        params = learner.init_params(generator=g)
        state = {"generator": g, "step": 0, "history": [], "seconds": 0.0, "gflop_step": 0.0}
        if outer.kind == "es":
            state["es"] = _es_init(cfg, learner, params, outer.es)
        else:
            state |= {"params": params, "opt": adam_init(params)}
    offset, steps = _offset(cfg, unit), _steps(cfg, name, outer)
    label = f"{name}~{variant}" if variant else name
    while state["step"] < steps:
        t0 = time.perf_counter()
        if state["step"] == 0:
            # Scored in process, so that the counter sees the population's FLOPs; Ray shares
            # give the same J (tests/vsml/test_es_ray.py).
            with FlopCounterMode(display=False) as counter:
                loss, gnorm = _outer_step(cfg, learner, name, outer, sampler, state, None)
            state["gflop_step"] = counter.get_total_flops() / 1e9
        else:
            loss, gnorm = _outer_step(cfg, learner, name, outer, sampler, state, remote)
        state["seconds"] += time.perf_counter() - t0
        state["step"] += 1
        state["history"].append(float(loss))
        run.log(offset + state["step"], seed=seed, learner=label, meta_loss=loss, grad_norm=gnorm)
        if state["step"] % cfg.checkpoint_every == 0 and state["step"] < steps:
            unit.checkpoint(state, step=offset + state["step"])
    if outer.kind == "es":
        params = unflatten(get_es(outer.es).center(state["es"]), learner.param_shapes())
    else:
        params = state["params"]
    return {
        "params": params, "meta_loss": state["history"], "seconds": state["seconds"],
        "gflop": state["gflop_step"] * steps, "steps": steps,
    }  # fmt: skip


@torch.no_grad()
def _online_curve(learner: Learner, params, episodes, generator) -> torch.Tensor:
    x, y = _time_major(episodes)
    out = learner.run(params, x, y, episodes.num_classes, generator=generator)
    return out.correct[:, 0].float().mean(1)  # (T,)


def _first(cfg: Config) -> int:
    return min(100, cfg.test_length)


def _windows(cfg: Config) -> tuple[int, ...]:
    """The prefixes of meta-test episodes the online baselines are compared over."""
    return tuple(sorted({min(EARLY, cfg.test_length), _first(cfg)}))


ARCHS = {"mlp": (160,), "linear": ()}


def _tune_online(cfg: Config, seed: int) -> dict[str, Any]:
    """Each online baseline (Adam, SGD) tuned per window w: architecture (MLP 160 or linear)
    and learning rate from `online_lrs`, chosen on meta-training episodes (train split, never
    the meta-test episodes) for accuracy over the first w examples — the quantity the claims
    compare. Returns {f"{opt}@{w}": {"arch", "lr", "score"}}."""
    train = load(cfg.dataset, "train")
    sampler = TaskSampler(
        _standardised(train, train), length=cfg.test_length, num_classes=cfg.classes,
        project_to=_projection(cfg.inputs, train), projection="episode",
    )  # fmt: skip
    eps = sampler.sample(cfg.test_episodes, seed=70_000 + seed)
    curves = {
        (opt, arch, lr): online_learn(
            eps.x, eps.y, eps.num_classes, optimizer=opt, lr=lr, hidden=ARCHS[arch], seed=seed
        ).accuracy_curve
        for opt in ("adam", "sgd") for arch in ARCHS for lr in cfg.online_lrs
    }  # fmt: skip
    best: dict[str, Any] = {}
    for w in _windows(cfg):
        for opt in ("adam", "sgd"):
            score = {k: float(c[:w].mean()) for k, c in curves.items() if k[0] == opt}
            k = max(score, key=score.get)  # type: ignore[arg-type]
            best[f"{opt}@{w}"] = {"arch": k[1], "lr": k[2], "score": score[k]}
    return best


def _online_baselines(cfg: Config, sets: dict, seed: int) -> dict[str, Any]:
    """Curves of every tuned online baseline on every meta-test set, and the choices."""
    tuned = _tune_online(cfg, seed)
    out: dict[str, Any] = {"tuned": tuned}
    for set_name, sampler in sets.items():
        eps = sampler.sample(cfg.test_episodes, seed=50_000 + seed)
        for key, t in tuned.items():
            opt = key.split("@")[0]
            out[f"{key}|{set_name}"] = online_learn(
                eps.x, eps.y, eps.num_classes, optimizer=opt, lr=t["lr"],
                hidden=ARCHS[t["arch"]], seed=seed,
            ).accuracy_curve  # fmt: skip
    return out


def _meta_test_sets(cfg: Config, seed: int) -> dict[str, TaskSampler]:
    train = load(cfg.dataset, "train")
    test = _standardised(load(cfg.dataset, "test"), train)
    T = cfg.test_length

    def episodes(ds: Dataset, classes: int, width: int | None) -> TaskSampler:
        return TaskSampler(
            ds, length=T, num_classes=classes, project_to=width, projection="episode"
        )

    sets = {
        "in": episodes(test, cfg.classes, _projection(cfg.inputs, test)),
        "other": episodes(test, cfg.other_classes, _projection(cfg.other_inputs, test)),
        "memorise": TaskSampler(
            _memorise_dataset(cfg.memorise_size, cfg.inputs, cfg.classes, 7 + seed),
            length=T,
            num_classes=cfg.classes,
        ),
    }
    for name in cfg.ood_datasets:
        ds = load(name, "train")
        # Tabular sets come standardised; images are standardised like the meta-training data.
        flat = _standardised(ds, ds) if len(ds.shape) == 3 else ds
        flat = flat.x.reshape(len(ds), -1)
        sets[f"ood:{name}"] = episodes(
            Dataset(flat, ds.y, ds.num_classes, (flat.shape[1],), name),
            min(ds.num_classes, cfg.max_classes),
            None if flat.shape[1] <= cfg.max_inputs else cfg.max_inputs,
        )
    return sets


def _evaluate(cfg: Config, learners, trained, seed: int) -> dict[str, Any]:
    sets = _meta_test_sets(cfg, seed)
    out: dict[str, Any] = _online_baselines(cfg, sets, seed)
    for set_name, sampler in sets.items():
        eps = sampler.sample(cfg.test_episodes, seed=50_000 + seed)
        for m in METHODS:
            if m == "metarnn" and (
                eps.x.shape[-1] > cfg.max_inputs or eps.num_classes > cfg.max_classes
            ):
                continue
            g = torch.Generator().manual_seed(seed)
            out[f"{m}|{set_name}"] = _online_curve(learners[m], trained[m], eps, g)
    # Introspection: the first cell states of the in-distribution grid over one episode.
    e = sets["in"].sample(1, seed=60_000 + seed)
    x, y = _time_major(e)
    r = episode(
        trained["vsml"], x, y, learners["vsml"].cfg,
        sizes=(x.shape[-1], *cfg.hidden, e.num_classes),
        generator=torch.Generator().manual_seed(seed), record=True,
    )  # fmt: skip
    out["trace_c"] = torch.stack([s[0].c[0, 0, 0, 0, :4] for s in r.trace])  # (T, 4)
    out["trace_h"] = torch.stack([s[0].h[0, 0, 0, 0, :4] for s in r.trace])
    return out


def _cumulative(c: torch.Tensor) -> torch.Tensor:
    return c.cumsum(-1) / torch.arange(1, c.shape[-1] + 1)


def _sampler(cfg: Config) -> TaskSampler:
    """Meta-training tasks: episodes from the train split, a fresh projection each."""
    train = load(cfg.dataset, "train")
    train_std = _standardised(train, train)
    return TaskSampler(
        train_std, length=cfg.length, num_classes=cfg.classes,
        project_to=_projection(cfg.inputs, train_std), projection="episode",
    )  # fmt: skip


def _keys(cfg: Config) -> list[str]:
    """Units in order: per seed, each learner's meta-training, then the meta-test; last, the
    `compare` meta-trainings of VSML on the first seed (`vsml~<outer>@<seed>`)."""
    main = [f"{k}@{cfg.seed + i}" for i in range(cfg.seeds) for k in (*METHODS, "test")]
    return main + [f"vsml~{c}@{cfg.seed}" for c in cfg.compare]


@contextlib.contextmanager
def _ray(cfg: Config):
    """A `RayEvaluator` of `population_fitness` when ES runs on Ray actors, else None."""
    uses_es = cfg.outer == "es" or any(c != "bptt" for c in cfg.compare)
    if not uses_es or (cfg.actors == 0 and cfg.ray_address is None):
        yield None
        return
    from badgerlab.evolve import RayEvaluator

    remote = RayEvaluator(
        population_fitness, actors=cfg.actors or None, address=cfg.ray_address,
        threads=cfg.threads,
    )  # fmt: skip
    try:
        yield remote
    finally:
        remote.close()


def train(cfg: Config, run: RunLike) -> dict[str, Any]:
    sampler, learners = _sampler(cfg), _learners(cfg)
    with _ray(cfg) as remote:
        for unit in run.units(_keys(cfg), description="vsml from scratch"):
            kind, seed_text = unit.key.rsplit("@", 1)
            seed = int(seed_text)
            if kind != "test":
                name, _, variant = kind.partition("~")
                unit.finish(
                    _meta_train(
                        cfg, run, unit, learners[name], name, sampler, seed, variant, remote
                    )  # fmt: skip
                )
                continue
            trained = {m: run.results[f"{m}@{seed}"]["params"] for m in METHODS}
            res = _evaluate(cfg, learners, trained, seed)
            summary = {k.replace("|", "_"): float(v.mean()) for k, v in res.items() if "|" in k}
            run.log(_offset(cfg, unit), seed=seed, phase="test", **summary)
            unit.finish(res)
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    trainings = {m: [f"{m}@{s}" for s in seeds] for m in METHODS}
    trainings |= {f"vsml~{c}": [f"vsml~{c}@{cfg.seed}"] for c in cfg.compare}
    return {
        "rows": [run.results[f"test@{s}"] for s in seeds],
        "meta_loss": {m: [run.results[k]["meta_loss"] for k in ks] for m, ks in trainings.items()},
        "budget": {
            m: {k: [run.results[u][k] for u in ks] for k in ("seconds", "gflop", "steps")}
            for m, ks in trainings.items()
        },
    }


def _ood_sets(rows: list[dict[str, torch.Tensor]]) -> list[str]:
    return [k.split("|")[1] for k in rows[0] if k.startswith("vsml|ood:")]


LABELS = (("vsml", "VSML"), ("metarnn", "Meta-RNN"), ("adam", "Adam"), ("sgd", "SGD"))


def _curve_key(m: str, cfg: Config) -> str:
    return f"{m}@{_first(cfg)}" if m in ("adam", "sgd") else m


def _outer_label(cfg: Config, m: str) -> str:
    name, _, variant = m.partition("~")
    outer = _unit_outer(cfg, variant, name)
    how = outer.es if outer.kind == "es" else "BPTT"
    if how == "cmaes" and cfg.cmaes_separable:
        how = "sep-cmaes"
    return f"{dict(LABELS)[name]} ({how})"


def _meta_loss_plot(cfg: Config, results: dict[str, Any]):
    """Meta-loss (mean over the seeds each training ran) against steps, and against seconds."""
    import matplotlib.pyplot as plt

    fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(10.0, 4.0), sharey=True)
    for m, curves in results["meta_loss"].items():
        y = torch.tensor(curves, dtype=torch.float64)  # (seeds, steps)
        secs = sum(results["budget"][m]["seconds"]) / len(curves)
        k = max(1, y.shape[1] // 20)
        y = torch.nn.functional.avg_pool1d(y[:, None], k, 1).squeeze(1).mean(0)
        steps = torch.arange(len(y)) + k
        label = f"{_outer_label(cfg, m)}, {len(curves)} seed{'s' if len(curves) > 1 else ''}"
        (line,) = by_step.plot(steps.numpy(), y.numpy(), label=label)
        by_time.plot((steps / y.shape[0] * secs).numpy(), y.numpy(), color=line.get_color())
    for ax in (by_step, by_time):
        ax.axhline(math.log(cfg.classes), color="grey", linestyle=":", label=f"ln {cfg.classes}")
    by_step.set(xlabel="generation (ES) or step (BPTT)", ylabel="meta-loss",
                title="meta-loss per outer step")  # fmt: skip
    by_time.set(xlabel="meta-training wall-clock seconds (one core)",
                title="the same curves against seconds")  # fmt: skip
    by_step.legend(fontsize=7)
    return fig


def _meta_loss_caption(cfg: Config, results: dict[str, Any]) -> str:
    runs = "; ".join(
        f"{_outer_label(cfg, m)} {b['steps'][0]} steps, "
        f"{sum(b['seconds']) / len(b['seconds']):.0f} s per seed"
        for m, b in results["budget"].items()
    )
    missing = {"BPTT", "openai-es", "cmaes"} - {
        _outer_label(cfg, m).split("(")[1][:-1].removeprefix("sep-") for m in results["budget"]
    }
    absent = (
        f" Not run here: {', '.join(sorted(missing))} (add them with --set compare=[...])."
        if missing else ""
    )  # fmt: skip
    return (
        f"Meta-loss of each meta-training (mean over its seeds, smoothed over a twentieth of "
        f"its steps) against outer steps (left) and wall-clock seconds (right): {runs}. "
        f"ln {cfg.classes} = {math.log(cfg.classes):.3f} is chance: a curve that stays there "
        f"has not learned to learn.{absent}"
    )


def plots(cfg: Config, results: dict[str, Any], run: RunLike) -> None:
    rows, ood = results["rows"], _ood_sets(results["rows"])
    for set_name, title in (("in", "in-distribution"), (ood[0] if ood else "in", "OOD")):
        curves = {
            lab: torch.stack([_cumulative(r[f"{_curve_key(m, cfg)}|{set_name}"]) for r in rows])
            for m, lab in LABELS
            if f"{_curve_key(m, cfg)}|{set_name}" in rows[0]
        }
        run.save_figure(
            curve_plot(curves, xlabel="examples seen", ylabel="cumulative online accuracy",
                       title=f"{title}: {set_name}"),
            f"cumulative_accuracy_{'in' if set_name == 'in' else 'ood'}",
            caption=f"Cumulative online accuracy on {title} meta-test episodes ({set_name}; each "
            "example scored before its label): VSML and the Meta-RNN learn by their forward "
            "dynamics alone, Adam and SGD by gradient steps (architecture and learning rate "
            f"tuned on meta-training episodes for the first {_first(cfg)} examples).",
        )  # fmt: skip
    run.save_figure(
        _meta_loss_plot(cfg, results),
        "meta_loss",
        caption=_meta_loss_caption(cfg, results),
    )  # fmt: skip
    traces = {f"c[{j}]": torch.stack([r["trace_c"][:, j] for r in rows]) for j in range(4)}
    traces |= {f"h[{j}]": torch.stack([r["trace_h"][:, j] for r in rows]) for j in range(2)}
    run.save_figure(
        curve_plot(traces, xlabel="example", ylabel="state value",
                   title="introspection: cell (0,0) states over an episode"),
        "cell_states",
        caption="States of the first cell of the grid over one in-distribution episode: the "
        "learning algorithm lives in these activations.",
    )  # fmt: skip
    run.save_json(
        "curves",
        {k: torch.stack([r[k] for r in rows]).tolist() for k in rows[0] if "|" in k},
    )


def _budget_text(cfg: Config, results: dict[str, Any]) -> str:
    b = results["budget"]

    def mean(v: list[float]) -> float:
        return sum(v) / len(v)

    def how(name: str) -> str:
        kind = _unit_outer(cfg, "", name).kind
        return f"{_steps(cfg, name)} {kind} {'generations' if kind == 'es' else 'steps'}"

    return (
        f"VSML {how('vsml')} ({mean(b['vsml']['seconds']):.0f} s, "
        f"{mean(b['vsml']['gflop']):.0f} GFLOP of matmul per seed), Meta-RNN "
        f"{how('metarnn')} ({mean(b['metarnn']['seconds']):.0f} s, "
        f"{mean(b['metarnn']['gflop']):.0f} GFLOP)"
    )


def claims(cfg: Config, results: dict[str, Any]) -> list[Claim]:
    rows, ood = results["rows"], _ood_sets(results["rows"])
    half = cfg.test_length // 2

    def per_seed(key: str, sl: slice) -> list[float]:
        return [float(r[key][sl].mean()) for r in rows if key in r]

    def ood_mean(method: str) -> list[float]:
        return [
            float(torch.stack([r[f"{method}|{s}"].mean() for s in ood]).mean())
            for r in rows
            if all(f"{method}|{s}" in r for s in ood)
        ]

    return [
        *_vsml_claims(cfg, per_seed, half),
        *_es_claims(cfg, per_seed, half),
        *_metarnn_claims(cfg, results, per_seed, ood_mean, half),
        *(c for w in _windows(cfg) for c in _online_claims(cfg, rows, per_seed, w)),
        *_budget_claims(results),
    ]


def _metarnn_claims(cfg: Config, results, per_seed, ood_mean, half: int) -> list[Claim]:
    ood = _ood_sets(results["rows"])
    learned = 1.0 / cfg.classes + CLAIM_IN
    metarnn_in = per_seed("metarnn|in", slice(half, None))
    in_mean = sum(metarnn_in) / len(metarnn_in) if metarnn_in else None
    requires = [condition("Meta-RNN in-distribution accuracy, last half", in_mean, ">", learned)]
    budget, sets = _budget_text(cfg, results), ", ".join(s[4:] for s in ood)

    def gap(m: str) -> list[float]:
        inside, outside = per_seed(f"{m}|in", slice(None)), ood_mean(m)
        if len(outside) != len(inside):  # the Meta-RNN cannot take a set wider than its input
            return []
        return [a - b for a, b in zip(inside, outside, strict=True)]

    return [
        Claim.measure(
            "vsml-ood", f"VSML > Meta-RNN in online accuracy on out-of-distribution meta-test "
            f"sets ({sets}); {budget}; judged only when the Meta-RNN learned in distribution",
            ood_mean("vsml"), paper="VSML generalises; the Meta-RNN overfits to the "
            "meta-training data", op=">", threshold={"ref": "metarnn-ood"}, requires=requires,
        ),
        Claim.measure(
            "metarnn-ood", "Meta-RNN online accuracy on the same OOD sets", ood_mean("metarnn")
        ),
        Claim.measure(
            "vsml-gap", "VSML's generalisation gap (in-distribution − OOD online accuracy, whole "
            f"episodes) < the Meta-RNN's; {budget}; judged only when the Meta-RNN learned",
            gap("vsml"), paper="the Meta-RNN's accuracy drops out of distribution, VSML's "
            "much less", op="<", threshold={"ref": "metarnn-gap"}, requires=requires,
        ),
        Claim.measure("metarnn-gap", "the Meta-RNN's gap, in − OOD", gap("metarnn")),
        Claim.measure(
            "adam-gap", "the tuned online Adam's gap, in − OOD (how much harder the OOD sets "
            "are for a learner that was never meta-trained; negative: easier)",
            gap(f"adam@{_first(cfg)}"),
        ),
        Claim.measure(
            "metarnn-in-last-half", f"Meta-RNN, last half of in-distribution episodes ({budget}, "
            f"lr {cfg.metarnn_lr:g}); learned means > chance + {CLAIM_IN} = {learned:.3f}",
            metarnn_in, paper="the Meta-RNN learns in distribution",
        ),
    ]  # fmt: skip


def _online_claims(cfg: Config, rows, per_seed, w: int) -> list[Claim]:
    """VSML against the better of the tuned online Adam and SGD over the first w examples.
    Which one is better is decided by the tuning scores (meta-training episodes)."""
    best = [max(("adam", "sgd"), key=lambda o: r["tuned"][f"{o}@{w}"]["score"]) for r in rows]
    picks = "; ".join(
        f"{o} {r['tuned'][f'{o}@{w}']['arch']} lr {r['tuned'][f'{o}@{w}']['lr']:g}"
        for o, r in zip(best, rows, strict=True)
    )
    base = [float(r[f"{o}@{w}|in"][:w].mean()) for o, r in zip(best, rows, strict=True)]
    claims = [
        Claim.measure(
            f"vsml-first-{w}",
            f"VSML > the best tuned online learner over examples 1–{w} of in-distribution "
            "meta-test episodes",
            per_seed("vsml|in", slice(0, w)),
            paper="VSML learns faster than online Adam (Fig. 7: ahead over the first examples)",
            op=">",
            threshold={"ref": f"online-first-{w}"},
        ),
        Claim.measure(
            f"online-first-{w}",
            f"best online learner per seed ({picks}), chosen with its architecture (MLP 160 or "
            f"linear) and learning rate ({cfg.online_lrs}) on meta-training episodes for "
            f"accuracy over examples 1–{w}",
            base,
            paper="baseline",
        ),
    ]
    for o in ("adam", "sgd"):
        text = f"online {o}, tuned the same way, over examples 1–{w}"
        claims.append(Claim.measure(f"{o}-first-{w}", text, per_seed(f"{o}@{w}|in", slice(0, w))))
    return claims


def _budget_claims(results: dict[str, Any]) -> list[Claim]:
    b = results["budget"]
    return [
        Claim.measure(
            f"{m}-meta-train-seconds", f"{m} meta-training wall-clock seconds per seed",
            b[m]["seconds"],
        )
        for m in METHODS
    ] + [
        Claim.measure(
            f"{m}-meta-train-gflop", f"{m} meta-training matmul GFLOP per seed (torch's "
            "FLOP counter on the first step × steps)", b[m]["gflop"],
        )
        for m in METHODS
    ]  # fmt: skip


def _vsml_claims(cfg: Config, per_seed, half: int) -> list[Claim]:
    return [
        Claim.measure(
            "vsml-in-last-half",
            f"VSML's online accuracy over the last half of {cfg.test_length}-example "
            f"in-distribution episodes ({cfg.inputs} inputs, {cfg.classes} classes) > chance + "
            f"{CLAIM_IN}, by forward dynamics alone",
            per_seed("vsml|in", slice(half, None)),
            paper="VSML learns MNIST online from scratch (Fig. 7)",
            op=">",
            threshold=1.0 / cfg.classes + CLAIM_IN,
        ),
        Claim.measure(
            "vsml-other-size",
            f"the same VSML parameters on a {cfg.other_inputs}×{cfg.other_classes} grid (digits "
            f"test, {cfg.other_classes} classes) stay > chance + {CLAIM_OTHER} over the last half",
            per_seed("vsml|other", slice(half, None)),
            paper="VSML runs on grids of any size",
            op=">",
            threshold=1.0 / cfg.other_classes + CLAIM_OTHER,
        ),
        Claim.measure(
            "vsml-memorise",
            "VSML accuracy over the last half of random-label "
            f"memorisation episodes ({cfg.memorise_size} inputs)",
            per_seed("vsml|memorise", slice(half, None)),
        ),
    ]


def _es_claims(cfg: Config, per_seed, half: int) -> list[Claim]:
    """With outer=es: VSML meta-learned from scratch by ES learns, on average and in every seed."""
    if cfg.outer != "es":
        return []
    values = per_seed("vsml|in", slice(half, None))
    learned = 1.0 / cfg.classes + CLAIM_IN
    how = (
        f"{cfg.es}, σ {cfg.sigma:g}, population {cfg.popsize}, {cfg.generations} generations "
        f"of {cfg.es_batch} {cfg.length}-example episodes per pair"
    )
    enough = [condition("seeds run", cfg.seeds, ">=", 3)]
    text = (
        f"over the last half of {cfg.test_length}-example in-distribution episodes > chance + "
        f"{CLAIM_IN} = {learned:.3f}"
    )
    return [
        Claim.measure(
            "vsml-es-in", f"VSML meta-trained from scratch by ES ({how}): online accuracy "
            f"{text}, mean over {cfg.seeds} seeds (judged with >= 3)", values,
            paper="VSML meta-learns a learning algorithm from scratch with ES",
            op=">", threshold=learned, requires=enough,
        ),
        Claim.measure(
            "vsml-es-every-seed", f"the same, for the worst of the {cfg.seeds} seeds: every "
            "seed learns", [min(values)] if values else None, op=">", threshold=learned,
            requires=enough,
        ),
    ]  # fmt: skip


EXPERIMENT = Experiment(
    name="vsml-from-scratch",
    paper=VSML_PAPER,
    bibtex=VSML_BIBTEX,
    description="Meta-train VSML's shared LSTM (and a Meta-RNN baseline on the same tasks and "
    "budget) on digits classification tasks to minimise online cross-entropy; meta-test on "
    "unseen data, other grid sizes and random-label memorisation, beside online Adam and SGD.",
    minutes={"smoke": 0.25, "quick": 8},
    Config=Config,
    train=train,
    plots=plots,
    claims=claims,
    scales={
        "smoke": {
            "seeds": 1,
            "steps": 3,
            "metarnn_steps": 4,
            "batch": 2,
            "length": 10,
            "test_episodes": 2,
            "test_length": 12,
            "ood_datasets": ["iris"],
            "other_inputs": 24,
            "metarnn_hidden": 16,
            "checkpoint_every": 2,
            "popsize": 8,
            "generations": 3,
            "es_batch": 1,
        },
        "paper": {
            "dataset": "mnist",
            "outer": "es",
            "shaping": "none",
            "es_lr": 0.025,
            "popsize": 1024,
            "es_batch": 1,
            "generations": 10_000,
            "inputs": 784,
            "classes": 10,
            "length": 500,
            "test_length": 2000,
            "test_episodes": 32,
            "layer_norm": False,
            "backward_pass": False,
            "feed_label": False,
            "other_inputs": 392,
            "other_classes": 5,
            "max_inputs": 784,
            "max_classes": 10,
            "ood_datasets": ["fashion_mnist"],
        },
    },
    variants=(
        PaperVariant(
            "mnist",
            {
                "dataset": "mnist",
                "ood_datasets": ["fashion_mnist"],
                "max_inputs": 64,
                "inputs": 32,
                "other_inputs": 64,
            },
            ("mnist", "fashion_mnist"),
            "meta-train on MNIST tasks, meta-test on Fashion-MNIST (source post's figure)",
        ),
    ),
)
