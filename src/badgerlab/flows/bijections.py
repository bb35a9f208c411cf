"""Bijections: affine coupling, ActNorm, 1×1 convolution, permutations, squeeze, logit/sigmoid,
scalar affine, inverse softplus, sorted increments and couplings over point sequences.

Each `forward(x) -> (z, log|det ∂z/∂x|)` with the log-determinant of shape `(B,)`: the
likelihood contribution `V = log|det J|` of a bijection (Nielsen et al. 2020, §2,
https://arxiv.org/abs/2007.02731).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .nets import MLP, ConvNet, SetConvNet
from .transforms import TRANSFORMS, Transform, TransformSpec, sum_event

__all__ = [
    "ActNorm",
    "AffineCoupling",
    "Cast",
    "Conv1x1",
    "ConvAffineCoupling",
    "PointCoupling",
    "Increments",
    "InverseSoftplus",
    "Logit",
    "Permute",
    "Reshape",
    "Reverse",
    "ScalarAffine",
    "Sigmoid",
    "Squeeze",
]


def _soft_clamp(s: Tensor, bound: float) -> Tensor:
    # Keeps log-scales in (-bound, bound): unbounded exp(s) makes early training diverge.
    return bound * torch.tanh(s / bound)


class AffineCoupling(Transform):
    """Affine coupling on vectors (Dinh et al. 2017), split by a mask `m` (True: conditioner).

    `z = m⊙x + (1−m)⊙(x⊙exp(s(m⊙x)) + t(m⊙x))`, `log|det| = Σ_i (1−m_i) s_i`.
    `x`: `(B, D)`. The default mask keeps the first `⌈D/2⌉` coordinates (a split).
    """

    def __init__(
        self,
        dim: int,
        *,
        hidden: Sequence[int] = (64, 64),
        mask: Tensor | None = None,
        scale_bound: float = 3.0,
    ) -> None:
        super().__init__()
        if not isinstance(dim, int) or dim < 2:
            raise ValueError(f"dim must be an int >= 2, got {dim!r}")
        if mask is None:
            mask = torch.arange(dim) < (dim + 1) // 2
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if mask.shape != (dim,) or mask.all() or not mask.any():
            raise ValueError(f"mask must be a (dim,) bool tensor with both values, got {mask}")
        self.register_buffer("mask", mask)
        self.net = MLP(dim, 2 * dim, hidden)
        self.scale_bound = scale_bound

    def _st(self, x: Tensor) -> tuple[Tensor, Tensor]:
        m = self.mask.to(x.dtype)
        s, t = self.net(x * m).chunk(2, dim=1)  # (B, D) each
        return _soft_clamp(s, self.scale_bound) * (1 - m), t * (1 - m)

    def forward(self, x, *, generator=None):
        s, t = self._st(x)
        return x * torch.exp(s) + t, s.sum(1)

    def inverse(self, z, *, generator=None):
        s, t = self._st(z)  # the conditioner half is unchanged, so z gives the same s, t
        return (z - t) * torch.exp(-s)


class ConvAffineCoupling(Transform):
    """Affine coupling on images, split by channels: `x = (x_a, x_b)`, `C_a = ⌈C/2⌉`.

    `z_b = x_b⊙exp(s(x_a)) + t(x_a)`, `log|det| = Σ_{c,h,w} s`. `x`: `(B, C, H, W)`.
    """

    def __init__(self, channels: int, *, hidden: int = 32, scale_bound: float = 3.0) -> None:
        super().__init__()
        if not isinstance(channels, int) or channels < 2:
            raise ValueError(f"channels must be an int >= 2, got {channels!r}")
        self.ca = (channels + 1) // 2
        self.net = ConvNet(self.ca, 2 * (channels - self.ca), hidden)
        self.scale_bound = scale_bound

    def _st(self, xa: Tensor) -> tuple[Tensor, Tensor]:
        s, t = self.net(xa).chunk(2, dim=1)  # (B, C_b, H, W) each
        return _soft_clamp(s, self.scale_bound), t

    def forward(self, x, *, generator=None):
        xa, xb = x[:, : self.ca], x[:, self.ca :]
        s, t = self._st(xa)
        return torch.cat([xa, xb * torch.exp(s) + t], 1), sum_event(s)

    def inverse(self, z, *, generator=None):
        za, zb = z[:, : self.ca], z[:, self.ca :]
        s, t = self._st(za)
        return torch.cat([za, (zb - t) * torch.exp(-s)], 1)


class PointCoupling(Transform):
    """Masked affine coupling on point sequences `x` `(B, N, d)`, a `SetConvNet` conditioner.

    `mask` `(N, d)` (True: conditioner): `"channel"` conditions coordinates `1..⌈d/2⌉`,
    `"parity"` the even positions, `"channel-odd"` / `"parity-odd"` the complements.
    `z = m⊙x + (1−m)⊙(x⊙exp(s) + t)`, `(s, t) = net(m⊙x, m, π)`, `log|det| = Σ (1−m)⊙s`,
    where `π_i = 2i/(N−1) − 1` encodes the position (informative once the points are sorted).
    """

    MASKS = ("channel", "channel-odd", "parity", "parity-odd")

    def __init__(
        self,
        points: int,
        dim: int,
        mask: str,
        *,
        hidden: int = 64,
        kernel: int = 5,
        scale_bound: float = 3.0,
    ) -> None:
        super().__init__()
        if mask not in self.MASKS:
            raise ValueError(f"mask must be one of {self.MASKS}, got {mask!r}")
        if mask.startswith("channel") and dim < 2:
            raise ValueError(f"a channel mask needs dim >= 2, got {dim!r}")
        if points < 2:
            raise ValueError(f"points must be >= 2, got {points!r}")
        if mask.startswith("channel"):
            m = (torch.arange(dim) < (dim + 1) // 2).expand(points, dim)
        else:
            m = (torch.arange(points) % 2 == 0).unsqueeze(1).expand(points, dim)
        if mask.endswith("odd"):
            m = ~m
        self.register_buffer("mask", m.clone())
        self.net = SetConvNet(2 * dim + 1, 2 * dim, hidden, kernel)
        self.register_buffer("position", torch.linspace(-1, 1, points).view(1, points, 1))
        self.scale_bound = scale_bound

    def _st(self, x: Tensor) -> tuple[Tensor, Tensor]:
        m = self.mask.to(x.dtype)
        pos = self.position.to(x.dtype).expand(x.shape[0], -1, 1)
        inp = torch.cat([x * m, m.expand_as(x), pos], 2).transpose(1, 2)  # (B, 2d + 1, N)
        s, t = self.net(inp).transpose(1, 2).chunk(2, dim=2)  # (B, N, d) each
        return _soft_clamp(s, self.scale_bound) * (1 - m), t * (1 - m)

    def forward(self, x, *, generator=None):
        s, t = self._st(x)
        return x * torch.exp(s) + t, sum_event(s)

    def inverse(self, z, *, generator=None):
        s, t = self._st(z)
        return (z - t) * torch.exp(-s)


def _channel_view(t: Tensor, x: Tensor) -> Tensor:
    """A per-channel `(C,)` parameter shaped to broadcast against `x` `(B, C, ...)`."""
    return t.view(1, -1, *([1] * (x.dim() - 2)))


class ActNorm(Transform):
    """Per-channel affine normalisation (Kingma & Dhariwal 2018): `z = (x − μ)·exp(−log σ)`.

    `log|det| = −Σ_c log σ_c · (H·W)`. On the first forward in training mode `μ, σ` are set
    to the batch's per-channel mean and std (data-dependent init). `x`: `(B, C)` or
    `(B, C, H, W)`.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))

    def _init(self, x: Tensor) -> None:
        with torch.no_grad():
            flat = x.transpose(0, 1).reshape(x.shape[1], -1)  # (C, B·H·W)
            self.loc.copy_(flat.mean(1))
            self.log_scale.copy_(flat.std(1).clamp_min(1e-3).log())
            self.initialized.fill_(True)

    def forward(self, x, *, generator=None):
        if self.training and not bool(self.initialized):
            self._init(x)
        z = (x - _channel_view(self.loc, x)) * torch.exp(-_channel_view(self.log_scale, x))
        pixels = x[0, 0].numel()
        return z, (-self.log_scale.sum() * pixels).expand(x.shape[0])

    def inverse(self, z, *, generator=None):
        return z * torch.exp(_channel_view(self.log_scale, z)) + _channel_view(self.loc, z)


