"""VSML meta-learned from scratch: an online learning algorithm in the activations of a grid."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field

from badgerlab.data import Dataset, TaskSampler, load
from badgerlab.experiment import Experiment, ExperimentConfig, PaperVariant
from badgerlab.online import online_learn
from badgerlab.plots import curve_plot
from badgerlab.runs import Claim, Run
from badgerlab.vsml import BIBTEX as VSML_BIBTEX
from badgerlab.vsml import PAPER as VSML_PAPER
from badgerlab.vsml.baselines import Learner, MetaRNN, VSMLLearner
from badgerlab.vsml.metatrain import AdamState, adam_init, bptt_step, es_init, es_step
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
    es: str = Field("openai-es", description="ES from badgerlab.evolve when outer=es")
    popsize: int = Field(64, ge=2, le=65536, description="ES population (even)")
    sigma: float = Field(0.05, gt=0, le=10, description="ES noise std (reference 0.05)")
    es_lr: float = Field(0.025, gt=0, le=10, description="ES Adam learning rate (reference)")
    steps: int = Field(220, ge=1, le=1_000_000, description="meta-training steps per learner")
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
    max_inputs: int = Field(32, ge=1, le=100_000, description="Meta-RNN input padding")
    max_classes: int = Field(5, ge=2, le=1000, description="Meta-RNN output padding")
    test_episodes: int = Field(32, ge=1, le=4096, description="meta-test episodes per set")
    test_length: int = Field(100, ge=2, le=100_000, description="examples per meta-test episode")
    other_inputs: int = Field(
        64, ge=1, le=100_000, description="A of the other-size grid (64 = raw digits pixels)"
    )
    other_classes: int = Field(5, ge=2, le=100, description="B of the other-size grid")
    memorise_size: int = Field(20, ge=1, le=10_000, description="random-label set size")
    checkpoint_every: int = Field(25, ge=1, le=1_000_000, description="steps per checkpoint")


CLAIM_IN, CLAIM_OTHER = 0.2, 0.1  # margins above chance fixed by the issue
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


def _save(run: Run, step: int, done: list, state: dict, tensors: dict) -> None:
    full = dict(tensors)
    for j, res in enumerate(done):
        full |= {f"done{j}.{k}": v for k, v in res.items()}
    run.save_checkpoint(step, full, {**state, "done": len(done)})


def _meta_train(cfg, run, learner, name, sampler, seed, index, done, bar, resume):
    """Meta-train one learner with checkpoints; returns its parameters (no population axis)."""
    g = torch.Generator().manual_seed(seed * 1000 + METHODS.index(name))
    params = learner.init_params(generator=g)
    step, es_state, opt = 0, None, adam_init(params)
    if cfg.outer == "es":
        options = {"sigma": cfg.sigma}
        if cfg.es.startswith("openai-es"):
            options["lr"] = cfg.es_lr
        es_state = es_init(learner, params, es=cfg.es, popsize=cfg.popsize, **options)
    if resume is not None:
        t = resume.tensors
        step = int(resume.state["step"])
        g.set_state(t["gen"])
        if cfg.outer == "es":
            from badgerlab.evolve import load_state

            es_state = load_state(
                es_state, {k[3:]: v for k, v in t.items() if k.startswith("es.")}
            )
        else:
            params = {k[2:]: v for k, v in t.items() if k.startswith("p.")}
            opt = AdamState(
                {k[2:]: v for k, v in t.items() if k.startswith("m.")},
                {k[2:]: v for k, v in t.items() if k.startswith("v.")},
                t["opt_step"],
            )
        bar.update(step)
    offset = (index * len(METHODS) + METHODS.index(name)) * cfg.steps
    while step < cfg.steps:
        if cfg.outer == "es":
            e = sampler.sample(cfg.popsize // 2 * cfg.batch, generator=g)
            x, y = _time_major(e)
            T = x.shape[0]
            x = x.view(T, cfg.popsize // 2, cfg.batch, -1)
            y = y.view(T, cfg.popsize // 2, cfg.batch)
            es_state, loss = es_step(learner, cfg.es, es_state, x, y, e.num_classes, generator=g)
            gnorm = float("nan")
        else:
            x, y = _time_major(sampler.sample(cfg.batch, generator=g))
            params, opt, loss, gnorm = bptt_step(
                learner,
                params,
                opt,
                x,
                y,
                cfg.classes,
                lr=cfg.lr,
                clip=cfg.clip,
                truncation=cfg.truncation if name == "vsml" else None,
                generator=g,
            )
        step += 1
        run.log(offset + step, seed=seed, learner=name, meta_loss=loss, grad_norm=gnorm)
        bar.update(1, **{name: loss})
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            if cfg.outer == "es":
                from badgerlab.evolve import state_dict

                tens = {f"es.{k}": v for k, v in state_dict(es_state).items()}
            else:
                tens = {f"p.{k}": v for k, v in params.items()}
                tens |= {f"m.{k}": v for k, v in opt.m.items()}
                tens |= {f"v.{k}": v for k, v in opt.v.items()}
                tens["opt_step"] = opt.step
            tens["gen"] = g.get_state()
            _save(
                run,
                offset + step,
                done,
                {"seed_index": index, "learner": name, "step": step},
                tens,
            )
    if cfg.outer == "es":
        from badgerlab.evolve import get_es
        from badgerlab.vsml.metatrain import unflatten

        params = unflatten(get_es(cfg.es).center(es_state), learner.param_shapes())
    return params


@torch.no_grad()
def _online_curve(learner: Learner, params, episodes, generator) -> torch.Tensor:
    x, y = _time_major(episodes)
    out = learner.run(params, x, y, episodes.num_classes, generator=generator)
    return out.correct[:, 0].float().mean(1)  # (T,)


def _evaluate(cfg: Config, learners, trained, seed: int) -> dict[str, torch.Tensor]:
    train = load(cfg.dataset, "train")
    test = _standardised(load(cfg.dataset, "test"), train)
    n, T = cfg.test_episodes, cfg.test_length
    sets = {
        "in": TaskSampler(
            test,
            length=T,
            num_classes=cfg.classes,
            project_to=_projection(cfg.inputs, test),
            projection="episode",
        ),
        "other": TaskSampler(
            test,
            length=T,
            num_classes=cfg.other_classes,
            project_to=_projection(cfg.other_inputs, test),
            projection="episode",
        ),
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
        k = min(ds.num_classes, cfg.max_classes)
        sets[f"ood:{name}"] = TaskSampler(
            Dataset(flat, ds.y, ds.num_classes, (flat.shape[1],), name),
            length=T,
            num_classes=k,
            project_to=None if flat.shape[1] <= cfg.max_inputs else cfg.max_inputs,
            projection="episode",
        )
    out: dict[str, torch.Tensor] = {}
    for set_name, sampler in sets.items():
        eps = sampler.sample(n, seed=50_000 + seed)
        for m in METHODS:
            if m == "metarnn" and (
                eps.x.shape[-1] > cfg.max_inputs or eps.num_classes > cfg.max_classes
            ):
                continue
            g = torch.Generator().manual_seed(seed)
            out[f"{m}|{set_name}"] = _online_curve(learners[m], trained[m], eps, g)
        for opt, lr in (("adam", 1e-3), ("sgd", 1e-2)):
            r = online_learn(
                eps.x, eps.y, eps.num_classes, optimizer=opt, lr=lr, hidden=(160,), seed=seed
            )
            out[f"{opt}|{set_name}"] = r.accuracy_curve
    out["chance|in"] = torch.tensor(1.0 / cfg.classes)
    out["chance|other"] = torch.tensor(1.0 / cfg.other_classes)
    # Introspection: the first cell states of the in-distribution grid over one episode.
    e = sets["in"].sample(1, seed=60_000 + seed)
    x, y = _time_major(e)
    vl = learners["vsml"]
    r = episode(
        trained["vsml"],
        x,
        y,
        vl.cfg,
        sizes=(x.shape[-1], *cfg.hidden, e.num_classes),
        generator=torch.Generator().manual_seed(seed),
        record=True,
    )
    out["trace_c"] = torch.stack([s[0].c[0, 0, 0, 0, :4] for s in r.trace])  # (T, 4)
    out["trace_h"] = torch.stack([s[0].h[0, 0, 0, 0, :4] for s in r.trace])
    return out


def _cumulative(c: torch.Tensor) -> torch.Tensor:
    return c.cumsum(-1) / torch.arange(1, c.shape[-1] + 1)


def run(cfg: Config, run: Run) -> list[Claim]:
    train = load(cfg.dataset, "train")
    train_std = _standardised(train, train)
    sampler = TaskSampler(
        train_std,
        length=cfg.length,
        num_classes=cfg.classes,
        project_to=_projection(cfg.inputs, train_std),
        projection="episode",
    )
    learners = _learners(cfg)
    done: list[dict[str, torch.Tensor]] = []
    ckpt = run.load_checkpoint()
    resume_at, trained_partial = None, {}
    if ckpt is not None:
        for j in range(int(ckpt.state.get("done", 0))):
            pre = f"done{j}."
            done.append({k[len(pre) :]: v for k, v in ckpt.tensors.items() if k.startswith(pre)})
        if "learner" in ckpt.state and ckpt.state["seed_index"] == len(done):
            resume_at = ckpt
            for m in METHODS[: METHODS.index(ckpt.state["learner"])]:
                pre = f"cur.{m}."
                trained_partial[m] = {
                    k[len(pre) :]: v for k, v in ckpt.tensors.items() if k.startswith(pre)
                }
    total = cfg.seeds * len(METHODS) * cfg.steps
    with run.progress(total, "vsml from scratch", completed=0) as bar:
        bar.update(len(done) * len(METHODS) * cfg.steps)
        for i in range(len(done), cfg.seeds):
            seed = cfg.seed + i
            trained = dict(trained_partial) if resume_at is not None else {}
            for m in METHODS:
                if m in trained:
                    bar.update(cfg.steps)
                    continue
                res = (
                    resume_at
                    if (resume_at is not None and resume_at.state["learner"] == m)
                    else None
                )
                # The other learners' finished parameters ride along in every checkpoint.
                extra = {f"cur.{k}.{n}": v for k, p in trained.items() for n, v in p.items()}
                trained[m] = _meta_train(
                    cfg, _Extra(run, extra), learners[m], m, sampler, seed, i, done, bar, res
                )
            resume_at, trained_partial = None, {}
            res = _evaluate(cfg, learners, trained, seed)
            res |= {f"param.{m}.{k}": v for m in METHODS for k, v in trained[m].items()}
            done.append(res)
            summary = {
                k.replace("|", "_"): float(v.mean())
                for k, v in res.items()
                if "|" in k and not k.startswith("chance")
            }
            run.log(cfg.seeds * len(METHODS) * cfg.steps + i, seed=seed, phase="test", **summary)
            _save(run, cfg.seeds * len(METHODS) * cfg.steps + i, done, {"seed_index": i + 1}, {})
    return _claims(cfg, run, done)


class _Extra:
    """A Run proxy whose checkpoints also carry `extra` tensors (finished learners)."""

    def __init__(self, run: Run, extra: dict[str, torch.Tensor]) -> None:
        self._run, self._extra = run, extra

    def save_checkpoint(self, step, tensors=None, state=None):
        return self._run.save_checkpoint(step, {**(tensors or {}), **self._extra}, state)

    def __getattr__(self, name):
        return getattr(self._run, name)


def _claims(cfg: Config, run: Run, done: list[dict[str, torch.Tensor]]) -> list[Claim]:
    half = cfg.test_length // 2
    first = min(100, cfg.test_length)

    def per_seed(key: str, sl: slice) -> list[float]:
        return [float(r[key][sl].mean()) for r in done if key in r]

    ood = [k.split("|")[1] for k in done[0] if k.startswith("vsml|ood:")]

    def ood_mean(method: str) -> list[float]:
        return [
            float(torch.stack([r[f"{method}|{s}"].mean() for s in ood]).mean())
            for r in done
            if all(f"{method}|{s}" in r for s in ood)
        ]

    chance_in, chance_other = 1.0 / cfg.classes, 1.0 / cfg.other_classes
    for set_name, title in (
        ("in", "in-distribution (digits test split)"),
        (ood[0] if ood else "in", "out-of-distribution"),
    ):
        curves = {
            lab: torch.stack([_cumulative(r[f"{m}|{set_name}"]) for r in done])
            for m, lab in (
                ("vsml", "VSML"),
                ("metarnn", "Meta-RNN"),
                ("adam", "Adam"),
                ("sgd", "SGD"),
            )
            if f"{m}|{set_name}" in done[0]
        }
        run.save_figure(
            curve_plot(
                curves,
                xlabel="examples seen",
                ylabel="cumulative online accuracy",
                title=f"{title}: {set_name}",
            ),
            f"cumulative_accuracy_{'in' if set_name == 'in' else 'ood'}",
        )
    traces = {f"c[{j}]": torch.stack([r["trace_c"][:, j] for r in done]) for j in range(4)}
    traces |= {f"h[{j}]": torch.stack([r["trace_h"][:, j] for r in done]) for j in range(2)}
    run.save_figure(
        curve_plot(
            traces,
            xlabel="example",
            ylabel="state value",
            title="introspection: cell (0,0) states over an episode",
        ),
        "cell_states",
    )
    run.save_json(
        "curves",
        {
            k: torch.stack([r[k] for r in done]).tolist()
            for k in done[0]
            if "|" in k and not k.startswith("chance")
        },
    )
    return [
        Claim.measure(
            "vsml-in-last-half",
            f"VSML's online accuracy over the last half of {cfg.test_length}-example "
            f"in-distribution episodes ({cfg.inputs} inputs, {cfg.classes} classes) > chance + "
            f"{CLAIM_IN}, by forward dynamics alone",
            per_seed("vsml|in", slice(half, None)),
            paper="VSML learns MNIST online from scratch (Fig. 7)",
            op=">",
            threshold=chance_in + CLAIM_IN,
        ),
        Claim.measure(
            "vsml-ood",
            "VSML online accuracy on out-of-distribution meta-test sets "
            f"({', '.join(s[4:] for s in ood)})",
            ood_mean("vsml"),
            paper="VSML generalises to Fashion-MNIST",
            op=">",
            threshold={"ref": "metarnn-ood"},
        ),
        Claim.measure(
            "metarnn-ood",
            "Meta-RNN online accuracy on the same OOD sets",
            ood_mean("metarnn"),
            paper="Meta-RNN overfits to the meta-training data",
        ),
        Claim.measure(
            "vsml-first-100",
            f"VSML accuracy over examples 1–{first} of in-distribution meta-test episodes",
            per_seed("vsml|in", slice(0, first)),
            paper="VSML learns faster than online Adam",
            op=">",
            threshold={"ref": "adam-first-100"},
        ),
        Claim.measure(
            "adam-first-100",
            f"online Adam (MLP 160, lr 1e-3) over examples 1–{first}",
            per_seed("adam|in", slice(0, first)),
            paper="baseline",
        ),
        Claim.measure(
            "vsml-other-size",
            f"the same VSML parameters on a {cfg.other_inputs}×{cfg.other_classes} grid (digits "
            f"test, {cfg.other_classes} classes) stay > chance + {CLAIM_OTHER} over the last half",
            per_seed("vsml|other", slice(half, None)),
            paper="VSML runs on grids of any size",
            op=">",
            threshold=chance_other + CLAIM_OTHER,
        ),
        Claim.measure(
            "vsml-memorise",
            "VSML accuracy over the last half of random-label "
            f"memorisation episodes ({cfg.memorise_size} inputs)",
            per_seed("vsml|memorise", slice(half, None)),
            paper="info",
        ),
        Claim.measure(
            "metarnn-in-last-half",
            "Meta-RNN, last half, in-distribution",
            per_seed("metarnn|in", slice(half, None)),
            paper="info",
        ),
        Claim.measure(
            "sgd-first-100",
            f"online SGD (MLP 160, lr 1e-2) over examples 1–{first}",
            per_seed("sgd|in", slice(0, first)),
            paper="baseline",
        ),
    ]


EXPERIMENT = Experiment(
    name="vsml-from-scratch",
    paper=VSML_PAPER,
    bibtex=VSML_BIBTEX,
    description="Meta-train VSML's shared LSTM (and a Meta-RNN baseline on the same tasks and "
    "budget) on digits classification tasks to minimise online cross-entropy; meta-test on "
    "unseen data, other grid sizes and random-label memorisation, beside online Adam and SGD.",
    minutes={"smoke": 0.25, "quick": 8},
    Config=Config,
    run=run,
    scales={
        "smoke": {
            "seeds": 1,
            "steps": 3,
            "batch": 2,
            "length": 10,
            "test_episodes": 2,
            "test_length": 12,
            "ood_datasets": ["iris"],
            "other_inputs": 24,
            "metarnn_hidden": 16,
            "checkpoint_every": 2,
        },
        "paper": {
            "dataset": "mnist",
            "outer": "es",
            "popsize": 1024,
            "batch": 1,
            "steps": 10_000,
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
