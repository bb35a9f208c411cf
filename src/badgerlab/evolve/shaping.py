"""Fitness shaping for ES: map utilities (higher is better) to the weights of the update."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["available_shapings", "centred_ranks", "get_shaping", "no_shaping", "register_shaping"]

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


_SHAPINGS: dict[str, Shaping] = {"none": no_shaping, "centred_ranks": centred_ranks}


def register_shaping(name: str, fn: Shaping, *, overwrite: bool = False) -> Shaping:
    """Register ``fn(u (P,)) -> weights (P,)`` under ``name``; higher utility must mean better."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if name in _SHAPINGS and not overwrite:
        raise ValueError(f"shaping {name!r} is already registered")
    _SHAPINGS[name] = fn
    return fn


def get_shaping(name: str) -> Shaping:
    """The shaping registered as ``name`` (``"none"``, ``"centred_ranks"``, ...)."""
    try:
        return _SHAPINGS[name]
    except KeyError:
        raise ValueError(f"unknown shaping {name!r}; choose one of {sorted(_SHAPINGS)}") from None


def available_shapings() -> list[str]:
    """Names of every registered shaping, sorted."""
    return sorted(_SHAPINGS)
