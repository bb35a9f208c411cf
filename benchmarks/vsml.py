"""Benchmark VSML layer steps: cell-steps/s against a batched nn.LSTMCell and a per-cell loop.

Cases (issue 4): one 784×10 layer (batch 1), and a population of 64 parameter sets on a 64×10
grid. Each case times one layer tick (`micro_ticks`=2, messages in and out) of

  * vsml        — `badgerlab.vsml.model.layer_step`, eager;
  * vsml+compile— the same under `torch.compile` (skipped with --no-compile);
  * lstmcell    — all cells as one `nn.LSTMCell` call on concatenated [m→_a, m←_b] inputs
                  (per population member for the population case), plus the same mean read-out;
  * loop        — a Python loop over cells, each a tiny `nn.LSTMCell` call (timed on a subset
                  of cells and scaled, because the full loop takes seconds).

Prints one JSON object: cell-steps/s of each, ratios vsml/lstmcell and vsml/loop, and peak
memory (tracemalloc of the Python heap is useless for tensors, so the resident-set high-water
mark from `resource` is reported).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch
from torch import nn

from badgerlab.vsml.model import LayerState, VSMLConfig, init_params, layer_step


def _race(candidates: dict, *, rounds: int) -> dict[str, float]:
    """Best seconds per call of each (fn, repeat), timed in interleaved rounds so that load
    from other processes on a shared machine hits every candidate alike."""
    for fn, _ in candidates.values():
        fn()
    best = {name: float("inf") for name in candidates}
    for _ in range(rounds):
        for name, (fn, repeat) in candidates.items():
            t0 = time.perf_counter()
            for _ in range(repeat):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / repeat)
    return best


def _case(
    P: int, A: int, B: int, *, compile_: bool, repeat: int, loop_cells: int, rounds: int
) -> dict:
    cfg = VSMLConfig()
    H, M = cfg.state_size, cfg.msg_size
    g = torch.Generator().manual_seed(0)
    params = init_params(cfg, population=P, generator=g)
    st = LayerState(
        torch.zeros(P, 1, A, B, H),
        torch.randn(P, 1, A, B, H) * 0.1,
        torch.randn(P, 1, A, M),
        torch.randn(P, 1, B, M),
    )
    cells = P * A * B
    out: dict = {"population": P, "A": A, "B": B, "cells": cells}

    with torch.no_grad():
        candidates = {"vsml_eager": (lambda: layer_step(params, st, cfg), repeat)}
        if compile_:
            fn = torch.compile(lambda p, s: layer_step(p, s, cfg), dynamic=False)
            t0 = time.perf_counter()
            fn(params, st)
            out["compile_s"] = time.perf_counter() - t0
            candidates["vsml_compiled"] = (lambda: fn(params, st), repeat)

        lstms = [nn.LSTMCell(2 * M, H) for _ in range(P)]
        heads = [nn.Linear(H, M) for _ in range(P)]

        def inputs():
            return torch.cat(
                [
                    st.fwd_in.unsqueeze(3).expand(P, 1, A, B, M),
                    st.bwd_in.unsqueeze(2).expand(P, 1, A, B, M),
                ],
                -1,
            )  # (P, 1, A, B, 2M)

        def batched():
            # Building each cell's concatenated input is part of the layer's work.
            inp = inputs()
            for k in range(P):
                x = inp[k].reshape(A * B, 2 * M)
                h, c = st.h[k].reshape(A * B, H), st.c[k].reshape(A * B, H)
                for _ in range(cfg.micro_ticks):
                    h, c = lstms[k](x, (h, c))
                hv = h.view(A, B, H)
                heads[k](hv.mean(0))
                heads[k](hv.mean(1))

        candidates["lstmcell"] = (batched, repeat)
        n_loop = min(loop_cells, A * B)
        inp0 = inputs()[0].reshape(A * B, 2 * M)

        def loop():
            h, c = st.h[0].reshape(A * B, H), st.c[0].reshape(A * B, H)
            for j in range(n_loop):
                hj, cj = h[j : j + 1], c[j : j + 1]
                for _ in range(cfg.micro_ticks):
                    hj, cj = lstms[0](inp0[j : j + 1], (hj, cj))

        candidates["loop"] = (loop, 1)
        secs = _race(candidates, rounds=rounds)
    for name, sec in secs.items():
        out[name] = (n_loop if name == "loop" else cells) / sec
    best = max(out.get("vsml_compiled", 0.0), out["vsml_eager"])
    out["ratio_eager_vs_lstmcell"] = out["vsml_eager"] / out["lstmcell"]
    out["ratio_eager_vs_loop"] = out["vsml_eager"] / out["loop"]
    out["ratio_best_vs_lstmcell"] = best / out["lstmcell"]
    out["ratio_best_vs_loop"] = best / out["loop"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--loop-cells", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = {
        "unit": "LSTM cell-steps per second (one tick of micro_ticks=2 per cell-step)",
        "threads": args.threads,
        "torch": torch.__version__,
        "layer_784x10": _case(
            1,
            784,
            10,
            compile_=not args.no_compile,
            repeat=args.repeat,
            loop_cells=args.loop_cells,
            rounds=args.rounds,
        ),
        "population64_64x10": _case(
            64,
            64,
            10,
            compile_=not args.no_compile,
            repeat=args.repeat,
            loop_cells=args.loop_cells,
            rounds=args.rounds,
        ),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
