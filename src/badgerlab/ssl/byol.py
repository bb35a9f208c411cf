"""BYOL (Grill et al. 2020, https://arxiv.org/abs/2006.07733): bootstrap your own latent, with
the SimCLR baseline it is contrasted with and a collapse monitor.

Online network f_θ → g_θ → q_θ (encoder, projector, predictor); target network f_ξ → g_ξ, with
no predictor and no gradient. For two views v, v′ of one image,

    z = g_θ(f_θ(v)),  p = q_θ(z),  z′ = g_ξ(f_ξ(v′)),
    ℓ(p, z′) = ‖p̄ − z̄′‖² = 2 − 2·⟨p, z′⟩ / (‖p‖·‖z′‖)      (x̄ = x / ‖x‖),
    L = ℓ(q_θ(z₁), sg(z′₂)) + ℓ(q_θ(z₂), sg(z′₁))            (symmetrised over the views),

and after every optimiser step on θ the target follows by an exponential moving average,

    ξ ← τ_k ξ + (1 − τ_k) θ,   τ_k = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2,

applied to the parameters *and* the buffers (BatchNorm running statistics). τ_0 = τ_base and
τ_K = 1. With the predictor removed the loss is minimised by a constant output (collapse), which
`collapse_monitor` detects: the per-dimension std of the ℓ2-normalised projections is ≈ 1/√d for
a healthy, spread-out batch and → 0 when every image maps to the same point.

SimCLR's NT-Xent (Chen et al. 2020, https://arxiv.org/abs/2002.05709) uses negatives instead:
for the 2N normalised projections u_i and temperature t,

    ℓ_i = −log exp(u_i·u_j(i)/t) / Σ_{k≠i} exp(u_i·u_k/t),   j(i) the other view of image i.
"""

from __future__ import annotations

import copy
import math

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from badgerlab import ddp

__all__ = [
    "BIBTEX",
    "BYOL",
    "PAPER",
    "SMALL_CNN",
    "Augment",
    "SimCLR",
    "byol_loss",
    "collapse_monitor",
    "ema_update",
    "encoder",
    "mlp",
    "nt_xent",
    "regression_loss",
    "tau_schedule",
]

PAPER = (
    "Grill et al., Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning, "
    "NeurIPS 2020 (arXiv 2006.07733)"
)
BIBTEX = """@inproceedings{grill2020byol,
  title={Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning},
  author={Grill, Jean-Bastien and Strub, Florian and Altch{\\'e}, Florent and Tallec, Corentin
    and Richemond, Pierre H. and Buchatskaya, Elena and Doersch, Carl and Pires, Bernardo Avila
    and Guo, Zhaohan Daniel and Azar, Mohammad Gheshlaghi and Piot, Bilal and Kavukcuoglu, Koray
    and Munos, R{\\'e}mi and Valko, Michal},
  booktitle={Advances in Neural Information Processing Systems},
  year={2020}
}"""

SMALL_CNN = "small-cnn"


def _check_pos_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def _check_unit(name: str, value: object) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not 0.0 <= value <= 1.0:  # NaN fails the comparison too
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_pairs(names: tuple[str, ...], *xs: Tensor) -> None:
    """Every x is (B, d), all the same shape, and finite."""
    shapes = [tuple(x.shape) for x in xs]
    if xs[0].dim() != 2 or len(set(shapes)) != 1:
        raise ValueError(f"{', '.join(names)} must all be (B, d) of one shape, got {shapes}")
    for name, x in zip(names, xs, strict=True):
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} has non-finite entries")


