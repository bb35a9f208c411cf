"""HebbNet's sparse thresholded Hebbian layer vs Krotov–Hopfield, a random projection, an MLP."""

from __future__ import annotations

from typing import Annotated, Literal

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from badgerlab.data import load
from badgerlab.experiment import Experiment, ExperimentConfig, PaperVariant
from badgerlab.plasticity import hebbnet as H
from badgerlab.plots import curve_plot
from badgerlab.runs import Claim, RunLike, condition

MODELS = ("hebbnet", "hebbnet-dense", "krotov", "random", "mlp")
LearningRate = Annotated[float, Field(gt=0, le=10)]
LEARNED_MARGIN = 0.2  # a baseline did its job when it beats chance by this (fixed in advance)


class Config(ExperimentConfig):
    dataset: Literal["digits", "mnist", "fashion_mnist"] = Field("digits", description="data")
    train_size: int | None = Field(
        None, ge=100, le=60_000, description="first N training images (None: all)"
    )
    seeds: int = Field(3, ge=1, le=100, description="seeds run inside one Run")
    hidden: int = Field(400, ge=4, le=4096, description="hidden units H of every model")
    epochs: int = Field(20, ge=1, le=2000, description="epochs of every hidden layer / MLP")
    batch_size: int = Field(32, ge=1, le=4096, description="minibatch of the rules and MLP")
    eta: float = Field(0.05, gt=0, le=10, description="HebbNet learning rate η")
    p: float = Field(0.01, gt=0, le=1, description="fraction of |ΔW| entries HebbNet applies")
    threshold: Literal["mean"] | Annotated[float, Field(ge=0, le=100)] = Field(
        "mean", description="HebbNet activation threshold: 'mean' over hidden units, or t"
    )
    krotov_eta: float = Field(
        0.3, gt=0, le=10, description="Krotov–Hopfield η (annealed linearly to 0)"
    )
    krotov_k: int = Field(2, ge=1, le=100, description="rank pushed away by Krotov–Hopfield")
    krotov_delta: float = Field(0.4, ge=0, le=10, description="anti-Hebbian strength Δ")
    mlp_lrs: tuple[LearningRate, ...] = Field(
        (3e-4, 1e-3, 3e-3, 1e-2),
        min_length=1,
        description="MLP Adam lr grid, picked on the held-out share of train (seed `seed`)",
    )
    clf_lrs: tuple[LearningRate, ...] = Field(
        (0.003, 0.01, 0.03), min_length=1, description="classifier Adam lr grid (picked on val)"
    )
    clf_steps: int = Field(300, ge=1, le=100_000, description="full-batch classifier steps")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="training share held out as val")
    eval_every: int = Field(5, ge=1, le=2000, description="epochs between accuracy probes")

    @model_validator(mode="after")
    def _check(self) -> Config:
        if self.krotov_k > self.hidden:
            raise ValueError(f"krotov_k {self.krotov_k} exceeds hidden {self.hidden}")
        if self.train_size is not None and self.batch_size > self.train_size:
            raise ValueError(f"batch_size {self.batch_size} exceeds train_size {self.train_size}")
        return self


def _data(cfg: Config, run: RunLike) -> dict:
    tr = load(cfg.dataset, "train", download=run.download)
    te = load(cfg.dataset, "test", download=run.download)
    n = len(tr.x) if cfg.train_size is None else min(cfg.train_size, len(tr.x))
    return {"x": tr.x[:n].flatten(1).float(), "y": tr.y[:n], "xte": te.x.flatten(1).float(),
            "yte": te.y, "classes": tr.num_classes, "shape": tuple(tr.shape[-2:])}  # fmt: skip


def _epochs_probed(cfg: Config) -> list[int]:
    return sorted({0, *range(cfg.eval_every, cfg.epochs, cfg.eval_every), cfg.epochs})


