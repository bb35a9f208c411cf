"""clapp-patches: CLAPP's layer-local rule on a grid of image patches, probed layer by layer.

The vision setup of Illing et al. 2021 (arXiv 2010.08262) at CPU scale: every image is cut into
a grid of overlapping patches (8×8, stride 4), a 3-layer conv encoder maps each patch to one
vector per layer, and each layer predicts the vectors of the patch rows k = 1…3 below it. Four
encoders of the same architecture and initialisation per seed: CLAPP and CLAPP-s trained by the
hand-written rule `clapp_update` (no gradient crosses a layer), hinge-CPC trained end to end
through all layers, and the untrained random-init encoder. After training, a logistic
regression is fit on the frozen features of each layer (mean over the patch grid, as the
paper's classifier) of the training split and scored on the test split.

Learning rates: every trained method gets the same Adam-lr grid, the same number of steps and
the same data: trained `grid_epochs` on (1 − val_fraction) of the training split with the first
seed, the lr whose last-layer probe (fit on that part) scores best on the held-out rest is the
method's lr for every seed. Test data is never seen before the final probe.
"""

from __future__ import annotations

import warnings
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from badgerlab.data import load
from badgerlab.experiment import ConfigError, Count, Experiment, ExperimentConfig, PaperVariant
from badgerlab.runs import Claim, RunLike, condition
from badgerlab.ssl.clapp import (
    BIBTEX,
    PAPER,
    ClappEncoder,
    clapp_masks,
    clapp_update,
    end_to_end_loss,
    infonce_loss,
    negative_index,
    patchify,
)

LearningRate = Annotated[float, Field(gt=0.0, le=1.0)]
METHODS = ("clapp", "clapp-s", "hinge-cpc", "random")
LABELS = {
    "clapp": "CLAPP",
    "clapp-s": "CLAPP-s",
    "hinge-cpc": "hinge-CPC end to end",
    "random": "random init",
    "gim": "Greedy InfoMax (layer-local InfoNCE)",
}


