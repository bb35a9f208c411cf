"""A multiscale DEQ learns a shape's class and its pixel mask at once, on generated images."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor

from badgerlab.deq import MDEQ, SOLVERS, DEQConfig, MDEQConfig
from badgerlab.experiment import Count, Experiment, ExperimentConfig
from badgerlab.plots import curve_plot
from badgerlab.runs import Claim, RunLike

SHAPES = ("disk", "square", "triangle")


class Config(ExperimentConfig):
    image_size: int = Field(16, ge=8, le=128, description="side of the square images (pixels)")
    train_size: int = Field(2048, ge=32, le=1_000_000, description="generated training images")
    test_size: int = Field(512, ge=32, le=100_000, description="generated test images")
    noise: float = Field(0.15, ge=0, le=1, description="std of the per-pixel Gaussian noise")
    channels: tuple[Count, ...] = Field(
        (8, 16), min_length=2, max_length=3, description="MDEQ branch widths (2 or 3)"
    )
    gamma: float = Field(0.9, gt=0, lt=1, description="contraction factor of the MDEQ cell")
    solver: SOLVERS.field_type() = Field(
        "anderson", description="forward and backward solver (any registered)"
    )
    tol: float = Field(1e-3, gt=0, le=0.1, description="relative-residual tolerance")
    max_steps: int = Field(24, ge=2, le=1000, description="solver step budget")
    epochs: int = Field(8, ge=1, le=1000, description="training epochs")
    seeds: int = Field(2, ge=1, le=100, description="seeds run inside one Run")
    batch_size: int = Field(64, ge=4, le=4096, description="minibatch size")
    lr: float = Field(3e-3, gt=0, le=1, description="Adam learning rate")
    mask_weight: float = Field(1.0, ge=0, le=100, description="weight of the per-pixel loss")

    @model_validator(mode="after")
    def _check(self) -> Config:
        factor = 2 ** (len(self.channels) - 1)
        if self.image_size % factor:
            raise ValueError(
                f"image_size {self.image_size} must be divisible by {factor} "
                f"for {len(self.channels)} branches"
            )
        if self.batch_size > self.train_size:
            raise ValueError(
                f"batch_size {self.batch_size} is larger than train_size {self.train_size}"
            )
        return self


def make_shapes(n: int, size: int, noise: float, gen: torch.Generator) -> tuple[Tensor, ...]:
    """n images (n, 1, size, size) in [0, 1] with one shape each, labels (n,), masks (n, s, s).

    A disk, an axis-aligned square or an upward triangle of random size and position, filled
    with a random intensity in [0.45, 1], on a random background level in [0, 0.4], plus
    Gaussian noise of std `noise`, clipped to [0, 1].
    """
    y = torch.randint(len(SHAPES), (n,), generator=gen)
    r = size * (0.15 + 0.2 * torch.rand(n, generator=gen))  # half-size in pixels
    cx = r + (size - 2 * r) * torch.rand(n, generator=gen)
    cy = r + (size - 2 * r) * torch.rand(n, generator=gen)
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    X = grid[None, None, :] - cx[:, None, None]  # (n, 1, s)
    Y = grid[None, :, None] - cy[:, None, None]  # (n, s, 1)
    r3 = r[:, None, None]
    disk = X**2 + Y**2 <= r3**2
    half = 0.85 * r3
    square = (X.abs() <= half) & (Y.abs() <= half)
    # apex at the top (y = −r), base of width 2r at the bottom (y = +r)
    triangle = (Y >= -r3) & (Y <= r3) & (X.abs() <= (Y + r3) / 2)
    mask = torch.stack([disk, square, triangle], dim=1)[torch.arange(n), y]  # (n, s, s)
    fg = 0.45 + 0.55 * torch.rand(n, 1, 1, generator=gen)
    bg = 0.4 * torch.rand(n, 1, 1, generator=gen)
    img = torch.where(mask, fg, bg) + noise * torch.randn(n, size, size, generator=gen)
    return img.clamp(0, 1)[:, None], y, mask.float()


def _iou(pred: Tensor, mask: Tensor) -> Tensor:
    """Per-image IoU of boolean masks (n, s, s) -> (n,)."""
    inter = (pred & mask).flatten(1).sum(1).float()
    union = (pred | mask).flatten(1).sum(1).float().clamp_min(1)
    return inter / union


@torch.no_grad()
def _evaluate(model: MDEQ, x: Tensor, y: Tensor, m: Tensor, bs: int = 256) -> dict:
    model.eval()
    acc, iou, steps, conv = [], [], [], []
    for i in range(0, len(x), bs):
        logits, mlog = model(x[i : i + bs])
        acc.append((logits.argmax(1) == y[i : i + bs]).float())
        iou.append(_iou(mlog > 0, m[i : i + bs].bool()))
        steps.append(model.stats.steps.float())
        conv.append(model.stats.converged.float())
    model.train()
    return {
        "accuracy": torch.cat(acc).mean().item(),
        "iou": torch.cat(iou).mean().item(),
        "steps": torch.cat(steps).mean().item(),
        "converged": torch.cat(conv).mean().item(),
    }


def _baselines(xtr, mtr, yte, xte, mte) -> dict:
    """Trivial baselines: majority class, all-foreground mask; and a global intensity threshold
    chosen on the training images (a stronger, non-learned reference)."""
    counts = torch.bincount(yte, minlength=len(SHAPES))
    best_t, best = 0.5, -1.0
    for t in torch.linspace(0.05, 0.95, 19).tolist():
        v = _iou(xtr[:, 0] > t, mtr.bool()).mean().item()
        if v > best:
            best_t, best = t, v
    return {
        "majority_accuracy": (counts.max() / counts.sum()).item(),
        "all_foreground_iou": _iou(torch.ones_like(mte, dtype=torch.bool), mte.bool())
        .mean()
        .item(),
        "threshold_iou": _iou(xte[:, 0] > best_t, mte.bool()).mean().item(),
        "threshold": best_t,
    }


def _examples(model: MDEQ, x: Tensor, y: Tensor, m: Tensor) -> dict:
    """A few test images with the model's class and mask predictions, for the examples plot."""
    with torch.no_grad():
        model.eval()
        logits, mlog = model(x)
        model.train()
    return {"x": x.cpu(), "y": y.cpu(), "m": m.cpu(), "pred": logits.argmax(1), "mask": mlog > 0}


