"""CLAPP: layer-local contrastive predictive plasticity (Illing, Ventura, Bellec & Gerstner 2021).

Paper: https://arxiv.org/abs/2010.08262 (NeurIPS 2021).

Every layer l of an encoder sees its input *detached*, maps each patch to a feature map
h = ρ(a), a = W * x + b, and pools it to a vector z (one per patch of the image grid). For an
offset k the context c is the layer's pooled output at grid row i and the future z its output
at row i + k of the same column; the score is

    u = zᵀ W_pred,k c,

one W_pred per offset k. With y = +1 for the true future of the same image and y = −1 for the
future of another image of the batch at the same location, the layer's hinge loss is

    L = (1/N) Σ m · max(0, 1 − y u),

m ∈ {0, 1} choosing which terms a sample updates (CLAPP: one of the two with p = ½;
CLAPP-s: both). Writing the third factor γ = y · 𝟙[y u < 1] (Eq. 6–8 of the paper), the
plasticity rule −∂L/∂θ is, summed over the samples,

    ΔW_pred,k ∝ γ z cᵀ
    ΔW_ji     ∝ γ [(W_pred c)_j ρ′(a_j) x_i + (W_predᵀ z)_j ρ′(a_j^past) x_i^past],

and for a conv layer the same products are taken at every output position of the patch,
weighted 1/P by the mean pool over its P positions. `clapp_update` computes these products by
hand (no autograd); `clapp_loss` is the loss whose autograd gradient they equal.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BIBTEX",
    "PAPER",
    "ClappEncoder",
    "ClappLayer",
    "clapp_loss",
    "clapp_masks",
    "clapp_update",
    "end_to_end_loss",
    "infonce_loss",
    "negative_index",
    "patchify",
]

PAPER = (
    "Illing, Ventura, Bellec & Gerstner, Local plasticity rules can learn deep representations "
    "using self-supervised contrastive predictions, NeurIPS 2021 (arXiv 2010.08262)"
)
BIBTEX = """@inproceedings{illing2021local,
  title     = {Local plasticity rules can learn deep representations using self-supervised
               contrastive predictions},
  author    = {Illing, Bernd and Ventura, Jean and Bellec, Guillaume and Gerstner, Wulfram},
  booktitle = {Advances in Neural Information Processing Systems},
  volume    = {34},
  year      = {2021},
  note      = {arXiv:2010.08262}
}"""


def patchify(images: torch.Tensor, *, size: int, stride: int) -> torch.Tensor:
    """Cut images into a grid of overlapping square patches.

    images (B, C, H, W) -> (B, Gh, Gw, C, size, size), Gh = (H − size) // stride + 1.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if size < 1 or stride < 1 or size > min(images.shape[-2:]):
        raise ValueError(f"size={size}, stride={stride} do not fit images {tuple(images.shape)}")
    p = images.unfold(2, size, stride).unfold(3, size, stride)  # (B, C, Gh, Gw, s, s)
    return p.permute(0, 2, 3, 1, 4, 5).contiguous()


class ClappLayer(nn.Module):
    """One layer trained by its own CLAPP loss: conv (k×k, stride, padding) or linear, then ReLU.

    Input per patch: (C_in, H, W) for conv, (C_in,) for linear. `w_pred` is (K, C_out, C_out),
    one predictor per offset k = 1..K.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kind: str = "conv",
        kernel: int = 3,
        stride: int = 1,
        padding: int = 1,
        offsets: int = 3,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if kind not in ("conv", "linear"):
            raise ValueError(f"kind must be 'conv' or 'linear', got {kind!r}")
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels)):
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        if offsets < 1:
            raise ValueError(f"offsets must be >= 1, got {offsets}")
        self.kind = kind
        self.kernel, self.stride, self.padding = (
            (kernel, stride, padding) if kind == "conv" else (1, 1, 0)
        )
        fan_in = in_channels * self.kernel**2
        shape = (out_channels, in_channels) + ((kernel, kernel) if kind == "conv" else ())
        bound = 1.0 / fan_in**0.5
        w = (torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1) * bound * 3**0.5
        self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(torch.zeros(out_channels, dtype=dtype))
        wp = torch.randn(offsets, out_channels, out_channels, generator=generator, dtype=dtype)
        self.w_pred = nn.Parameter(wp / out_channels**0.5)

    @property
    def offsets(self) -> int:
        return int(self.w_pred.shape[0])

    def _as_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """(B, Gh, Gw, *patch) -> (B·Gh·Gw, C_in, H, W) and the grid (B, Gh, Gw)."""
        b, gh, gw = x.shape[:3]
        n = b * gh * gw
        maps = x.reshape(n, *x.shape[3:])
        if self.kind == "linear":
            maps = maps.reshape(n, -1, 1, 1)
        return maps, (b, gh, gw)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, Gh, Gw, *patch) -> (feature maps h (B, Gh, Gw, C_out, H', W') [linear:
        (B, Gh, Gw, C_out)], pooled z (B, Gh, Gw, C_out)); autograd-friendly."""
        maps, (b, gh, gw) = self._as_maps(x)
        w = self.weight if self.kind == "conv" else self.weight[:, :, None, None]
        h = F.relu(F.conv2d(maps, w, self.bias, stride=self.stride, padding=self.padding))
        z = h.mean((-2, -1)).reshape(b, gh, gw, -1)
        h = h.reshape(b, gh, gw, *h.shape[1:])
        return (h.flatten(3) if self.kind == "linear" else h), z