class Config(ExperimentConfig):
    seeds: int = Field(3, ge=1, le=100, description="seeds run inside one Run")
    dataset: Literal["digits", "mnist", "fashion_mnist"] = Field(
        "digits", description="images: scikit-learn's digits (offline) or real 28x28 sets"
    )
    image_size: int | None = Field(
        None,
        ge=8,
        le=128,
        description="images resized to this side (bilinear); None: 24 for digits (8x8 x3), "
        "the native 28 otherwise",
    )
    train_size: int | None = Field(
        None, ge=16, le=60_000, description="first training images used (None: all)"
    )
    test_size: int | None = Field(
        None, ge=16, le=10_000, description="first test images probed (None: all)"
    )
    patch: int = Field(8, ge=2, le=64, description="side of the square patches (pixels)")
    stride: int = Field(4, ge=1, le=64, description="step between patches (pixels)")
    channels: tuple[Count, ...] = Field((16, 32, 64), description="output channels per layer")
    conv_strides: tuple[Count, ...] = Field((1, 2, 2), description="conv stride per layer")
    offsets: int = Field(3, ge=1, le=16, description="prediction offsets k = 1..K (patch rows)")
    epochs: int = Field(10, ge=1, le=1000, description="training epochs per seed and method")
    batch_size: int = Field(32, ge=2, le=4096, description="images per step (negatives too)")
    lr_grid: tuple[LearningRate, ...] = Field(
        (1e-4, 3e-4, 1e-3, 3e-3), min_length=1, description="Adam learning rates tried"
    )
    grid_epochs: int = Field(3, ge=1, le=1000, description="epochs per lr-grid point")
    val_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="training split held out to choose the lr"
    )
    gim: bool = Field(False, description="also train Greedy InfoMax (layer-local InfoNCE)")
    probe_pool: Literal["mean", "grid"] = Field(
        "mean", description="probe features: mean over the patch grid (paper) or all patches"
    )
    probe_c: float = Field(1.0, gt=0, le=1e6, description="inverse L2 strength of the probe")
    probe_iter: int = Field(1000, ge=10, le=100_000, description="probe lbfgs iterations")

    @model_validator(mode="before")
    @classmethod
    def _fill_size(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("image_size") is None:
            data = {**data, "image_size": 24 if data.get("dataset", "digits") == "digits" else 28}
        return data

    @model_validator(mode="after")
    def _check(self) -> Config:
        if len(self.conv_strides) != len(self.channels):
            raise ValueError(
                f"conv_strides {self.conv_strides} must name one stride per layer of "
                f"channels {self.channels}"
            )
        size = self.image_size or 0
        if self.patch > size:
            raise ValueError(f"patch {self.patch} is larger than image_size {size}")
        rows = (size - self.patch) // self.stride + 1
        if rows <= self.offsets:
            raise ValueError(
                f"image_size {size}, patch {self.patch}, stride {self.stride} give {rows} patch "
                f"rows: too few to predict offsets 1..{self.offsets}"
            )
        return self

    @property
    def methods(self) -> tuple[str, ...]:
        return METHODS + (("gim",) if self.gim else ())

    @property
    def trained(self) -> tuple[str, ...]:
        return tuple(m for m in self.methods if m != "random")


def _images(cfg: Config, split: str, n: int | None, run: RunLike) -> tuple[torch.Tensor, ...]:
    d = load(cfg.dataset, split, download=run.download)
    x, y = d.x[:n], d.y[:n]
    if x.shape[-1] != cfg.image_size:
        x = F.interpolate(x, size=cfg.image_size, mode="bilinear", align_corners=False)
    return patchify(x, size=cfg.patch, stride=cfg.stride), y  # (N, Gh, Gw, 1, p, p)


def _data(cfg: Config, run: RunLike) -> dict[str, Any]:
    """Patch grids of the train and test splits, and the train split cut into fit / val."""
    xtr, ytr = _images(cfg, "train", cfg.train_size, run)
    xte, yte = _images(cfg, "test", cfg.test_size, run)
    perm = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(cfg.seed))
    n_val = max(int(len(xtr) * cfg.val_fraction), 1)
    val, fit = perm[:n_val], perm[n_val:]
    if len(fit) < cfg.batch_size:
        raise ConfigError(
            f"batch_size={cfg.batch_size} is larger than the {len(fit)} training images left "
            "to fit after holding out val_fraction"
        )
    return {
        "train": (xtr, ytr),
        "test": (xte, yte),
        "fit": (xtr[fit], ytr[fit]),
        "val": (xtr[val], ytr[val]),
        "classes": int(max(ytr.max(), yte.max())) + 1,
    }


def _encoder(cfg: Config, seed: int) -> ClappEncoder:
    # The same seed gives every method the same initial encoder: random init is their start.
    g = torch.Generator().manual_seed(seed)
    return ClappEncoder(
        cfg.channels, in_channels=1, strides=cfg.conv_strides, offsets=cfg.offsets, generator=g
    )


def _step(method: str, enc: ClappEncoder, xb: torch.Tensor, gen, cfg: Config) -> list[float]:
    """Fill every parameter's .grad for one batch xb (B, Gh, Gw, 1, p, p); the losses."""
    b, gh, gw = xb.shape[:3]
    neg = negative_index(b, generator=gen)
    if method in ("clapp", "clapp-s"):
        masks = clapp_masks(cfg.offsets, b, gh, gw, variant=method, generator=gen)
        h, losses = xb, []
        for layer in enc.layers:
            delta, h, value = clapp_update(layer, h, neg=neg, masks=masks)
            for name, p in layer.named_parameters():
                p.grad = -delta[name]  # the local rule is −∂L/∂θ; Adam descends .grad
            losses.append(value)
        return losses
    enc.zero_grad(set_to_none=True)
    if method == "hinge-cpc":
        # The paper's end-to-end comparison uses both hinge terms for every sample.
        masks = clapp_masks(cfg.offsets, b, gh, gw, variant="clapp-s")
        loss = end_to_end_loss(list(enc.layers), xb, neg=neg, masks=masks)
        loss.backward()
        return [float(loss.detach())]
    h, losses = xb, []
    for layer in enc.layers:  # gim: each layer's InfoNCE on its detached input
        loss, h = infonce_loss(layer, h)
        loss.backward()
        losses.append(float(loss.detach()))
    return losses


