"""Learned learners: MPLP inner steps per second with all of a layer's learners in one batched
GRU call vs a per-parameter Python loop vs plain SGD (the hand-set backprop learner) on the same
network; and the learned optimizer's step time (`lopt.mlp_head`) over a `torch.optim.Adam` step
on the same parameters.

Prints a table and one JSON object. Run: `.venv/bin/python benchmarks/learned.py` (one thread).
"""

from __future__ import annotations

import json
import statistics
import time

import torch

from badgerlab.learned import lopt
from badgerlab.learned import mplp as M

REPEATS = 15


def _time(fn, repeats: int = REPEATS) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


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

        out[f"{name}_steps_per_s"] = 1.0 / _time(step, repeats)
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
    out["lopt_step_ms"] = 1e3 * _time(learned)
    out["adam_step_ms"] = 1e3 * _time(adam.step)
    out["lopt_over_adam"] = out["lopt_step_ms"] / out["adam_step_ms"]
    return out


def main() -> None:
    torch.set_num_threads(1)
    result = {
        "mplp_small": _mplp((1, 12, 12, 1), 10, ("gru", "gru_loop", "sgd"), repeats=5),
        "mplp_maml_size": _mplp((1, 40, 40, 1), 10, ("gru", "sgd"), repeats=REPEATS),
        "lopt": _lopt_vs_adam(),
    }
    print(f"{'case':<16}{'what':<28}{'value':>12}")
    for case, row in result.items():
        for key, value in row.items():
            if isinstance(value, float):
                print(f"{case:<16}{key:<28}{value:>12.3f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
