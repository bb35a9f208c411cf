"""Population evaluation: vmap vs a Python loop vs a hand-batched bmm; prints one JSON object."""

from __future__ import annotations

import json
import time

import torch
from torch import nn

from badgerlab.evolve import evaluate_population, flatten_params, get_es, num_params

__all__ = ["main"]


def _best_of(fn, repeats: int = 7, inner: int = 5) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t0) / inner)
    return best


def main(P: int = 128, B: int = 64, hidden: int = 32) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, hidden), nn.Tanh(), nn.Linear(hidden, 4))
    D = num_params(net)
    x = flatten_params(net) + 0.1 * torch.randn(P, D)
    a, b = torch.randn(B, 16), torch.randint(0, 4, (B,))

    def xent(forward, a, b):
        return nn.functional.cross_entropy(forward(a), b)

    def bmm() -> torch.Tensor:
        # The strongest simple alternative: stack each layer's weights and use baddbmm.
        i = 0
        W1 = x[:, i : i + hidden * 16].view(P, hidden, 16)
        i += hidden * 16
        b1 = x[:, i : i + hidden].view(P, 1, hidden)
        i += hidden
        W2 = x[:, i : i + 4 * hidden].view(P, 4, hidden)
        i += 4 * hidden
        b2 = x[:, i : i + 4].view(P, 1, 4)
        h = torch.tanh(torch.baddbmm(b1, a.expand(P, B, 16), W1.transpose(1, 2)))  # (P, B, H)
        logits = torch.baddbmm(b2, h, W2.transpose(1, 2))  # (P, B, 4)
        return (
            nn.functional.cross_entropy(logits.reshape(P * B, 4), b.repeat(P), reduction="none")
            .view(P, B)
            .mean(1)
        )

    with torch.no_grad():
        vm = evaluate_population(net, xent, x, a, b)
        lp = evaluate_population(net, xent, x, a, b, vectorize=False)
        assert torch.allclose(vm, lp, rtol=1e-5, atol=1e-6) and torch.allclose(
            vm, bmm(), 1e-5, 1e-6
        )
        t_vmap = _best_of(lambda: evaluate_population(net, xent, x, a, b))
        t_loop = _best_of(lambda: evaluate_population(net, xent, x, a, b, vectorize=False))
        t_bmm = _best_of(bmm)

    es = get_es("openai-es")
    state = es.init(torch.zeros(D), popsize=P)
    g = torch.Generator().manual_seed(0)
    fit = torch.randn(P)
    t_step = _best_of(lambda: es.tell(state, es.ask(state, generator=g), fit))
    return {
        "population": P,
        "params": D,
        "batch": B,
        "vmap_ms": round(1e3 * t_vmap, 3),
        "loop_ms": round(1e3 * t_loop, 3),
        "bmm_ms": round(1e3 * t_bmm, 3),
        "loop_over_vmap": round(t_loop / t_vmap, 2),
        "vmap_over_bmm": round(t_vmap / t_bmm, 2),
        "openai_es_ask_tell_ms": round(1e3 * t_step, 3),
        "es_step_over_vmap_eval": round(t_step / t_vmap, 3),
    }


if __name__ == "__main__":
    print(json.dumps(main()))