def _epoch(method: str, enc, opt, x: torch.Tensor, gen, cfg: Config) -> list[float]:
    """One pass over x in full batches; the mean loss of each trained layer."""
    perm = torch.randperm(len(x), generator=gen)
    sums: list[float] = []
    steps = len(x) // cfg.batch_size
    for i in range(steps):
        losses = _step(
            method, enc, x[perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]], gen, cfg
        )
        opt.step()
        sums = [a + b for a, b in zip(sums, losses, strict=True)] if sums else losses
    return [s / steps for s in sums]


@torch.no_grad()
def _features(enc: ClappEncoder, x: torch.Tensor, pool: str) -> list[np.ndarray]:
    """Per layer (N, C_l) (mean over the patch grid) or (N, Gh·Gw·C_l) features."""
    per: list[list[torch.Tensor]] = [[] for _ in enc.layers]
    for i in range(0, len(x), 256):
        for out, z in zip(per, enc.features(x[i : i + 256]), strict=True):
            out.append(z.mean((1, 2)) if pool == "mean" else z.flatten(1))
    return [torch.cat(f).double().numpy() for f in per]


def _probe(enc: ClappEncoder, fit, score, cfg: Config) -> list[float]:
    """Logistic regression per layer, fit on `fit` (x, y), accuracy on `score`."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    out = []
    for ftr, fte in zip(
        _features(enc, fit[0], cfg.probe_pool),
        _features(enc, score[0], cfg.probe_pool),
        strict=True,
    ):
        scaler = StandardScaler().fit(ftr)
        clf = LogisticRegression(C=cfg.probe_c, max_iter=cfg.probe_iter)
        # BLAS would otherwise take every core; the run keeps to cfg.threads.
        with warnings.catch_warnings(), threadpool_limits(cfg.threads):
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(scaler.transform(ftr), fit[1].numpy())
        out.append(float(clf.score(scaler.transform(fte), score[1].numpy())))
    return out


def _train_unit(unit, method: str, seed: int, lr: float, sets, epochs: int, cfg, run) -> dict:
    """Train one encoder for `epochs` on sets[0], checkpointing each epoch; probe sets[0]→[1]."""
    enc = _encoder(cfg, seed)
    opt = torch.optim.Adam(enc.parameters(), lr=lr)
    st = unit.restore()
    if st is None:
        st = {"epoch": 0, "generator": torch.Generator().manual_seed(seed + 7919), "history": []}
    else:
        enc.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
    width = max(cfg.epochs, cfg.grid_epochs) + 1  # log steps: one block per unit
    for epoch in range(st["epoch"], epochs if method != "random" else 0):
        losses = _epoch(method, enc, opt, sets[0][0], st["generator"], cfg)
        st["history"].append(losses)
        run.log(
            unit.index * width + epoch,
            unit=unit.key,
            epoch=epoch,
            **{f"loss_layer{i + 1}": v for i, v in enumerate(losses)},
        )
        st.update(epoch=epoch + 1, model=enc.state_dict(), opt=opt.state_dict())
        unit.checkpoint(st, step=unit.index * width + epoch)
    acc = _probe(enc, sets[0], sets[1], cfg)
    run.log(
        unit.index * width + width - 1,
        unit=unit.key,
        **{f"probe_layer{i + 1}": a for i, a in enumerate(acc)},
    )
    return {"accuracy": acc, "history": st["history"], "lr": lr}


def _chosen_lr(results: dict, method: str, cfg: Config) -> float:
    """The grid's lr with the best held-out last-layer probe (ties: the first in the grid)."""
    scores = [results[f"grid/{method}/{lr:g}"]["accuracy"][-1] for lr in cfg.lr_grid]
    return cfg.lr_grid[int(np.argmax(scores))]