def _probe(W: Tensor, data: dict, cfg: Config) -> dict:
    """Linear classifier on relu(W x̂): lr picked on the held-out share, its test accuracy."""
    f, y = H.features(W, data["x"]), data["y"]
    n_fit = len(y) - max(1, round(cfg.val_fraction * len(y)))
    best = None
    for lr in cfg.clf_lrs:
        w, b, m, s = H.linear_classifier(
            f[:n_fit], y[:n_fit], data["classes"], lr=lr, steps=cfg.clf_steps
        )
        val = float((((f[n_fit:] - m) / s @ w.T + b).argmax(1) == y[n_fit:]).float().mean())
        if best is None or val > best[0]:
            best = (val, lr, w, b, m, s)
    val, lr, w, b, m, s = best
    fte = H.features(W, data["xte"])
    test = float((((fte - m) / s @ w.T + b).argmax(1) == data["yte"]).float().mean())
    return {"val": val, "lr": lr, "test": test}


def _rule_epoch(name: str, W: Tensor, data: dict, cfg: Config, g, epoch: int) -> Tensor:
    x = data["x"]
    perm = torch.randperm(len(x), generator=g)
    eta_k = cfg.krotov_eta * (1 - epoch / cfg.epochs)
    for i in range(0, len(x), cfg.batch_size):
        xb = x[perm[i : i + cfg.batch_size]]
        if name == "krotov":
            W = H.krotov_step(W, xb, eta=eta_k, k=cfg.krotov_k, delta=cfg.krotov_delta)
        else:
            p = cfg.p if name == "hebbnet" else 1.0
            W = H.hebbnet_step(W, xb, eta=cfg.eta, p=p, threshold=cfg.threshold)
    return W


def _mlp(d_in: int, cfg: Config, classes: int, g) -> nn.Module:
    net = nn.Sequential(nn.Linear(d_in, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, classes))
    with torch.no_grad():
        for p in net.parameters():
            p.uniform_(-1, 1, generator=g).mul_(p.shape[-1] ** -0.5)
    return net


def _mlp_epoch(net: nn.Module, opt, data: dict, cfg: Config, g) -> float:
    x, y = H.unit_rows(data["x"]), data["y"]
    perm, tot = torch.randperm(len(x), generator=g), 0.0
    for i in range(0, len(x), cfg.batch_size):
        idx = perm[i : i + cfg.batch_size]
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tot += float(loss.detach()) * len(idx)
    return tot / len(x)


@torch.no_grad()
def _mlp_test(net: nn.Module, data: dict) -> float:
    return float((net(H.unit_rows(data["xte"])).argmax(1) == data["yte"]).float().mean())


def _fresh(name: str, seed: int, data: dict, cfg: Config) -> dict:
    g = torch.Generator().manual_seed(seed)
    W = H.init_hidden(cfg.hidden, data["x"].shape[1], g)  # the same start for every layer
    if name == "krotov":  # its code starts from N(0, 1) entries: rows of norm ≈ √D
        W = W * W.shape[1] ** 0.5
    st = {"g": g, "epoch": 0, "curve": [], "W": W}
    if name == "mlp":
        net = _mlp(data["x"].shape[1], cfg, data["classes"], g)
        st.update(model=net.state_dict(), opt=None, W=None)
    return st


def _tune_mlp(cfg: Config, data: dict) -> dict:
    """The MLP ceiling's Adam lr: each of `mlp_lrs` trained `epochs` on the fit share of train,
    scored on the held-out share (the share the classifiers' lr is picked on)."""
    n_fit = len(data["y"]) - max(1, round(cfg.val_fraction * len(data["y"])))
    fit = {**data, "x": data["x"][:n_fit], "y": data["y"][:n_fit]}
    held = {**data, "xte": data["x"][n_fit:], "yte": data["y"][n_fit:]}
    scores = {}
    for lr in cfg.mlp_lrs:
        g = torch.Generator().manual_seed(cfg.seed)
        net = _mlp(data["x"].shape[1], cfg, data["classes"], g)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        for _ in range(cfg.epochs):
            _mlp_epoch(net, opt, fit, cfg, g)
        scores[lr] = _mlp_test(net, held)
    best = max(scores, key=scores.get)  # type: ignore[arg-type]
    return {"lr": best, "val": scores[best]}