def _example_figure(ex: dict):
    import matplotlib.pyplot as plt

    x, y, m = ex["x"], ex["y"], ex["m"]
    k = len(x)
    fig, axes = plt.subplots(3, k, figsize=(1.6 * k, 5.0))
    for j in range(k):
        pred = SHAPES[int(ex["pred"][j])]
        for r, (img, title) in enumerate(
            [(x[j, 0], SHAPES[int(y[j])]), (m[j], "true mask"), (ex["mask"][j], pred)]
        ):
            axes[r, j].imshow(img.float().numpy(), cmap="gray", vmin=0, vmax=1)
            axes[r, j].set_title(title, fontsize=8)
            axes[r, j].axis("off")
    fig.suptitle("input / true mask / MDEQ mask and class")
    return fig


def _data(cfg: Config, seed: int) -> tuple[tuple[Tensor, ...], dict]:
    gen = torch.Generator().manual_seed(seed)
    xtr, ytr, mtr = make_shapes(cfg.train_size, cfg.image_size, cfg.noise, gen)
    xte, yte, mte = make_shapes(cfg.test_size, cfg.image_size, cfg.noise, gen)
    base = _baselines(xtr, mtr, yte, xte, mte)
    dev = torch.device(cfg.device)
    return tuple(t.to(dev) for t in (xtr, ytr, mtr, xte, yte, mte)), base


