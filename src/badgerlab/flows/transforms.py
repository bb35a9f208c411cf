"""The `Transform` protocol of SurVAE flows and the registry of every transform family."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from badgerlab.registry import Registry

__all__ = ["TRANSFORMS", "Transform", "TransformSpec", "sum_event"]


def sum_event(t: Tensor) -> Tensor:
    """Sum over every axis but the batch axis: `(B, ...) -> (B,)`."""
    return t.reshape(t.shape[0], -1).sum(1)


class Transform(nn.Module):
    """One layer of a SurVAE flow, written in the direction data → latent.

    `forward(x) -> (z, ldj)`: `ldj` `(B,)` is the layer's likelihood contribution
    `V(x, z)` (for a bijection `log|det ∂z/∂x|`), plus the bound gap's sample `E` where the
    forward is stochastic, so that `log p(x) ≥ log p(z) + Σ ldj` with equality when every
    forward is deterministic (Nielsen et al. 2020, eq. 7, arXiv 2007.02731).
    `inverse(z) -> x` goes latent → data; a stochastic inverse samples.

    Flags: `bijective`; `stochastic_forward` (generative surjections and VAE layers: the
    likelihood is a bound); `stochastic_inverse` (inference surjections: exact likelihood,
    sampling the dropped information); `dequantizer` (turns discrete data continuous: a flow
    may hold at most one).
    """

    bijective: ClassVar[bool] = True
    stochastic_forward: ClassVar[bool] = False
    stochastic_inverse: ClassVar[bool] = False
    dequantizer: ClassVar[bool] = False

    @property
    def kind(self) -> str:
        """`bijection`, `inference` surjection, `generative` surjection or `stochastic`."""
        if self.bijective:
            return "bijection"
        if self.stochastic_forward and self.stochastic_inverse:
            return "stochastic"
        return "generative" if self.stochastic_forward else "inference"

    def forward(self, x: Tensor, *, generator: torch.Generator | None = None):
        raise NotImplementedError

    def inverse(self, z: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class TransformSpec:
    """How to build a small example of a transform family and draw inputs it accepts.

    `build()` returns a fresh instance (float64 is applied by the caller); `sample(n, g)`
    returns `n` inputs in the transform's domain (`g` a `torch.Generator`), e.g. integers for
    a dequantizer or points of `(0, 1)` for a logit.
    """

    build: Callable[[], Transform]
    sample: Callable[[int, torch.Generator], Tensor]


TRANSFORMS: Registry[TransformSpec] = Registry("transform")
