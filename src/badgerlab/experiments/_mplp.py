"""The MPLP half of `learned-learners`: resumable meta-training units and their meta-tests.

Two families, one unit each per seed (``mplp-sine-seed{s}``, ``mplp-class-seed{s}``):

* few-shot sinusoids (the paper's first experiment): nets (1, *sine_hidden, 1) ReLU from LeCun
  init, K = 10 support points, ``inner`` learner steps; meta-trained by backprop through the
  unrolled inner loop on the final query MSE (Adam, ``meta_lr``, 8 tasks a step). Tested on 256
  fresh tasks against plain SGD on the same initial nets with its lr picked from a grid on 64
  other tasks, and against predicting zero.
* classification: meta-trained on digits subsets (2–5 classes, random projections to 4–32
  features, 20 support examples, nets (D, 16, C)), tested on datasets it never saw (wine, iris,
  breast_cancer: all their classes, 32 tasks of 20 support / 40 query examples) against SGD with
  its lr picked on 32 other tasks of the same dataset.

Each unit checkpoints θ, the Adam state and the generator every ``mplp_checkpoint`` meta-steps,
so a killed run resumes to the same numbers.
"""

from __future__ import annotations

import torch

from badgerlab.data import load
from badgerlab.learned import mplp as M

SINE_TEST, SINE_TUNE, QUERY = 256, 64, 50
CLASS_TEST, CLASS_SUPPORT, CLASS_QUERY = 32, 20, 40
CLASS_DATASETS = ("wine", "iris", "breast_cancer")
CLASS_GRID = (1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0)
NET_SEED = 7  # the initial networks of every learner on a test set


def _nets() -> torch.Generator:
    return torch.Generator().manual_seed(NET_SEED)


def _fresh(n_layers: int, seed: int, lr: float) -> dict:
    g = torch.Generator().manual_seed(seed)
    theta = M.init_theta(n_layers, hidden=15, message=4, generator=g)
    return {"theta": theta, "opt": None, "generator": g, "step": 0, "history": [], "lr": lr}


def _optimizer(st: dict) -> torch.optim.Adam:
    opt = torch.optim.Adam([t.requires_grad_() for t in M.theta_leaves(st["theta"])], lr=st["lr"])
    if st["opt"] is not None:
        opt.load_state_dict(st["opt"])
    return opt


def _train(cfg, run, unit, st: dict, sample, steps: int, total: int, **kw) -> dict:
    """Meta-steps until ``total``, checkpointing; logs the meta-loss."""
    opt = _optimizer(st)
    g = st["generator"]
    while st["step"] < total:
        loss = M.meta_train_step(st["theta"], opt, sample(g), steps, generator=g, **kw)
        st["step"] += 1
        st["history"].append(loss)
        run.log(unit.index * 1_000_000 + st["step"], unit=unit.key, meta_loss=loss)
        if st["step"] % cfg.mplp_checkpoint == 0 and st["step"] < total:
            st["opt"] = opt.state_dict()
            unit.checkpoint(st, step=unit.index * 1_000_000 + st["step"])
    return st


def sine_unit(cfg, run, unit, seed: int) -> None:
    """Meta-train MPLP on sinusoids for one seed, then test it beside tuned SGD."""
    hidden = tuple(cfg.mplp_sine_hidden)
    st = unit.restore()
    if st is None:
        st = _fresh(len(hidden) + 1, seed, cfg.mplp_meta_lr)
        st["start_mse"] = M.evaluate(
            st["theta"], _sine_test(seed), cfg.mplp_inner, hidden=hidden, generator=_nets()
        )
    st = _train(
        cfg, run, unit, st, sine_sampler, cfg.mplp_inner,
        cfg.mplp_sine_steps, hidden=hidden, target="final",
    )  # fmt: skip
    unit.finish({
        **sine_scores(st["theta"], seed, cfg.mplp_inner, hidden),
        "start_mse": st["start_mse"],
        "history": st["history"],
    })  # fmt: skip


