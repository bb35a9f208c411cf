"""BYOL against its ablations (no predictor, τ = 0), SimCLR and a random encoder: linear probes
on frozen features and the collapse monitor over training."""

from __future__ import annotations

import math
import warnings
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from badgerlab import ddp
from badgerlab.data import load
from badgerlab.experiment import ConfigError, Experiment, ExperimentConfig, PaperVariant
from badgerlab.runs import Claim, RunLike, condition
from badgerlab.ssl.byol import (
    BIBTEX,
    BYOL,
    PAPER,
    SMALL_CNN,
    Augment,
    SimCLR,
    collapse_monitor,
    encoder,
    tau_schedule,
)

Temperature = Annotated[float, Field(gt=0.0, le=10.0)]
Strength = Annotated[float, Field(ge=1e-6, le=1e6)]


class Config(ExperimentConfig):
    seeds: int = Field(3, ge=1, le=100, description="seeds run inside one Run")
    dataset: Literal["digits", "mnist", "fashion_mnist", "cifar10"] = Field(
        "digits", description="image dataset (digits ships with scikit-learn)"
    )
    train_size: int | None = Field(
        None, ge=64, le=60_000, description="first N training images (None: all)"
    )
    test_size: int | None = Field(
        None, ge=64, le=10_000, description="first N test images for the probe (None: all)"
    )
    encoder: Literal["small-cnn", "resnet18"] = Field(SMALL_CNN, description="encoder f")
    width: int = Field(16, ge=2, le=512, description="small-cnn channels of its first layer")
    hidden: int = Field(256, ge=8, le=8192, description="projector/predictor hidden units")
    out: int = Field(64, ge=2, le=4096, description="projection size d")
    epochs: int = Field(30, ge=1, le=5000, description="training epochs of every method")
    batch_size: int = Field(128, ge=8, le=8192, description="images per step (2 views each)")
    lr: float = Field(2e-3, gt=0, le=1, description="Adam learning rate (peak)")
    weight_decay: float = Field(1e-6, ge=0, le=1, description="Adam L2 weight decay")
    warmup_epochs: int = Field(1, ge=0, le=100, description="linear lr warm-up, then cosine")
    tau_base: float = Field(0.996, ge=0, le=1, description="τ_base of the EMA target")
    temperatures: tuple[Temperature, ...] = Field(
        (0.1, 0.2, 0.5), description="SimCLR temperatures tried on a held-out part of train"
    )
    tune_fraction: float = Field(
        0.2, ge=0.05, le=0.5, description="share of train held out to pick the temperature"
    )
    crop_min: float = Field(0.5, gt=0, le=1, description="smallest random-crop area share")
    flip: bool = Field(False, description="random horizontal flips (off for digits)")
    jitter: float = Field(0.4, ge=0, le=1, description="brightness/contrast jitter strength")
    blur_p: float = Field(0.5, ge=0, le=1, description="Gaussian blur probability")
    solarize_p: float = Field(0.1, ge=0, le=1, description="solarisation probability")
    probe_cs: tuple[Strength, ...] = Field(
        (0.1, 1.0, 10.0), description="logistic-probe C grid, picked on a part of train"
    )

    @model_validator(mode="after")
    def _check(self) -> Config:
        for name in ("temperatures", "probe_cs"):
            vals = list(getattr(self, name))
            if not vals or vals != sorted(set(vals)):
                raise ValueError(f"{name} must be non-empty and strictly increasing, got {vals}")
        if self.train_size is not None and self.batch_size > self.train_size * 0.5:
            raise ValueError(
                f"batch_size {self.batch_size} is more than half of train_size {self.train_size}"
            )
        return self


METHODS = ("byol", "byol-no-predictor", "byol-tau0", "simclr", "random-init")
TRAINED = METHODS[:4]
# Fixed by the issue before measuring.
RANDOM_MARGIN = 0.015  # BYOL probe ≥ random-init + 0.015
SIMCLR_MARGIN = 0.01  # BYOL probe ≥ SimCLR − 0.01
COLLAPSED = 0.25  # no predictor: final z_std < 0.25/√d
HEALTHY = 0.5  # BYOL: final z_std > 0.5/√d
# The random encoder is a baseline only when its features are informative: chance + 0.2.
LEARNED_MARGIN = 0.2


