"""Learned learners: MPLP inner steps per second with all of a layer's learners in one batched
GRU call vs a per-parameter Python loop vs plain SGD (the hand-set backprop learner) on the same
network; and the learned optimizer's step time (`lopt.mlp_head`) over a `torch.optim.Adam` step
on the same parameters.

Prints a table and one JSON object. Run: `.venv/bin/python benchmarks/learned.py` (one thread).

With ``--sine SECONDS`` it also meta-trains MPLP on few-shot sinusoids for that wall-clock budget
(per seed, ``--seeds``) and reports the 5-step test MSE on 256 fresh tasks against plain SGD whose
lr is tuned by a grid on 64 separate tasks; with ``--classify SECONDS`` it meta-trains on digits
subsets (random projections to 4-32 features, 2-5 classes) and reports the query accuracy on
wine, iris and breast_cancer (never seen in meta-training) against tuned SGD and chance.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from _timing import REPEATS, median_seconds
from badgerlab.data import load
from badgerlab.experiments import _mplp as mplp_exp
from badgerlab.learned import lopt
from badgerlab.learned import mplp as M


def _mplp(sizes: tuple[int, ...], batch: int, learners: tuple[str, ...], repeats: int) -> dict:
    """Seconds per inner step (forward, messages, updates) on one task of ``batch`` examples."""
    g = torch.Generator().manual_seed(0)
    net = M.init_net(sizes, "relu", generator=g)
    x = torch.randn(batch, sizes[0], generator=g)
    y = torch.randn(batch, sizes[-1], generator=g)
    thetas = {"gru": M.init_theta(len(sizes) - 1, generator=g), "sgd": M.sgd_theta(0.01)}
    thetas["gru_loop"] = thetas["gru"]
    out: dict = {
        "sizes": list(sizes),
        "batch": batch,
        "n_params": sum(w.numel() + b.numel() for w, b in net),
    }
    for name in learners:
        learner, theta = M.get_learner(name), thetas[name]
        state = learner.init_state(theta, net, batch)

        def step(learner=learner, theta=theta, state=state):
            with torch.no_grad():
                M.inner_step(
                    theta, net, state, x, y, learner=learner, activation="relu", loss="mse"
                )

        out[f"{name}_steps_per_s"] = 1.0 / median_seconds(step, repeats)
    if "gru_loop" in learners:
        out["batched_over_loop"] = out["gru_steps_per_s"] / out["gru_loop_steps_per_s"]
    out["sgd_over_batched"] = out["sgd_steps_per_s"] / out["gru_steps_per_s"]
    return out


def _lopt_vs_adam(sizes: tuple[int, ...] = (64, 128, 10)) -> dict:
    """Seconds per optimizer step given the gradients (no forward/backward in the timing)."""
    g = torch.Generator().manual_seed(0)
    params = [t for w, b in M.init_net(sizes, generator=g) for t in (w, b)]
    grads = [torch.randn(p.shape, generator=g) for p in params]
    head = lopt.mlp_head(lopt.init_theta(8, generator=g))
    state = lopt.init_state(params)

    def learned():
        with torch.no_grad():
            lopt.lopt_step(params, grads, state, head=head)

    leaves = [p.clone().requires_grad_() for p in params]
    for p, gr in zip(leaves, grads, strict=True):
        p.grad = gr.clone()
    adam = torch.optim.Adam(leaves, lr=1e-3)
    out = {"sizes": list(sizes), "n_params": sum(p.numel() for p in params)}
    out["lopt_step_ms"] = 1e3 * median_seconds(learned)
    out["adam_step_ms"] = 1e3 * median_seconds(adam.step)
    out["lopt_over_adam"] = out["lopt_step_ms"] / out["adam_step_ms"]
    return out


def _meta_train(theta, budget: float, sample, steps: int, g, **kw) -> int:
    opt = torch.optim.Adam([t.requires_grad_() for t in M.theta_leaves(theta)], lr=1e-2)
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < budget:
        M.meta_train_step(theta, opt, sample(g), steps, generator=g, **kw)
        n += 1
    return n


def _sine(budget: float, seed: int, hidden=(20, 20)) -> dict:
    """MPLP vs grid-tuned SGD, 5 inner steps on K = 10 points, nets (1, 20, 20, 1) ReLU: the
    test sets and scores of `learned-learners` (`experiments._mplp`), meta-trained for
    ``budget`` seconds instead of a fixed number of meta-steps."""
    g = torch.Generator().manual_seed(seed)
    theta = M.init_theta(len(hidden) + 1, hidden=15, message=4, generator=g)
    start = M.evaluate(
        theta, mplp_exp._sine_test(seed), 5, hidden=hidden, generator=mplp_exp._nets()
    )
    n = _meta_train(theta, budget, mplp_exp.sine_sampler, 5, g, hidden=hidden, target="final")
    scores = mplp_exp.sine_scores(theta, seed, 5, hidden)
    return {"seed": seed, "meta_steps": n, "mplp_start_mse": start, **scores}


def _classify(budget: float, seed: int, steps: int = 10) -> dict:
    """Meta-train on digits subsets for ``budget`` seconds, test on unseen tabular datasets;
    nets (D, 16, C) ReLU, the sets and scores of `learned-learners`."""
    g, digits = torch.Generator().manual_seed(seed), load("digits", "train")
    theta = M.init_theta(2, hidden=15, message=4, generator=g)
    sample = mplp_exp.digits_sampler(digits.x, digits.y)
    n = _meta_train(theta, budget, sample, steps, g, hidden=(16,), loss="ce")
    return {"seed": seed, "meta_steps": n, **mplp_exp.class_scores(theta, steps)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sine", type=float, default=0.0, help="meta-training seconds per seed")
    ap.add_argument("--classify", type=float, default=0.0, help="meta-training seconds per seed")
    ap.add_argument("--classify-steps", type=int, default=10, help="inner steps (classification)")
    ap.add_argument("--seeds", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    result = {
        "mplp_small": _mplp((1, 12, 12, 1), 10, ("gru", "gru_loop", "sgd"), repeats=5),
        "mplp_maml_size": _mplp((1, 40, 40, 1), 10, ("gru", "sgd"), repeats=REPEATS),
        "lopt": _lopt_vs_adam(),
    }
    if args.sine > 0:
        result["sine"] = [_sine(args.sine, seed) for seed in range(args.seeds)]
    if args.classify > 0:
        result["classify"] = [
            _classify(args.classify, seed, steps=args.classify_steps) for seed in range(args.seeds)
        ]
    print(f"{'case':<16}{'what':<28}{'value':>12}")
    for case, row in result.items():
        for key, value in row.items() if isinstance(row, dict) else ():
            if isinstance(value, float):
                print(f"{case:<16}{key:<28}{value:>12.3f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
