"""DEQ solvers and memory: time to 1e-4 for our Anderson, plain iteration and torchdeq's
Anderson on one layer and batch; bytes saved for backward, implicit vs unrolled, by depth.

Prints one JSON object. Run: `.venv/bin/python benchmarks/deq.py` (one torch thread).
"""

from __future__ import annotations

import json

import torch

from _timing import median_seconds
from badgerlab.data import load
from badgerlab.deq import DEQ, ContractiveLayer, get_solver, saved_bytes

TOL = 1e-4
M = 5  # Anderson memory, the same for both implementations


def _solvers(layer: ContractiveLayer, x: torch.Tensor) -> dict:
    from torchdeq.solver import get_solver as torchdeq_solver

    u = layer.inject(x)
    z0 = layer.init_z(x)

    def f(z):
        return layer(z, u)

    ours = {
        "ours_anderson": lambda: get_solver("anderson")(f, z0, tol=TOL, max_steps=500, m=M),
        "plain": lambda: get_solver("fixed_point")(f, z0, tol=TOL, max_steps=500),
    }
    out: dict = {"time_ms": {}, "steps": {}, "max_residual": {}}
    for name, fn in ours.items():
        out["time_ms"][name] = 1e3 * median_seconds(fn)
        z, st = fn()
        out["steps"][name] = int(st.steps.max())
        out["max_residual"][name] = float(st.lowest.max())
    ref = torchdeq_solver("anderson")

    def theirs():
        return ref(f, z0, max_iter=500, tol=TOL, stop_mode="rel", m=M)

    out["time_ms"]["torchdeq_anderson"] = 1e3 * median_seconds(theirs)
    z, _, info = theirs()
    out["steps"]["torchdeq_anderson"] = int(info["nstep"].max())
    fz = f(z)
    out["max_residual"]["torchdeq_anderson"] = float(((fz - z).norm(dim=1) / fz.norm(dim=1)).max())
    t = out["time_ms"]
    out["ratio_ours_over_torchdeq"] = t["ours_anderson"] / t["torchdeq_anderson"]
    out["ratio_ours_over_plain"] = t["ours_anderson"] / t["plain"]
    return out


def _memory(layer: ContractiveLayer, x: torch.Tensor, depths=(8, 32, 128)) -> dict:
    out: dict = {"depths": list(depths), "implicit_bytes": [], "unrolled_bytes": []}
    for depth in depths:
        for grad in ("implicit", "unrolled"):
            deq = DEQ(layer, tol=0.0, max_steps=depth, grad=grad)  # exactly `depth` steps
            _, nbytes = saved_bytes(lambda deq=deq: deq(x).square().sum())
            out[f"{grad}_bytes"].append(nbytes)
    imp, unr = out["implicit_bytes"], out["unrolled_bytes"]
    out["implicit_ratio_last_over_first"] = imp[-1] / imp[0]
    out["unrolled_ratio_last_over_first"] = unr[-1] / unr[0]
    out["unrolled_over_implicit"] = [u / i for u, i in zip(unr, imp, strict=True)]
    return out


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = load("digits", "train")
    x = data.x[:128].flatten(1)  # (128, 64)
    result: dict = {"batch": 128, "width": 128, "tol": TOL, "anderson_m": M}
    for gamma in (0.9, 0.99):
        layer = ContractiveLayer(64, 128, gamma=gamma).eval()
        with torch.no_grad():
            result[f"gamma_{gamma}"] = _solvers(layer, x)
    result["memory"] = _memory(ContractiveLayer(64, 128), x)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
