"""Surjections and stochastic layers of SurVAE flows, each with its likelihood contribution.

Written data → latent, as every `Transform`. For each layer the docstring gives the
likelihood contribution `V(x, z)` that `forward` returns as `ldj` and, for a layer with a
stochastic forward, the bound gap `E(x, z)` (Nielsen et al. 2020, Table 1,
https://arxiv.org/abs/2007.02731):

- inference surjections (deterministic `x → z`, stochastic inverse): exact,
  `log p(x) = log p(z) + V(x, z)` with `V = log p(x | z)`; `E = 0`.
- generative surjections (stochastic `x → z ~ q(z|x)`, deterministic inverse): a bound,
  `log p(x) ≥ E_q[log p(z) + V(x, z)]` with `V = −log q(z | x)`; the gap is
  `E = KL(q(z|x) ‖ p(z|x))` in expectation.
- a VAE layer: `V = log p(x | z) − log q(z | x)`, a bound as for generative surjections.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .distributions import ConditionalNormal
from .nets import MLP, ConvNet
from .transforms import TRANSFORMS, Transform, TransformSpec, sum_event

__all__ = [
    "Abs",
    "Augment",
    "MaxPool2d",
    "Slice",
    "Sort",
    "UniformDequantization",
    "VAE",
    "VariationalDequantization",
]

_LOG_2PI = math.log(2 * math.pi)


def _randn_like(t: Tensor, generator) -> Tensor:
    return torch.randn(t.shape, generator=generator, dtype=t.dtype).to(t.device)


def _rand_like(t: Tensor, generator) -> Tensor:
    return torch.rand(t.shape, generator=generator, dtype=t.dtype).to(t.device)


def _standard_normal_log_prob(x: Tensor) -> Tensor:
    return -0.5 * sum_event(x**2 + _LOG_2PI)


class _Inference(Transform):
    bijective = False
    stochastic_inverse = True


class _Generative(Transform):
    bijective = False
    stochastic_forward = True


# -- inference surjections: exact likelihoods -------------------------------------------------


class Slice(_Inference):
    """Keep the first `keep` of `total` entries of axis 1: `z = x_{:keep}`, drop `r = x_{keep:}`.

    `V = log p(r | z)`: the decoder's density of the dropped part, a `ConditionalNormal` whose
    net maps `z` `(B, keep, ...)` to `(B, 2·(total−keep), ...)`, or `N(r; 0, I)` when
    `decoder` is None. The inverse samples `r ~ p(r | z)`. `x`: `(B, total, ...)`.
    """

    def __init__(self, keep: int, total: int, *, decoder: ConditionalNormal | None = None):
        super().__init__()
        if not 1 <= keep < total:
            raise ValueError(f"keep must satisfy 1 <= keep < total={total}, got {keep!r}")
        self.keep, self.total = keep, total
        self.decoder = decoder

    def forward(self, x, *, generator=None):
        if x.shape[1] != self.total:
            raise ValueError(f"Slice expects {self.total} entries on axis 1, got {x.shape}")
        z, r = x[:, : self.keep], x[:, self.keep :]
        if self.decoder is None:
            return z, _standard_normal_log_prob(r)
        return z, self.decoder.log_prob(r, z)

    def inverse(self, z, *, generator=None):
        if self.decoder is None:
            shape = (z.shape[0], self.total - self.keep, *z.shape[2:])
            r = torch.randn(shape, generator=generator, dtype=z.dtype).to(z.device)
        else:
            r = self.decoder.sample(z, generator=generator)
        return torch.cat([z, r], 1)


class Abs(_Inference):
    """`z = |x|` elementwise; the sign `s` is a fair coin per entry.

    `p(x) = p(z)·P(s)` with `P(s) = 2^{−D}` (the simple version), so `V = −D·log 2`. The
    latent lives on the positive orthant: follow it with a bijection onto ℝ^D (e.g.
    `InverseSoftplus`) for a normalised density under a Gaussian base. The inverse draws
    `s ∈ {−1, 1}^D` uniformly. `x`: `(B, ...)`, `D` = entries per example.
    """

    def forward(self, x, *, generator=None):
        return x.abs(), x.new_full((x.shape[0],), -x[0].numel() * math.log(2))

    def inverse(self, z, *, generator=None):
        s = _rand_like(z, generator) < 0.5
        return torch.where(s, -z, z)


class MaxPool2d(_Inference):
    """2×2 max pooling: `z_{c,i,j} = max` of its block; `x` `(B, C, H, W)` → `(B, C, H/2, W/2)`.

    Per block the argmax `k ∈ {1..4}` is uniform (`−log 4`) and the three other entries are
    `z − ε_m` with `ε_m ≥ 0` half-normal of per-channel scale `σ_c` (learned,
    `p(ε) = 2 N(ε; 0, σ_c²)`), so `V = Σ_blocks [−log 4 + Σ_{m=1}^{3} log p(ε_m)]`; ties have
    probability 0. The inverse draws `k` and `ε` and rebuilds the block.
    """

    def __init__(self, channels: int, *, learn_scale: bool = True) -> None:
        super().__init__()
        log_sigma = torch.zeros(channels)
        if learn_scale:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    @staticmethod
    def _blocks(x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"MaxPool2d needs even H and W, got {tuple(x.shape)}")
        x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 2, 4, 3, 5)  # (B, C, h, w, 2, 2)
        return x.reshape(b, c, h // 2, w // 2, 4)

    def forward(self, x, *, generator=None):
        blocks = self._blocks(x)  # (B, C, h, w, 4)
        z, k = blocks.max(-1)
        eps = z.unsqueeze(-1) - blocks  # 0 at the argmax, > 0 elsewhere
        log_sigma = self.log_sigma.view(1, -1, 1, 1, 1).to(x.dtype)
        lp = math.log(2) - 0.5 * _LOG_2PI - log_sigma - 0.5 * (eps * torch.exp(-log_sigma)) ** 2
        at_max = F.one_hot(k, 4).bool()
        lp = lp.masked_fill(at_max, 0.0)
        return z, sum_event(lp) - z[0].numel() * math.log(4)

    def inverse(self, z, *, generator=None):
        b, c, h, w = z.shape
        sigma = torch.exp(self.log_sigma).view(1, -1, 1, 1, 1).to(z.dtype)
        eps = _randn_like(z.unsqueeze(-1).expand(b, c, h, w, 4), generator).abs() * sigma
        k = torch.randint(4, (b, c, h, w), generator=generator).to(z.device)
        eps = eps.masked_fill(F.one_hot(k, 4).bool(), 0.0)
        blocks = (z.unsqueeze(-1) - eps).view(b, c, h, w, 2, 2)
        return blocks.permute(0, 1, 2, 4, 3, 5).reshape(b, c, 2 * h, 2 * w)


class Sort(_Inference):
    """Sort the `N` elements on axis 1: `(B, N)` by value, `(B, N, d)` by coordinate `key`.

    For exchangeable `x` every ordering is equally likely: `P(order | z) = 1/N!`, so
    `V = −log N!` (no ties: they have probability 0). The inverse draws a uniform
    permutation. Follow it with `Increments` for a normalised density on the sorted cone.
    """

    def __init__(self, *, key: int = 0) -> None:
        super().__init__()
        self.key = key

    def _values(self, x: Tensor) -> Tensor:
        return x if x.dim() == 2 else x[..., self.key]

    @staticmethod
    def _take(x: Tensor, idx: Tensor) -> Tensor:
        if x.dim() == 2:
            return torch.gather(x, 1, idx)
        return torch.gather(x, 1, idx.unsqueeze(-1).expand_as(x))

    def forward(self, x, *, generator=None):
        idx = self._values(x).argsort(1)  # (B, N)
        return self._take(x, idx), x.new_full((x.shape[0],), -math.lgamma(x.shape[1] + 1))

    def inverse(self, z, *, generator=None):
        idx = _rand_like(self._values(z), generator).argsort(1)
        return self._take(z, idx)


# -- generative surjections: lower bounds -----------------------------------------------------


class Augment(_Generative):
    """`z = (x, e)` on axis 1 with `e ~ q(e | x)` of `extra` entries; the inverse drops `e`.

    `V = −log q(e | x)` with `q` a `ConditionalNormal` (net `x → (B, 2·extra, ...)`) or
    `N(0, I)` when `encoder` is None. Gap: `E = KL(q(e|x) ‖ p(e|x))`. `x`: `(B, C, ...)`.
    """

    def __init__(self, extra: int, *, encoder: ConditionalNormal | None = None) -> None:
        super().__init__()
        if extra < 1:
            raise ValueError(f"extra must be >= 1, got {extra!r}")
        self.extra = extra
        self.encoder = encoder

    def forward(self, x, *, generator=None):
        if self.encoder is None:
            e = _randn_like(x.new_empty((x.shape[0], self.extra, *x.shape[2:])), generator)
            return torch.cat([x, e], 1), -_standard_normal_log_prob(e)
        e = self.encoder.sample(x, generator=generator)
        return torch.cat([x, e], 1), -self.encoder.log_prob(e, x)

    def inverse(self, z, *, generator=None):
        return z[:, : z.shape[1] - self.extra]


def _check_levels(x: Tensor, levels: int) -> None:
    bad = (x < 0) | (x > levels - 1) | (x != torch.floor(x))
    if bool(bad.any()):
        raise ValueError(
            f"x must hold integers in 0..{levels - 1} (levels={levels}); got values "
            f"{x[bad].flatten()[:4].tolist()}"
        )


class UniformDequantization(_Generative):
    """Integers `x ∈ {0..L−1}^D` → `z = (x + u)/L ∈ [0, 1)^D`, `u ~ U[0, 1)^D`.

    `q(u | x) = 1`, and the change of scale `u → z` contributes `−log L` per entry:
    `V = −D·log L` (`L = 2^bits`: `−D·log 2^bits`; bins of width `1/L`, never `1/(L−1)`).
    `log P(x) ≥ E_u[log p(z)] − D log L`. The inverse is `x = ⌊L z⌋`.
    """

    dequantizer = True

    def __init__(self, levels: int) -> None:
        super().__init__()
        if not isinstance(levels, int) or levels < 2:
            raise ValueError(f"levels must be an int >= 2, got {levels!r}")
        self.levels = levels

    def forward(self, x, *, generator=None):
        _check_levels(x, self.levels)
        u = _rand_like(x, generator)
        ldj = x.new_full((x.shape[0],), -x[0].numel() * math.log(self.levels))
        return (x + u) / self.levels, ldj

    def inverse(self, z, *, generator=None):
        return torch.floor(z * self.levels).clamp(0, self.levels - 1)


class VariationalDequantization(_Generative):
    """`z = (x + u)/L` with learned `u ~ q(u | x)`: `u = sigmoid(μ + σ ε)`, `ε ~ N(0, I)`.

    `(μ, log σ) = net(x/(L−1) − ½)` stacked on axis 1 (`net`: `(B, C, ...) → (B, 2C, ...)`).
    `log q(u|x) = log N(ε) − Σ log σ − Σ log[s(1−s)]`, `s = sigmoid(μ + σε)`, and
    `V = −D log L − log q(u | x)`; with `q = U[0,1)` this is `UniformDequantization`
    (Ho et al. 2019, Flow++). Gap: `E = KL(q(u|x) ‖ p(u|x))`. The inverse is `⌊L z⌋`.
    """

    dequantizer = True

    def __init__(self, levels: int, net: nn.Module, *, scale_bound: float = 6.0) -> None:
        super().__init__()
        if not isinstance(levels, int) or levels < 2:
            raise ValueError(f"levels must be an int >= 2, got {levels!r}")
        self.levels = levels
        self.encoder = ConditionalNormal(net, scale_bound=scale_bound)

    def forward(self, x, *, generator=None):
        _check_levels(x, self.levels)
        mu, log_sigma = self.encoder.params(x / (self.levels - 1) - 0.5)
        eps = _randn_like(mu, generator)
        h = mu + torch.exp(log_sigma) * eps
        # log s(1 − s) = −softplus(−h) − softplus(h), stable for large |h|
        log_q = (
            _standard_normal_log_prob(eps)
            - sum_event(log_sigma)
            + sum_event(F.softplus(-h) + F.softplus(h))
        )
        u = torch.sigmoid(h)
        d = x[0].numel()
        return (x + u) / self.levels, -d * math.log(self.levels) - log_q

    def inverse(self, z, *, generator=None):
        return torch.floor(z * self.levels).clamp(0, self.levels - 1)


class VAE(Transform):
    """A VAE as a layer: `z ~ q(z | x)` forward, `x ~ p(x | z)` inverse, both diagonal normals.

    `V = log p(x | z) − log q(z | x)` for a reparameterised draw `z`; the layer's bound is the
    ELBO, gap `E = KL(q(z|x) ‖ p(z|x))` (Kingma & Welling 2014 as a SurVAE layer).
    `encoder`: `ConditionalNormal` over `z` given `x`; `decoder`: over `x` given `z`.
    """

    bijective = False
    stochastic_forward = True
    stochastic_inverse = True

    def __init__(self, encoder: ConditionalNormal, decoder: ConditionalNormal) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, x, *, generator=None):
        z = self.encoder.sample(x, generator=generator)
        return z, self.decoder.log_prob(x, z) - self.encoder.log_prob(z, x)

    def inverse(self, z, *, generator=None):
        return self.decoder.sample(z, generator=generator)


def _normal(*shape: int):
    return lambda n, g: torch.randn(n, *shape, generator=g)


def _levels(levels: int, *shape: int):
    return lambda n, g: torch.randint(levels, (n, *shape), generator=g).float()


def _register() -> None:
    specs = {
        "slice": (lambda: Slice(2, 4), _normal(4)),
        "slice-decoder": (
            lambda: Slice(1, 3, decoder=ConditionalNormal(MLP(1, 4, (8,)))),
            _normal(3),
        ),
        "slice-channels": (
            lambda: Slice(1, 2, decoder=ConditionalNormal(ConvNet(1, 2, 4))),
            _normal(2, 2, 2),
        ),
        "abs": (lambda: Abs(), _normal(3)),
        "max-pool": (lambda: MaxPool2d(2), _normal(2, 2, 4)),
        "sort": (lambda: Sort(), _normal(5)),
        "sort-points": (lambda: Sort(key=0), _normal(4, 2)),
        "augment": (lambda: Augment(2), _normal(2)),
        "augment-encoder": (
            lambda: Augment(2, encoder=ConditionalNormal(MLP(3, 4, (8,)))),
            _normal(3),
        ),
        "uniform-dequantization": (lambda: UniformDequantization(4), _levels(4, 1, 2, 2)),
        "variational-dequantization": (
            lambda: VariationalDequantization(5, MLP(3, 6, (8,))),
            _levels(5, 3),
        ),
        "vae": (
            lambda: VAE(ConditionalNormal(MLP(3, 4, (8,))), ConditionalNormal(MLP(2, 6, (8,)))),
            _normal(3),
        ),
    }
    for name, (build, sample) in specs.items():
        TRANSFORMS.register(name, TransformSpec(build, sample))


_register()
