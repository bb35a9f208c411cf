"""Affine coupling flows: log_prob + backward throughput of ours against zuko's RealNVP.

The same flow on both sides: `couplings` affine couplings with alternating checkered masks
(`i % 2 == l % 2` conditions layer l), MLP conditioners of the same hidden widths with ReLU, a
standard normal base, float32, one torch thread. Our conditioner reads the masked full vector
(`D → 2D`), zuko's the conditioning half only (`D/2 → D`), so the parameter counts differ a
little and are printed. Each step: `loss = −mean log p(x)`, then `loss.backward()`.

Prints a table and one JSON object. Run: `.venv/bin/python benchmarks/flows.py`.
"""

from __future__ import annotations

import json
import statistics
import time

import torch

from badgerlab.flows import AffineCoupling, Flow, StandardNormal

REPEATS = 20
COUPLINGS = 4
HIDDEN = (128, 128)


def _ours(dim: int) -> torch.nn.Module:
    masks = [torch.arange(dim) % 2 == layer % 2 for layer in range(COUPLINGS)]
    return Flow(StandardNormal(dim), [AffineCoupling(dim, hidden=HIDDEN, mask=m) for m in masks])


def _zuko(dim: int) -> torch.nn.Module:
    import zuko

    return zuko.flows.RealNVP(dim, transforms=COUPLINGS, hidden_features=HIDDEN)


def _step(log_prob, params, x: torch.Tensor):
    def step() -> None:
        for p in params:
            p.grad = None
        (-log_prob(x).mean()).backward()

    return step


def _interleaved(steps: dict) -> dict:
    """Median seconds per step of each, timed in turns so that load on a shared machine
    falls on every side alike."""
    for step in steps.values():
        step()  # warm-up
    times: dict = {name: [] for name in steps}
    for _ in range(REPEATS):
        for name, step in steps.items():
            t = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _case(dim: int, batch: int) -> dict:
    torch.manual_seed(0)
    x = torch.randn(batch, dim)
    ours, theirs = _ours(dim), _zuko(dim)
    with torch.no_grad():  # both are finite, normalised densities of the same shape
        assert ours.log_prob(x).shape == theirs().log_prob(x).shape == (batch,)
    t = _interleaved({
        "ours": _step(ours.log_prob, list(ours.parameters()), x),
        "zuko": _step(lambda v: theirs().log_prob(v), list(theirs.parameters()), x),
    })  # fmt: skip
    t_ours, t_zuko = t["ours"], t["zuko"]
    return {
        "dim": dim,
        "batch": batch,
        "params_ours": sum(p.numel() for p in ours.parameters()),
        "params_zuko": sum(p.numel() for p in theirs.parameters()),
        "ms_ours": 1e3 * t_ours,
        "ms_zuko": 1e3 * t_zuko,
        "samples_per_s_ours": batch / t_ours,
        "samples_per_s_zuko": batch / t_zuko,
        "time_ratio_ours_over_zuko": t_ours / t_zuko,
    }


def main() -> None:
    torch.set_num_threads(1)
    import zuko

    cases = [_case(dim, batch) for dim in (2, 16, 64) for batch in (256, 1024)]
    head = f"{'D':>4} {'batch':>6} {'ours ms':>9} {'zuko ms':>9} {'ours/zuko':>10}"
    print(head)
    for c in cases:
        print(
            f"{c['dim']:>4} {c['batch']:>6} {c['ms_ours']:>9.2f} {c['ms_zuko']:>9.2f} "
            f"{c['time_ratio_ours_over_zuko']:>10.2f}"
        )
    result = {
        "what": "log_prob + backward, median of repeats, one thread, float32",
        "couplings": COUPLINGS,
        "hidden": list(HIDDEN),
        "repeats": REPEATS,
        "zuko": zuko.__version__,
        "torch": torch.__version__,
        "cases": cases,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
