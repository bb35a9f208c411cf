"""Data-parallel gradient training under `torchrun`: process group from the environment, DDP,
sharded batches and rank-0 writes, all no-ops in a plain single process.

An experiment trained by gradient runs unchanged on one process or under
`torchrun --nproc_per_node N -m badgerlab run NAME`:

    device = ddp.init_from_env(cfg.device)  # cuda:LOCAL_RANK under torchrun + CUDA
    model = ddp.wrap(Model(...).to(device))  # DDP when launched, else the model
    g = torch.Generator().manual_seed(cfg.seed)      # identical on every rank
    for step in range(start, cfg.steps):
        batch = torch.randperm(n, generator=g)[: cfg.batch_size]  # the global batch
        mine = batch[ddp.shard_indices(len(batch), epoch=step, seed=cfg.seed)]
        loss = loss_fn(model(x[mine]), y[mine])       # mean over the local shard
        opt.zero_grad(); loss.backward(); opt.step()  # DDP averages gradients over ranks
        run.log(step, loss=ddp.all_reduce_mean(loss.detach()).item())

With equal shard sizes the averaged gradient is exactly the gradient of the mean loss over the
global batch, so N ranks follow the same trajectory as one process (up to float rounding).

Rank 0 writes, the others only read: the CLI opens the run with
`run = ddp.main_run(lambda: Run.create(...))`, which gives rank 0 the real `Run` and
every other rank a `FollowerRun` over the same folder, whose `log`, `save_checkpoint`,
`save_figure` and `finish` write nothing and whose `load_checkpoint` reads rank 0's files, so
`--resume` restores every rank alike. Code that must do something on rank 0 only (an
evaluation that prints a table, say) tests `ddp.is_main()`. Collectives
(`all_reduce_mean`, `barrier`) must be called on every rank, never inside `if is_main():`.
Save `ddp.unwrap(model).state_dict()` so checkpoints load with or without DDP.

Batch statistics across ranks: `sync_batchnorm(model)` swaps each BatchNorm for a
`GlobalBatchNorm` (global-batch mean and variance, any backend), `all_gather_cat(z)` gathers
a batch from every rank with gradient (contrastive negatives), `sum_over_ranks(x)` is the
differentiable sum both are built on.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from badgerlab.runs import FollowerRun

__all__ = [
    "FollowerRun",
    "GlobalBatchNorm",
    "all_gather_cat",
    "all_reduce_mean",
    "average_gradients",
    "barrier",
    "broadcast_str",
    "cleanup",
    "init_from_env",
    "is_distributed",
    "is_main",
    "launched",
    "local_rank",
    "main_run",
    "rank",
    "shard_indices",
    "sum_over_ranks",
    "sync_batchnorm",
    "unwrap",
    "world_size",
    "wrap",
]

T = TypeVar("T")
_ENV = ("RANK", "WORLD_SIZE")


def launched() -> bool:
    """True when the environment says this process is one rank of a launch (torchrun sets
    `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`)."""
    return all(os.environ.get(k) for k in _ENV)


def is_distributed() -> bool:
    """True when a default process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


# shard_indices takes `rank`/`world_size` arguments that shadow these names.
_get_rank, _get_world_size = rank, world_size


def local_rank() -> int:
    """Rank on this machine (`LOCAL_RANK`; 0 without a process group)."""
    return int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() else 0


def is_main() -> bool:
    """True on the rank that writes (rank 0), and in a single process."""
    return rank() == 0