def _epoch(model: MDEQ, opt, data: tuple[Tensor, ...], cfg: Config, shuffle) -> dict:
    xtr, ytr, mtr, xte, yte, mte = data
    perm = torch.randperm(cfg.train_size, generator=shuffle).to(xtr.device)
    tot, n, steps = 0.0, 0, []
    for i in range(0, cfg.train_size, cfg.batch_size):
        idx = perm[i : i + cfg.batch_size]
        logits, mlog = model(xtr[idx])
        loss = F.cross_entropy(logits, ytr[idx])
        loss = loss + cfg.mask_weight * F.binary_cross_entropy_with_logits(mlog, mtr[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tot += float(loss.detach()) * len(idx)
        n += len(idx)
        steps.append(model.stats.steps.float().mean().item())
    ev = _evaluate(model, xte, yte, mte)
    ev.update(train_loss=tot / n, train_steps=sum(steps) / len(steps))
    return ev


def _train_seed(unit, seed: int, cfg: Config, run: RunLike) -> dict:
    """Train one MDEQ, checkpointing after every epoch; its history and the baselines."""
    data, base = _data(cfg, seed)
    torch.manual_seed(seed)
    mcfg = MDEQConfig(
        channels=cfg.channels,
        num_classes=len(SHAPES),
        gamma=cfg.gamma,
        solver=DEQConfig(solver=cfg.solver, tol=cfg.tol, max_steps=cfg.max_steps),
    )
    model = MDEQ(mcfg, cfg.image_size, cfg.image_size).to(cfg.device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    st = unit.restore()
    if st is None:
        st = {"history": [], "shuffle": torch.Generator().manual_seed(seed + 10_000)}
    else:
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
    for epoch in range(len(st["history"]), cfg.epochs):
        ev = _epoch(model, opt, data, cfg, st["shuffle"])
        st["history"].append(ev)
        run.log(unit.index * cfg.epochs + epoch, seed=seed, epoch=epoch, **ev)
        st.update(model=model.state_dict(), opt=opt.state_dict())
        if epoch + 1 < cfg.epochs:
            unit.checkpoint(st, step=unit.index * cfg.epochs + epoch)
    out = {"history": st["history"], **base}
    if unit.index == 0:
        out["examples"] = _examples(model, *(t[:6] for t in data[3:]))
    return out


def train(cfg: Config, run: RunLike) -> dict:
    """One unit per seed (a fresh set of generated shapes and a fresh MDEQ)."""
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    for unit in run.units([f"seed{s}" for s in seeds], description="mdeq-shapes"):
        unit.finish(_train_seed(unit, seeds[unit.index], cfg, run))
    return {"per": [run.results[f"seed{s}"] for s in seeds]}


def plots(cfg: Config, results: dict, run: RunLike) -> None:
    per = results["per"]
    run.save_json("results", {"per": [{k: r[k] for k in r if k != "examples"} for r in per]})
    run.save_figure(
        _example_figure(per[0]["examples"]),
        "examples",
        caption="Six test images of the first seed with their true mask and the MDEQ's mask "
        "and predicted class: look for masks that follow the shape's outline, not the noise.",
    )

    def curve(field: str) -> Tensor:
        return torch.tensor([[h[field] for h in r["history"]] for r in per])

    run.save_figure(
        curve_plot(
            {"class accuracy": curve("accuracy"), "mask IoU": curve("iou")},
            xlabel="epoch",
            ylabel="test metric",
            title=f"MDEQ {cfg.channels} on generated shapes ({cfg.image_size}px)",
        ),
        "learning_curves",
        caption="Test class accuracy and mask IoU after each epoch (mean over seeds): look for "
        "both rising together from one shared equilibrium, well above the trivial baselines.",
    )


def claims(cfg: Config, results: dict) -> list[Claim]:
    per = results["per"]

    def final(field: str) -> list[float]:
        return [r["history"][-1][field] for r in per]

    def base(field: str) -> list[float]:
        return [r[field] for r in per]

    return [
        Claim.measure(
            "class-accuracy",
            "MDEQ test accuracy on the shape's class (> majority class)",
            final("accuracy"),
            paper="MDEQ learns classification and segmentation together (Bai et al. 2020)",
            op=">",
            threshold={"ref": "class-accuracy-trivial"},
        ),
        Claim.measure(
            "class-accuracy-trivial",
            "majority-class accuracy on the test set",
            base("majority_accuracy"),
            paper="trivial baseline",
        ),
        Claim.measure(
            "mask-iou",
            "MDEQ mean per-image IoU of the predicted mask (> all-foreground mask)",
            final("iou"),
            paper="MDEQ learns classification and segmentation together (Bai et al. 2020)",
            op=">",
            threshold={"ref": "mask-iou-trivial"},
        ),
        Claim.measure(
            "mask-iou-trivial",
            "mean IoU of predicting every pixel as the shape",
            base("all_foreground_iou"),
            paper="trivial baseline",
        ),
        Claim.measure(
            "mask-iou-threshold",
            "mean IoU of one global intensity threshold fitted on the training images",
            base("threshold_iou"),
            paper="non-learned reference",
        ),
        Claim.measure(
            "test-solver-steps",
            f"mean {cfg.solver} steps per test image (tol {cfg.tol:g})",
            final("steps"),
            paper="MDEQ CIFAR-10: 17 function evaluations (Bai et al. 2021)",
        ),
        Claim.measure(
            "test-converged-fraction",
            f"fraction of test images reaching tol {cfg.tol:g}",
            final("converged"),
            paper="info",
        ),
    ]


EXPERIMENT = Experiment(
    name="mdeq-shapes",
    paper="Bai, Koltun & Kolter, Multiscale Deep Equilibrium Models, NeurIPS 2020",
    bibtex="""@inproceedings{bai2020multiscale,
  title={Multiscale Deep Equilibrium Models},
  author={Bai, Shaojie and Koltun, Vladlen and Kolter, J. Zico},
  booktitle={Advances in Neural Information Processing Systems},
  year={2020},
  note={arXiv:2006.08656}
}""",
    description="A small multiscale DEQ (2-3 resolution branches driven to one joint "
    "equilibrium) learns the class of a generated shape and its pixel mask at the same time, "
    "against majority-class and all-foreground baselines.",
    minutes={"smoke": 0.25, "quick": 4},
    Config=Config,
    train=train,
    plots=plots,
    claims=claims,
    scales={
        "smoke": {
            "seeds": 1,
            "train_size": 128,
            "test_size": 64,
            "epochs": 2,
            "channels": (4, 8),
            "max_steps": 12,
        },
        "paper": {
            "seeds": 3,
            "train_size": 20_000,
            "test_size": 2000,
            "epochs": 30,
            "image_size": 32,
            "channels": (16, 32, 64),
        },
    },
)