def _train_unit(unit, name: str, seed: int, data: dict, cfg: Config, run: RunLike) -> dict:
    """Train one model, probing its accuracy at `_epochs_probed`, checkpointing each epoch."""
    if name == "mlp-lr":
        return _tune_mlp(cfg, data)
    st = unit.restore() or _fresh(name, seed, data, cfg)
    probed = _epochs_probed(cfg)
    net = opt = None
    if name == "mlp":
        net = _mlp(data["x"].shape[1], cfg, data["classes"], torch.Generator())
        net.load_state_dict(st["model"])
        opt = torch.optim.Adam(net.parameters(), lr=run.results["tune/mlp-lr"]["lr"])
        if st["opt"] is not None:
            opt.load_state_dict(st["opt"])
    last = 0 if name == "random" else cfg.epochs
    for epoch in range(st["epoch"], last + 1):
        if epoch > 0 and name == "mlp":
            _mlp_epoch(net, opt, data, cfg, st["g"])
        elif epoch > 0:
            st["W"] = _rule_epoch(name, st["W"], data, cfg, st["g"], epoch - 1)
        if epoch in probed:
            acc = _mlp_test(net, data) if net is not None else _probe(st["W"], data, cfg)["test"]
            st["curve"].append([epoch, acc])
            run.log(unit.index * (cfg.epochs + 1) + epoch, seed=seed, model=name, epoch=epoch,
                    test_accuracy=acc)  # fmt: skip
        st["epoch"] = epoch + 1
        if net is not None:
            st.update(model=net.state_dict(), opt=opt.state_dict())
        if epoch < last:
            unit.checkpoint(st, step=epoch)
    out = {"curve": st["curve"], "test": st["curve"][-1][1]}
    if st["W"] is not None:
        out.update(_probe(st["W"], data, cfg), W=st["W"][:25].clone())
    return out


def train(cfg: Config, run: RunLike) -> dict:
    """One unit per seed × model (the random projection is the rules' untrained start)."""
    data = _data(cfg, run)
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    keys = ["tune/mlp-lr", *(f"{s}/{m}" for s in seeds for m in MODELS)]
    for unit in run.units(keys, description="hebbnet"):
        seed, name = unit.key.split("/")
        seed_ = cfg.seed if seed == "tune" else int(seed)
        unit.finish(_train_unit(unit, name, seed_, data, cfg, run))
    per = {m: [run.results[f"{s}/{m}"] for s in seeds] for m in MODELS}
    return {
        "per": per,
        "mlp_lr": run.results["tune/mlp-lr"],
        "classes": data["classes"],
        "shape": data["shape"],
        "seeds": seeds,
    }


def _curve(cfg: Config, results: dict, name: str) -> Tensor:
    rows = []
    for r in results["per"][name]:
        acc = dict((int(e), a) for e, a in r["curve"])
        rows.append([acc.get(e, acc[0] if name == "random" else float("nan"))
                     for e in _epochs_probed(cfg)])  # fmt: skip
    return torch.tensor(rows, dtype=torch.float64)


def plots(cfg: Config, results: dict, run: RunLike) -> None:
    curves = {m: _curve(cfg, results, m) for m in MODELS}
    run.save_figure(
        curve_plot(curves, xlabel="epoch", ylabel="test accuracy",
                   title=f"{cfg.dataset}, {cfg.hidden} hidden units, {len(results['seeds'])} "
                   "seeds", x=torch.tensor(_epochs_probed(cfg)),
                   chance=1 / results["classes"]),
        "accuracy_vs_epochs",
        caption="Test accuracy of a linear classifier on each hidden layer (the MLP: its own "
        "output) against training epochs; look for HebbNet above the random projection (its "
        "starting point) and level with the dense rule and Krotov–Hopfield.",
    )  # fmt: skip
    h, w = results["shape"]
    fig, axes = plt.subplots(2, 1, figsize=(6.0, 6.4))
    for ax, name in zip(axes, ("hebbnet", "krotov"), strict=True):
        W = results["per"][name][0]["W"][:20].reshape(-1, h, w)  # (20, h, w)
        grid = W.reshape(2, 10, h, w).permute(0, 2, 1, 3).reshape(2 * h, 10 * w)
        lim = float(grid.abs().max())
        ax.imshow(grid.numpy(), cmap="bwr", vmin=-lim, vmax=lim)
        ax.set_title(f"{name}: first 20 hidden receptive fields (seed {results['seeds'][0]})")
        ax.axis("off")
    run.save_figure(
        fig,
        "receptive_fields",
        caption="Weights of 20 hidden units reshaped to the image (red > 0, blue < 0); look for "
        "digit-like prototypes or strokes instead of the noise they started from.",
    )