def _env_int(name: str, default: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None and default is not None:
        return default
    try:
        return int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def init_from_env(
    device: str | torch.device = "cpu",
    *,
    backend: str | None = None,
    timeout_s: float = 600.0,
) -> torch.device:
    """Join the process group described by the environment and return this rank's device.

    Outside a launch (no `RANK`/`WORLD_SIZE`) nothing happens and `device` is returned as
    given. Under a launch, a CUDA `device` becomes `cuda:LOCAL_RANK` (one GPU per process, the
    torchrun convention) with the `nccl` backend; a CPU device uses `gloo`. `backend`
    overrides that choice; `timeout_s` bounds how long a collective waits for the others.
    Calling it again after the group exists only returns the device.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda[:i]', got {str(device)!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} asked for, but CUDA is not available")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    if not launched():
        return dev
    if not dist.is_available():
        raise RuntimeError("launched with RANK/WORLD_SIZE but torch.distributed is unavailable")
    r, n = _env_int("RANK"), _env_int("WORLD_SIZE")
    lr = _env_int("LOCAL_RANK", r)
    if not 0 <= r < n:
        raise ValueError(f"RANK={r} must lie in 0..WORLD_SIZE-1 (WORLD_SIZE={n})")
    if dev.type == "cuda":
        if lr >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK={lr} but only {torch.cuda.device_count()} CUDA devices are visible"
            )
        dev = torch.device("cuda", lr)
        torch.cuda.set_device(dev)
    if backend is None:
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if not is_distributed():
        dist.init_process_group(
            backend,
            init_method="env://",
            rank=r,
            world_size=n,
            timeout=_dt.timedelta(seconds=timeout_s),
        )
    return dev


def cleanup() -> None:
    """Leave the process group (no-op without one); call once at the end of a launch."""
    if is_distributed():
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    """Where collective tensors must live: the current GPU for nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait until every rank gets here (no-op without a process group)."""
    if not is_distributed():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def all_reduce_mean(x: T) -> T:
    """The mean of `x` over ranks: a tensor (any shape; a new tensor on `x`'s device) or a
    Python float. Without a process group `x` itself is returned."""
    number = isinstance(x, (int, float)) and not isinstance(x, bool)
    if not (number or isinstance(x, torch.Tensor)):
        raise TypeError(f"x must be a tensor or a number, got {type(x).__name__}")
    if not is_distributed():
        return x
    if isinstance(x, torch.Tensor):
        t = x.detach().to(_comm_device(), copy=True)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return (t / world_size()).to(x.device)  # type: ignore[return-value]
    t = torch.tensor(float(x), dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / world_size()  # type: ignore[return-value]


def average_gradients(params: Iterable[torch.Tensor]) -> None:
    """Replace each parameter's `.grad` by its mean over ranks (no-op without a group).

    The alternative to `wrap` for training code whose forward does not go through the module's
    `__call__` (e.g. a DEQ trained with an extra regulariser on its fixed point): call it after
    `backward()` and before the optimiser step.
    """
    if not is_distributed():
        return
    for p in params:
        if p.grad is not None:
            p.grad.copy_(all_reduce_mean(p.grad))


def broadcast_str(value: str | None, *, src: int = 0) -> str:
    """Rank `src`'s string on every rank (sent as UTF-8 bytes, no pickling); other ranks pass
    None. Without a process group `value` is returned."""
    if not is_distributed():
        if value is None:
            raise ValueError("value must be a string outside a process group, got None")
        return value
    dev = _comm_device()
    data = (value or "").encode() if rank() == src else b""
    size = torch.tensor([len(data)], dtype=torch.int64, device=dev)
    dist.broadcast(size, src)
    buf = torch.zeros(int(size.item()), dtype=torch.uint8, device=dev)
    if rank() == src and data:
        buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    if buf.numel():
        dist.broadcast(buf, src)
    return bytes(buf.cpu().tolist()).decode()


def wrap(model: nn.Module, **ddp_kwargs: Any) -> nn.Module:
    """`DistributedDataParallel(model)` under a process group, else `model` itself.

    DDP copies rank 0's parameters and buffers to every rank here, so ranks that built the
    model with different seeds still start alike. A CUDA model is bound to its own device.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(model, DistributedDataParallel):
        return model
    param = next(model.parameters(), None)
    if param is not None and param.device.type == "cuda":
        ddp_kwargs.setdefault("device_ids", [param.device.index])
    return DistributedDataParallel(model, **ddp_kwargs)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or `model` itself): save its `state_dict`."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def shard_indices(
    n: int,
    *,
    epoch: int,
    seed: int,
    shuffle: bool = True,
    drop_last: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
) -> torch.Tensor:
    """This rank's share of `range(n)` for one epoch, as `DistributedSampler` deals it.

    Every rank draws the same permutation (generator seeded with `seed + epoch`), pads it by
    repeating its head to a multiple of the world size W (or, with `drop_last`, cuts the tail)
    and takes every W-th index from position `rank`, so shards are disjoint, equally long
    (`ceil(n / W)` or `floor(n / W)`) and together cover every index.

    Returns an int64 tensor `(ceil(n / W),)`. `rank`/`world_size` default to this process's.

    >>> shard_indices(5, epoch=0, seed=0, shuffle=False, rank=1, world_size=2).tolist()
    [1, 3, 0]
    """
    w = _get_world_size() if world_size is None else world_size
    r = _get_rank() if rank is None else rank
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    if not isinstance(w, int) or w < 1:
        raise ValueError(f"world_size must be an int >= 1, got {w!r}")
    if not isinstance(r, int) or not 0 <= r < w:
        raise ValueError(f"rank must be an int in 0..{w - 1}, got {r!r}")
    if shuffle:
        g = torch.Generator().manual_seed(int(seed) + int(epoch))
        order = torch.randperm(n, generator=g)
    else:
        order = torch.arange(n)
    if drop_last:
        order = order[: n - n % w]
    elif n % w and n:
        pad = w - n % w
        order = torch.cat([order, order.repeat(pad // n + 1)[:pad]])
    return order[r::w]


class _SumOverRanks(torch.autograd.Function):
    """y = Σ_r x_r on every rank; the gradient of x on rank r is Σ_s ∂L_s/∂y (each rank's loss
    depends on every rank's input)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        y = x.detach().clone(memory_format=torch.contiguous_format)
        dist.all_reduce(y, op=dist.ReduceOp.SUM)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        return _SumOverRanks.apply(grad)


class _GatherRanks(torch.autograd.Function):
    """(W·B, ...) = every rank's x (B, ...) in rank order; the gradient of rank r's slice is
    summed over ranks and returned to rank r."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        x = x.detach().contiguous()
        parts = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(parts, x)
        ctx.rows = (rank() * len(x), (rank() + 1) * len(x))
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        lo, hi = ctx.rows
        return _SumOverRanks.apply(grad.contiguous())[lo:hi]


def sum_over_ranks(x: Tensor) -> Tensor:
    """Σ over ranks of `x` (same shape on every rank), differentiable; `x` without a group."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    return _SumOverRanks.apply(x) if is_distributed() else x


def all_gather_cat(x: Tensor) -> Tensor:
    """Every rank's `x` (B, ...) concatenated in rank order, (W·B, ...); differentiable: the
    gradient of each rank's slice is summed over ranks and sent back to its owner. All ranks
    must pass the same shape. Without a process group `x` itself is returned."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    return _GatherRanks.apply(x) if is_distributed() else x


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch normalisation over the *global* batch: in training, under a process group, the
    mean and variance of each channel are those of the union of every rank's batch,

        μ = Σ_r Σ_i x_ri / N,   σ² = Σ_r Σ_i (x_ri − μ)² / N,   N = Σ_r n_r,

    computed with two differentiable all-reduces (the gradient of the statistics flows back to
    every rank's inputs), and the running statistics are updated with N (unbiased σ²·N/(N−1)),
    so W ranks with their shards compute what one process computes on the whole batch. Outside
    a process group, or in eval mode, it is `nn.BatchNorm{1,2,3}d`.

    `torch.nn.SyncBatchNorm` does the same with fused kernels but only on GPUs; this one runs on
    any backend (gloo on CPUs included), which is what lets a CPU test prove the DDP path.
    Input (B, C, *) for any number of trailing dimensions.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected input (B, C, *), got shape {tuple(input.shape)}")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if not (self.training and is_distributed() and world_size() > 1):
            return super().forward(input)
        c = input.shape[1]
        dims = [0, *range(2, input.dim())]
        shape = [1, c] + [1] * (input.dim() - 2)
        count = torch.tensor([input.numel() // c], dtype=input.dtype, device=input.device)
        sums = sum_over_ranks(torch.cat([input.sum(dims), count]))
        n = sums[c]
        mean = sums[:c] / n
        centred = input - mean.reshape(shape)
        var = sum_over_ranks((centred * centred).sum(dims)) / n
        out = centred * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum
                if m is None:  # cumulative average, as nn.BatchNorm
                    m = 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * n / (n - 1).clamp_min(1), m)
        return out


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """`module` with every `nn.BatchNorm1d/2d/3d` replaced by a `GlobalBatchNorm` holding the
    same parameters and running statistics (in place for children; the new module is
    returned when `module` itself is a BatchNorm). A no-op difference outside a process group.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, GlobalBatchNorm
    ):
        new = GlobalBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine,
            module.track_running_stats,
        )  # fmt: skip
        if module.affine:  # the same Parameter objects: an optimiser built earlier keeps them
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean = module.running_mean
            new.running_var = module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, sync_batchnorm(child))
    return module


# ---------------------------------------------------------------------------------------------
# rank-0 writes


def main_run(open_run: Callable[[], T]) -> T | FollowerRun:
    """Open the run on rank 0 with `open_run()` (e.g. `lambda: Run.create(...)` or
    `lambda: Run.resume(path)`) and give every other rank a `FollowerRun` on its folder.
    Without a process group this is just `open_run()`.

    If rank 0 fails to open the run, the others raise too instead of waiting forever.
    """
    if not is_distributed():
        return open_run()
    if is_main():
        try:
            run = open_run()
        except BaseException:
            broadcast_str("")
            raise
        broadcast_str(str(run.dir))  # type: ignore[attr-defined]
        return run
    path = broadcast_str(None)
    if not path:
        raise RuntimeError("rank 0 failed to open the run folder; see its error")
    return FollowerRun(Path(path))
