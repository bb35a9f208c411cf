"""DDP helpers: single-process no-ops, sharding, and 2 gloo ranks on 127.0.0.1 under torchrun
matching a single process trained on the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from badgerlab import ddp as D

STEPS, N, GLOBAL_BATCH, IN, HIDDEN, OUT = 6, 64, 16, 5, 16, 3


@pytest.fixture
def no_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)


def test_single_process_is_a_no_op(no_launch: None, tmp_path: Path) -> None:
    assert D.init_from_env("cpu") == torch.device("cpu")
    assert not D.is_distributed() and not D.launched()
    assert (D.rank(), D.world_size(), D.local_rank(), D.is_main()) == (0, 1, 0, True)
    model = nn.Linear(2, 2)
    assert D.wrap(model) is model and D.unwrap(model) is model
    t = torch.tensor([1.0, 2.0])
    assert D.all_reduce_mean(t) is t and D.all_reduce_mean(2.5) == 2.5
    assert D.broadcast_str("x") == "x"
    D.barrier()
    D.cleanup()
    sentinel = object()
    assert D.main_run(lambda: sentinel) is sentinel


def test_bad_arguments_are_named(no_launch: None) -> None:
    with pytest.raises(ValueError, match="device"):
        D.init_from_env("tpu")
    with pytest.raises(TypeError, match="nn.Module"):
        D.wrap("model")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rank must be an int in 0..1"):
        D.shard_indices(4, epoch=0, seed=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="world_size"):
        D.shard_indices(4, epoch=0, seed=0, rank=0, world_size=0)
    with pytest.raises(ValueError, match="n must"):
        D.shard_indices(-1, epoch=0, seed=0)
    with pytest.raises(TypeError, match="tensor or a number"):
        D.all_reduce_mean("1")  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [0, 1, 7, 12, 13])
@pytest.mark.parametrize("w", [1, 2, 3, 5])
@pytest.mark.parametrize("drop_last", [False, True])
def test_shards_partition_one_shared_permutation(n: int, w: int, drop_last: bool) -> None:
    shards = [
        D.shard_indices(n, epoch=3, seed=7, drop_last=drop_last, rank=r, world_size=w)
        for r in range(w)
    ]
    sizes = {len(s) for s in shards}
    assert len(sizes) == 1  # equal shard sizes, so DDP's gradient mean is the global mean
    size = sizes.pop()
    assert size == (n // w if drop_last else -(-n // w))
    everything = torch.cat(shards)
    assert everything.dtype == torch.int64
    if drop_last or n % w == 0:
        assert len(set(everything.tolist())) == len(everything)  # disjoint
        assert len(everything) == n - (n % w if drop_last else 0)
    else:
        assert set(everything.tolist()) == set(range(n))  # every index dealt, a few twice
    again = D.shard_indices(n, epoch=3, seed=7, drop_last=drop_last, rank=0, world_size=w)
    assert torch.equal(again, shards[0])


def test_epochs_reshuffle() -> None:
    a = D.shard_indices(100, epoch=0, seed=0, rank=0, world_size=2)
    b = D.shard_indices(100, epoch=1, seed=0, rank=0, world_size=2)
    assert not torch.equal(a, b)
    plain = D.shard_indices(6, epoch=0, seed=0, shuffle=False, rank=0, world_size=2)
    assert plain.tolist() == [0, 2, 4]


# ---------------------------------------------------------------------------------------------
# two gloo ranks under torchrun

WORKER = textwrap.dedent(
    f"""
    import sys
    from pathlib import Path

    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from safetensors.torch import save_file
    from torch import nn

    from badgerlab import ddp as D
    from badgerlab.runs import Run

    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    device = D.init_from_env("cpu", timeout_s=120)
    assert D.launched() and D.is_distributed() and dist.get_backend() == "gloo"
    assert D.world_size() == 2 and device == torch.device("cpu")

    # Each rank builds its model from a different seed on purpose: wrap() must make every
    # rank start from rank 0's parameters.
    torch.manual_seed(100 + D.rank())
    model = nn.Sequential(nn.Linear({IN}, {HIDDEN}), nn.Tanh(), nn.Linear({HIDDEN}, {OUT}))
    model = D.wrap(model.double())
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    x = torch.randn({N}, {IN}, generator=g, dtype=torch.float64)
    y = torch.randint(0, {OUT}, ({N},), generator=g)

    run = D.main_run(lambda: Run.create("ddp-test", {{"seed": 0}}, out=out / "runs", quiet=True))
    for step in range({STEPS}):
        batch = torch.randperm({N}, generator=g)[:{GLOBAL_BATCH}]  # same on every rank
        mine = batch[D.shard_indices({GLOBAL_BATCH}, epoch=step, seed=1)]
        loss = F.cross_entropy(model(x[mine]), y[mine])
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.log(step, loss=D.all_reduce_mean(loss.detach()).item(), rank=D.rank())
    state = {{k: v.clone() for k, v in D.unwrap(model).state_dict().items()}}
    run.save_checkpoint({STEPS}, state)
    D.barrier()
    ckpt = run.load_checkpoint()  # rank 1 reads what rank 0 wrote
    assert ckpt is not None and ckpt.step == {STEPS}
    assert all(torch.equal(ckpt.tensors[k], v) for k, v in state.items())
    save_file(state, str(out / f"rank{{D.rank()}}.safetensors"))
    run.finish([])
    D.cleanup()
    """
)


def reference(*, shard: int | None = None) -> tuple[dict[str, torch.Tensor], list[float]]:
    """One process on the same global batches (or, with `shard`, on that rank's half only)."""
    torch.manual_seed(100)
    model = nn.Sequential(nn.Linear(IN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, OUT)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, IN, generator=g, dtype=torch.float64)
    y = torch.randint(0, OUT, (N,), generator=g)
    losses = []
    for step in range(STEPS):
        batch = torch.randperm(N, generator=g)[:GLOBAL_BATCH]
        if shard is not None:
            batch = batch[
                D.shard_indices(GLOBAL_BATCH, epoch=step, seed=1, rank=shard, world_size=2)
            ]
        loss = F.cross_entropy(model(x[batch]), y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model.state_dict(), losses


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_match_one_process(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env.update(GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        str(script),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    p0 = load_file(str(tmp_path / "rank0.safetensors"))
    p1 = load_file(str(tmp_path / "rank1.safetensors"))
    ref, ref_losses = reference()
    assert set(p0) == set(ref)
    for k in ref:
        assert p0[k].dtype == torch.float64
        assert torch.equal(p0[k], p1[k]), k  # the ranks agree bit for bit
        assert torch.allclose(p0[k], ref[k], rtol=1e-10, atol=1e-12), k

    # Training moved the parameters, and half the batch alone gives different ones: the match
    # above needs both shards' gradients.
    torch.manual_seed(100)
    init = nn.Sequential(nn.Linear(IN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, OUT)).double()
    half, _ = reference(shard=0)
    diff_init = max((p0[k] - v).abs().max().item() for k, v in init.state_dict().items())
    diff_half = max((p0[k] - v).abs().max().item() for k, v in half.items())
    assert diff_init > 1e-2 and diff_half > 1e-4

    # Rank 0 alone wrote: one run folder, one metric line per step, the global mean loss.
    runs = list((tmp_path / "runs" / "ddp-test").iterdir())
    assert len(runs) == 1
    rows = [json.loads(line) for line in (runs[0] / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(STEPS)) and {r["rank"] for r in rows} == {0}
    assert torch.allclose(
        torch.tensor([r["loss"] for r in rows]), torch.tensor(ref_losses), rtol=1e-10, atol=0
    )
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["status"] == "finished"