def negative_index(batch: int, *, generator: torch.Generator) -> torch.Tensor:
    """For each image b another image π(b) ≠ b of the batch (a random non-zero cyclic shift)."""
    if batch < 2:
        raise ValueError(f"batch must be >= 2 to draw negatives, got {batch}")
    shift = int(torch.randint(1, batch, (1,), generator=generator))
    return (torch.arange(batch) + shift) % batch


def clapp_masks(
    offsets: int,
    batch: int,
    rows: int,
    cols: int,
    *,
    variant: str,
    generator: torch.Generator | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(m⁺, m⁻) per offset k, each (B, Gh − k, Gw): CLAPP draws m⁺ ~ Bernoulli(½), m⁻ = 1 − m⁺;
    CLAPP-s sets both to 1."""
    if variant not in ("clapp", "clapp-s"):
        raise ValueError(f"variant must be 'clapp' or 'clapp-s', got {variant!r}")
    out = []
    for k in range(1, offsets + 1):
        shape = (batch, rows - k, cols)
        if variant == "clapp-s":
            out.append((torch.ones(shape), torch.ones(shape)))
        else:
            pos = (torch.rand(shape, generator=generator) < 0.5).float()
            out.append((pos, 1 - pos))
    return out


def _check(z: torch.Tensor, neg: torch.Tensor, masks, offsets: int) -> None:
    if z.shape[1] <= offsets:
        raise ValueError(f"grid has {z.shape[1]} rows: too few for offsets 1..{offsets}")
    if neg.shape != (z.shape[0],):
        raise ValueError(f"neg must be ({z.shape[0]},), got {tuple(neg.shape)}")
    if len(masks) != offsets:
        raise ValueError(f"masks must hold one (m⁺, m⁻) per offset ({offsets}), got {len(masks)}")


def _hinge(z: torch.Tensor, w_pred: torch.Tensor, neg: torch.Tensor, masks) -> torch.Tensor:
    """The mean hinge loss over every (k, b, i, j) sample from pooled outputs z (B, Gh, Gw, C)."""
    total, count = z.new_zeros(()), 0
    for k in range(1, w_pred.shape[0] + 1):
        c, fut = z[:, :-k], z[:, k:]  # (B, Gh−k, Gw, C)
        pred = c @ w_pred[k - 1].T  # W_pred,k c
        u_pos = (fut * pred).sum(-1)
        u_neg = (fut[neg] * pred).sum(-1)
        m_pos, m_neg = (m.to(z) for m in masks[k - 1])
        total = total + (m_pos * F.relu(1 - u_pos)).sum() + (m_neg * F.relu(1 + u_neg)).sum()
        count += u_pos.numel()
    return total / count


def clapp_loss(
    layer: ClappLayer, x: torch.Tensor, *, neg: torch.Tensor, masks
) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer-local hinge loss on *detached* input x (B, Gh, Gw, *patch); returns (loss, h).

    No gradient of this loss reaches whatever produced x.
    """
    h, z = layer(x.detach())
    _check(z, neg, masks, layer.offsets)
    return _hinge(z, layer.w_pred, neg, masks), h


def end_to_end_loss(
    layers: Sequence[ClappLayer], x: torch.Tensor, *, neg: torch.Tensor, masks
) -> torch.Tensor:
    """Hinge-CPC trained end to end: the same hinge loss at the last layer, with gradients
    through every layer below it."""
    h = x
    for layer in layers:
        h, z = layer(h)
    _check(z, neg, masks, layers[-1].offsets)
    return _hinge(z, layers[-1].w_pred, neg, masks)


def infonce_loss(layer: ClappLayer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy-InfoMax-style layer-local InfoNCE: each context scores the futures of all B images
    at the same location; cross-entropy towards its own. Returns (loss, h)."""
    h, z = layer(x.detach())
    total, count = z.new_zeros(()), 0
    for k in range(1, layer.offsets + 1):
        pred = z[:, :-k] @ layer.w_pred[k - 1].T  # (B, R, Gw, C)
        scores = torch.einsum("brjc,drjc->rjbd", pred, z[:, k:])  # (R, Gw, B, B)
        target = torch.arange(z.shape[0]).expand(*scores.shape[:2], -1)
        total = total + F.cross_entropy(scores.flatten(0, 2), target.flatten(), reduction="sum")
        count += scores.shape[0] * scores.shape[1] * scores.shape[2]
    return total / count, h


@torch.no_grad()
def clapp_update(
    layer: ClappLayer, x: torch.Tensor, *, neg: torch.Tensor, masks
) -> tuple[dict[str, torch.Tensor], torch.Tensor, float]:
    """The plasticity rule −∂L/∂θ of `clapp_loss`, computed by hand (no autograd).

    x (B, Gh, Gw, *patch). Returns ({"weight", "bias", "w_pred"} shaped like the parameters,
    h the layer's output for the next layer, the loss value).
    """
    maps, (b, gh, gw) = layer._as_maps(x)
    kk = layer.kernel
    cols = F.unfold(maps, kk, padding=layer.padding, stride=layer.stride)  # (N, C_in·k², P)
    w = layer.weight.reshape(layer.weight.shape[0], -1)  # (C_out, C_in·k²)
    a = w @ cols + layer.bias[:, None]  # (N, C_out, P)
    h = a.clamp_min(0)
    z = h.mean(-1).reshape(b, gh, gw, -1)  # (B, Gh, Gw, C_out)
    _check(z, neg, masks, layer.offsets)
    e = torch.zeros_like(z)  # −∂L/∂z: the prediction/retrodiction each pooled output receives
    d_pred = torch.zeros_like(layer.w_pred)
    loss, count = 0.0, sum(z[:, k:].numel() // z.shape[-1] for k in range(1, layer.offsets + 1))
    for k in range(1, layer.offsets + 1):
        wk = layer.w_pred[k - 1]
        c, fut = z[:, :-k], z[:, k:]
        fut_neg = fut[neg]
        pred, m_pos, m_neg = c @ wk.T, *(m.to(z) for m in masks[k - 1])
        u_pos, u_neg = (fut * pred).sum(-1), (fut_neg * pred).sum(-1)
        g_pos = m_pos * (u_pos < 1).to(z) / count  # γ with y = +1
        g_neg = -m_neg * (u_neg > -1).to(z) / count  # γ with y = −1: 𝟙[−u < 1]
        loss += float((m_pos * (1 - u_pos).clamp_min(0)).sum())
        loss += float((m_neg * (1 + u_neg).clamp_min(0)).sum())
        target = g_pos[..., None] * fut + g_neg[..., None] * fut_neg  # Σ γ z, per context
        d_pred[k - 1] = torch.einsum("brjc,brjd->cd", target, c)  # γ z cᵀ
        e[:, :-k] += target @ wk  # (W_predᵀ z) γ, at the context
        e[:, k:] += g_pos[..., None] * pred  # (W_pred c) γ, at the true future
        e[:, k:].index_add_(0, neg, g_neg[..., None] * pred)  # ... and at the negative's
    p = a.shape[-1]
    post = e.reshape(-1, e.shape[-1], 1) / p * (a > 0).to(a)  # (N, C_out, P): e_j ρ′(a_j) / P
    d_w = torch.einsum("nop,nip->oi", post, cols).reshape(layer.weight.shape)  # post · x_i
    if layer.kind == "linear":
        h = h.reshape(b, gh, gw, -1)  # (B, Gh, Gw, C_out)
    else:
        h = h.reshape(b, gh, gw, h.shape[1], *_out_hw(layer, maps))  # (B, Gh, Gw, C_out, H', W')
    return {"weight": d_w, "bias": post.sum((0, 2)), "w_pred": d_pred}, h, loss / count


def _out_hw(layer: ClappLayer, maps: torch.Tensor) -> tuple[int, int]:
    k, s, pad = layer.kernel, layer.stride, layer.padding
    return tuple((n + 2 * pad - k) // s + 1 for n in maps.shape[-2:])  # type: ignore[return-value]


class ClappEncoder(nn.Module):
    """A stack of `ClappLayer`s applied per patch; `features` returns every layer's pooled z."""

    def __init__(
        self,
        channels: Sequence[int],
        *,
        in_channels: int = 1,
        strides: Sequence[int] | None = None,
        offsets: int = 3,
        kind: str = "conv",
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if not channels:
            raise ValueError("channels must name at least one layer")
        strides = list(strides) if strides is not None else [1] * len(channels)
        if len(strides) != len(channels):
            raise ValueError(f"strides {strides} must match channels {list(channels)}")
        ins = [in_channels, *channels[:-1]]
        self.layers = nn.ModuleList(
            ClappLayer(
                i, o, kind=kind, stride=s, offsets=offsets, generator=generator, dtype=dtype
            )
            for i, o, s in zip(ins, channels, strides, strict=True)
        )

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (B, Gh, Gw, *patch) -> per layer pooled z (B, Gh, Gw, C_l)."""
        out = []
        for layer in self.layers:
            x, z = layer(x)
            out.append(z)
        return out
