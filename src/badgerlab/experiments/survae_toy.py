"""SurVAE flows on 2-D toy densities: 4 affine couplings with and without an abs surjection."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from badgerlab.experiment import Count, Experiment, ExperimentConfig
from badgerlab.experiments._flows import fit_flow
from badgerlab.flows import (
    BIBTEX,
    PAPER,
    Abs,
    AffineCoupling,
    Flow,
    InverseSoftplus,
    Reverse,
    StandardNormal,
)
from badgerlab.runs import Claim, RunLike, condition

Dataset = Literal["eight-gaussians", "checkerboard", "four-circles", "corners"]
CLAIM_DATASET = "eight-gaussians"
MODELS = ("plain", "abs")
# Fixed by the issue before measuring: the abs-flow's test NLL is 0.15 nats below the plain
# flow's. The plain flow counts as a baseline doing its job when it beats the best single
# Gaussian (closed-form fit on training data) by 0.5 nats (fixed before measuring).
MARGIN = 0.15
LEARNED_MARGIN = 0.5


class Config(ExperimentConfig):
    seeds: int = Field(3, ge=1, le=100, description="seeds for eight gaussians (the claim)")
    other_datasets: tuple[Dataset, ...] = Field(
        ("checkerboard", "four-circles", "corners"),
        description="further densities, trained for the figure and info claims",
    )
    other_seeds: int = Field(1, ge=1, le=100, description="seeds for each further density")
    steps: int = Field(4000, ge=1, le=1_000_000, description="Adam steps per model")
    batch_size: int = Field(256, ge=8, le=65_536, description="fresh samples per step")
    lr: float = Field(1e-3, gt=0, le=1, description="Adam learning rate (both models)")
    hidden: tuple[Count, ...] = Field((200, 100), description="coupling MLP hidden widths")
    couplings: int = Field(4, ge=1, le=64, description="affine couplings per flow")
    test_size: int = Field(20_000, ge=100, le=10_000_000, description="test samples")
    checkpoint_every: int = Field(500, ge=1, le=1_000_000, description="steps per checkpoint")
    grid: int = Field(160, ge=8, le=2000, description="density grid points per axis (figure)")


# -- data: 2-D densities, sampled with an explicit generator ------------------------------------


def _eight_gaussians(n: int, g: torch.Generator) -> torch.Tensor:
    """Centres at angles π/8 + kπ/4 on the radius-4 circle, std 0.5, all divided by 1.414."""
    k = torch.randint(8, (n,), generator=g)
    angle = math.pi / 8 + k * math.pi / 4
    centre = 4.0 * torch.stack([angle.cos(), angle.sin()], 1)
    return (centre + 0.5 * torch.randn(n, 2, generator=g)) / 1.414


def _checkerboard(n: int, g: torch.Generator) -> torch.Tensor:
    x1 = torch.rand(n, generator=g) * 4 - 2
    x2 = torch.rand(n, generator=g) - 2 * torch.randint(2, (n,), generator=g) + x1.floor() % 2
    return 2 * torch.stack([x1, x2], 1)


def _four_circles(n: int, g: torch.Generator) -> torch.Tensor:
    """Rings of radius 2 (std 0.05) centred at (±1, ±1)."""
    u = 2 * math.pi * torch.rand(n, generator=g)
    ring = 2 * torch.stack([u.cos(), u.sin()], 1) + 0.05 * torch.randn(n, 2, generator=g)
    centre = 2.0 * torch.randint(2, (n, 2), generator=g) - 1
    return ring + centre


def _corners(n: int, g: torch.Generator) -> torch.Tensor:
    """Four L-shaped corners: arms 3×1 and 1×3 starting 1 from the axes, random signs."""
    long = 1 + 3 * torch.rand(n, generator=g)
    short = 1 + torch.rand(n, generator=g)
    horizontal = torch.rand(n, generator=g) < 0.5
    xy = torch.where(
        horizontal.unsqueeze(1), torch.stack([long, short], 1), torch.stack([short, long], 1)
    )
    return xy * (2.0 * torch.randint(2, (n, 2), generator=g) - 1)


SAMPLERS = {
    "eight-gaussians": _eight_gaussians,
    "checkerboard": _checkerboard,
    "four-circles": _four_circles,
    "corners": _corners,
}


def _eight_gaussians_log_prob(x: torch.Tensor) -> torch.Tensor:
    """The true log-density of `_eight_gaussians`, `(N, 2) -> (N,)`."""
    k = torch.arange(8, dtype=x.dtype)
    angle = math.pi / 8 + k * math.pi / 4
    centres = 4.0 * torch.stack([angle.cos(), angle.sin()], 1) / 1.414  # (8, 2)
    s = 0.5 / 1.414
    d2 = ((x.unsqueeze(1) - centres) ** 2).sum(-1)  # (N, 8)
    lp = -0.5 * d2 / s**2 - math.log(2 * math.pi * s**2)
    return torch.logsumexp(lp, 1) - math.log(8)


# -- models ---------------------------------------------------------------------------------


def _build(model: str, cfg: Config) -> Flow:
    """Couplings alternate halves (`Reverse`); the abs-flow folds `x` into the positive
    quadrant first and maps it back onto ℝ² with an inverse softplus (exactly normalised)."""
    transforms = [Abs(), InverseSoftplus()] if model == "abs" else []
    for i in range(cfg.couplings):
        if i:
            transforms.append(Reverse(2))
        transforms.append(AffineCoupling(2, hidden=cfg.hidden))
    return Flow(StandardNormal(2), transforms)


def _fresh(model: str, seed: int, cfg: Config) -> tuple[Flow, torch.optim.Optimizer]:
    with torch.random.fork_rng():  # the init is seeded without touching the global stream
        torch.manual_seed(seed * 10 + MODELS.index(model))
        flow = _build(model, cfg)
    return flow, torch.optim.Adam(flow.parameters(), lr=cfg.lr)


@torch.no_grad()
def _nll(flow: Flow, x: torch.Tensor) -> float:
    return float(torch.cat([-flow.log_prob(c) for c in x.split(8192)]).mean())


def _lims(dataset: str) -> float:
    return 4.0 if dataset in ("eight-gaussians", "four-circles") else 4.5


@torch.no_grad()
def _density_grid(flow: Flow, dataset: str, n: int) -> torch.Tensor:
    lim = _lims(dataset)
    c = torch.linspace(-lim, lim, n)
    xy = torch.stack(torch.meshgrid(c, c, indexing="xy"), -1).reshape(-1, 2)
    return flow.log_prob(xy).exp().reshape(n, n)


def _train_unit(unit, key: str, cfg: Config, run: RunLike) -> dict:
    dataset, seed_s, model = key.split("/")
    seed = int(seed_s)
    sample = SAMPLERS[dataset]
    flow, opt = _fresh(model, seed, cfg)

    def loss(g: torch.Generator) -> torch.Tensor:
        return -flow.log_prob(sample(cfg.batch_size, g)).mean()

    history = fit_flow(
        unit, run, flow, opt, cfg, seed, loss, "train_nll", dataset=dataset, model=model, seed=seed
    )
    g = torch.Generator().manual_seed(10_000 + seed)  # the same test set for both models
    test, train = sample(cfg.test_size, g), sample(cfg.test_size, g)
    res = {"test_nll": _nll(flow, test), "history": history}
    mu, var = train.mean(0), train.var(0)
    res["gaussian_nll"] = float(
        (0.5 * ((test - mu) ** 2 / var + torch.log(2 * math.pi * var))).sum(1).mean()
    )
    if dataset == CLAIM_DATASET:
        res["true_nll"] = float(-_eight_gaussians_log_prob(test).mean())
    res["density"] = _density_grid(flow, dataset, cfg.grid)
    with torch.no_grad():
        res["samples"] = flow.sample(4000, generator=torch.Generator().manual_seed(seed))
    return res


def _keys(cfg: Config) -> list[str]:
    keys = [f"{CLAIM_DATASET}/{cfg.seed + i}/{m}" for i in range(cfg.seeds) for m in MODELS]
    for d in cfg.other_datasets:
        if d != CLAIM_DATASET:
            keys += [f"{d}/{cfg.seed + i}/{m}" for i in range(cfg.other_seeds) for m in MODELS]
    return keys


def train(cfg: Config, run: RunLike) -> dict:
    """One unit per dataset × seed × model, each checkpointed every `checkpoint_every` steps."""
    keys = _keys(cfg)
    for unit in run.units(keys, description="survae-toy"):
        unit.finish(_train_unit(unit, unit.key, cfg, run))
    res = run.results
    out: dict = {}
    for key in keys:
        dataset, _, model = key.split("/")
        out.setdefault(dataset, {}).setdefault(model, []).append(res[key])
    return out


def plots(cfg: Config, results: dict, run: RunLike) -> None:
    import matplotlib.pyplot as plt

    datasets = list(results)
    fig, axes = plt.subplots(len(datasets), 5, figsize=(15, 3 * len(datasets)), squeeze=False)
    for row, dataset in zip(axes, datasets, strict=True):
        lim = _lims(dataset)
        data = SAMPLERS[dataset](4000, torch.Generator().manual_seed(0))
        row[0].scatter(data[:, 0], data[:, 1], s=1, alpha=0.4)
        row[0].set_title(f"{dataset}: data")
        for j, model in enumerate(MODELS):
            r = results[dataset][model][0]
            row[1 + 2 * j].imshow(r["density"], origin="lower", extent=(-lim, lim, -lim, lim))
            row[1 + 2 * j].set_title(f"{model} flow density (NLL {r['test_nll']:.3f})")
            s = r["samples"]
            row[2 + 2 * j].scatter(s[:, 0], s[:, 1], s=1, alpha=0.4)
            row[2 + 2 * j].set_title(f"{model} flow samples")
        for ax in row:
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
    run.save_figure(
        fig,
        "densities",
        caption="Each row a 2-D density: training samples, then density and samples of the "
        "plain coupling flow and of the abs-flow (first seed). Look for the abs-flow's "
        "modes being sharp and symmetric in all four quadrants, while the plain flow smears "
        "mass between modes (thin bridges). The checkerboard is not symmetric under sign "
        "flips, so there the abs-flow cannot fit it: the fold is a modelling assumption.",
    )
    run.save_json(
        "test_nll",
        {d: {m: [r["test_nll"] for r in rs] for m, rs in by.items()} for d, by in results.items()},
    )


def claims(cfg: Config, results: dict) -> list[Claim]:
    eg = results[CLAIM_DATASET]
    plain = [r["test_nll"] for r in eg["plain"]]
    abs_ = [r["test_nll"] for r in eg["abs"]]
    gauss = sum(r["gaussian_nll"] for r in eg["plain"]) / len(eg["plain"])
    n, steps = len(plain), f"{cfg.steps} steps of batch {cfg.batch_size}"
    out = [
        Claim.measure(
            "abs-flow-gain-eight-gaussians",
            f"on eight gaussians the abs-flow's test NLL is at least {MARGIN} nats below the "
            f"plain flow's ({cfg.couplings} affine couplings each, same {steps}, lr "
            f"{cfg.lr}; {n} seeds, {cfg.test_size} test points): plain − abs per seed",
            [p - a for p, a in zip(plain, abs_, strict=True)],
            paper="abs surjection exploits the symmetry (Fig. 3); trial here 3.100 vs 2.893",
            op=">=",
            threshold=MARGIN,
            requires=[
                condition(
                    "plain flow test NLL below the best Gaussian's − 0.5",
                    sum(plain) / n,
                    "<",
                    gauss - LEARNED_MARGIN,
                )
            ],
        ),  # fmt: skip
        Claim.measure("plain-nll-eight-gaussians", "plain flow test NLL (nats)", plain),
        Claim.measure("abs-nll-eight-gaussians", "abs-flow test NLL (nats)", abs_),
        Claim.measure(
            "true-nll-eight-gaussians",
            "NLL of the true density on the same test points (≈ entropy 2.84)",
            [r["true_nll"] for r in eg["plain"]],
        ),
        Claim.measure("gaussian-nll-eight-gaussians", "best single Gaussian's test NLL", gauss),
    ]
    for dataset, by_model in results.items():
        if dataset == CLAIM_DATASET:
            continue
        for model in MODELS:
            out.append(
                Claim.measure(
                    f"{model}-nll-{dataset}",
                    f"{model} flow test NLL on {dataset} (nats, {cfg.other_seeds} seeds)",
                    [r["test_nll"] for r in by_model[model]],
                )
            )
    return out


EXPERIMENT = Experiment(
    name="survae-toy",
    paper=PAPER,
    bibtex=BIBTEX,
    description="Affine coupling flows on 2-D densities (eight gaussians, checkerboard, four "
    "circles, corners) with and without an abs surjection in front, the paper's Fig. 3: test "
    "NLL in nats, densities and samples side by side.",
    minutes={"smoke": 0.1, "quick": 5},  # quick measured 3.6 min wall under load
    Config=Config,
    train=train,
    plots=plots,
    claims=claims,
    scales={
        "smoke": {
            "seeds": 1,
            "other_datasets": ("four-circles",),
            "steps": 40,
            "batch_size": 64,
            "hidden": (16,),
            "test_size": 500,
            "checkpoint_every": 15,
            "grid": 20,
        },
        "paper": {"seeds": 5, "other_seeds": 5, "steps": 20_000, "test_size": 128_000},
    },
)
