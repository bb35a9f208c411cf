"""Evaluate P parameter vectors of one nn.Module in one call (functional_call + vmap)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

__all__ = [
    "evaluate_population",
    "flatten_params",
    "load_flat_params",
    "num_params",
    "population_call",
    "unflatten_params",
]


def _named(module: nn.Module) -> list[tuple[str, Tensor]]:
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    return list(module.named_parameters())


def num_params(module: nn.Module) -> int:
    """D: how many numbers ``flatten_params(module)`` holds."""
    return sum(p.numel() for _, p in _named(module))


def flatten_params(module: nn.Module) -> Tensor:
    """All parameters of ``module`` as one detached vector ``(D,)``, ``named_parameters`` order."""
    params = [p.detach().reshape(-1) for _, p in _named(module)]
    if not params:
        raise ValueError("module has no parameters to flatten")
    return torch.cat(params)


def unflatten_params(module: nn.Module, x: Tensor) -> dict[str, Tensor]:
    """Split ``x (..., D)`` into ``{name: (..., *shape)}`` following ``module``'s parameters.

    Leading dimensions are kept, so a population ``(P, D)`` gives ``(P, *shape)`` per name.
    The tensors are views of ``x``: gradients flow through them.
    """
    named = _named(module)
    D = sum(p.numel() for _, p in named)
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1 or x.shape[-1] != D:
        raise ValueError(f"x must have shape (..., {D}), got {tuple(x.shape)}")
    lead = x.shape[:-1]
    out, start = {}, 0
    for name, p in named:
        out[name] = x[..., start : start + p.numel()].reshape(*lead, *p.shape)  # (..., *shape)
        start += p.numel()
    return out


@torch.no_grad()
def load_flat_params(module: nn.Module, x: Tensor) -> None:
    """Copy the vector ``x (D,)`` into ``module``'s parameters in place."""
    if x.ndim != 1:
        raise ValueError(f"x must have shape (D,), got {tuple(x.shape)}")
    params = dict(_named(module))
    for name, value in unflatten_params(module, x).items():
        params[name].copy_(value)


def _in_dims(args: Sequence[Any], batched: bool | Sequence[bool]) -> tuple[int | None, ...]:
    if isinstance(batched, bool):
        return tuple(0 if batched else None for _ in args)
    flags = tuple(batched)
    if len(flags) != len(args):
        raise ValueError(f"batched has {len(flags)} flags for {len(args)} arguments")
    return tuple(0 if b else None for b in flags)


def population_call(
    module: nn.Module,
    x: Tensor,
    *inputs: Any,
    batched: bool | Sequence[bool] = False,
    chunk_size: int | None = None,
    randomness: str = "error",
) -> Any:
    """Run ``module`` once per row of ``x (P, D)`` in one vectorised call.

    ``inputs`` are shared by every member unless ``batched`` marks them as per-member (leading
    dim P; one flag for all inputs, or one per input). Returns the module's output with a
    leading P. Buffers (e.g. BatchNorm statistics) are shared and not updated per member.
    ``randomness`` is passed to ``torch.func.vmap`` (``"different"`` for dropout).
    """
    if x.ndim != 2:
        raise ValueError(f"x must have shape (P, D), got {tuple(x.shape)}")
    params = unflatten_params(module, x)  # {name: (P, *shape)}
    buffers = dict(module.named_buffers())

    def one(p: dict[str, Tensor], *args: Any) -> Any:
        return functional_call(module, (p, buffers), args)

    fn = vmap(
        one, in_dims=(0, *_in_dims(inputs, batched)), chunk_size=chunk_size, randomness=randomness
    )
    return fn(params, *inputs)


def evaluate_population(
    module: nn.Module,
    fitness_fn: Callable[..., Tensor],
    x: Tensor,
    *data: Any,
    batched: bool | Sequence[bool] = False,
    vectorize: bool = True,
    chunk_size: int | None = None,
    randomness: str = "error",
) -> Tensor:
    """Fitness ``(P,)`` of each parameter vector in ``x (P, D)`` for one ``module``.

    ``fitness_fn(forward, *data) -> ()`` computes one member's fitness, where
    ``forward(*inputs)`` runs ``module`` with that member's parameters. ``data`` is shared by all
    members unless ``batched`` marks it per-member (leading dim P). With ``vectorize=True`` every
    member runs in one ``torch.func.vmap`` call; ``vectorize=False`` is a plain loop, for the
    code vmap cannot trace (data-dependent control flow, in-place ops on inputs, ``.item()``).
    Both give the same numbers up to floating-point summation order.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Linear(3, 1)
        >>> x = torch.randn(8, num_params(net))  # 8 members
        >>> data = torch.randn(5, 3), torch.randn(5, 1)
        >>> mse = lambda forward, a, b: ((forward(a) - b) ** 2).mean()
        >>> evaluate_population(net, mse, x, *data).shape
        torch.Size([8])
    """
    if not callable(fitness_fn):
        raise TypeError(f"fitness_fn must be callable, got {type(fitness_fn).__name__}")
    if not isinstance(x, Tensor) or x.ndim != 2:
        raise ValueError(f"x must be a tensor of shape (P, D), got {getattr(x, 'shape', x)!r}")
    params = unflatten_params(module, x)  # {name: (P, *shape)}
    buffers = dict(module.named_buffers())
    flags = _in_dims(data, batched)

    def one(p: dict[str, Tensor], *args: Any) -> Tensor:
        def forward(*inputs: Any) -> Any:
            return functional_call(module, (p, buffers), inputs)

        return fitness_fn(forward, *args)

    if vectorize:
        fn = vmap(one, in_dims=(0, *flags), chunk_size=chunk_size, randomness=randomness)
        out = fn(params, *data)
    else:
        rows = []
        for i in range(x.shape[0]):
            args = [a[i] if f == 0 else a for a, f in zip(data, flags, strict=True)]
            rows.append(one({k: v[i] for k, v in params.items()}, *args))
        out = torch.stack(rows)
    if not isinstance(out, Tensor) or tuple(out.shape) != (x.shape[0],):
        raise ValueError(
            f"fitness_fn must return a scalar tensor per member; got shape "
            f"{tuple(getattr(out, 'shape', ()))} for P={x.shape[0]}"
        )
    return out