class Conv1x1(Transform):
    """Invertible 1×1 convolution (Glow): `z_{:,h,w} = W x_{:,h,w}`, `log|det| = H·W·log|det W|`.

    `W` `(C, C)` starts as a random rotation drawn with `generator`. `x`: `(B, C)` or
    `(B, C, H, W)`.
    """

    def __init__(self, channels: int, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(channels, channels, generator=generator))
        self.weight = nn.Parameter(q)

    def _mix(self, w: Tensor, x: Tensor) -> Tensor:
        if x.dim() == 2:
            return x @ w.T
        return torch.einsum("ij,bjhw->bihw", w, x)

    def forward(self, x, *, generator=None):
        pixels = x[0, 0].numel()
        ldj = torch.linalg.slogdet(self.weight).logabsdet * pixels
        return self._mix(self.weight, x), ldj.expand(x.shape[0])

    def inverse(self, z, *, generator=None):
        return self._mix(torch.linalg.inv(self.weight), z)


class Permute(Transform):
    """A fixed permutation `π` of axis 1: `z_i = x_{π(i)}`, `log|det| = 0`."""

    def __init__(self, perm: Tensor) -> None:
        super().__init__()
        perm = torch.as_tensor(perm, dtype=torch.long)
        if perm.dim() != 1 or not torch.equal(perm.sort().values, torch.arange(len(perm))):
            raise ValueError(f"perm must be a permutation of 0..n-1, got {perm.tolist()}")
        self.register_buffer("perm", perm)
        self.register_buffer("inv_perm", torch.argsort(perm))

    def forward(self, x, *, generator=None):
        return x[:, self.perm], x.new_zeros(x.shape[0])

    def inverse(self, z, *, generator=None):
        return z[:, self.inv_perm]