def _acc(results: dict, name: str, key: str = "test") -> list[float]:
    return [r[key] for r in results["per"][name]]


def _diff(results: dict, a: str, b: str) -> list[float]:
    return [x - y for x, y in zip(_acc(results, a), _acc(results, b), strict=True)]


def _learned(results: dict, name: str) -> dict:
    mean = sum(_acc(results, name)) / len(_acc(results, name))
    return condition(f"{name} test accuracy (mean over seeds)", mean, ">=",
                     1 / results["classes"] + LEARNED_MARGIN)  # fmt: skip


def claims(cfg: Config, results: dict) -> list[Claim]:
    n, sc = len(results["seeds"]), f"{cfg.dataset}, H = {cfg.hidden}, {cfg.epochs} epochs"
    acc = {m: _acc(results, m) for m in MODELS}
    return [
        Claim.measure("hebbnet-over-random", f"HebbNet (top-{cfg.p:g} sparse) test accuracy "
                      f"minus the random projection's (its start) >= 0.01 ({sc}, {n} seeds)",
                      _diff(results, "hebbnet", "random"), paper="HebbNet learns features",
                      op=">=", threshold=0.01, requires=[_learned(results, "random")]),
        Claim.measure("sparse-vs-dense", f"HebbNet sparse (top {cfg.p:g}) minus dense updates "
                      f">= -0.005 at equal epochs ({sc}, {n} seeds)",
                      _diff(results, "hebbnet", "hebbnet-dense"),
                      paper="sparsity helps or costs nothing", op=">=", threshold=-0.005,
                      requires=[_learned(results, "hebbnet-dense")]),
        Claim.measure("hebbnet-vs-krotov", f"HebbNet minus Krotov–Hopfield >= -0.01 at equal "
                      f"epochs ({sc}, {n} seeds)", _diff(results, "hebbnet", "krotov"),
                      paper="HebbNet needs fewer epochs (200 vs 1500) to the same accuracy",
                      op=">=", threshold=-0.01, requires=[_learned(results, "krotov")]),
        *[Claim.measure(f"{m}-accuracy", f"{m} test accuracy ({sc}, {n} seeds)"
                        + (f"; Adam lr {results['mlp_lr']['lr']:g} picked from {cfg.mlp_lrs} on "
                           "the held-out share of train" if m == "mlp" else ""), acc[m],
                        paper="ceiling" if m == "mlp" else None) for m in MODELS],
    ]  # fmt: skip


EXPERIMENT = Experiment(
    name="hebbnet-mnist",
    paper=H.PAPER,
    bibtex=H.BIBTEX,
    description="A hidden layer learned by HebbNet's thresholded Hebbian rule with top-1% "
    "sparse updates, against dense updates, the Krotov–Hopfield rule, a random projection of "
    "the same width (all read out by a linear classifier) and a backprop MLP ceiling.",
    minutes={"smoke": 0.2, "quick": 4},
    Config=Config,
    train=train,
    plots=plots,
    claims=claims,
    scales={
        "smoke": {
            "seeds": 2,
            "hidden": 32,
            "epochs": 2,
            "eval_every": 1,
            "train_size": 300,
            "clf_steps": 30,
            "clf_lrs": (0.03,),
            "mlp_lrs": (1e-3, 1e-2),
        },
        "paper": {
            "dataset": "mnist",
            "train_size": 10_000,
            "hidden": 2000,
            "epochs": 100,
            "eval_every": 10,
            "seeds": 3,
        },
    },  # fmt: skip
    variants=(
        PaperVariant(
            "mnist",
            {"dataset": "mnist", "train_size": 10_000, "hidden": 400, "epochs": 20},
            ("mnist",),
            "real MNIST (first 10k training images), 400 hidden units",
        ),
    ),
)