def _data(cfg: Config, run: RunLike) -> dict:
    tr = load(cfg.dataset, "train", download=run.download)
    te = load(cfg.dataset, "test", download=run.download)
    n = len(tr) if cfg.train_size is None else min(cfg.train_size, len(tr))
    m = len(te) if cfg.test_size is None else min(cfg.test_size, len(te))
    if cfg.batch_size > (1 - cfg.tune_fraction) * n:
        raise ConfigError(
            f"batch_size={cfg.batch_size} is larger than the tuning split of {n} images"
        )
    dev = torch.device(cfg.device)
    # the held-out part of train for the temperature: a fixed permutation, seed 0
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    cut = n - int(round(cfg.tune_fraction * n))
    return {
        "x": tr.x[:n].to(dev), "y": tr.y[:n], "xte": te.x[:m].to(dev), "yte": te.y[:m],
        "fit": perm[:cut], "held": perm[cut:], "classes": tr.num_classes,
    }  # fmt: skip


def _build(method: str, cfg: Config, channels: int, seed: int, temperature: float) -> nn.Module:
    # Module initialisation draws from the global RNG: forked and seeded, so that every method
    # of a seed starts from the same encoder and the caller's RNG is left alone.
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        enc, feat = encoder(cfg.encoder, channels, width=cfg.width)
        if method == "simclr":
            model = SimCLR(enc, feat, hidden=cfg.hidden, out=cfg.out, temperature=temperature)
        else:
            predictor = method != "byol-no-predictor"
            model = BYOL(enc, feat, hidden=cfg.hidden, out=cfg.out, predictor=predictor)
    # Under torchrun every BatchNorm (online and target) normalises over the global batch.
    model = ddp.sync_batchnorm(model) if ddp.is_distributed() else model
    return model.to(cfg.device)


def _augment(cfg: Config, shape: tuple[int, ...]) -> Augment:
    return Augment(
        (shape[1], shape[2]), shape[0], crop_scale=(cfg.crop_min, 1.0), flip=cfg.flip,
        jitter=cfg.jitter, blur_p=cfg.blur_p, solarize_p=cfg.solarize_p,
    )  # fmt: skip


def _lr(cfg: Config, k: int, total: int, per_epoch: int) -> float:
    """Linear warm-up over `warmup_epochs`, then cosine decay to 0 at step `total`."""
    warm = cfg.warmup_epochs * per_epoch
    scale = min(1.0, (k + 1) / warm) if warm else 1.0
    return cfg.lr * scale * (1 + math.cos(math.pi * k / total)) / 2


def _epoch(model, opt, aug, x: Tensor, cfg: Config, g, method: str, epoch: int) -> dict:
    """One pass (full batches only, shuffled by `g`); loss and collapse-monitor means.

    Under torchrun every rank draws the same global batch and views (`g` is the same on every
    rank), trains on its equal share, and averages gradients over ranks; with the global
    BatchNorm this is the step one process takes on the whole batch."""
    per_epoch = len(x) // cfg.batch_size
    total = cfg.epochs * per_epoch
    perm = torch.randperm(len(x), generator=g).to(x.device)
    sums = {"loss": 0.0, "z_std_sqrt_d": 0.0, "eff_rank": 0.0}
    for i in range(per_epoch):
        k = epoch * per_epoch + i
        for group in opt.param_groups:
            group["lr"] = _lr(cfg, k, total, per_epoch)
        v1, v2 = aug(x[perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]], g)
        mine = ddp.shard_indices(len(v1), epoch=k, seed=0, shuffle=False).to(x.device)
        loss, z = model.loss(v1[mine], v2[mine])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        ddp.average_gradients(model.online_parameters())
        opt.step()
        tau = 0.0 if method == "byol-tau0" else tau_schedule(k + 1, total, tau_base=cfg.tau_base)
        model.update_target(tau)
        mon = collapse_monitor(ddp.all_gather_cat(z.detach()))
        sums["loss"] += ddp.all_reduce_mean(float(loss.detach()))
        sums["z_std_sqrt_d"] += mon["z_std_sqrt_d"]
        sums["eff_rank"] += mon["eff_rank"]
    return {key: v / per_epoch for key, v in sums.items()}