class Reverse(Permute):
    """Reverse axis 1 (channels or features): `z_i = x_{n−1−i}`."""

    def __init__(self, n: int) -> None:
        super().__init__(torch.arange(n - 1, -1, -1))


class Squeeze(Transform):
    """Space to depth: `(B, C, H, W) → (B, 4C, H/2, W/2)`, `log|det| = 0`."""

    def forward(self, x, *, generator=None):
        b, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"Squeeze needs even H and W, got {tuple(x.shape)}")
        z = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)  # (B, C, 2, 2, h, w)
        return z.reshape(b, 4 * c, h // 2, w // 2), x.new_zeros(b)

    def inverse(self, z, *, generator=None):
        b, c4, h, w = z.shape
        x = z.reshape(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)  # (B, C, h, 2, w, 2)
        return x.reshape(b, c4 // 4, 2 * h, 2 * w)


class Reshape(Transform):
    """`(B, *in_shape) → (B, *out_shape)` with the same entries in the same order, `log|det| = 0`.

    E.g. a point cloud `(B, N, d)` → a vector `(B, N·d)` for couplings over all coordinates.
    """

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int]) -> None:
        super().__init__()
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        if math.prod(self.in_shape) != math.prod(self.out_shape):
            raise ValueError(
                f"in_shape {self.in_shape} and out_shape {self.out_shape} differ in size"
            )

    def forward(self, x, *, generator=None):
        if tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(f"Reshape expects (B, *{self.in_shape}), got {tuple(x.shape)}")
        return x.reshape(x.shape[0], *self.out_shape), x.new_zeros(x.shape[0])

    def inverse(self, z, *, generator=None):
        return z.reshape(z.shape[0], *self.in_shape)


