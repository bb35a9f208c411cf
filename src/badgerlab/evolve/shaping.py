"""Fitness shaping for ES: map utilities (higher is better) to the weights of the update."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from badgerlab.registry import Registry

__all__ = [
    "SHAPINGS",
    "available_shapings",
    "centred_ranks",
    "get_shaping",
    "no_shaping",
    "register_shaping",
]

Shaping = Callable[[Tensor], Tensor]


def no_shaping(u: Tensor) -> Tensor:
    """Raw utilities, unchanged (the VSML reference: raw antithetic differences).

    Args:
        u: utilities, shape ``(P,)``.
    """
    return u


def centred_ranks(u: Tensor) -> Tensor:
    r"""Centred ranks, then standardised (the Hebbian reference, after Salimans et al. 2017).

    .. math::
        r_i = \frac{\mathrm{rank}(u_i)}{P - 1} - \tfrac12, \qquad
        F_i = \frac{r_i - \bar r}{\mathrm{std}(r)}

    Ties get their average rank, so equal utilities give equal weights; when every utility is
    equal all weights are exactly 0 (the reference code divided by a zero standard deviation).
    Salimans et al., "Evolution Strategies as a Scalable Alternative to RL",
    https://arxiv.org/abs/1703.03864.

    Args:
        u: utilities, shape ``(P,)``, P >= 2.
    """
    P = u.shape[-1]
    less = (u.unsqueeze(-2) < u.unsqueeze(-1)).sum(-1)  # (P,) how many are strictly worse
    equal = (u.unsqueeze(-2) == u.unsqueeze(-1)).sum(-1)  # (P,) ties, self included
    rank = less.to(u.dtype) + (equal - 1).to(u.dtype) * 0.5
    r = rank / (P - 1) - 0.5
    r = r - r.mean(-1, keepdim=True)
    std = r.std(-1, correction=0, keepdim=True)
    # torch.where rather than a branch keeps this usable under torch.func.vmap.
    return torch.where(std > 0, r / torch.where(std > 0, std, torch.ones_like(std)), 0.0 * r)


SHAPINGS: Registry[Shaping] = Registry("shaping")
SHAPINGS.register("none", no_shaping)
SHAPINGS.register("centred_ranks", centred_ranks)


def register_shaping(name: str, fn: Shaping, *, overwrite: bool = False) -> Shaping:
    """Register ``fn(u (P,)) -> weights (P,)`` under ``name``; higher utility must mean better."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    return SHAPINGS.register(name, fn, overwrite=overwrite)


def get_shaping(name: str) -> Shaping:
    """The shaping registered as ``name`` (``"none"``, ``"centred_ranks"``, ...)."""
    return SHAPINGS.get(name)


def available_shapings() -> list[str]:
    """Names of every registered shaping, sorted."""
    return SHAPINGS.names()