def sine_scores(theta, seed: int, inner: int, hidden: tuple[int, ...]) -> dict:
    """MPLP θ on a seed's fresh sinusoid tasks after ``inner`` steps, beside plain SGD (lr
    picked on other tasks) and predicting zero, all query MSEs on the same initial nets."""
    test = _sine_test(seed)
    tune = M.sample_sine_tasks(
        SINE_TUNE, k_query=QUERY, generator=torch.Generator().manual_seed(1000 + seed)
    )
    lr, _ = M.tune_sgd_lr(tune, inner, hidden=hidden, generator=_nets())
    sgd = M.sgd_theta(lr, dtype=torch.float32)
    return {
        "mplp_mse": M.evaluate(theta, test, inner, hidden=hidden, generator=_nets()),
        "sgd_mse": M.evaluate(sgd, test, inner, hidden=hidden, learner="sgd", generator=_nets()),
        "sgd_lr": lr,
        "zero_mse": float((test.y_query**2).mean()),
    }


def sine_sampler(g: torch.Generator) -> M.Tasks:
    """The meta-training batch: 8 fresh sinusoid tasks."""
    return M.sample_sine_tasks(8, generator=g)


def _sine_test(seed: int) -> M.Tasks:
    return M.sample_sine_tasks(
        SINE_TEST, k_query=QUERY, generator=torch.Generator().manual_seed(3000 + seed)
    )


def digits_sampler(x, y):
    """Meta-training batches of 8 digits tasks: 2–5 classes, projections to 4–32 features."""

    def sample(g: torch.Generator) -> M.Tasks:
        nc = int(torch.randint(2, 6, (1,), generator=g))
        dim = int(torch.randint(4, 33, (1,), generator=g))
        return M.sample_class_tasks(
            x, y, 8, n_support=CLASS_SUPPORT, n_query=CLASS_SUPPORT, n_classes=nc, dim=dim,
            generator=g,
        )  # fmt: skip

    return sample


def class_unit(cfg, run, unit, seed: int) -> None:
    """Meta-train MPLP on digits subsets for one seed, then test it on unseen datasets."""
    digits = load("digits", "train", download=run.download)
    st = unit.restore() or _fresh(2, seed, cfg.mplp_meta_lr)
    st = _train(
        cfg, run, unit, st, digits_sampler(digits.x, digits.y), cfg.mplp_inner,
        cfg.mplp_class_steps, hidden=(16,), loss="ce",
    )  # fmt: skip
    unit.finish(
        {"history": st["history"], **class_scores(st["theta"], cfg.mplp_inner, run.download)}
    )


def class_scores(theta, inner: int, download: bool = False) -> dict:
    """MPLP θ on every unseen dataset (nets (D, 16, C), ``inner`` steps) beside plain SGD with
    its lr picked on other tasks of that dataset: query accuracies and chance, per dataset."""
    out = {}
    for k, name in enumerate(CLASS_DATASETS):
        ds = load(name, "train", download=download)
        test, tune = (
            M.sample_class_tasks(
                ds.x, ds.y, CLASS_TEST, n_support=CLASS_SUPPORT, n_query=CLASS_QUERY,
                generator=torch.Generator().manual_seed(5000 + 2 * k + j),
            )
            for j in range(2)
        )  # fmt: skip
        kw = {"hidden": (16,)}
        lr, _ = M.tune_sgd_lr(tune, inner, grid=CLASS_GRID, loss="ce", generator=_nets(), **kw)
        sgd = M.sgd_theta(lr, dtype=torch.float32)
        out[name] = {
            "mplp_acc": M.evaluate_classification(theta, test, inner, generator=_nets(), **kw),
            "sgd_acc": M.evaluate_classification(
                sgd, test, inner, learner="sgd", generator=_nets(), **kw
            ),
            "sgd_lr": lr,
            "chance": 1 / int(ds.y.max() + 1),
        }
    return out