class Logit(Transform):
    """`(0, 1) → ℝ`: `y = α + (1−2α)x`, `z = log y − log(1−y)`.

    `log|det| = Σ [log(1−2α) − log y − log(1−y)]`; `α` keeps values away from 0 and 1.
    """

    def __init__(self, alpha: float = 0.0) -> None:
        super().__init__()
        if not 0 <= alpha < 0.5:
            raise ValueError(f"alpha must be in [0, 0.5), got {alpha!r}")
        self.alpha = alpha

    def forward(self, x, *, generator=None):
        y = self.alpha + (1 - 2 * self.alpha) * x
        z = torch.log(y) - torch.log1p(-y)
        return z, sum_event(math.log(1 - 2 * self.alpha) - torch.log(y) - torch.log1p(-y))

    def inverse(self, z, *, generator=None):
        return (torch.sigmoid(z) - self.alpha) / (1 - 2 * self.alpha)


class Sigmoid(Transform):
    """`ℝ → (0, 1)`: `z = σ(x)`, `log|det| = Σ log σ(x) + log(1−σ(x)) = −Σ softplus(±x)`."""

    def forward(self, x, *, generator=None):
        return torch.sigmoid(x), -sum_event(F.softplus(x) + F.softplus(-x))

    def inverse(self, z, *, generator=None):
        return torch.log(z) - torch.log1p(-z)


class Cast(Transform):
    """The identity map computed in another precision: `z = x` as `dtype`, `log|det| = 0`.

    Lets layers whose bookkeeping needs float64 (sorting near-ties, `Increments`) run before
    a float32 body; `inverse` returns the input's dtype (float64 unless `inverse_dtype`).
    """

    def __init__(self, dtype: torch.dtype, *, inverse_dtype: torch.dtype = torch.float64):
        super().__init__()
        if not (dtype.is_floating_point and inverse_dtype.is_floating_point):
            raise ValueError(f"dtypes must be floating point, got {dtype}, {inverse_dtype}")
        self.dtype, self.inverse_dtype = dtype, inverse_dtype

    def forward(self, x, *, generator=None):
        return x.to(self.dtype), x.new_zeros(x.shape[0], dtype=self.dtype)

    def inverse(self, z, *, generator=None):
        return z.to(self.inverse_dtype)


class ScalarAffine(Transform):
    """`z = (x + shift)·scale` elementwise, `log|det| = D·log|scale|` (`D` = event size)."""

    def __init__(self, *, shift: float = 0.0, scale: float = 1.0) -> None:
        super().__init__()
        if scale == 0 or not math.isfinite(scale):
            raise ValueError(f"scale must be finite and nonzero, got {scale!r}")
        self.shift, self.scale = float(shift), float(scale)

    def forward(self, x, *, generator=None):
        ldj = x.new_full((x.shape[0],), x[0].numel() * math.log(abs(self.scale)))
        return (x + self.shift) * self.scale, ldj

    def inverse(self, z, *, generator=None):
        return z / self.scale - self.shift


def _log_expm1(x: Tensor) -> Tensor:
    # log(eˣ − 1) = x + log(1 − e⁻ˣ): finite for large x, where expm1 overflows
    return x + torch.log(-torch.expm1(-x))


class InverseSoftplus(Transform):
    """`(0, ∞) → ℝ`: `z = log(eˣ − 1)`, `log|det| = −Σ log(1 − e⁻ˣ)`.

    Puts the output of an abs surjection back on all of ℝ^D, so that a flow after it with a
    Gaussian base is a normalised density on the positive orthant.
    """

    def forward(self, x, *, generator=None):
        return _log_expm1(x), -sum_event(torch.log(-torch.expm1(-x)))

    def inverse(self, z, *, generator=None):
        return F.softplus(z)


