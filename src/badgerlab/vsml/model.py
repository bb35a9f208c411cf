"""The VSML RNN: grids of one shared tiny LSTM that pass forward and backward messages.

Kirsch & Schmidhuber, "Meta Learning Backpropagation And Improving It", NeurIPS 2021,
https://arxiv.org/abs/2012.14905 (section 3). A VSML layer of size A×B holds A·B copies of one
LSTM with parameters V shared by all cells; cell (a, b) keeps its own state s_ab = (h_ab, c_ab).
Per micro tick

    z_ab        = W_f m→_a + W_b m←_b + W_h h_ab + β            (4H gates, order i, f, o, g)
    c_ab        = σ(z_f + 5) ⊙ c_ab + σ(z_i − 5) ⊙ tanh(z_g)
    h_ab        = σ(z_o) ⊙ tanh(c_ab)

and after the last micro tick the layer sends

    m→'_b = 1/A Σ_a (U_f h_ab + u_f)      (B forward messages to the next layer)
    m←'_a = 1/B Σ_b (U_b h_ab + u_b)      (A backward messages to the previous layer).

The input x enters layer 1 as m→_a = [x_a, 0, …]; the error of the previous example enters the
last layer as m←_b = [∂CE/∂ŷ_b, y_b (optional), 0, …]; the prediction is ŷ_b = 100·tanh(m→'_b[1]
/ 100). Every function here is batched over a population axis P (one parameter set per member)
and a batch axis N (independent sequences); all A·B cells of a layer run as batched matmuls.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import logging
import math
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "EpisodeResult",
    "LayerState",
    "VSML",
    "VSMLConfig",
    "average_weight_half",
    "cross_entropy_error",
    "episode",
    "init_params",
    "init_state",
    "layer_step",
    "num_params",
    "param_shapes",
    "params_from_tensors",
    "population_size",
    "reference_cell",
    "reference_episode",
    "tick",
    "fused_is_built",
    "use_fused",
]


@dataclass(frozen=True)
class VSMLConfig:
    """The shared sub-LSTM and how the grid uses it (defaults are the reference's).

    `feed_label` adds the one-hot label to the error messages; `backward_pass` runs a second
    sweep from the last layer to the first after each example, with the error of *this* example
    (the reference's `backward_pass` option, used for backprop cloning), instead of delivering it
    with the next example. `logit_scale` κ multiplies the output message before the tanh bound
    (1 in the reference; backprop cloning uses it so that messages stay O(1)).

    `inner_batch` K: how many consecutive batch entries form one learner. K = 1 (default):
    every batch entry is an independent sequence. K > 1 (the reference's batch semantics): the
    K entries are one learner seeing a mini-batch of K examples per step: they start from one
    draw of the initial state, the first half of h and of c of every cell (the half that plays
    the role of weights) is averaged over the K entries before every example, and the error
    message is (softmax(ŷ) − onehot(y))/K, the gradient of the mini-batch's mean loss.
    """

    msg_size: int = 8
    state_size: int = 16
    micro_ticks: int = 2
    layer_norm: bool = False
    init_rand_proportion: float = 0.5
    tanh_bound: float = 100.0
    logit_scale: float = 1.0
    output_idx: int = 1
    feed_label: bool = False
    backward_pass: bool = False
    forget_bias: float = 5.0
    input_bias: float = -5.0
    inner_batch: int = 1

    def __post_init__(self) -> None:
        if self.msg_size < 2:
            raise ValueError(f"msg_size must be >= 2 (error and label slots), got {self.msg_size}")
        if self.state_size < 1:
            raise ValueError(f"state_size must be >= 1, got {self.state_size}")
        if self.micro_ticks < 1:
            raise ValueError(f"micro_ticks must be >= 1, got {self.micro_ticks}")
        if not 0.0 <= self.init_rand_proportion <= 1.0:
            raise ValueError(
                f"init_rand_proportion must be in [0, 1], got {self.init_rand_proportion}"
            )
        if not 0 <= self.output_idx < self.msg_size:
            raise ValueError(
                f"output_idx must be in 0..{self.msg_size - 1}, got {self.output_idx}"
            )
        if self.tanh_bound < 0:
            raise ValueError(f"tanh_bound must be >= 0 (0 disables it), got {self.tanh_bound}")
        if isinstance(self.inner_batch, bool) or not isinstance(self.inner_batch, int):
            raise ValueError(f"inner_batch must be an int >= 1, got {self.inner_batch!r}")
        if self.inner_batch < 1:
            raise ValueError(f"inner_batch must be >= 1, got {self.inner_batch}")

    def to_dict(self) -> dict:
        return asdict(self)


def param_shapes(cfg: VSMLConfig) -> dict[str, tuple[int, ...]]:
    """Shapes of the meta-parameters V (without a population axis).

    The LSTM's input matrix is split into the rows that read the forward message (`w_f`) and
    the backward message (`w_b`): a cell's input is their concatenation, so this is the same
    linear map, but the split lets a layer compute A + B input projections instead of A·B.
    """
    m, h = cfg.msg_size, cfg.state_size
    shapes = {
        "w_f": (m, 4 * h),
        "w_b": (m, 4 * h),
        "w_h": (h, 4 * h),
        "bias": (4 * h,),
        "head_f.weight": (h, m),
        "head_f.bias": (m,),
        "head_b.weight": (h, m),
        "head_b.bias": (m,),
    }
    if cfg.layer_norm:
        shapes |= {
            "ln_f.scale": (m,),
            "ln_f.offset": (m,),
            "ln_b.scale": (m,),
            "ln_b.offset": (m,),
        }
    return shapes


def num_params(cfg: VSMLConfig) -> int:
    """The meta-parameter count: 2,384 for the reference defaults (2,416 with LayerNorm).

    >>> num_params(VSMLConfig()), num_params(VSMLConfig(layer_norm=True))
    (2384, 2416)
    """
    return sum(math.prod(s) for s in param_shapes(cfg).values())


def _trunc_normal(shape: Sequence[int], std: float, g: torch.Generator | None, dtype) -> Tensor:
    # Haiku's TruncatedNormal: a normal cut at two standard deviations, rescaled to keep std.
    t = torch.empty(*shape, dtype=dtype)
    nn.init.trunc_normal_(
        t,
        std=std / 0.87962566103423978,
        a=-2 * std / 0.87962566103423978,
        b=2 * std / 0.87962566103423978,
        generator=g,
    )
    return t


def init_params(
    cfg: VSMLConfig,
    *,
    population: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Tensor]:
    """Initial meta-parameters: LSTM weights N(0, 1/(2M+H)), heads N(0, 1/H), zero biases.

    With `population=P` every tensor gets a leading axis of P independent draws.
    """
    if population is not None and population < 1:
        raise ValueError(f"population must be >= 1, got {population}")
    lead = () if population is None else (population,)
    fan_lstm = 2 * cfg.msg_size + cfg.state_size
    out: dict[str, Tensor] = {}
    for name, shape in param_shapes(cfg).items():
        full = lead + shape
        if name in ("w_f", "w_b", "w_h"):
            out[name] = _trunc_normal(full, fan_lstm**-0.5, generator, dtype)
        elif name.endswith(".weight"):
            out[name] = _trunc_normal(full, cfg.state_size**-0.5, generator, dtype)
        elif name.endswith(".scale"):
            out[name] = torch.ones(full, dtype=dtype)
        else:
            out[name] = torch.zeros(full, dtype=dtype)
    return out


def params_from_tensors(
    tensors: Mapping[str, Tensor], cfg: VSMLConfig, *, prefix: str = ""
) -> dict[str, Tensor]:
    """Pick the meta-parameters stored under `prefix` (e.g. from a run checkpoint) and check
    their shapes; raises ValueError naming what is missing."""
    out = {k: tensors[prefix + k] for k in param_shapes(cfg) if prefix + k in tensors}
    missing = sorted(set(param_shapes(cfg)) - set(out))
    if missing:
        raise ValueError(f"tensors lack {[prefix + m for m in missing]}")
    population_size(out, cfg)
    return out


def population_size(params: Mapping[str, Tensor], cfg: VSMLConfig) -> int | None:
    """P when `params` carry a leading population axis, None when they are one set."""
    shapes = param_shapes(cfg)
    missing = set(shapes) - set(params)
    if missing:
        raise ValueError(f"params lack {sorted(missing)}")
    pops = set()
    for name, shape in shapes.items():
        t = params[name]
        if tuple(t.shape) == shape:
            pops.add(None)
        elif t.ndim == len(shape) + 1 and tuple(t.shape[1:]) == shape:
            pops.add(int(t.shape[0]))
        else:
            raise ValueError(f"params[{name!r}] has shape {tuple(t.shape)}, expected {shape}")
    if len(pops) != 1:
        raise ValueError(f"params mix population sizes {sorted(map(str, pops))}")
    return pops.pop()


def _with_population(params: Mapping[str, Tensor], cfg: VSMLConfig) -> dict[str, Tensor]:
    pop = population_size(params, cfg)
    if pop is None:
        return {k: v.unsqueeze(0) for k, v in params.items()}
    return dict(params)


class LayerState(NamedTuple):
    """One layer's state. `h`, `c`: `(P, N, A, B, H)`; the messages it last received:
    `fwd_in` `(P, N, A, M)` and `bwd_in` `(P, N, B, M)`."""

    h: Tensor
    c: Tensor
    fwd_in: Tensor
    bwd_in: Tensor


def init_state(
    cfg: VSMLConfig,
    sizes: Sequence[int],
    *,
    batch: int,
    population: int = 1,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> list[LayerState]:
    """Fresh states for a stack with layer sizes `sizes` = (A_1, A_2, …, B_L), e.g. (64, 32, 10).

    h = 0; the first `init_rand_proportion` of c's units are N(0, 1/A) (truncated, as the
    reference), the rest 0; all messages 0. Each learner (member × group of `cfg.inner_batch`
    sequences) gets its own draw, shared by the K entries of its mini-batch.
    """
    if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
        raise ValueError(f"sizes must list >= 2 positive layer widths, got {list(sizes)}")
    if batch < 1 or population < 1:
        raise ValueError(f"batch and population must be >= 1, got {batch}, {population}")
    k = cfg.inner_batch
    if batch % k:
        raise ValueError(f"batch={batch} must be a multiple of cfg.inner_batch={k}")
    hdim, m = cfg.state_size, cfg.msg_size
    n_rand = int(hdim * cfg.init_rand_proportion)
    states = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=False):
        lead = (population, batch, a, b)
        h = torch.zeros(*lead, hdim, dtype=dtype, device=device)
        draw = _trunc_normal((population, batch // k, a, b, n_rand), a**-0.5, generator, dtype)
        c = torch.cat(
            [
                draw.repeat_interleave(k, dim=1).to(device),
                torch.zeros(*lead, hdim - n_rand, dtype=dtype, device=device),
            ],
            dim=-1,
        )  # (P, N, A, B, H)
        fwd = torch.zeros(population, batch, a, m, dtype=dtype, device=device)
        bwd = torch.zeros(population, batch, b, m, dtype=dtype, device=device)
        states.append(LayerState(h, c, fwd, bwd))
    return states


def _gate_bias(p: Mapping[str, Tensor], cfg: VSMLConfig) -> Tensor:
    # The fixed +5 / -5 offsets start the forget gate open and the input gate nearly shut, so a
    # fresh cell keeps its (random) state; folding them into β saves two ops per micro tick.
    h = cfg.state_size
    offset = torch.zeros(4 * h, dtype=p["bias"].dtype, device=p["bias"].device)
    offset[:h] = cfg.input_bias
    offset[h : 2 * h] = cfg.forget_bias
    return p["bias"] + offset  # (P, 4H)


def _layer_norm(x: Tensor, scale: Tensor, offset: Tensor) -> Tensor:
    # x (P, ..., M); scale/offset (P, M) broadcast over the middle axes.
    shape = (scale.shape[0],) + (1,) * (x.ndim - 2) + (scale.shape[-1],)
    y = F.layer_norm(x, x.shape[-1:], eps=1e-5)
    return y * scale.view(shape) + offset.view(shape)


# Cells do not interact within a layer's micro ticks, so a layer runs in blocks of cells that
# stay in the core's L2 cache through all micro ticks (one pass over memory per block instead
# of one per elementwise op). Measured on a 2 MiB-L2 core shared with other processes:
# ~1.5k cells (a 384 KiB gate block) beat both 640 and 4k.
_BLOCK_CELLS = 1536
# With autograd every intermediate is kept anyway; larger blocks mean fewer recorded ops.
_BLOCK_CELLS_AUTOGRAD = 4096


def _plan(
    P: int, N: int, A: int, B: int, most: int | None = None
) -> tuple[int, list[tuple[int, int, int, int]]]:
    """How a `(P, N, A, B, ·)` grid splits into blocks of at most ~`most` (default
    `_BLOCK_CELLS`) cells that are each one contiguous range, in memory order: groups of
    `step` members, and within each group the chunks (n0, n, a0, a) of n entries × a input
    rows (all B columns)."""
    most = _BLOCK_CELLS if most is None else most
    if N * A * B <= most:
        return max(1, most // (N * A * B)), [(0, N, 0, A)]
    if A * B <= most:
        step = most // (A * B)
        return 1, [(n0, min(step, N - n0), 0, A) for n0 in range(0, N, step)]
    step = max(1, most // B)
    return 1, [(n, 1, a0, min(step, A - a0)) for n in range(N) for a0 in range(0, A, step)]


def _blocks(
    P: int, N: int, A: int, B: int, most: int | None = None
) -> list[tuple[slice, slice, slice]]:
    """The blocks of `_plan` as (members, entries, input rows) slices, in memory order."""
    step, chunks = _plan(P, N, A, B, most)
    return [
        (slice(p0, p0 + step), slice(n0, n0 + n), slice(a0, a0 + a))
        for p0 in range(0, P, step)
        for n0, n, a0, a in chunks
    ]


def _micro_ticks(drive: Tensor, w_h: Tensor, h: Tensor, c: Tensor, cfg: VSMLConfig):
    """`cfg.micro_ticks` LSTM steps of a block of cells, out of place (autograd records it):
    drive `(p, cells, 4H)` (input part of the gates, g columns doubled), w_h `(p, H, 4H)`,
    h and c `(p, cells, H)`."""
    H = h.shape[-1]
    for _ in range(cfg.micro_ticks):
        s = torch.sigmoid(torch.baddbmm(drive, h, w_h))  # (p, cells, 4H)
        i, f, o, sg = s.split(H, dim=-1)
        c = torch.addcmul(f * c, i, sg, value=2.0) - i  # f⊙c + i⊙tanh(g)
        h = o * torch.tanh(c)
    return h, c


def _micro_ticks_inplace(
    drive: Tensor,
    w_h: Tensor,
    h: Tensor,
    c: Tensor,
    h_out: Tensor,
    c_out: Tensor,
    z: Tensor,
    gates: tuple[Tensor, ...],
    cfg: VSMLConfig,
) -> None:
    """The same steps without autograd, in place and allocation-free: drive, h, c as in
    `_micro_ticks` are read, the new h and c written to `h_out`, `c_out` (same shapes);
    z `(p, cells, 4H)` is scratch and `gates` its (i, f, o, g) column views. Each op is one
    pass over a cache-resident block."""
    i, f, o, sg = gates
    for _ in range(cfg.micro_ticks):
        torch.bmm(h, w_h, out=z)
        z.add_(drive).sigmoid_()
        torch.mul(c, f, out=c_out).addcmul_(i, sg, value=2.0).sub_(i)  # f⊙c + i⊙tanh(g)
        torch.tanh(c_out, out=h_out).mul_(o)
        h, c = h_out, c_out


def _grid_ticks_autograd(xf: Tensor, xb: Tensor, w_h: Tensor, h: Tensor, c: Tensor, cfg):
    # Out of place, block by block; blocks are contiguous ranges listed in memory order, so
    # concatenating their flattened results rebuilds the grid.
    P, N, A, B, H = h.shape
    hs, cs = [], []
    blocks = _blocks(P, N, A, B, _BLOCK_CELLS_AUTOGRAD)
    for ps, ns, rows in blocks:
        drive = xf[ps, ns, rows] + xb[ps, ns]  # (p, n, a, B, 4H)
        p_ = drive.shape[0]
        hb, cb = _micro_ticks(
            drive.reshape(p_, -1, 4 * H),
            w_h[ps],
            h[ps, ns, rows].reshape(p_, -1, H),
            c[ps, ns, rows].reshape(p_, -1, H),
            cfg,
        )
        hs.append(hb.reshape(-1))
        cs.append(cb.reshape(-1))
    if len(blocks) == 1:
        return hs[0].view(P, N, A, B, H), cs[0].view(P, N, A, B, H)
    return torch.cat(hs).view(P, N, A, B, H), torch.cat(cs).view(P, N, A, B, H)


def _grid_ticks_inplace(
    xf: Tensor, xb: Tensor, w_h: Tensor, h: Tensor, c: Tensor, cfg, out: tuple | None
):
    # No autograd: every block's drive and gates live in two reused buffers. All per-block
    # views come from a few `split` calls (Python indexing per block costs more than a
    # block's elementwise ops).
    P, N, A, B, H = h.shape
    G = 4 * H
    step, chunks = _plan(P, N, A, B)
    h_out, c_out = out if out is not None else (torch.empty_like(h), torch.empty_like(c))
    cells = [n * a * B for _, n, _, a in chunks]
    rows = [n * a for _, n, _, a in chunks]

    def split(t: Tensor, sizes: list[int], width: int) -> list[Tensor]:
        return [b for m in t.view(P, -1, width).split(step, 0) for b in m.split(sizes, 1)]

    xb = xb.view(P, N, B, G)
    xbs = [m.narrow(1, n0, n) for m in xb.split(step, 0) for n0, n, _, _ in chunks]
    views = list(
        zip(
            split(xf, rows, G),
            xbs,
            split(h, cells, H),
            split(c, cells, H),
            split(h_out, cells, H),
            split(c_out, cells, H),
            [w for w in w_h.split(step, 0) for _ in chunks],
            strict=True,
        )
    )  # built before the loop: measured faster than creating views between blocks
    p0 = min(step, P)
    z_buf, d_buf = h.new_empty(p0 * cells[0] * G), h.new_empty(p0 * cells[0] * G)
    scratch: dict[tuple[int, ...], tuple[Tensor, Tensor, tuple[Tensor, ...]]] = {}
    for (xfb, xbb, hb, cb, hob, cob, wb), (_, n, _, a) in zip(
        views, itertools.cycle(chunks), strict=False
    ):
        shape = (xfb.shape[0], n, a, B, G)
        if shape not in scratch:
            size = math.prod(shape)
            z = z_buf[:size].view(shape[0], -1, G)
            scratch[shape] = (d_buf[:size].view(shape), z, z.split(H, dim=-1))
        d, z, gates = scratch[shape]
        torch.add(xfb.view(shape[0], n, a, 1, G), xbb.unsqueeze(2), out=d)
        _micro_ticks_inplace(d.view(shape[0], -1, G), wb, hb, cb, hob, cob, z, gates, cfg)
    return h_out, c_out


# --- The fused C++ kernel for the no-autograd float32 path (default where it builds). ---

_FUSED_SRC = r"""
// One VSML layer's micro ticks, every cell fused (float32, one thread, no torch headers:
// called through ctypes). Per member and entry the input projections xf[a] = m_fwd[a] W_f and
// xb[b] = m_bwd[b] W_b + beta first (A + B rows), then per cell z = xf[a] + xb[b] + h W_h
// (4H gates i, f, o, g), c' = sigma(z_f) c + sigma(z_i) tanh(z_g), h' = sigma(z_o) tanh(c').
// With e_x = e^-z_x (e^-2z for g and c) and d_x = 1 + e_x: sigma(z_x) = 1 / d_x and
// tanh(z_g) = (1 - e_g) / d_g, so c' = c / d_f + (1 - e_g) / (d_i d_g) and h' = (1 - e_c) /
// (d_o d_c): five exponentials and three reciprocals per cell and micro tick (exponents
// clamped to |x| <= 29 keep the products finite; sigma(+-29) is 0 or 1 to 3e-13).
// GROUP cells at a time share each row of W_h loaded once; their h and c stay in registers
// across the micro ticks; the row and column means of the new h (for the messages) are
// accumulated on the way. Vectors are the CPU's native width (VL floats).
#include <stdint.h>
#include <string.h>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define VL 16
#define GROUP 4
#elif defined(__AVX2__)
#define VL 8
#define GROUP 2
#else
#define VL 4
#define GROUP 2
#endif
#define UNROLL _Pragma("GCC unroll 64")
#define INLINE static inline __attribute__((always_inline))

typedef float vf __attribute__((vector_size(4 * VL)));
typedef int32_t vi __attribute__((vector_size(4 * VL)));
typedef float vfu __attribute__((vector_size(4 * VL), aligned(4)));

INLINE vf ld(const float* p) { return *(const vfu*)p; }
INLINE void st(float* p, vf v) { *(vfu*)p = v; }
INLINE vf splat(float x) { return x - (vf){}; }

#if defined(__AVX512F__)
INLINE vf vmin(vf a, vf b) { return (vf)_mm512_min_ps((__m512)a, (__m512)b); }
INLINE vf vmax(vf a, vf b) { return (vf)_mm512_max_ps((__m512)a, (__m512)b); }
INLINE vf vscale(vf p, vf n) { return (vf)_mm512_scalef_ps((__m512)p, (__m512)n); }  // p 2^n
INLINE vf vrcp(vf d) {  // 1/d: a 14-bit estimate and one Newton step (~1 ulp)
  vf r = (vf)_mm512_rcp14_ps((__m512)d);
  return r + r * (splat(1.f) - d * r);
}
#else
#if defined(__AVX2__)
INLINE vf vmin(vf a, vf b) { return (vf)_mm256_min_ps((__m256)a, (__m256)b); }
INLINE vf vmax(vf a, vf b) { return (vf)_mm256_max_ps((__m256)a, (__m256)b); }
#else
INLINE vf vmin(vf a, vf b) { return a < b ? a : b; }
INLINE vf vmax(vf a, vf b) { return a > b ? a : b; }
#endif
INLINE vf vscale(vf p, vf n) { return (vf)((vi)p + (__builtin_convertvector(n, vi) << 23)); }
INLINE vf vrcp(vf d) { return splat(1.f) / d; }
#endif

#if defined(__AVX512DQ__)
INLINE vf vclamp(vf x, float L) {  // sign(x) min(|x|, L) in one instruction
  return (vf)_mm512_range_ps((__m512)x, (__m512)splat(L), 2);
}
#else
INLINE vf vclamp(vf x, float L) { return vmax(vmin(x, splat(L)), splat(-L)); }
#endif

// e^x for |x| <= 29 (clamped): x = n ln2 + r with |r| <= ln2 / 2, e^r = 1 + r + r^2 q(r)
// with q of degree 4 (a relative-minimax fit), times 2^n; 1e-7 relative.
INLINE vf vexp(vf x) {
  x = vclamp(x, 29.f);
  const vf magic = splat(12582912.f);  // 1.5 * 2^23: adding it rounds to an integer
  vf n = (x * splat(1.44269504088896341f) + magic) - magic;
  vf r = x - n * splat(0.693359375f);
  r = r - n * splat(-2.12194440e-4f);
  vf p = splat(1.3814612e-3f);
  p = p * r + splat(8.3687101e-3f);
  p = p * r + splat(4.1668389e-2f);
  p = p * r + splat(1.6666521e-1f);
  p = p * r + splat(4.9999994e-1f);
  p = p * r + splat(1.f);
  p = p * r + splat(1.f);
  return vscale(p, n);
}

// C consecutive cells (from cell j0 of one member and entry); NV = H / VL vectors per state.
template <int NV, int C>
INLINE void cells(const float* xf, const float* xb, const float* w, const float* h,
                  const float* c, float* ho, float* co, float* ma, float* mb, int64_t j0,
                  int64_t B, int64_t ticks, float inv_a, float inv_b) {
  constexpr int H = VL * NV, G = 4 * H, V = 4 * NV;
  alignas(64) float hv[C * H];
  vf cs[C][NV];
  const float* xr[C];
  const float* xbr[C];
  int64_t as[C], bs[C];
  UNROLL for (int q = 0; q < C; ++q) {
    as[q] = (j0 + q) / B;
    bs[q] = (j0 + q) % B;
    xr[q] = xf + as[q] * G;
    xbr[q] = xb + bs[q] * G;
    UNROLL for (int v = 0; v < NV; ++v) {
      cs[q][v] = ld(c + q * H + VL * v);
      st(hv + q * H + VL * v, ld(h + q * H + VL * v));
    }
  }
  for (int64_t t = 0; t < ticks; ++t) {
    vf z[C][V];
    UNROLL for (int q = 0; q < C; ++q)
      UNROLL for (int v = 0; v < V; ++v) z[q][v] = ld(xr[q] + VL * v) + ld(xbr[q] + VL * v);
    UNROLL for (int k = 0; k < H; ++k) {
      vf wk[V];
      UNROLL for (int v = 0; v < V; ++v) wk[v] = ld(w + k * G + VL * v);
      UNROLL for (int q = 0; q < C; ++q) {
        vf hk = splat(hv[q * H + k]);
        UNROLL for (int v = 0; v < V; ++v) z[q][v] += hk * wk[v];
      }
    }
    const vf one = splat(1.f);
    UNROLL for (int q = 0; q < C; ++q)
      UNROLL for (int v = 0; v < NV; ++v) {
        vf di = one + vexp(-z[q][v]), df = one + vexp(-z[q][NV + v]);
        vf d_o = one + vexp(-z[q][2 * NV + v]), eg = vexp(splat(-2.f) * z[q][3 * NV + v]);
        vf cn = cs[q][v] * vrcp(df) + (one - eg) * vrcp(di * (one + eg));
        cs[q][v] = cn;
        vf ec = vexp(splat(-2.f) * cn);
        st(hv + q * H + VL * v, (one - ec) * vrcp(d_o * (one + ec)));
      }
  }
  UNROLL for (int q = 0; q < C; ++q)
    UNROLL for (int v = 0; v < NV; ++v) {
      vf hq = ld(hv + q * H + VL * v);
      st(co + q * H + VL * v, cs[q][v]);
      st(ho + q * H + VL * v, hq);
      float* mar = ma + bs[q] * H + VL * v;
      float* mbr = mb + as[q] * H + VL * v;
      st(mar, ld(mar) + hq * splat(inv_a));
      st(mbr, ld(mbr) + hq * splat(inv_b));
    }
}

// rows (n, K) @ W (K, G) (+ bias) -> out (n, G): the separable input projections.
template <int NV>
INLINE void project(const float* msg, const float* W, const float* bias, float* out, int64_t n,
                    int64_t K) {
  constexpr int G = 4 * VL * NV, V = 4 * NV;
  for (int64_t r = 0; r < n; ++r) {
    vf acc[V];
    UNROLL for (int v = 0; v < V; ++v) acc[v] = bias ? ld(bias + VL * v) : splat(0.f);
    for (int64_t k = 0; k < K; ++k) {
      vf mk = splat(msg[r * K + k]);
      UNROLL for (int v = 0; v < V; ++v) acc[v] += mk * ld(W + k * G + VL * v);
    }
    UNROLL for (int v = 0; v < V; ++v) st(out + r * G + VL * v, acc[v]);
  }
}

template <int NV>
static void grid(const float* fwd, const float* bwd, const float* w_f, const float* w_b,
                 const float* beta, const float* w, const float* h, const float* c, float* ho,
                 float* co, float* mean_a, float* mean_b, float* scratch, int64_t P, int64_t N,
                 int64_t A, int64_t B, int64_t M, int64_t ticks) {
  constexpr int H = VL * NV, G = 4 * H, C = GROUP;
  const float inv_a = 1.f / A, inv_b = 1.f / B;
  float* xf = scratch;
  float* xb = scratch + A * G;
  for (int64_t pn = 0; pn < P * N; ++pn) {
    const int64_t p = pn / N;
    const float* wp = w + p * H * G;
    project<NV>(fwd + pn * A * M, w_f + p * M * G, nullptr, xf, A, M);
    project<NV>(bwd + pn * B * M, w_b + p * M * G, beta + p * G, xb, B, M);
    float* ma = mean_a + pn * B * H;
    float* mb = mean_b + pn * A * H;
    memset(ma, 0, sizeof(float) * B * H);
    memset(mb, 0, sizeof(float) * A * H);
    const int64_t n = A * B, off = pn * A * B * H;
    int64_t j = 0;
    for (; j + C <= n; j += C)
      cells<NV, C>(xf, xb, wp, h + off + j * H, c + off + j * H, ho + off + j * H,
                   co + off + j * H, ma, mb, j, B, ticks, inv_a, inv_b);
    for (; j < n; ++j)
      cells<NV, 1>(xf, xb, wp, h + off + j * H, c + off + j * H, ho + off + j * H,
                   co + off + j * H, ma, mb, j, B, ticks, inv_a, inv_b);
  }
}

extern "C" int vsml_fused_vector_width() { return VL; }

// fwd (P, N, A, M), bwd (P, N, B, M), w_f and w_b (P, M, 4H), beta (P, 4H), w (P, H, 4H),
// h, c, ho, co (P, N, A, B, H), mean_a (P, N, B, H), mean_b (P, N, A, H), scratch
// ((A + B) 4H), all float32 and contiguous; returns 1 (nothing done) for H not 16 or 32.
extern "C" int vsml_layer_ticks_f32(const float* fwd, const float* bwd, const float* w_f,
                                    const float* w_b, const float* beta, const float* w,
                                    const float* h, const float* c, float* ho, float* co,
                                    float* mean_a, float* mean_b, float* scratch, int64_t P,
                                    int64_t N, int64_t A, int64_t B, int64_t M, int64_t H,
                                    int64_t ticks) {
  if (H == 16)
    grid<16 / VL>(fwd, bwd, w_f, w_b, beta, w, h, c, ho, co, mean_a, mean_b, scratch, P, N, A,
                  B, M, ticks);
  else if (H == 32)
    grid<32 / VL>(fwd, bwd, w_f, w_b, beta, w, h, c, ho, co, mean_a, mean_b, scratch, P, N, A,
                  B, M, ticks);
  else
    return 1;
  return 0;
}
"""
_FUSED_FLAGS = ["-O2", "-march=native", "-fno-math-errno", "-shared", "-fPIC", "-Wno-psabi"]
_FUSED_H = (16, 32)
_logger = logging.getLogger("badgerlab.vsml")


def _fused_wanted() -> bool:
    # The default: on, unless the environment says BADGERLAB_VSML_FUSED=0.
    return os.environ.get("BADGERLAB_VSML_FUSED", "").strip() != "0"


_fused_state: dict = {"enabled": _fused_wanted()}


def use_fused(enabled: bool = True) -> float | None:
    """Whether no-autograd float32 layer steps on CPU run through the fused C++ kernel (one
    pass per block of cells over all micro ticks, the state held in registers, vectorised
    exp) instead of torch ops. On by default; `use_fused(False)` or the environment variable
    `BADGERLAB_VSML_FUSED=0` turn it off.

    The kernel is a plain C++ file (no torch headers, called through ctypes), compiled for
    this machine's CPU on first use with the system's C++ compiler (`$CXX`, c++, g++ or
    clang++; 2-4 s) and cached under `$BADGERLAB_CACHE/kernels` (default
    `~/.cache/badgerlab`). Where it cannot be built, or the CPU lacks AVX2, the torch ops run
    instead and the reason is logged (logger `badgerlab.vsml`), nothing raised. Returns the
    seconds the build or cache load took (None when disabled or unavailable). It computes the
    numbers of `reference_cell` up to float rounding (tested to 1e-6)."""
    _fused_state["enabled"] = bool(enabled)
    if not enabled:
        return None
    t0 = time.perf_counter()
    return time.perf_counter() - t0 if _fused_library() is not None else None


def _fused_path() -> str:
    # The build is for this CPU (-march=native): its name hashes the CPU's flags as well.
    try:
        with open("/proc/cpuinfo") as f:
            cpu = f.read().split("flags", 2)[1][:2000]
    except (OSError, IndexError):
        cpu = platform.processor()
    key = hashlib.sha1((_FUSED_SRC + str(_FUSED_FLAGS) + cpu + platform.machine()).encode())
    root = os.environ.get("BADGERLAB_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "badgerlab"
    )
    return os.path.join(root, "kernels", f"vsml_fused_{key.hexdigest()[:16]}.so")


def fused_is_built() -> bool:
    """Whether the fused kernel's build for this machine is already cached."""
    return os.path.exists(_fused_path())


def _fused_compile(path: str) -> float:
    # Compiled into a private temporary folder, then renamed into place (atomic, so that
    # processes building at once never load a half-written file). Returns the seconds.
    cxx = os.environ.get("CXX") or next(
        (w for w in map(shutil.which, ("c++", "g++", "clang++")) if w), None
    )
    if cxx is None:
        raise RuntimeError("no C++ compiler found ($CXX, c++, g++ or clang++)")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=os.path.dirname(path)) as tmp:
        src, lib = os.path.join(tmp, "vsml_fused.cpp"), os.path.join(tmp, "vsml_fused.so")
        with open(src, "w") as f:
            f.write(_FUSED_SRC)
        run = subprocess.run(
            [*shlex.split(cxx), *_FUSED_FLAGS, src, "-o", lib],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if run.returncode:
            raise RuntimeError(f"{cxx} failed: {run.stderr.strip()[-2000:]}")
        os.replace(lib, path)
    return time.perf_counter() - t0


def _fused_library():
    """The loaded kernel (built first when not cached), or None where it is disabled or
    unavailable (the reason logged once and kept in `_fused_state["error"]`)."""
    st = _fused_state
    if not st["enabled"] or "error" in st:
        return None
    if "lib" not in st:
        try:
            path = _fused_path()
            t0 = time.perf_counter()
            if not os.path.exists(path):
                st["build_s"] = _fused_compile(path)
                _logger.info("built the fused VSML kernel in %.1f s: %s", st["build_s"], path)
            lib = ctypes.CDLL(path)
            if lib.vsml_fused_vector_width() < 8:
                raise RuntimeError("the CPU has no AVX2 (torch's own kernels are faster)")
            fn = lib.vsml_layer_ticks_f32
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.c_void_p] * 13 + [ctypes.c_int64] * 7
            st["load_s"] = time.perf_counter() - t0
            st["lib"] = fn
        except Exception as e:  # noqa: BLE001 - an optional accelerator: log why, go on
            st["error"] = f"{type(e).__name__}: {e}"
            _logger.info("fused VSML kernel unavailable, using torch ops (%s)", st["error"])
            return None
    return st["lib"]


def _fused_applies(h: Tensor, *others: Tensor) -> bool:
    # Where the kernel runs: float32 CPU tensors (h and everything else it reads), H 16 or 32.
    if not _fused_state["enabled"] or h.shape[-1] not in _FUSED_H:
        return False
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in (h, *others)):
        return False
    return _fused_library() is not None


