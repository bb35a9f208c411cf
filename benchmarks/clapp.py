"""CLAPP's local rule against end-to-end training: time per step and memory as depth grows.

The same conv encoder (`depth` layers of 3×3 convs, `WIDTH` channels, ReLU, mean-pooled per
patch) on a batch of 28×28 images cut into 8×8 patches at stride 4 (a 6×6 grid), offsets
k = 1..3, one Adam step per training step, one torch thread, float32:

- `local_rule`: `clapp_update` per layer, the products of the rule by hand under `no_grad`;
  the next layer reads the output of the one below, and no graph is ever built;
- `local_autograd`: `clapp_loss` per layer on its detached input, `backward()` per layer, so
  a graph spans one layer at a time (the rule's reference, the same update);
- `end_to_end`: hinge-CPC on the last layer, `backward()` through every layer.

Memory: bytes the autograd graph saves for backward (`saved_tensors_hooks`; for the local
autograd step the largest single layer's graph, the only one alive at a time), and the peak
of CPU bytes allocated during one step above what was live before it (the allocator's events
in `torch.profiler`, `profile_memory=True`). Ratios against end to end in the same run.

Prints a table and one JSON object. Run: `.venv/bin/python benchmarks/clapp.py`.
"""

from __future__ import annotations

import json
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from badgerlab.ssl.clapp import (
    ClappEncoder,
    clapp_loss,
    clapp_masks,
    clapp_update,
    end_to_end_loss,
    negative_index,
    patchify,
)

BATCH = 16
WIDTH = 32
OFFSETS = 3
DEPTHS = (1, 2, 4, 8)
REPEATS = 10
METHODS = ("local_rule", "local_autograd", "end_to_end")


class _SavedBytes:
    """Bytes of the tensors autograd saves for backward, per graph (`mark` starts a new one)."""

    def __init__(self) -> None:
        self.per_graph: list[int] = [0]

    def mark(self) -> None:
        self.per_graph.append(0)

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        self.per_graph[-1] += t.numel() * t.element_size()
        return t

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)


def _step(method: str, enc: ClappEncoder, opt, xb: torch.Tensor, g, saved=None) -> None:
    b, gh, gw = xb.shape[:3]
    neg = negative_index(b, generator=g)
    opt.zero_grad(set_to_none=True)
    if method == "end_to_end":
        masks = clapp_masks(OFFSETS, b, gh, gw, variant="clapp-s")
        end_to_end_loss(list(enc.layers), xb, neg=neg, masks=masks).backward()
    else:
        masks = clapp_masks(OFFSETS, b, gh, gw, variant="clapp", generator=g)
        h = xb
        for layer in enc.layers:
            if saved is not None:
                saved.mark()
            if method == "local_rule":
                delta, h, _ = clapp_update(layer, h, neg=neg, masks=masks)
                for name, p in layer.named_parameters():
                    p.grad = -delta[name]
            else:
                loss, h = clapp_loss(layer, h, neg=neg, masks=masks)
                loss.backward()
    opt.step()


def _peak_bytes(fn) -> int:
    """The peak of CPU bytes allocated while `fn()` runs, above what was live before it."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = prof.profiler.kineto_results.events()
    mem = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in mem:
        live += nbytes
        peak = max(peak, live)
    return peak


def _setup(depth: int, x: torch.Tensor):
    runs = {}
    for method in METHODS:
        enc = ClappEncoder([WIDTH] * depth, generator=torch.Generator().manual_seed(0))
        opt = torch.optim.Adam(enc.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(1)
        _step(method, enc, opt, x, g)  # warm-up, and Adam's state exists before measuring
        runs[method] = (enc, opt, g)
    return runs


def _depth(depth: int, x: torch.Tensor) -> dict:
    runs = _setup(depth, x)
    times: dict = {m: [] for m in METHODS}
    for _ in range(REPEATS):  # in turns: load on a shared machine falls on all alike
        for m, (enc, opt, g) in runs.items():
            t = time.perf_counter()
            _step(m, enc, opt, x, g)
            times[m].append(time.perf_counter() - t)
    out: dict = {"depth": depth, "ms": {m: 1e3 * statistics.median(times[m]) for m in METHODS}}
    out["saved_bytes"], out["peak_bytes"] = {}, {}
    for m, (enc, opt, g) in runs.items():
        saved = _SavedBytes()
        with saved.hooks():
            _step(m, enc, opt, x, g, saved)
        out["saved_bytes"][m] = max(saved.per_graph)
        out["peak_bytes"][m] = _peak_bytes(
            lambda m=m, enc=enc, opt=opt, g=g: _step(m, enc, opt, x, g)
        )
    e2e = out["ms"]["end_to_end"]
    out["time_ratio_over_end_to_end"] = {m: out["ms"][m] / e2e for m in METHODS}
    peak = out["peak_bytes"]["end_to_end"]
    out["peak_ratio_over_end_to_end"] = {m: out["peak_bytes"][m] / peak for m in METHODS}
    return out


def main() -> None:
    torch.set_num_threads(1)
    images = torch.rand(BATCH, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    x = patchify(images, size=8, stride=4)  # (B, 6, 6, 1, 8, 8)
    rows = [_depth(d, x) for d in DEPTHS]
    print(f"{'depth':>5} | {'ms: rule':>9} {'autograd':>9} {'e2e':>8} | "
          f"{'saved KiB: rule':>15} {'autograd':>9} {'e2e':>8} | "
          f"{'peak KiB: rule':>14} {'autograd':>9} {'e2e':>8}")  # fmt: skip
    for r in rows:
        ms, sb, pk = r["ms"], r["saved_bytes"], r["peak_bytes"]
        print(
            f"{r['depth']:>5} | "
            + " ".join(f"{ms[m]:>9.1f}" for m in METHODS)
            + " | "
            + " ".join(f"{sb[m] / 1024:>9.0f}" for m in METHODS)
            + " | "
            + " ".join(f"{pk[m] / 1024:>9.0f}" for m in METHODS)
        )
    first, last = rows[0], rows[-1]
    growth = {
        f"{key}_last_over_first": {m: last[key][m] / max(first[key][m], 1) for m in METHODS}
        for key in ("peak_bytes", "saved_bytes")
    }
    result = {
        "what": "one training step (loss, update, Adam step), median of repeats, one thread",
        "batch": BATCH,
        "grid": list(x.shape[1:3]),
        "patch": list(x.shape[3:]),
        "width": WIDTH,
        "offsets": OFFSETS,
        "repeats": REPEATS,
        "torch": torch.__version__,
        "depths": rows,
        **growth,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
