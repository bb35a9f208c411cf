"""`Flow(base, transforms)`: a SurVAE flow, and its losses in nats and bits per dimension.

`log p(x) ≥ log p(z_L) + Σ_l V_l(z_{l−1}, z_l)` along one pass `x = z_0 → … → z_L`, with
equality when every layer's forward is deterministic (bijections and inference
surjections) and a lower bound (the ELBO) otherwise (Nielsen et al. 2020, eq. 7,
https://arxiv.org/abs/2007.02731). Bits per dimension divide a negative log-likelihood in
nats by `D·log 2`, `D` the number of entries of one data point `x`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .transforms import Transform

__all__ = ["Flow", "elbo_bpd", "iwbo", "iwbo_bpd", "loglik_bpd", "nats_to_bpd"]


class Flow(nn.Module):
    """A base density `base` (`log_prob(z) -> (B,)`, `sample(n, generator=)`) under `transforms`.

    `transforms` are listed data → latent. At most one dequantizer, and only as the first
    layer: a second one would subtract `D log L` twice from the bound.
    """

    def __init__(self, base: nn.Module, transforms: Sequence[Transform]) -> None:
        super().__init__()
        transforms = list(transforms)
        for i, t in enumerate(transforms):
            if not isinstance(t, Transform):
                raise TypeError(f"transforms[{i}] must be a Transform, got {type(t).__name__}")
            if t.dequantizer and i != 0:
                raise ValueError(
                    f"transforms[{i}] ({type(t).__name__}) is a dequantizer: a flow holds at "
                    "most one, as its first layer"
                )
        self.base = base
        self.transforms = nn.ModuleList(transforms)

    @property
    def exact(self) -> bool:
        """True when `log_prob` is the exact log-density (no stochastic forward layer)."""
        return not any(t.stochastic_forward for t in self.transforms)

    def latent(self, x: Tensor, *, generator: torch.Generator | None = None):
        """`(z_L, Σ V)`: the latent of `x` and the summed likelihood contributions `(B,)`."""
        total = x.new_zeros(x.shape[0])
        for t in self.transforms:
            x, ldj = t(x, generator=generator)
            total = total + ldj
        return x, total

    def log_prob(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """`(B,)`: `log p(x)` if `exact`, else a one-sample ELBO drawn with `generator`."""
        z, ldj = self.latent(x, generator=generator)
        return self.base.log_prob(z) + ldj

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """`n` draws: `z ~ base`, then every layer's inverse, latent → data."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        x = self.base.sample(n, generator=generator)
        for t in reversed(self.transforms):
            x = t.inverse(x, generator=generator)
        return x


def nats_to_bpd(nats: Tensor | float, dims: int) -> Tensor | float:
    """A negative log-likelihood of one `dims`-entry data point in nats → bits per dimension."""
    if dims < 1:
        raise ValueError(f"dims must be >= 1, got {dims!r}")
    return nats / (dims * math.log(2))


def loglik_bpd(flow: Flow, x: Tensor) -> Tensor:
    """`−mean log p(x) / (D log 2)`: exact; a flow with a stochastic forward is refused."""
    if not flow.exact:
        raise ValueError(
            "loglik_bpd needs an exact flow; this one has a stochastic forward (use elbo_bpd "
            "or iwbo_bpd)"
        )
    return nats_to_bpd(-flow.log_prob(x).mean(), x[0].numel())


def elbo_bpd(flow: Flow, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """`−mean ELBO / (D log 2)` with one sample per data point (= `loglik_bpd` if exact)."""
    return nats_to_bpd(-flow.log_prob(x, generator=generator).mean(), x[0].numel())


def iwbo(flow: Flow, x: Tensor, k: int, *, generator: torch.Generator | None = None) -> Tensor:
    """`(B,)`: `log (1/K) Σ_k exp ELBO_k`, the importance-weighted bound with `K` samples.

    `ELBO ≤ IWBO_K ≤ IWBO_{K+1} ≤ log p(x)` in expectation; `IWBO_K → log p(x)` as `K → ∞`
    (Burda et al. 2016, https://arxiv.org/abs/1509.00519).
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    w = torch.stack([flow.log_prob(x, generator=generator) for _ in range(k)])  # (K, B)
    return torch.logsumexp(w, 0) - math.log(k)


def iwbo_bpd(flow: Flow, x: Tensor, k: int, *, generator: torch.Generator | None = None):
    """`−mean IWBO_K / (D log 2)`."""
    return nats_to_bpd(-iwbo(flow, x, k, generator=generator).mean(), x[0].numel())
