"""Ray checks for tests/evolve/test_ray.py, run in a loopback-only network namespace."""

from __future__ import annotations

import json
import sys
import threading
import time

import torch
from torch import nn

from badgerlab.evolve import RayEvaluator, evaluate_population, get_es, num_params

__all__ = ["main"]


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def mlp_fitness(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error of a small MLP for each parameter row of ``x (p, D)``."""
    mse = lambda forward, a, b: ((forward(a) - b) ** 2).mean()  # noqa: E731
    return evaluate_population(_net(), mse, x, a, b)


def slow_sphere(x: torch.Tensor, delay: float) -> torch.Tensor:
    time.sleep(delay)
    return (x**2).sum(-1)


def main() -> dict:
    import ray

    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    out: dict = {"ray_node_ip": ray.util.get_node_ip_address()}
    g = torch.Generator().manual_seed(0)
    D = num_params(_net())
    a, b = torch.randn(32, 4, generator=g), torch.randn(32, 1, generator=g)
    x = torch.randn(10, D, generator=g)
    with RayEvaluator(mlp_fitness, actors=2) as evaluate:
        remote = evaluate(x, a, b)
        local = mlp_fitness(x, a, b)
        out["mlp_max_abs_diff"] = float((remote - local).abs().max())
        out["mlp_equal"] = bool(torch.equal(remote, local))

        es = get_es("openai-es")
        centers = []
        for use_ray in (True, False):
            gen = torch.Generator().manual_seed(1)
            state = es.init(torch.zeros(D), popsize=8)
            for _ in range(5):
                xs = es.ask(state, generator=gen)
                f = evaluate(xs, a, b) if use_ray else mlp_fitness(xs, a, b)
                state = es.tell(state, xs, f)
            centers.append(es.center(state))
        out["es_center_max_abs_diff"] = float((centers[0] - centers[1]).abs().max())
        out["es_equal"] = bool(torch.equal(centers[0], centers[1]))

    with RayEvaluator(slow_sphere, actors=2) as evaluate:
        x = torch.randn(9, 3, generator=g)
        evaluate(x, 0.0)  # actors up and warm before the timed generation
        victim = evaluate.actors[0]
        killer = threading.Timer(0.5, lambda: ray.kill(victim, no_restart=True))
        killer.start()
        t0 = time.time()
        f = evaluate(x, 1.0)
        killer.join()
        out["kill_seconds"] = time.time() - t0
        out["kill_failures"] = evaluate.failures
        out["kill_equal"] = bool(torch.equal(f, (x**2).sum(-1)))
        out["kill_len"] = int(f.shape[0])
        out["after_kill_equal"] = bool(torch.equal(evaluate(x, 0.0), (x**2).sum(-1)))
        out["actors_after"] = len(evaluate.actors)
    ray.shutdown()
    return out


if __name__ == "__main__":
    result = main()
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