def _fused_layer(p: Mapping[str, Tensor], state: LayerState, cfg: VSMLConfig, out):
    # The micro ticks of `layer_step` in the kernel, input projections included: the new h,
    # c and the means of the new h over rows (P, N, B, H) and columns (P, N, A, H).
    h = state.h
    P, N, A, B, H = h.shape
    if out is None or not (out[0].is_contiguous() and out[1].is_contiguous()):
        out = (torch.empty(h.shape, dtype=h.dtype), torch.empty(h.shape, dtype=h.dtype))
    mean_a, mean_b = h.new_empty(P, N, B, H), h.new_empty(P, N, A, H)
    scratch = h.new_empty((A + B) * 4 * H)
    ins = [state.fwd_in, state.bwd_in, p["w_f"], p["w_b"], _gate_bias(p, cfg), p["w_h"], h]
    ins = [t.contiguous() for t in (*ins, state.c)]
    ptrs = [t.data_ptr() for t in (*ins, *out, mean_a, mean_b, scratch)]
    if _fused_state["lib"](*ptrs, P, N, A, B, cfg.msg_size, H, cfg.micro_ticks):
        raise RuntimeError(f"the fused VSML kernel does not support state_size={H}")
    return out[0], out[1], mean_a, mean_b


def _projections(p: Mapping[str, Tensor], state: LayerState, cfg: VSMLConfig):
    """The input parts of the gates, xf `(P, N, A, 1, 4H)` and xb `(P, N, 1, B, 4H)` (β
    included), and W_h `(P, H, 4H)`, all with the g columns doubled."""
    P, N, A, B, H = state.h.shape
    M = cfg.msg_size
    # tanh(g) = 2σ(2g) − 1: doubling the g columns of every weight once lets one sigmoid over
    # the whole contiguous gate tensor serve all four gates (sigmoid/tanh on strided slices
    # cost twice as much on CPU).
    scale = torch.ones(4 * H, dtype=state.h.dtype, device=state.h.device)
    scale[3 * H :] = 2.0
    # The input projection is separable: A forward and B backward projections, added by
    # broadcasting, instead of A·B projections of concatenated messages.
    xf = torch.bmm(state.fwd_in.reshape(P, N * A, M), p["w_f"] * scale)
    beta = (_gate_bias(p, cfg) * scale).unsqueeze(1)  # (P, 1, 4H)
    xb = torch.baddbmm(beta, state.bwd_in.reshape(P, N * B, M), p["w_b"] * scale)
    return xf.view(P, N, A, 1, 4 * H), xb.view(P, N, 1, B, 4 * H), p["w_h"] * scale