def _split_state(model: nn.Module) -> tuple[dict, dict]:
    sd = model.state_dict()
    target = {k: v for k, v in sd.items() if k.startswith("target_")}
    return {k: v for k, v in sd.items() if k not in target}, target


def _fit(unit, method: str, seed: int, x: Tensor, cfg: Config, run: RunLike, t: float):
    """Train one method for `cfg.epochs` on `x`, checkpointing after every epoch."""
    model = _build(method, cfg, x.shape[1], seed, t)
    opt = torch.optim.Adam(model.online_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    aug = _augment(cfg, tuple(x.shape[1:]))
    st = unit.restore()
    if st is None:
        g = torch.Generator().manual_seed(seed * 1009 + METHODS.index(method))
        st = {
            "epoch": 0,
            "generator": g,
            "history": {"loss": [], "z_std_sqrt_d": [], "eff_rank": []},
        }
    else:
        model.load_state_dict({**st["model"], **st["target"]})
        opt.load_state_dict(st["optimizer"])
    for epoch in range(st["epoch"], cfg.epochs):
        stats = _epoch(model, opt, aug, x, cfg, st["generator"], method, epoch)
        for key, value in stats.items():
            st["history"][key].append(value)
        step = unit.index * cfg.epochs + epoch
        run.log(step, unit=unit.key, seed=seed, method=method, epoch=epoch, **stats)
        online, target = _split_state(model)
        st.update(epoch=epoch + 1, model=online, target=target, optimizer=opt.state_dict())
        if epoch + 1 < cfg.epochs:
            unit.checkpoint(st, step=step)
    return model, st["history"]


@torch.no_grad()
def _features(model: nn.Module | None, x: Tensor, bs: int = 512) -> np.ndarray:
    """Frozen features f(x) of the online encoder in eval mode (raw pixels for None)."""
    if model is None:
        return x.flatten(1).double().cpu().numpy()
    enc = model.encoder
    was = enc.training
    enc.eval()
    out = torch.cat([enc(x[i : i + bs]) for i in range(0, len(x), bs)])
    enc.train(was)
    return out.double().cpu().numpy()


def _probe(ftr: np.ndarray, ytr: np.ndarray, fte: np.ndarray, yte: np.ndarray, cs) -> float:
    """Logistic regression on standardised features: C picked on a stratified fifth of the
    training features, refit on all of them, accuracy on the test features."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    mu, sd = ftr.mean(0), ftr.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    ftr, fte = (ftr - mu) / sd, (fte - mu) / sd
    a, b, ya, yb = train_test_split(ftr, ytr, test_size=0.2, stratify=ytr, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)

        def fit(c: float, xs, ys):
            return LogisticRegression(C=c, max_iter=500).fit(xs, ys)

        best = max(cs, key=lambda c: (fit(c, a, ya).score(b, yb), -c))
        return float(fit(best, ftr, ytr).score(fte, yte))


@torch.no_grad()
def _calibrate_bn(model: nn.Module, x: Tensor, bs: int = 256) -> None:
    """Random-init baseline: BatchNorm running statistics averaged over the training images
    (train-mode forward, no weight changes), so its eval-mode features are normalised as the
    trained encoders' are."""
    for m in model.encoder.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    model.encoder.train()
    for i in range(0, len(x), bs):
        model.encoder(x[i : i + bs])


def _probe_on(model: nn.Module | None, data: dict, fit_idx, test: str, cfg: Config) -> float:
    """Probe fit on training images `fit_idx`; scored on the test split or the held-out part."""
    x, y = data["x"], data["y"].numpy()
    if test == "test":
        xte, yte = data["xte"], data["yte"].numpy()
    else:
        xte, yte = x[data["held"]], y[data["held"].numpy()]
    ftr = _features(model, x[fit_idx])
    return _probe(ftr, y[fit_idx.numpy()], _features(model, xte), yte, cfg.probe_cs)


def _unit(unit, data: dict, cfg: Config, run: RunLike, temperature: float) -> dict:
    kind, _, method = unit.key.partition("/")
    everything = torch.arange(len(data["x"]))
    if kind == "raw":
        return {"accuracy": _probe_on(None, data, everything, "test", cfg)}
    if kind == "tune":  # method = "simclr-t<temperature>", on the fit part, scored on held-out
        t = float(method.removeprefix("simclr-t"))
        model, hist = _fit(unit, "simclr", cfg.seed, data["x"][data["fit"]], cfg, run, t)
        return {
            "temperature": t,
            "held_accuracy": _probe_on(model, data, data["fit"], "held", cfg),
        }
    seed = int(kind)
    if method == "random-init":
        model = _build(method, cfg, data["x"].shape[1], seed, temperature)
        _calibrate_bn(model, data["x"])
        return {"accuracy": _probe_on(model, data, everything, "test", cfg)}
    model, hist = _fit(unit, method, seed, data["x"], cfg, run, temperature)
    acc = _probe_on(model, data, everything, "test", cfg)
    return {"accuracy": acc, "temperature": temperature, **hist}


def _pick_temperature(cfg: Config, results: dict) -> float:
    """The SimCLR temperature with the best held-out probe accuracy (ties: the first)."""
    if len(cfg.temperatures) == 1:
        return cfg.temperatures[0]
    scores = [results[f"tune/simclr-t{t:g}"]["held_accuracy"] for t in cfg.temperatures]
    return cfg.temperatures[int(np.argmax(scores))]


def train(cfg: Config, run: RunLike) -> dict:
    """Units: the temperature grid (SimCLR on the fit part of train, seed `cfg.seed`), raw
    pixels, then one unit per seed × method, every training unit checkpointed each epoch."""
    if cfg.batch_size % ddp.world_size():
        raise ConfigError(
            f"batch_size={cfg.batch_size} must be a multiple of the {ddp.world_size()} ranks"
        )
    data = _data(cfg, run)
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    tune = [f"tune/simclr-t{t:g}" for t in cfg.temperatures] if len(cfg.temperatures) > 1 else []
    keys = [*tune, "raw/pixels", *(f"{s}/{m}" for s in seeds for m in METHODS)]
    for unit in run.units(keys, description="byol-digits"):
        t = _pick_temperature(cfg, run.results) if unit.key not in tune else 0.0
        unit.finish(_unit(unit, data, cfg, run, t))
    res = run.results
    return {
        "per": {m: [res[f"{s}/{m}"] for s in seeds] for m in METHODS},
        "tune": {key: res[key] for key in tune},
        "raw": res["raw/pixels"]["accuracy"],
        "temperature": _pick_temperature(cfg, res),
        "classes": data["classes"],
        "n_train": len(data["x"]),
        "n_test": len(data["xte"]),
        "steps": cfg.epochs * (len(data["x"]) // cfg.batch_size),
    }


def _per(results: dict, method: str, field: str) -> list:
    return [r[field] for r in results["per"][method]]


def _final(results: dict, method: str, field: str = "z_std_sqrt_d") -> list[float]:
    return [h[-1] for h in _per(results, method, field)]


LABELS = {
    "byol": "BYOL",
    "byol-no-predictor": "BYOL, no predictor",
    "byol-tau0": "BYOL, τ = 0",
    "simclr": "SimCLR",
    "random-init": "random-init encoder",
}


def _accuracy_plot(cfg: Config, results: dict, run: RunLike) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    for i, m in enumerate(METHODS):
        acc = np.array(_per(results, m, "accuracy"))
        ax.bar(i, acc.mean(), color=f"C{i}", alpha=0.6)
        ax.scatter(np.full(len(acc), i), acc, color="k", s=12, zorder=3)
    ax.axhline(results["raw"], color="grey", linestyle=":", label="raw pixels")
    lo = min(min(_per(results, m, "accuracy")) for m in METHODS)
    ax.set_ylim(max(0.0, min(lo, results["raw"]) - 0.05), 1.0)
    ax.set_xticks(range(len(METHODS)), [LABELS[m] for m in METHODS], rotation=15)
    ax.set_ylabel("linear-probe test accuracy")
    ax.set_title(f"{cfg.dataset}: frozen features, {cfg.epochs} epochs, {cfg.seeds} seeds")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    run.save_figure(
        fig,
        "probe_accuracy",
        caption="Linear-probe test accuracy on the frozen encoder of each method (bars: mean, "
        "dots: seeds; dotted: the probe on raw pixels): look for BYOL above the random-init "
        "encoder and level with SimCLR, and for the no-predictor ablation falling behind.",
    )


def _curves(ax, results: dict, methods, field: str) -> None:
    for m in methods:
        y = np.array(_per(results, m, field), dtype=float)  # (seeds, epochs)
        xs = np.arange(1, y.shape[1] + 1)
        ax.plot(xs, y.mean(0), label=LABELS[m], color=f"C{METHODS.index(m)}")
        if len(y) > 1:
            ax.fill_between(xs, y.min(0), y.max(0), alpha=0.2, color=f"C{METHODS.index(m)}")
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)


def plots(cfg: Config, results: dict, run: RunLike) -> None:
    import matplotlib.pyplot as plt

    run.save_json("results", results)
    _accuracy_plot(cfg, results, run)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    _curves(ax1, results, TRAINED, "z_std_sqrt_d")
    for level in (COLLAPSED, HEALTHY):
        ax1.axhline(level, color="grey", linestyle=":")
    ax1.set_ylabel("√d · per-dimension std of z/‖z‖")
    _curves(ax2, results, TRAINED, "eff_rank")
    ax2.set_ylabel(f"effective rank of the batch (d = {cfg.out})")
    ax1.legend()
    fig.tight_layout()
    run.save_figure(
        fig,
        "collapse_monitor",
        caption="Collapse monitor over training (mean over the epoch's batches; band: min-max "
        "over seeds): √d times the per-dimension std of the normalised online projection (left; "
        "1 for a spread-out batch, 0 for a collapsed one; dotted: the 0.25 and 0.5 thresholds) "
        "and the batch's effective rank (right). Look for the no-predictor run falling towards 0 "
        "while BYOL and τ = 0 stay up.",
    )
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    _curves(ax1, results, TRAINED[:3], "loss")
    ax1.set_ylabel("BYOL loss (2 − 2cos, both views summed)")
    ax1.legend()
    _curves(ax2, results, ("simclr",), "loss")
    ax2.set_ylabel(f"SimCLR NT-Xent (t = {results['temperature']:g})")
    fig.tight_layout()
    run.save_figure(
        fig,
        "loss_curves",
        caption="Training loss per epoch (band: min-max over seeds), BYOL variants (left) and "
        "SimCLR (right): look for the no-predictor loss falling towards 0 (the constant solution) "
        "while BYOL's stays away from 0 with a spread-out projection.",
    )


def claims(cfg: Config, results: dict) -> list[Claim]:
    byol, simclr = _per(results, "byol", "accuracy"), _per(results, "simclr", "accuracy")
    rand = _per(results, "random-init", "accuracy")
    scale = (
        f"{cfg.seeds} seeds, {results['n_train']} training / {results['n_test']} test images of "
        f"{cfg.dataset}, {cfg.epochs} epochs = {results['steps']} steps of batch {cfg.batch_size}"
    )
    rand_ok = condition(
        "random-init encoder probe accuracy (mean over seeds)",
        float(np.mean(rand)),
        ">=",
        1 / results["classes"] + LEARNED_MARGIN,
    )
    simclr_learned = condition(
        "SimCLR probe accuracy minus the random-init encoder's (mean over seeds)",
        float(np.mean(simclr) - np.mean(rand)),
        ">",
        0.0,
    )
    diff = [a - b for a, b in zip(byol, rand, strict=True)]
    vs_simclr = [a - b for a, b in zip(byol, simclr, strict=True)]
    return [
        Claim.measure(
            "byol-minus-random-init",
            f"BYOL's linear-probe test accuracy minus that of the same encoder at its random "
            f"initialisation is >= {RANDOM_MARGIN} ({scale})",
            diff,
            paper="ANCHORS trial (digits, 100 epochs): 98.9-99.2% vs 96.6%",
            op=">=",
            threshold=RANDOM_MARGIN,
            requires=[rand_ok],
        ),
        Claim.measure(
            "byol-z-std",
            f"BYOL: √d · final per-dimension std of the normalised projection (d = {cfg.out}) "
            f"is > {HEALTHY} ({scale})",
            _final(results, "byol"),
            paper="healthy ≈ 1 (ANCHORS trial: 0.105·√64 = 0.84)",
            op=">",
            threshold=HEALTHY,
        ),
        Claim.measure(
            "no-predictor-z-std",
            f"BYOL without the predictor collapses: √d · final per-dimension std of the "
            f"normalised projection is < {COLLAPSED} ({scale})",
            _final(results, "byol-no-predictor"),
            paper="removing the predictor collapses BYOL (Grill et al. 2020, Table 5b; ANCHORS "
            "trial: 0.003·√64 = 0.024)",
            op="<",
            threshold=COLLAPSED,
            requires=["byol-z-std"],
        ),
        Claim.measure(
            "byol-minus-simclr",
            f"BYOL's probe accuracy minus SimCLR's (NT-Xent, temperature "
            f"{results['temperature']:g} picked on held-out training images from "
            f"{list(cfg.temperatures)}; the same encoder, augmentations, epochs and steps) is "
            f">= -{SIMCLR_MARGIN} ({scale})",
            vs_simclr,
            paper="BYOL needs no negatives to match contrastive methods (Grill et al. 2020)",
            op=">=",
            threshold=-SIMCLR_MARGIN,
            requires=[simclr_learned],
        ),
        *_info_claims(cfg, results),
    ]


def _info_claims(cfg: Config, results: dict) -> list[Claim]:
    acc = {m: _per(results, m, "accuracy") for m in METHODS}
    return [
        Claim.measure("byol-accuracy", "BYOL linear-probe test accuracy", acc["byol"]),
        Claim.measure(
            "tau0-accuracy",
            "BYOL with τ = 0 (target = online copy after each step, SimSiam-like) probe accuracy",
            acc["byol-tau0"],
            paper="ANCHORS trial: 98.9%; the paper: τ = 0 is unstable on ImageNet (Table 5a)",
        ),
        Claim.measure(
            "tau0-z-std",
            "BYOL with τ = 0: √d · final per-dimension std of the normalised projection",
            _final(results, "byol-tau0"),
        ),
        Claim.measure(
            "no-predictor-accuracy",
            "BYOL without predictor probe accuracy",
            acc["byol-no-predictor"],
        ),
        Claim.measure("simclr-accuracy", "SimCLR probe accuracy", acc["simclr"], paper="baseline"),
        Claim.measure(
            "random-init-accuracy",
            "random-init encoder (BatchNorm statistics of the training images) probe accuracy",
            acc["random-init"],
            paper="ANCHORS trial: 96.6%",
        ),
        Claim.measure(
            "raw-pixel-accuracy", "probe on raw pixels", results["raw"], paper="ANCHORS: 96.1%"
        ),
        Claim.measure(
            "simclr-temperature",
            "SimCLR temperature picked on the held-out part of the training split",
            results["temperature"],
        ),
    ]


EXPERIMENT = Experiment(
    name="byol-digits",
    paper=PAPER,
    bibtex=BIBTEX,
    description="BYOL (online encoder/projector/predictor, EMA target with a cosine τ "
    "schedule over parameters and BatchNorm buffers) on digits with a small CNN and kornia "
    "views, against BYOL without predictor, BYOL with τ = 0, SimCLR (temperature picked on "
    "held-out training images) and the random-init encoder: linear probes on frozen features "
    "and the collapse monitor over training.",
    minutes={"smoke": 0.25, "quick": 5},
    Config=Config,
    train=train,
    plots=plots,
    claims=claims,
    devices=("cpu", "cuda"),
    scales={
        "smoke": {
            "seeds": 1,
            "epochs": 2,
            "train_size": 320,
            "test_size": 128,
            "width": 4,
            "hidden": 32,
            "out": 16,
            "batch_size": 64,
            "temperatures": (0.2, 0.5),
            "probe_cs": (1.0,),
        },
        "paper": {
            "dataset": "cifar10",
            "encoder": "resnet18",
            "hidden": 4096,
            "out": 256,
            "epochs": 1000,
            "batch_size": 512,
            "warmup_epochs": 10,
            "crop_min": 0.08,
            "flip": True,
            "blur_p": 0.0,
            "solarize_p": 0.2,
            "seeds": 3,
        },
    },
    variants=(
        PaperVariant(
            "fashion_mnist",
            {"dataset": "fashion_mnist", "train_size": 2000, "test_size": 2000, "epochs": 10},
            ("fashion_mnist",),
            "Fashion-MNIST (first 2k training and 2k test images, 10 epochs; ~15 min on a core)",
        ),
    ),
)