def train(cfg: Config, run: RunLike) -> dict:
    """Units: the lr grid (per trained method × lr, first seed), then one per seed × method."""
    torch.set_num_threads(cfg.threads)
    data = _data(cfg, run)
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    grid = [f"grid/{m}/{lr:g}" for m in cfg.trained for lr in cfg.lr_grid]
    keys = grid + [f"{s}/{m}" for s in seeds for m in cfg.methods]
    for unit in run.units(keys, description="clapp-patches"):
        if unit.key.startswith("grid/"):
            _, method, lr = unit.key.split("/")
            sets, epochs, seed, rate = (
                (data["fit"], data["val"]),
                cfg.grid_epochs,
                cfg.seed,
                float(lr),
            )
        else:
            seed_s, method = unit.key.split("/")
            seed, epochs, sets = int(seed_s), cfg.epochs, (data["train"], data["test"])
            rate = 0.0 if method == "random" else _chosen_lr(run.results, method, cfg)
        unit.finish(_train_unit(unit, method, seed, rate, sets, epochs, cfg, run))
    res = run.results
    return {
        "per": {m: [res[f"{s}/{m}"] for s in seeds] for m in cfg.methods},
        "grid": {
            m: [res[f"grid/{m}/{lr:g}"]["accuracy"][-1] for lr in cfg.lr_grid] for m in cfg.trained
        },
        "lr": {m: _chosen_lr(res, m, cfg) for m in cfg.trained},
        "classes": data["classes"],
        "train_images": len(data["train"][0]),
        "test_images": len(data["test"][0]),
        "steps": cfg.epochs * (len(data["train"][0]) // cfg.batch_size),
    }


def plots(cfg: Config, results: dict, run: RunLike) -> None:
    import matplotlib.pyplot as plt

    run.save_json("results", results)
    layers = np.arange(1, len(cfg.channels) + 1)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for m in cfg.methods:
        acc = np.array([r["accuracy"] for r in results["per"][m]])
        ax.errorbar(layers, acc.mean(0), yerr=acc.std(0), marker="o", capsize=3, label=LABELS[m])
    ax.axhline(1 / results["classes"], color="grey", ls=":", label="chance")
    ax.set(xlabel="layer", ylabel="linear-probe test accuracy", xticks=layers)
    ax.set_title(f"{cfg.dataset}, {cfg.seeds} seeds, {cfg.epochs} epochs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    run.save_figure(
        fig,
        "probe_per_layer",
        caption="Test accuracy of a logistic regression on each layer's frozen features "
        f"({cfg.probe_pool} over the patch grid), mean ± std over seeds, per method: look for "
        "CLAPP close to hinge-CPC end to end, above the random-init encoder of the same "
        "architecture, and rising with depth.",
    )
    trained = cfg.trained
    fig, axes = plt.subplots(1, len(trained), figsize=(4 * len(trained), 3.5), squeeze=False)
    for ax, m in zip(axes[0], trained, strict=True):
        hist = np.array([r["history"] for r in results["per"][m]])  # (S, E, L_trained)
        epochs = np.arange(1, hist.shape[1] + 1)
        for i in range(hist.shape[2]):
            name = f"layer {i + 1}" if hist.shape[2] > 1 else f"layer {len(cfg.channels)}"
            ax.plot(epochs, hist[:, :, i].mean(0), marker=".", label=name)
        ax.set(
            xlabel="epoch", ylabel="training loss", title=f"{LABELS[m]} (lr {results['lr'][m]:g})"
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    run.save_figure(
        fig,
        "loss_per_layer",
        caption="Mean training loss per epoch of each layer's own loss (CLAPP, CLAPP-s: hinge; "
        "hinge-CPC end to end: its one loss at the last layer), mean over seeds: look for every "
        "layer's loss falling. CLAPP's hinge counts one of the two terms per sample, so it sits "
        "near half of CLAPP-s's.",
    )


def _acc(results: dict, method: str, layer: int = -1) -> list[float]:
    return [r["accuracy"][layer] for r in results["per"][method]]


def claims(cfg: Config, results: dict) -> list[Claim]:
    L, seeds, steps = len(cfg.channels), cfg.seeds, results["steps"]
    scale = (
        f"{cfg.dataset}, {seeds} seeds, {results['train_images']} training / "
        f"{results['test_images']} test images, {steps} Adam steps per method"
    )
    clapp, e2e, rnd = _acc(results, "clapp"), _acc(results, "hinge-cpc"), _acc(results, "random")
    e2e_hist = [r["history"] for r in results["per"]["hinge-cpc"]]
    e2e_learned = np.mean([h[-1][0] - h[0][0] for h in e2e_hist]) if e2e_hist[0] else float("nan")
    out = [
        Claim.measure(
            "clapp-vs-end-to-end",
            f"CLAPP's layer-{L} probe accuracy minus hinge-CPC end to end's ({scale})",
            [a - b for a, b in zip(clapp, e2e, strict=True)],
            paper="local CLAPP is close to end-to-end hinge-CPC "
            "(STL-10 reproduction: 68.7 vs 71.9)",
            op=">=",
            threshold=-0.03,
            requires=[
                condition(
                    "hinge-CPC's change in training loss, last minus first epoch",
                    e2e_learned,
                    "<",
                    0.0,
                ),
                condition(
                    "hinge-CPC's probe accuracy over chance",
                    float(np.mean(e2e)) - 1 / results["classes"],
                    ">",
                    0.0,
                ),
            ],
        ),
        Claim.measure(
            "clapp-vs-random",
            f"CLAPP's layer-{L} probe accuracy minus the random-init encoder's ({scale})",
            [a - b for a, b in zip(clapp, rnd, strict=True)],
            paper="STL-10 reproduction: CLAPP 68.7% vs random encoder 46.8%",
            op=">=",
            threshold=0.015,
        ),
        Claim.measure(
            "clapp-deeper-is-better",
            f"CLAPP's layer-{L} probe accuracy minus its layer-1 ({scale}); a failure is "
            "reported with its number",
            [a - b for a, b in zip(clapp, _acc(results, "clapp", 0), strict=True)],
            paper="deeper CLAPP layers give better linear read-out",
            op=">=",
            threshold=0.0,
        ),
        Claim.measure(
            "random-deeper-gain",
            f"the random-init encoder's layer-{L} probe accuracy minus its layer-1 ({scale}): "
            "how much of CLAPP's gain with depth the architecture gives without learning",
            [a - b for a, b in zip(rnd, _acc(results, "random", 0), strict=True)],
        ),
    ]
    for m in cfg.methods:
        lr = f", Adam lr {results['lr'][m]:g} from the grid" if m in results["lr"] else ""
        for layer in range(L):
            out.append(
                Claim.measure(
                    f"{m}-layer{layer + 1}-accuracy",
                    f"{LABELS[m]}: layer-{layer + 1} probe test accuracy ({scale}{lr})",
                    _acc(results, m, layer),
                )
            )
    return out


EXPERIMENT = Experiment(
    name="clapp-patches",
    paper=PAPER,
    bibtex=BIBTEX,
    description="CLAPP and CLAPP-s (layer-local hinge on contrastive predictions between patch "
    "rows, trained by the hand-written plasticity rule) against hinge-CPC end to end and a "
    "random-init encoder of the same 3-layer conv architecture: linear-probe accuracy of each "
    "layer on frozen features, learning rates chosen by the same grid on held-out training "
    "images.",
    minutes={"smoke": 0.25, "quick": 3},  # quick measured 2.8 min on one free core
    Config=Config,
    train=train,
    plots=plots,
    claims=claims,
    scales={
        "smoke": {
            "seeds": 1,
            "train_size": 160,
            "test_size": 80,
            "channels": (4, 8, 8),
            "epochs": 2,
            "grid_epochs": 1,
            "lr_grid": (1e-3, 3e-3),
            "probe_iter": 100,
        },
        "paper": {"seeds": 5, "epochs": 100, "grid_epochs": 20, "channels": (32, 64, 128)},
    },
    variants=(
        PaperVariant(
            "fashion_mnist",
            {"dataset": "fashion_mnist", "train_size": 2000, "test_size": 2000},
            ("fashion_mnist",),
            "real Fashion-MNIST 28x28 (first 2k training / 2k test images), 6x6 patch grid",
        ),
    ),
)
