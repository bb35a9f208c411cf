"""Benchmark VSML's grid of LSTM cells: cell-steps/s against a batched nn.LSTMCell, a per-cell
loop and the core's measured matmul peak, all in one run.

Unit: one cell-step = one LSTM cell for one micro tick (a layer tick of A×B cells with
`micro_ticks`=2 is 2·A·B cell-steps).

Cases (issues 4 and 11):
  * `population64_episode` (W3): a population of 64 parameter sets, each on a 64×10 grid,
    over a 100-example online episode (`episode`, batch 1, fresh initial states each run);
  * `layer_784x10`: one layer tick of a 784×10 grid (batch 1, one member);
  * `population64_64x10`: one layer tick of the W3 grid.
Candidates, timed in interleaved rounds so that load from other processes hits each alike:
  * vsml      — `badgerlab.vsml.model` without autograd: the default path a user gets under
                no_grad (the fused C++ kernel where it builds, see `use_fused`; `default_path`
                says which ran, `fused_build_or_load_s` / `fused_first_build_s` its seconds);
  * vsml_eager — the same with the fused kernel off (`use_fused(False)`): torch ops only;
  * vsml_autograd — the same with the parameters requiring grad (layer cases);
  * lstmcell  — per member one `nn.LSTMCell` call on all cells' concatenated [m→_a, m←_b]
                inputs per micro tick, plus the same mean read-out (the batched baseline);
  * loop      — a Python loop over cells, each a tiny `nn.LSTMCell` call (layer cases; timed
                on a subset of cells and scaled);
  * matmul    — a 1024² float32 matmul: the core's matmul peak in GFLOP/s.

FLOPs of one cell-step, counted as multiply-adds × 2 of the matmuls: the recurrent
h W_h (2·H·4H = 2048 at H=16), plus the amortised separable input projections
(2·M·4H·(A+B) per layer tick, shared by the A·B cells and the micro ticks) and message heads
(2·H·M·(A+B) per layer tick); the 4H+H = 80 sigmoid/tanh and ~9H other elementwise ops per
cell-step are listed, not counted as FLOPs. `fraction_of_matmul_peak` = cell-steps/s ×
FLOPs/cell-step ÷ the matmul's FLOP/s in the same run. `ceiling` (the issue's practical
ceiling of a fused cell) = 1 / (FLOPs/cell-step ÷ matmul FLOP/s + 4H·t_σ + H·t_tanh), with
t_σ, t_tanh torch's per-element times on a cache-resident buffer, measured in the same race.
(The fused kernel's own σ/tanh — a polynomial exp and shared reciprocals — cost less per
element than torch's; the ceiling is still defined with torch's.)

Run: `nice -n 0 .venv/bin/python benchmarks/vsml.py` (one torch thread; `--no-fused` for the
default path without the kernel, `--skip-layers` for W3 only). Timed by the
process's CPU clock by default (`--clock wall` for elapsed time): on a shared machine the
scheduler's time slices given to others then do not count, though their cache traffic still
does. Prints a table and one JSON object, with the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import torch
from torch import nn

from badgerlab.vsml import model as vm
from badgerlab.vsml.model import LayerState, VSMLConfig, episode, init_params, layer_step

_CLOCK = {"cpu": time.process_time, "wall": time.perf_counter}
_clock = time.process_time


def _race(candidates: dict, *, rounds: int) -> dict[str, float]:
    """Best seconds per call of each (fn, repeat), timed in interleaved rounds."""
    for fn, _ in candidates.values():
        fn()
    best = {name: float("inf") for name in candidates}
    for _ in range(rounds):
        for name, (fn, repeat) in candidates.items():
            t0 = _clock()
            for _ in range(repeat):
                fn()
            best[name] = min(best[name], (_clock() - t0) / repeat)
    return best


def flops_per_cell_step(cfg: VSMLConfig, A: int, B: int) -> dict[str, float]:
    """Matmul FLOPs of one cell for one micro tick on an A×B grid (see the module doc)."""
    H, M, T = cfg.state_size, cfg.msg_size, cfg.micro_ticks
    recurrent = 2 * H * 4 * H
    inputs = 2 * M * 4 * H * (A + B) / (A * B * T)
    heads = 2 * H * M * (A + B) / (A * B * T)
    return {
        "recurrent": recurrent,
        "input_projections": inputs,
        "heads": heads,
        "matmul_total": recurrent + inputs + heads,
        "transcendentals": 5 * H,
    }


_MM = 1024


def _matmul():
    a, b = torch.randn(_MM, _MM), torch.randn(_MM, _MM)
    out = torch.empty(_MM, _MM)
    return lambda: torch.mm(a, b, out=out)


_EW = 64 * 1024  # elements of a cache-resident elementwise buffer (256 KiB)


def _elementwise(op: str):
    x, out = torch.randn(_EW), torch.empty(_EW)
    fn = getattr(torch, op)
    return lambda: fn(x, out=out)


class _LSTMCellGrid:
    """The baseline: all cells of a member as one batched `nn.LSTMCell` call per micro tick."""

    def __init__(self, cfg: VSMLConfig, P: int, A: int, B: int) -> None:
        H, M = cfg.state_size, cfg.msg_size
        self.cfg, self.P, self.A, self.B = cfg, P, A, B
        self.lstms = [nn.LSTMCell(2 * M, H) for _ in range(P)]
        self.heads = [nn.Linear(H, M) for _ in range(P)]

    def layer(self, st: LayerState) -> tuple[torch.Tensor, torch.Tensor]:
        P, A, B, M, H = self.P, self.A, self.B, self.cfg.msg_size, self.cfg.state_size
        # Building each cell's concatenated input is part of the layer's work.
        inp = torch.cat(
            [
                st.fwd_in.unsqueeze(3).expand(P, 1, A, B, M),
                st.bwd_in.unsqueeze(2).expand(P, 1, A, B, M),
            ],
            -1,
        )  # (P, 1, A, B, 2M)
        fwd, bwd = [], []
        for k in range(P):
            x = inp[k].reshape(A * B, 2 * M)
            h, c = st.h[k].reshape(A * B, H), st.c[k].reshape(A * B, H)
            for _ in range(self.cfg.micro_ticks):
                h, c = self.lstms[k](x, (h, c))
            hv = h.view(A, B, H)
            fwd.append(self.heads[k](hv.mean(0)))
            bwd.append(self.heads[k](hv.mean(1)))
        return torch.stack(fwd).unsqueeze(1), torch.stack(bwd).unsqueeze(1)

    def episode(self, x: torch.Tensor) -> None:
        # x (T, P, 1, A): the same online structure as VSML (messages carried between steps).
        P, A, B, M, H = self.P, self.A, self.B, self.cfg.msg_size, self.cfg.state_size
        st = LayerState(
            torch.zeros(P, 1, A, B, H),
            torch.zeros(P, 1, A, B, H),
            torch.zeros(P, 1, A, M),
            torch.zeros(P, 1, B, M),
        )
        for t in range(x.shape[0]):
            fwd_in = torch.nn.functional.pad(x[t].unsqueeze(-1), (0, M - 1))
            self.layer(st._replace(fwd_in=fwd_in))


def _state(cfg: VSMLConfig, P: int, A: int, B: int) -> LayerState:
    H, M = cfg.state_size, cfg.msg_size
    g = torch.Generator().manual_seed(0)
    return LayerState(
        torch.randn(P, 1, A, B, H, generator=g) * 0.1,
        torch.randn(P, 1, A, B, H, generator=g) * 0.1,
        torch.randn(P, 1, A, M, generator=g),
        torch.randn(P, 1, B, M, generator=g),
    )


def _eager(fn):
    # The same call with the fused kernel off (torch ops only), whatever the default is.
    def run():
        was = vm._fused_state["enabled"]
        vm.use_fused(False)
        try:
            fn()
        finally:
            vm._fused_state["enabled"] = was

    return run


def _layer_case(P: int, A: int, B: int, *, repeat: int, loop_cells: int, rounds: int) -> dict:
    cfg = VSMLConfig()
    params = init_params(cfg, population=P, generator=torch.Generator().manual_seed(0))
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    st = _state(cfg, P, A, B)
    base = _LSTMCellGrid(cfg, P, A, B)
    H, M = cfg.state_size, cfg.msg_size
    n_loop = min(loop_cells, A * B)
    lstm0 = base.lstms[0]
    inp0 = torch.randn(A * B, 2 * M)

    def loop():
        h, c = st.h[0].reshape(A * B, H), st.c[0].reshape(A * B, H)
        for j in range(n_loop):
            hj, cj = h[j : j + 1], c[j : j + 1]
            for _ in range(cfg.micro_ticks):
                hj, cj = lstm0(inp0[j : j + 1], (hj, cj))

    with torch.no_grad():
        cands = {
            "vsml": (lambda: layer_step(params, st, cfg), repeat),
            "vsml_eager": (_eager(lambda: layer_step(params, st, cfg)), repeat),
            "lstmcell": (lambda: base.layer(st), repeat),
            "loop": (loop, 1),
            "matmul": (_matmul(), repeat),
            "sigmoid": (_elementwise("sigmoid"), 20 * repeat),
            "tanh": (_elementwise("tanh"), 20 * repeat),
        }
        secs = _race(cands, rounds=rounds)
    secs |= _race({"vsml_autograd": (lambda: layer_step(leaves, st, cfg), repeat)}, rounds=rounds)
    steps = P * A * B * cfg.micro_ticks
    n = {"loop": n_loop * cfg.micro_ticks}
    return _summary(cfg, A, B, secs, {k: n.get(k, steps) for k in secs}) | {
        "population": P,
        "A": A,
        "B": B,
    }


def _episode_case(P: int, A: int, B: int, T: int, *, rounds: int) -> dict:
    cfg = VSMLConfig()
    g = torch.Generator().manual_seed(0)
    params = init_params(cfg, population=P, generator=g)
    x = torch.randn(T, P, 1, A, generator=g)
    y = torch.randint(0, B, (T, P, 1), generator=g)
    base = _LSTMCellGrid(cfg, P, A, B)

    def vsml():
        episode(params, x, y, cfg, sizes=(A, B), generator=torch.Generator().manual_seed(1))

    with torch.no_grad():
        cands = {
            "vsml": (vsml, 1),
            "vsml_eager": (_eager(vsml), 1),
            "lstmcell": (lambda: base.episode(x), 1),
            "matmul": (_matmul(), 20),
            "sigmoid": (_elementwise("sigmoid"), 200),
            "tanh": (_elementwise("tanh"), 200),
        }
        secs = _race(cands, rounds=rounds)
    steps = P * A * B * T * cfg.micro_ticks
    out = _summary(cfg, A, B, secs, {k: steps for k in ("vsml", "vsml_eager", "lstmcell")})
    return out | {"population": P, "A": A, "B": B, "examples": T, "vsml_s": secs["vsml"]}


def _summary(cfg, A, B, secs: dict, steps: dict) -> dict:
    flops = flops_per_cell_step(cfg, A, B)
    peak = 2 * _MM**3 / secs["matmul"]  # FLOP/s
    H = cfg.state_size
    # The practical ceiling of a fused cell: its matmul FLOPs at the matmul's peak plus its
    # 4H sigmoids and H tanh at the measured per-element cost of each, nothing else.
    sig, tanh = secs["sigmoid"] / _EW, secs["tanh"] / _EW
    ceiling = 1 / (flops["matmul_total"] / peak + 4 * H * sig + H * tanh)
    out: dict = {
        "matmul_peak_gflops": peak / 1e9,
        "sigmoid_ns_per_element": sig * 1e9,
        "tanh_ns_per_element": tanh * 1e9,
        "ceiling_cell_steps_per_s": ceiling,
        "flops_per_cell_step": flops,
    }
    for name, sec in secs.items():
        if name not in ("matmul", "sigmoid", "tanh"):
            out[name] = steps[name] / sec
    for name in ("vsml", "vsml_eager"):
        if name in out:
            out[f"{name}_fraction_of_matmul_peak"] = out[name] * flops["matmul_total"] / peak
            out[f"{name}_fraction_of_ceiling"] = out[name] / ceiling
            out[f"ratio_{name}_vs_lstmcell"] = out[name] / out["lstmcell"]
    if "loop" in out:
        out["ratio_vsml_vs_loop"] = out["vsml"] / out["loop"]
    return out


def _table(result: dict) -> str:
    rows = [
        f"{'case':22s} {'path':10s} {'M/s':>7s} {'lstmcell':>9s} {'vs cell':>8s} "
        f"{'peak GF/s':>9s} {'of peak':>8s} {'ceiling':>8s} {'of ceil':>8s}"
    ]
    for name, r in result.items():
        if not isinstance(r, dict) or "vsml" not in r:
            continue
        for path in ("vsml", "vsml_eager", "vsml_autograd", "loop"):
            if path not in r:
                continue
            tail = ""
            if f"{path}_fraction_of_ceiling" in r:
                tail = (
                    f"{r[f'ratio_{path}_vs_lstmcell']:8.2f} {r['matmul_peak_gflops']:9.1f} "
                    f"{r[f'{path}_fraction_of_matmul_peak']:8.3f} "
                    f"{r['ceiling_cell_steps_per_s'] / 1e6:8.2f} "
                    f"{r[f'{path}_fraction_of_ceiling']:8.3f}"
                )
            rows.append(
                f"{name:22s} {path:10s} {r[path] / 1e6:7.2f} {r['lstmcell'] / 1e6:9.2f} {tail}"
            )
    return "M cell-steps/s (one cell, one micro tick)\n" + "\n".join(rows)


def _default_path(*, off: bool) -> dict:
    # Which path `vsml` measures, and what the fused kernel's build or load took here.
    if off:
        vm.use_fused(False)
    secs = vm.use_fused(True) if vm._fused_state["enabled"] else None
    out = {
        "default_path": "fused" if secs is not None else "eager",
        "fused_build_or_load_s": secs,
        "fused_first_build_s": vm._fused_state.get("build_s"),
    }
    if vm._fused_state.get("error"):
        out["fused_unavailable"] = vm._fused_state["error"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--loop-cells", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    ap.add_argument("--examples", type=int, default=100, help="W3 episode length")
    ap.add_argument("--skip-layers", action="store_true", help="only the W3 episode")
    ap.add_argument(
        "--no-fused",
        action="store_true",
        help="the default path without the fused C++ kernel (as BADGERLAB_VSML_FUSED=0)",
    )
    ap.add_argument(
        "--clock",
        choices=sorted(_CLOCK),
        default="cpu",
        help="cpu: this process's CPU seconds (robust to time-slicing on a shared machine); "
        "wall: elapsed seconds",
    )
    args = ap.parse_args()
    global _clock
    _clock = _CLOCK[args.clock]
    torch.set_num_threads(args.threads)
    result: dict = {
        "unit": "LSTM cell-steps per second: one cell for one micro tick",
        "threads": args.threads,
        "clock": args.clock,
        "torch": torch.__version__,
        "load_average_before": os.getloadavg(),
    }
    result |= _default_path(off=args.no_fused)
    result["population64_episode"] = _episode_case(64, 64, 10, args.examples, rounds=args.rounds)
    if not args.skip_layers:
        kw = dict(repeat=args.repeat, loop_cells=args.loop_cells, rounds=args.rounds)
        result["layer_784x10"] = _layer_case(1, 784, 10, **kw)
        result["population64_64x10"] = _layer_case(64, 64, 10, **kw)
    result["load_average_after"] = os.getloadavg()
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(_table(result))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
