"""Online SGD and Adam, linear and MLP, on meta-learning episodes: VSML's gradient baselines."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from badgerlab.data import TaskSampler, load
from badgerlab.experiment import Experiment, ExperimentConfig, PaperVariant
from badgerlab.online import online_learn
from badgerlab.plots import curve_plot
from badgerlab.runs import Claim, RunLike
from badgerlab.vsml import BIBTEX as VSML_BIBTEX
from badgerlab.vsml import PAPER as VSML_PAPER


class Config(ExperimentConfig):
    dataset: Literal["digits", "mnist", "fashion_mnist", "mnist1d"] = Field(
        "digits", description="classification dataset the episodes are drawn from"
    )
    seeds: int = Field(3, ge=1, le=100, description="seeds run inside one Run")
    episodes: int = Field(32, ge=1, le=4096, description="independent episodes per seed")
    length: int = Field(500, ge=10, le=100_000, description="online examples per episode")
    num_classes: int | None = Field(
        None, ge=2, le=100, description="classes per episode (None: all of the dataset's)"
    )
    hidden: int = Field(160, ge=1, le=4096, description="hidden units of the MLP learners")
    lr_sgd: float = Field(1e-2, gt=0, le=10, description="SGD learning rate (VSML reference)")
    lr_adam: float = Field(1e-3, gt=0, le=1, description="Adam learning rate (VSML reference)")
    final_fraction: float = Field(
        0.2, gt=0, le=1, description="tail of the episode the final accuracy is measured on"
    )


LEARNERS = ("sgd-linear", "adam-linear", "sgd-mlp", "adam-mlp")
# Fixed by the issue before measuring: Adam-MLP over the last 20% of a 500-example episode.
THRESHOLD = 0.70


def _learn(cfg: Config, name: str, x: torch.Tensor, y: torch.Tensor, k: int, seed: int):
    opt, arch = name.split("-")
    lr = cfg.lr_sgd if opt == "sgd" else cfg.lr_adam
    hidden = (cfg.hidden,) if arch == "mlp" else ()
    return online_learn(x, y, k, optimizer=opt, lr=lr, hidden=hidden, seed=seed)


def train(cfg: Config, run: RunLike) -> dict:
    """One unit per seed: every learner on that seed's episodes; accuracy curves come back."""
    data = load(cfg.dataset, "train", download=run.download)
    sampler = TaskSampler(data, length=cfg.length, num_classes=cfg.num_classes)
    tail = max(1, round(cfg.final_fraction * cfg.length))
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    for unit in run.units([f"seed{s}" for s in seeds], description="online learners"):
        seed = seeds[unit.index]
        eps = sampler.sample(cfg.episodes, seed=seed)
        curves = {}
        for j, name in enumerate(LEARNERS):
            curve = _learn(cfg, name, eps.x, eps.y, eps.num_classes, seed).accuracy_curve
            curves[name] = curve
            run.log(
                unit.index * len(LEARNERS) + j,
                seed=seed,
                learner=name,
                final_accuracy=float(curve[-tail:].mean()),
                mean_accuracy=float(curve.mean()),
            )
        unit.finish(curves)
    per_seed = [run.results[f"seed{s}"] for s in seeds]
    curves = {name: torch.stack([r[name] for r in per_seed]) for name in LEARNERS}  # (S, N)
    return {"curves": curves, "num_classes": cfg.num_classes or data.num_classes, "tail": tail}


def plots(cfg: Config, results: dict, run: RunLike) -> None:
    curves = results["curves"]
    run.save_json("curves", {k: v.tolist() for k, v in curves.items()})
    run.save_figure(
        curve_plot(
            curves,
            xlabel="example index in the episode",
            ylabel="accuracy before the label is seen",
            title=f"online learners on {cfg.dataset} episodes ({cfg.episodes} per seed)",
            smooth=max(1, cfg.length // 25),
            chance=1 / results["num_classes"],
        ),
        "accuracy_curve",
        caption="Online accuracy of each learner along an episode (mean over seeds); look for "
        "Adam-MLP rising well above the chance line and the linear learners levelling off lower.",
    )


def claims(cfg: Config, results: dict) -> list[Claim]:
    tail = results["tail"]
    finals = {name: c[:, -tail:].mean(1).tolist() for name, c in results["curves"].items()}
    pct = round(100 * cfg.final_fraction)
    # The threshold was fixed for digits; on other data the number is reported, not judged.
    judged = cfg.dataset == "digits"
    out = [
        Claim.measure(
            "adam-mlp-final",
            f"online Adam on an MLP({cfg.hidden}) over the last {pct}% of a {cfg.length}-example "
            f"{cfg.dataset} episode"
            + (f" reaches accuracy >= {THRESHOLD}" if judged else " (no threshold off digits)"),
            finals["adam-mlp"],
            paper="baseline of Kirsch & Schmidhuber's Fig. 7 (online Adam, lr 1e-3)",
            op=">=" if judged else "info",
            threshold=THRESHOLD if judged else None,
        )
    ]
    out += [
        Claim.measure(
            f"{name}-final",
            f"{name} accuracy over the last {pct}% of the episode",
            finals[name],
            paper="baseline",
        )
        for name in LEARNERS
        if name != "adam-mlp"
    ]
    return out


EXPERIMENT = Experiment(
    name="online-learners",
    paper=f"{VSML_PAPER} (online gradient baselines)",
    bibtex=VSML_BIBTEX,
    description="Online (batch size 1) SGD and Adam on linear models and MLPs, accuracy on each "
    "example before its label is used: the baseline learned learners are measured against.",
    minutes={"smoke": 0.2, "quick": 1},
    Config=Config,
    train=train,
    plots=plots,
    claims=claims,
    scales={
        "smoke": {"seeds": 2, "episodes": 4, "length": 60, "hidden": 32},
        "paper": {"episodes": 32, "length": 2000, "seeds": 5},
    },
    variants=(
        PaperVariant("mnist", {"dataset": "mnist"}, ("mnist",), "real MNIST episodes"),
        PaperVariant(
            "fashion_mnist", {"dataset": "fashion_mnist"}, ("fashion_mnist",), "Fashion-MNIST"
        ),
    ),
)