def tau_schedule(k: int, total: int, *, tau_base: float = 0.996) -> float:
    """τ_k = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2 for step k of K: τ_base at k = 0, 1 at k = K.

    >>> tau_schedule(0, 10), tau_schedule(10, 10)
    (0.996, 1.0)
    """
    _check_pos_int("total", total)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= total:
        raise ValueError(f"k must be an int in [0, total={total}], got {k!r}")
    _check_unit("tau_base", tau_base)
    return 1.0 - (1.0 - tau_base) * (math.cos(math.pi * k / total) + 1.0) / 2.0


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """ξ ← τξ + (1 − τ)θ for every parameter and floating-point buffer (BatchNorm running mean
    and variance); integer buffers (`num_batches_tracked`) are copied. The two modules must
    have the same structure (the target a deep copy of the online module)."""
    tau = _check_unit("tau", tau)
    tp, op = dict(target.named_parameters()), dict(online.named_parameters())
    tb, ob = dict(target.named_buffers()), dict(online.named_buffers())
    if tp.keys() != op.keys() or tb.keys() != ob.keys():
        raise ValueError("target and online modules have different parameters or buffers")
    for name in op:
        if tp[name].shape != op[name].shape:
            raise ValueError(f"target and online {name!r} differ in shape")
        tp[name].lerp_(op[name], 1.0 - tau)  # ξ + (1 − τ)(θ − ξ) = τξ + (1 − τ)θ
    for name in ob:
        if tb[name].is_floating_point():
            tb[name].lerp_(ob[name], 1.0 - tau)
        else:
            tb[name].copy_(ob[name])


def regression_loss(p: Tensor, z: Tensor) -> Tensor:
    """ℓ(p, z) = ‖p̄ − z̄‖² = 2 − 2·cos(p, z) per row; p, z (B, d) → (B,)."""
    _check_pairs(("p", "z"), p, z)
    return 2.0 - 2.0 * F.cosine_similarity(p, z, dim=-1, eps=1e-8)


def byol_loss(p1: Tensor, p2: Tensor, z1t: Tensor, z2t: Tensor) -> Tensor:
    """Symmetrised BYOL loss, batch mean: ℓ(p₁, sg(z′₂)) + ℓ(p₂, sg(z′₁)); all (B, d) → ().

    p₁, p₂ are the online predictions of views 1 and 2, z1t, z2t the target projections of the
    same views; the targets are detached here, so no gradient reaches them whatever the caller
    did."""
    _check_pairs(("p1", "p2", "z1t", "z2t"), p1, p2, z1t, z2t)
    return (regression_loss(p1, z2t.detach()) + regression_loss(p2, z1t.detach())).mean()


def nt_xent(z1: Tensor, z2: Tensor, *, temperature: float = 0.2) -> Tensor:
    """SimCLR's NT-Xent over the 2B projections of B pairs, mean over the 2B anchors.
    z1, z2 (B, d) → ()."""
    if not temperature > 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    _check_pairs(("z1", "z2"), z1, z2)
    if z1.shape[0] < 2:
        raise ValueError(f"z1, z2 need B >= 2 pairs (negatives), got {tuple(z1.shape)}")
    b = z1.shape[0]
    u = F.normalize(torch.cat([z1, z2]), dim=1)  # (2B, d)
    sim = u @ u.T / temperature  # (2B, 2B)
    sim = sim.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=u.device), float("-inf"))
    pos = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(u.device)  # (2B,)
    return F.cross_entropy(sim, pos)


@torch.no_grad()
def collapse_monitor(z: Tensor) -> dict[str, float]:
    """Collapse statistics of a batch of projections z (B, d):

    - `z_std`: mean over dimensions of the std over the batch of z̄ = z/‖z‖ (≈ 1/√d healthy,
      → 0 collapsed), and `z_std_sqrt_d` = √d·z_std (≈ 1 healthy);
    - `eff_rank`: exp of the entropy of the normalised singular values σ_k/Σσ of the centred
      batch of z̄ (Roy & Vetterli 2007): ≈ min(B, d) for an isotropic batch, 1 for a batch on a
      line, 0 when every row is the same point."""
    if z.dim() != 2 or z.shape[0] < 2:
        raise ValueError(f"z must be (B >= 2, d), got {tuple(z.shape)}")
    if not bool(torch.isfinite(z).all()):
        raise ValueError("z has non-finite entries")
    zn = F.normalize(z.double(), dim=1)
    std = float(zn.std(dim=0).mean())
    s = torch.linalg.svdvals(zn - zn.mean(0))
    p = s / s.sum().clamp_min(1e-300)
    ent = -(p * p.clamp_min(1e-300).log()).sum()
    rank = float(ent.exp()) if float(s.sum()) > 1e-12 else 0.0
    return {"z_std": std, "z_std_sqrt_d": std * math.sqrt(z.shape[1]), "eff_rank": rank}


def mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    """Linear → BatchNorm → ReLU → Linear: BYOL's projector and predictor (paper: 4096, 256)."""
    return nn.Sequential(
        nn.Linear(d_in, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, d_out),
    )


class _Block(nn.Module):
    """ResNet basic block: two 3×3 convs with BatchNorm and an identity (or 1×1) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(c_out)
        self.c2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(c_out)
        self.short = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.short = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b2(self.c2(h)) + self.short(x))


def _resnet18(channels: int) -> nn.Sequential:
    """ResNet-18 for 32×32 images (3×3 stem, no max-pool, as in CIFAR BYOL/SimCLR ports)."""
    layers: list[nn.Module] = [
        nn.Conv2d(channels, 64, 3, 1, 1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
    ]
    c = 64
    for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [_Block(c, width, stride), _Block(width, width, 1)]
        c = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]  # (B, 512)
    return nn.Sequential(*layers)


def encoder(kind: str, channels: int, *, width: int = 32) -> tuple[nn.Module, int]:
    """(encoder f, its feature size): `small-cnn` (three 3×3 conv–BN–ReLU layers, 2× pool, global
    average pool; width, 2·width, 4·width channels) or `resnet18` (512 features)."""
    _check_pos_int("channels", channels)
    _check_pos_int("width", width)
    if kind == "resnet18":
        return _resnet18(channels), 512
    if kind != SMALL_CNN:
        raise ValueError(f"kind must be '{SMALL_CNN}' or 'resnet18', got {kind!r}")
    w = width
    net = nn.Sequential(
        nn.Conv2d(channels, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
        nn.Conv2d(w, 2 * w, 3, 1, 1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),  # (B, 2w, H/2, W/2)
        nn.Conv2d(2 * w, 4 * w, 3, 1, 1, bias=False), nn.BatchNorm2d(4 * w), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # (B, 4w)
    )  # fmt: skip
    return net, 4 * w


class BYOL(nn.Module):
    """Online encoder + projector (+ predictor unless `predictor=False`) and an EMA target copy
    of encoder + projector. `loss(v1, v2)` returns (L, z₁) with z₁ the online projection of the
    first view (for the collapse monitor); call `update_target(tau)` after each optimiser step.
    """

    def __init__(
        self, encoder: nn.Module, feat_dim: int, *, hidden: int = 256, out: int = 64,
        predictor: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        self.encoder = encoder
        self.projector = mlp(feat_dim, hidden, out)
        self.predictor = mlp(out, hidden, out) if predictor else nn.Identity()
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)

    def online_parameters(self) -> list[nn.Parameter]:
        """θ: what the optimiser updates (the target's ξ is excluded)."""
        mods = (self.encoder, self.projector, self.predictor)
        return [p for m in mods for p in m.parameters()]

    def loss(self, v1: Tensor, v2: Tensor) -> tuple[Tensor, Tensor]:
        """Views (B, C, H, W) each → (symmetrised loss (), online projection z₁ (B, out))."""
        z = self.projector(self.encoder(torch.cat([v1, v2])))  # (2B, out)
        p1, p2 = self.predictor(z).chunk(2)
        with torch.no_grad():
            zt1, zt2 = self.target_projector(self.target_encoder(torch.cat([v1, v2]))).chunk(2)
        return byol_loss(p1, p2, zt1, zt2), z[: len(v1)]

    def update_target(self, tau: float) -> None:
        """ξ ← τξ + (1 − τ)θ for encoder and projector, parameters and buffers."""
        ema_update(self.target_encoder, self.encoder, tau)
        ema_update(self.target_projector, self.projector, tau)


class SimCLR(nn.Module):
    """Encoder + projector trained by NT-Xent; `loss(v1, v2)` returns (L, z₁) like `BYOL`."""

    def __init__(
        self, encoder: nn.Module, feat_dim: int, *, hidden: int = 256, out: int = 64,
        temperature: float = 0.2,
    ) -> None:  # fmt: skip
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.encoder = encoder
        self.projector = mlp(feat_dim, hidden, out)
        self.temperature = temperature

    def online_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())

    def loss(self, v1: Tensor, v2: Tensor) -> tuple[Tensor, Tensor]:
        z1, z2 = self.projector(self.encoder(torch.cat([v1, v2]))).chunk(2)  # (B, out) each
        # Under a process group the negatives are every rank's batch: NT-Xent over the
        # gathered (W·B, out) projections, the same loss on every rank.
        g1, g2 = ddp.all_gather_cat(z1), ddp.all_gather_cat(z2)
        return nt_xent(g1, g2, temperature=self.temperature), z1

    def update_target(self, tau: float) -> None:
        """No target network: a no-op, so both methods share one training loop."""


