"""Base densities of a flow and the conditional densities its surjections decode with.

Every density sums over the event axes: `log_prob(x) -> (B,)` for `x` of shape `(B, *shape)`.
Sampling takes an explicit `torch.Generator`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .transforms import sum_event

__all__ = [
    "ConditionalNormal",
    "DiagonalNormal",
    "StandardHalfNormal",
    "StandardNormal",
    "StandardUniform",
]

_LOG_2PI = math.log(2 * math.pi)


def _shape(shape: Sequence[int] | int) -> tuple[int, ...]:
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if not shape or not all(isinstance(s, int) and s >= 1 for s in shape):
        raise ValueError(f"shape must be positive ints, got {shape!r}")
    return shape


def _randn(n: int, shape: tuple[int, ...], ref: Tensor, generator) -> Tensor:
    # drawn on the CPU generator, then moved: the same numbers on every device
    eps = torch.randn(n, *shape, generator=generator, dtype=ref.dtype)
    return eps.to(ref.device)


class StandardNormal(nn.Module):
    """`p(z) = N(z; 0, I)` over `shape`: `log p = −½ Σ (z² + log 2π)`."""

    def __init__(self, shape: Sequence[int] | int) -> None:
        super().__init__()
        self.shape = _shape(shape)
        self.register_buffer("_ref", torch.zeros(()))

    def log_prob(self, z: Tensor) -> Tensor:
        return -0.5 * sum_event(z**2 + _LOG_2PI)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        return _randn(n, self.shape, self._ref, generator)


class DiagonalNormal(nn.Module):
    """`p(z) = N(z; μ, diag σ²)` with learned `μ, log σ` of `shape` (start at 0: standard)."""

    def __init__(self, shape: Sequence[int] | int) -> None:
        super().__init__()
        self.shape = _shape(shape)
        self.loc = nn.Parameter(torch.zeros(self.shape))
        self.log_scale = nn.Parameter(torch.zeros(self.shape))

    def log_prob(self, z: Tensor) -> Tensor:
        u = (z - self.loc) * torch.exp(-self.log_scale)
        return -0.5 * sum_event(u**2 + _LOG_2PI) - self.log_scale.sum()

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        return self.loc + torch.exp(self.log_scale) * _randn(n, self.shape, self.loc, generator)


class StandardUniform(nn.Module):
    """`p(z) = 1` on `[0, 1)^shape`: `log p = 0` inside, `−∞` outside."""

    def __init__(self, shape: Sequence[int] | int) -> None:
        super().__init__()
        self.shape = _shape(shape)
        self.register_buffer("_ref", torch.zeros(()))

    def log_prob(self, z: Tensor) -> Tensor:
        inside = ((z >= 0) & (z < 1)).reshape(z.shape[0], -1).all(1)
        return torch.where(inside, 0.0, -math.inf).to(z.dtype)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        u = torch.rand(n, *self.shape, generator=generator, dtype=self._ref.dtype)
        return u.to(self._ref.device)


class StandardHalfNormal(nn.Module):
    """`p(ε) = 2 N(ε; 0, 1)` for `ε ≥ 0`: `log p = Σ (log 2 − ½ log 2π − ½ ε²)`, `−∞` below 0."""

    def __init__(self, shape: Sequence[int] | int) -> None:
        super().__init__()
        self.shape = _shape(shape)
        self.register_buffer("_ref", torch.zeros(()))

    def log_prob(self, e: Tensor) -> Tensor:
        lp = sum_event(math.log(2) - 0.5 * _LOG_2PI - 0.5 * e**2)
        return torch.where((e >= 0).reshape(e.shape[0], -1).all(1), lp, -math.inf)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        return _randn(n, self.shape, self._ref, generator).abs()


class ConditionalNormal(nn.Module):
    """`p(x | c) = N(x; μ(c), diag σ(c)²)`; `net(c)` gives `(μ, log σ)` stacked on axis 1.

    `net`: `(B, *c_shape) → (B, 2·C, ...)` where `x` is `(B, C, ...)`. `log σ` is soft-clamped
    to `(−bound, bound)` (`scale_bound=None`: not at all): an unbounded scale lets one sample
    blow a bound up early in training.
    """

    def __init__(self, net: nn.Module, *, scale_bound: float | None = 6.0) -> None:
        super().__init__()
        self.net = net
        self.scale_bound = scale_bound

    def params(self, context: Tensor) -> tuple[Tensor, Tensor]:
        mu, log_sigma = self.net(context).chunk(2, dim=1)
        if self.scale_bound is None:
            return mu, log_sigma
        return mu, self.scale_bound * torch.tanh(log_sigma / self.scale_bound)

    def log_prob(self, x: Tensor, context: Tensor) -> Tensor:
        mu, log_sigma = self.params(context)
        u = (x - mu) * torch.exp(-log_sigma)
        return -0.5 * sum_event(u**2 + _LOG_2PI) - sum_event(log_sigma)

    def sample(self, context: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """A reparameterised draw `x = μ(c) + σ(c)·ε`, `ε ~ N(0, I)`."""
        mu, log_sigma = self.params(context)
        eps = _randn(mu.shape[0], tuple(mu.shape[1:]), mu, generator)
        return mu + torch.exp(log_sigma) * eps