def layer_step(
    p: Mapping[str, Tensor],
    state: LayerState,
    cfg: VSMLConfig,
    *,
    out: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Run `cfg.micro_ticks` ticks of one layer on the messages stored in `state`.

    `p` carries a population axis (see `_with_population`). Returns the new forward messages
    `(P, N, B, M)`, backward messages `(P, N, A, M)`, and the new `h`, `c` `(P, N, A, B, H)`.
    Without autograd (e.g. under `torch.no_grad()`) the cells run through the fused C++
    kernel (float32 on CPU, see `use_fused`) or else in place in cache-sized blocks, writing
    the new h and c into `out` = (h, c) buffers when given (they must not alias the state);
    with autograd, out of place (`out` unused); all compute the numbers of `reference_cell`.
    """
    h, c, fwd_in, bwd_in = state
    P, N, A, B, H = h.shape
    M = cfg.msg_size
    leaves = (p["w_f"], p["w_b"], p["w_h"], p["bias"], h, c, fwd_in, bwd_in)
    # Autograd needs the out-of-place path only where the grid's own inputs require grad.
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in leaves)
    mean_a = mean_b = None
    if not grad and _fused_applies(h, *leaves):
        h, c, mean_a, mean_b = _fused_layer(p, state, cfg, out)
    else:
        xf, xb, w_h = _projections(p, state, cfg)
        if grad:
            h, c = _grid_ticks_autograd(xf, xb, w_h, h, c, cfg)
        else:
            h, c = _grid_ticks_inplace(xf, xb, w_h, h, c, cfg, out)
    if mean_a is None and not cfg.layer_norm:
        mean_a, mean_b = h.mean(2), h.mean(3)
    if cfg.layer_norm:
        # LayerNorm is per cell and nonlinear, so each cell's message is projected first.
        mf = torch.einsum("pnabh,phm->pnabm", h, p["head_f.weight"]) + p["head_f.bias"].view(
            P, 1, 1, 1, M
        )
        mb = torch.einsum("pnabh,phm->pnabm", h, p["head_b.weight"]) + p["head_b.bias"].view(
            P, 1, 1, 1, M
        )
        fwd_out = _layer_norm(mf, p["ln_f.scale"], p["ln_f.offset"]).mean(2)  # (P, N, B, M)
        bwd_out = _layer_norm(mb, p["ln_b.scale"], p["ln_b.offset"]).mean(3)  # (P, N, A, M)
    else:
        # The heads are affine, so averaging h first and projecting once is exact and
        # B (resp. A) times cheaper than projecting every cell.
        fwd_out = torch.baddbmm(
            p["head_f.bias"].unsqueeze(1), mean_a.reshape(P, N * B, H), p["head_f.weight"]
        ).view(P, N, B, M)
        bwd_out = torch.baddbmm(
            p["head_b.bias"].unsqueeze(1), mean_b.reshape(P, N * A, H), p["head_b.weight"]
        ).view(P, N, A, M)
    return fwd_out, bwd_out, h, c


def _pad_msg(values: Sequence[Tensor], size: int) -> Tensor:
    # [v_0, v_1, …, 0, …]: each value (P, N, K) fills one message slot.
    v = torch.stack(list(values), dim=-1)  # (P, N, K, len(values))
    return F.pad(v, (0, size - v.shape[-1]))  # (P, N, K, M)


def tick(
    params: Mapping[str, Tensor],
    states: Sequence[LayerState],
    x: Tensor | None,
    error: Tensor | None,
    cfg: VSMLConfig,
    *,
    reverse: bool = False,
    out: Sequence[tuple[Tensor, Tensor]] | None = None,
) -> tuple[list[LayerState], Tensor]:
    """One sweep of the stack: x `(P, N, A_1)` in as forward messages, `error`
    `(P, N, B_L, k)` (k ≤ M slots: error, label) in as backward messages of the last layer.

    Forward sweeps run layer 1 … L, each layer reading the forward messages its predecessor
    just sent and the backward messages its successor sent on the previous sweep; reverse
    sweeps run L … 1. `x=None` / `error=None` keep the stored messages. `out`: per layer
    (h, c) buffers for the new states (see `layer_step`). Returns the new states and the
    bounded logits `(P, N, B_L)` of the last layer's forward messages.
    """
    p = _with_population(params, cfg)
    M = cfg.msg_size
    states = list(states)
    if x is not None:
        states[0] = states[0]._replace(fwd_in=_pad_msg([x], M))
    if error is not None:
        states[-1] = states[-1]._replace(bwd_in=F.pad(error, (0, M - error.shape[-1])))
    order = range(len(states) - 1, -1, -1) if reverse else range(len(states))
    logits = None
    for i in order:
        fwd_out, bwd_out, h, c = layer_step(p, states[i], cfg, out=None if out is None else out[i])
        states[i] = states[i]._replace(h=h, c=c)
        if i > 0:
            states[i - 1] = states[i - 1]._replace(bwd_in=bwd_out)
        if i < len(states) - 1:
            states[i + 1] = states[i + 1]._replace(fwd_in=fwd_out)
        else:
            logits = fwd_out[..., cfg.output_idx]
            if cfg.logit_scale != 1.0:
                logits = logits * cfg.logit_scale
            if cfg.tanh_bound:
                logits = torch.tanh(logits / cfg.tanh_bound) * cfg.tanh_bound
    assert logits is not None
    return states, logits


def average_weight_half(states: Sequence[LayerState], k: int) -> list[LayerState]:
    """Mini-batch inner learning's merge: the first ⌊H/2⌋ units of h and of c of every cell
    averaged over each learner's `k` consecutive batch entries (axis N) and broadcast back."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k == 1:
        return list(states)
    out = []
    for s in states:
        P, N, A, B, H = s.h.shape
        if N % k:
            raise ValueError(f"batch {N} must be a multiple of k={k}")
        half = H // 2
        merged = []
        for t in (s.h, s.c):
            w = t[..., :half].reshape(P, N // k, k, A, B, half).mean(2, keepdim=True)
            w = w.expand(P, N // k, k, A, B, half).reshape(P, N, A, B, half)
            merged.append(torch.cat([w, t[..., half:]], dim=-1))
        out.append(s._replace(h=merged[0], c=merged[1]))
    return out


def cross_entropy_error(logits: Tensor, y: Tensor) -> Tensor:
    """∂CE/∂ŷ = softmax(ŷ) − onehot(y), differentiable in ŷ (second-order terms flow in BPTT)."""
    return torch.softmax(logits, -1) - F.one_hot(y, logits.shape[-1]).to(logits.dtype)


@dataclass
class EpisodeResult:
    """`logits` `(T, P, N, B)` made before each label was seen; `loss` `(T, P, N)` their CE;
    `correct` `(T, P, N)` bool; `states` and `error` the final carry (for truncated BPTT or
    introspection); `trace` per-step detached copies of the states when `record=True`."""

    logits: Tensor
    loss: Tensor
    correct: Tensor
    states: list[LayerState]
    error: Tensor
    trace: list[list[LayerState]] = field(default_factory=list)


class _PingPong:
    """Two alternating sets of (h, c) buffers per layer for an episode without autograd:
    each sweep writes the set the sweep before last wrote, which nothing else holds, so
    fresh multi-MiB states are not allocated (and page-faulted in) every sweep."""

    def __init__(self, states: Sequence[LayerState]) -> None:
        self.sets = [
            [(torch.empty_like(s.h), torch.empty_like(s.c)) for s in states] for _ in "ab"
        ]
        self.k = 0

    def __call__(self) -> list[tuple[Tensor, Tensor]]:
        self.k ^= 1
        return self.sets[self.k]


def _example_step(
    p: Mapping[str, Tensor],
    states: Sequence[LayerState],
    x: Tensor,
    y: Tensor,
    error: Tensor,
    cfg: VSMLConfig,
    buffers: _PingPong | None = None,
) -> tuple[list[LayerState], Tensor, Tensor]:
    """One online example: (merge the mini-batch,) predict x `(P, N, A_1)` from the error of
    the previous example, then form this example's error `(P, N, B, 2)` from y `(P, N)` (and
    run the backward sweep with it when `cfg.backward_pass`)."""
    k = cfg.inner_batch
    if k > 1:
        states = average_weight_half(states, k)
    states, logits = tick(p, states, x, error, cfg, out=buffers and buffers())
    err = cross_entropy_error(logits, y)
    if k > 1:
        err = err / k  # ∂(mean CE over the mini-batch)/∂ŷ
    B = logits.shape[-1]
    lab = F.one_hot(y, B).to(logits.dtype) if cfg.feed_label else torch.zeros_like(err)
    error = torch.stack([err, lab], dim=-1)  # (P, N, B, 2)
    if cfg.backward_pass:
        states, _ = tick(p, states, None, error, cfg, reverse=True, out=buffers and buffers())
        error = torch.zeros_like(error)
    return states, logits, error


def episode(
    params: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    cfg: VSMLConfig,
    *,
    sizes: Sequence[int] | None = None,
    states: Sequence[LayerState] | None = None,
    error: Tensor | None = None,
    generator: torch.Generator | None = None,
    record: bool = False,
) -> EpisodeResult:
    """Run the VSML RNN online over sequences: predict x_t, then receive the error of y_t.

    Args:
        params: meta-parameters, optionally with a population axis P.
        x: `(T, P, N, A_1)` or `(T, N, A_1)` (shared by all members) inputs.
        y: `(T, P, N)` or `(T, N)` labels in `0..B_L−1`.
        sizes: layer widths (A_1, …, B_L) for fresh states; the class count is never guessed
            from y, so pass `sizes` or `states`.
        states, error: carry-over from a previous segment (truncated BPTT); fresh otherwise.
        generator: draws the random half of the initial cell states.
        record: keep detached copies of the states after every example in `trace`.

    With `cfg.inner_batch` K > 1, the N sequences are N/K mini-batch learners (see
    `VSMLConfig`); `loss` and `correct` stay per entry.
    """
    p = _with_population(params, cfg)
    P = next(iter(p.values())).shape[0]
    if x.ndim == 3:
        x = x.unsqueeze(1).expand(-1, P, -1, -1)
    if y.ndim == 2:
        y = y.unsqueeze(1).expand(-1, P, -1)
    if x.ndim != 4 or y.shape != x.shape[:3]:
        raise ValueError(
            f"x must be (T, [P,] N, A) and y (T, [P,] N); got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    if x.shape[1] != P:
        raise ValueError(f"x has population axis {x.shape[1]} but params have {P}")
    T, _, N, A = x.shape
    if states is None:
        if sizes is None:
            raise ValueError("pass sizes=(A_1, …, B_L) or states")
        if sizes[0] != A:
            raise ValueError(f"sizes[0]={sizes[0]} does not match the input width {A}")
        states = init_state(
            cfg, sizes, batch=N, population=P, generator=generator, dtype=x.dtype, device=x.device
        )
    states = list(states)
    B = states[-1].h.shape[3]
    if int(y.max()) >= B or int(y.min()) < 0:
        raise ValueError(f"labels must be in 0..{B - 1}, got range {int(y.min())}..{int(y.max())}")
    k = cfg.inner_batch
    if N % k:
        raise ValueError(f"the batch N={N} must be a multiple of cfg.inner_batch={k}")
    slots = 2
    if error is None:
        error = x.new_zeros(P, N, B, slots)
    logits_t, loss_t, trace = [], [], []
    leaves = [*p.values(), *(t_ for s in states for t_ in s), x, error]
    grad = torch.is_grad_enabled() and any(t_.requires_grad for t_ in leaves)
    buffers = None if record or grad else _PingPong(states)
    for t in range(T):
        states, logits, error = _example_step(p, states, x[t], y[t], error, cfg, buffers)
        loss_t.append(
            F.cross_entropy(logits.reshape(P * N, B), y[t].reshape(P * N), reduction="none").view(
                P, N
            )
        )
        logits_t.append(logits)
        if record:
            trace.append([LayerState(*(t_.detach() for t_ in s)) for s in states])
    logits_all = torch.stack(logits_t)  # (T, P, N, B)
    correct = logits_all.argmax(-1) == y
    return EpisodeResult(logits_all, torch.stack(loss_t), correct, states, error, trace)


class VSML(nn.Module):
    """A thin module around the functional VSML: one parameter set as `nn.Parameter`s.

    `forward(x, y)` with x `(T, N, A)` and y `(T, N)` runs a fresh episode on a grid stack of
    `sizes` (default (A, num_classes)) and returns its `EpisodeResult`. Any sizes work with
    the same parameters.
    """

    def __init__(
        self, cfg: VSMLConfig | None = None, *, seed: int = 0, dtype: torch.dtype = torch.float32
    ) -> None:
        super().__init__()
        self.cfg = cfg or VSMLConfig()
        g = torch.Generator().manual_seed(seed)
        init = init_params(self.cfg, generator=g, dtype=dtype)
        self._names = list(init)
        self.params = nn.ParameterDict(
            {k.replace(".", "__"): nn.Parameter(v) for k, v in init.items()}
        )

    def param_dict(self) -> dict[str, Tensor]:
        return {k: self.params[k.replace(".", "__")] for k in self._names}

    def load_param_dict(self, params: Mapping[str, Tensor]) -> None:
        with torch.no_grad():
            for k in self._names:
                self.params[k.replace(".", "__")].copy_(params[k])

    def forward(
        self,
        x: Tensor,
        y: Tensor,
        *,
        sizes: Sequence[int] | None = None,
        num_classes: int | None = None,
        generator: torch.Generator | None = None,
        record: bool = False,
    ) -> EpisodeResult:
        if sizes is None:
            if num_classes is None:
                raise ValueError("pass sizes= or num_classes=")
            sizes = (x.shape[-1], num_classes)
        return episode(
            self.param_dict(), x, y, self.cfg, sizes=sizes, generator=generator, record=record
        )


# --- The plain reference: the equations cell by cell, for testing the fast path against. ---


def reference_cell(
    p: Mapping[str, Tensor],
    fwd_in: Tensor,
    bwd_in: Tensor,
    h: Tensor,
    c: Tensor,
    cfg: VSMLConfig,
) -> tuple[Tensor, Tensor]:
    """One micro tick of every cell of a layer, written as plainly as possible.

    Cell (a, b) reads the concatenation u_ab = [m→_a, m←_b, h_ab] `(2M+H,)` and computes
    z = u_ab W + β with W = [W_f; W_b; W_h] `(2M+H, 4H)` (gates i, f, o, g), then
    c' = σ(z_f + 5)·c + σ(z_i − 5)·tanh(z_g), h' = σ(z_o)·tanh(c'). No split projections,
    no fused gates, no blocking: `p` with a population axis P, fwd_in `(P, N, A, M)`,
    bwd_in `(P, N, B, M)`, h and c `(P, N, A, B, H)`; returns the new (h, c).
    """
    P, N, A, B, H = h.shape
    M = fwd_in.shape[-1]
    u = torch.cat(
        [
            fwd_in.unsqueeze(3).expand(P, N, A, B, M),
            bwd_in.unsqueeze(2).expand(P, N, A, B, M),
            h,
        ],
        dim=-1,
    )  # (P, N, A, B, 2M+H)
    w = torch.cat([p["w_f"], p["w_b"], p["w_h"]], dim=1)  # (P, 2M+H, 4H)
    z = torch.einsum("pnabk,pkg->pnabg", u, w) + p["bias"].view(P, 1, 1, 1, 4 * H)
    z_i, z_f, z_o, z_g = z.split(H, dim=-1)
    c = torch.sigmoid(z_f + cfg.forget_bias) * c + torch.sigmoid(
        z_i + cfg.input_bias
    ) * torch.tanh(z_g)
    h = torch.sigmoid(z_o) * torch.tanh(c)
    return h, c


def _reference_layer(p: Mapping[str, Tensor], state: LayerState, cfg: VSMLConfig):
    # micro ticks of plain cells, then every cell's messages (and LayerNorm), then the means.
    h, c = state.h, state.c
    for _ in range(cfg.micro_ticks):
        h, c = reference_cell(p, state.fwd_in, state.bwd_in, h, c, cfg)
    P = h.shape[0]
    msgs = []
    for d in ("f", "b"):
        m = torch.einsum("pnabh,phm->pnabm", h, p[f"head_{d}.weight"])
        m = m + p[f"head_{d}.bias"].view(P, 1, 1, 1, -1)
        if cfg.layer_norm:
            mu = m.mean(-1, keepdim=True)
            var = ((m - mu) ** 2).mean(-1, keepdim=True)
            m = (m - mu) / torch.sqrt(var + 1e-5)
            m = m * p[f"ln_{d}.scale"].view(P, 1, 1, 1, -1) + p[f"ln_{d}.offset"].view(
                P, 1, 1, 1, -1
            )
        msgs.append(m)
    return msgs[0].mean(2), msgs[1].mean(3), h, c  # fwd (P, N, B, M), bwd (P, N, A, M)


def _reference_sweep(p, states, x, error, cfg: VSMLConfig, reverse: bool):
    M = cfg.msg_size
    states = list(states)
    if x is not None:
        fwd = torch.zeros(*x.shape, M, dtype=x.dtype, device=x.device)
        fwd[..., 0] = x
        states[0] = states[0]._replace(fwd_in=fwd)
    bwd = torch.zeros(*error.shape[:-1], M, dtype=error.dtype, device=error.device)
    bwd[..., : error.shape[-1]] = error
    states[-1] = states[-1]._replace(bwd_in=bwd)
    logits = None
    for i in reversed(range(len(states))) if reverse else range(len(states)):
        fwd_out, bwd_out, h, c = _reference_layer(p, states[i], cfg)
        states[i] = states[i]._replace(h=h, c=c)
        if i > 0:
            states[i - 1] = states[i - 1]._replace(bwd_in=bwd_out)
        if i + 1 < len(states):
            states[i + 1] = states[i + 1]._replace(fwd_in=fwd_out)
        else:
            logits = fwd_out[..., cfg.output_idx] * cfg.logit_scale
            if cfg.tanh_bound:
                logits = cfg.tanh_bound * torch.tanh(logits / cfg.tanh_bound)
    return states, logits


def _reference_average(states: Sequence[LayerState], k: int) -> list[LayerState]:
    # The reference's merge: the first half of h and of c, averaged over each learner's K
    # consecutive batch entries and broadcast back.
    out = []
    for s in states:
        new = []
        for t in (s.h, s.c):
            P, N = t.shape[:2]
            half = t.shape[-1] // 2
            w = t[..., :half].reshape(P, N // k, k, *t.shape[2:-1], half)
            w = w.mean(2, keepdim=True).expand_as(w).reshape(*t.shape[:-1], half)
            new.append(torch.cat([w, t[..., half:]], dim=-1))
        out.append(s._replace(h=new[0], c=new[1]))
    return out


def reference_episode(
    params: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    cfg: VSMLConfig,
    states: Sequence[LayerState],
) -> tuple[Tensor, list[LayerState], Tensor]:
    """The episode of `episode` driven by `reference_cell`: x `(T, P, N, A_1)`, y `(T, P, N)`,
    explicit initial `states`. The weight half of every state is averaged over each learner's
    K = `cfg.inner_batch` entries before each example and the error divided by K (both the
    identity for K = 1, the fast path's independent sequences).
    Returns the logits `(T, P, N, B)`, the final states and the final error `(P, N, B, 2)`."""
    p = _with_population(params, cfg)
    k = cfg.inner_batch
    B = states[-1].h.shape[3]
    error = x.new_zeros(*y.shape[1:], B, 2)
    logits_t = []
    for t in range(x.shape[0]):
        states = _reference_average(states, k)  # the identity when K = 1
        states, logits = _reference_sweep(p, states, x[t], error, cfg, reverse=False)
        logits_t.append(logits)
        onehot = F.one_hot(y[t], B).to(x.dtype)
        err = (torch.softmax(logits, -1) - onehot) / k
        error = torch.stack([err, onehot if cfg.feed_label else torch.zeros_like(err)], -1)
        if cfg.backward_pass:
            states, _ = _reference_sweep(p, states, None, error, cfg, reverse=True)
            error = torch.zeros_like(error)
    return torch.stack(logits_t), states, error