class Augment(nn.Module):
    """Two BYOL-style views of a batch with kornia, on the batch's device: random resized crop,
    horizontal flip (off by default for digits), brightness/contrast jitter (plus saturation and
    hue when the images have colour), grey-scale (colour only), Gaussian blur and solarisation.

    All randomness comes from `generator`: its draw seeds the global RNG that kornia samples its
    parameters from (on the CPU), inside `torch.random.fork_rng`, so the caller's RNG state is
    untouched and runs resume bit-exactly.

    Departure from the paper: both views use the same distribution (the paper blurs view 1 always
    and view 2 with p = 0.1, and solarises only view 2, p = 0.2), and the crop scale starts at 0.5
    rather than 0.08, since an 8×8 digit cropped to 8% of its area is a couple of pixels.
    """

    def __init__(
        self, size: tuple[int, int], channels: int, *,
        crop_scale: tuple[float, float] = (0.5, 1.0), flip: bool = False, jitter: float = 0.4,
        blur_p: float = 0.5, solarize_p: float = 0.1,
    ) -> None:  # fmt: skip
        super().__init__()
        if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) for s in size):
            raise ValueError(f"size must be (H, W) ints, got {size!r}")
        _check_pos_int("size[0]", size[0])
        _check_pos_int("size[1]", size[1])
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        if not 0.0 < crop_scale[0] <= crop_scale[1] <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {crop_scale!r}")
        for name, v in (("jitter", jitter), ("blur_p", blur_p), ("solarize_p", solarize_p)):
            _check_unit(name, v)
        self.size, self.channels = (int(size[0]), int(size[1])), channels
        colour = channels == 3
        k = max(3, (min(size) // 10) | 1)  # odd blur kernel, ~10% of the image side
        ops: list[nn.Module] = [K.RandomResizedCrop(size, scale=crop_scale)]
        if flip:
            ops.append(K.RandomHorizontalFlip())
        sat, hue = (jitter, 0.1) if colour else (0.0, 0.0)
        ops.append(K.ColorJitter(jitter, jitter, sat, hue, p=0.8))
        if colour:
            ops.append(K.RandomGrayscale(p=0.2))
        ops += [
            K.RandomGaussianBlur((k, k), (0.1, 2.0), p=blur_p),
            K.RandomSolarize(thresholds=0.0, additions=0.0, p=solarize_p),
        ]
        self.aug = nn.Sequential(*ops)

    def forward(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """x (B, C, H, W) in [0, 1] → two views, each (B, C, H, W) on x's device."""
        want = (self.channels, *self.size)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"x must be (B, {', '.join(map(str, want))}), got {tuple(x.shape)}")
        if not isinstance(generator, torch.Generator):
            kind = type(generator).__name__
            raise ValueError(f"generator must be a torch.Generator, got {kind}")
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            # seed only the RNGs that the fork restores (torch.manual_seed would reseed every
            # CUDA device, leaving the others changed after the fork)
            torch.default_generator.manual_seed(seed)
            if devices:
                torch.cuda.default_generators[x.device.index or 0].manual_seed(seed)
            # clamped: kornia's jitter and blur round a few pixels a ULP past 1
            return self.aug(x).clamp_(0.0, 1.0), self.aug(x).clamp_(0.0, 1.0)