class Increments(Transform):
    """Sorted sequences → ℝ^N: `z_1 = x_1`, `z_i = log(e^{δ_i} − 1)`, `δ_i = x_i − x_{i−1} > 0`.

    `x`: `(B, N)` increasing along axis 1, or `(B, N, d)` increasing in coordinate `key`
    (the other coordinates pass unchanged). The Jacobian is triangular with diagonal
    `1, 1/(1 − e^{−δ_2}), …`, so `log|det| = −Σ_{i≥2} log(1 − e^{−δ_i})`. After a sort
    surjection it makes a flow with a Gaussian base a normalised density on the sorted cone.
    """

    def __init__(self, *, key: int = 0) -> None:
        super().__init__()
        self.key = key

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        return (x, None) if x.dim() == 2 else (x[..., self.key], x)

    def _join(self, v: Tensor, full: Tensor | None) -> Tensor:
        if full is None:
            return v
        out = full.clone()
        out[..., self.key] = v
        return out

    def forward(self, x, *, generator=None):
        v, full = self._split(x)  # v: (B, N)
        delta = v[:, 1:] - v[:, :-1]
        z = torch.cat([v[:, :1], _log_expm1(delta)], 1)
        return self._join(z, full), -torch.log(-torch.expm1(-delta)).sum(1)

    def inverse(self, z, *, generator=None):
        v, full = self._split(z)
        x = torch.cat([v[:, :1], v[:, :1] + F.softplus(v[:, 1:]).cumsum(1)], 1)
        return self._join(x, full)


def _normal(*shape: int) -> object:
    return lambda n, g: torch.randn(n, *shape, generator=g)


def _sorted_points(x: Tensor) -> Tensor:
    return torch.gather(x, 1, x[..., :1].argsort(1).expand_as(x))


def _register() -> None:
    specs = {
        "affine-coupling": (lambda: AffineCoupling(4, hidden=(8,)), _normal(4)),
        "affine-coupling-mask": (
            lambda: AffineCoupling(4, hidden=(8,), mask=torch.tensor([1, 0, 1, 0])),
            _normal(4),
        ),
        "conv-affine-coupling": (lambda: ConvAffineCoupling(3, hidden=4), _normal(3, 2, 2)),
        "actnorm": (lambda: ActNorm(3), _normal(3, 2, 2)),
        "conv1x1": (
            lambda: Conv1x1(3, generator=torch.Generator().manual_seed(0)),
            _normal(3, 2, 2),
        ),
        "permute": (lambda: Permute(torch.tensor([2, 0, 3, 1])), _normal(4)),
        "reverse": (lambda: Reverse(3), _normal(3, 2, 2)),
        "squeeze": (lambda: Squeeze(), _normal(1, 2, 4)),
        "reshape": (lambda: Reshape((3, 2), (6,)), _normal(3, 2)),
        "cast": (lambda: Cast(torch.float64), _normal(3)),
        "point-coupling-channel": (
            lambda: PointCoupling(5, 2, "channel", hidden=4, kernel=3),
            _normal(5, 2),
        ),
        "point-coupling-parity": (
            lambda: PointCoupling(5, 3, "parity-odd", hidden=4, kernel=3),
            _normal(5, 3),
        ),
        "logit": (lambda: Logit(0.05), lambda n, g: torch.rand(n, 3, generator=g) * 0.98 + 0.01),
        "sigmoid": (lambda: Sigmoid(), _normal(3)),
        "scalar-affine": (lambda: ScalarAffine(shift=-0.5, scale=2.0), _normal(1, 2, 2)),
        "inverse-softplus": (
            lambda: InverseSoftplus(),
            lambda n, g: torch.rand(n, 3, generator=g) * 3 + 0.05,
        ),
        "increments": (
            lambda: Increments(),
            lambda n, g: torch.randn(n, 4, generator=g).sort(1).values,
        ),
        "increments-points": (
            lambda: Increments(key=0),
            lambda n, g: _sorted_points(torch.randn(n, 3, 2, generator=g)),
        ),
    }
    for name, (build, sample) in specs.items():
        TRANSFORMS.register(name, TransformSpec(build, sample))


_register()
