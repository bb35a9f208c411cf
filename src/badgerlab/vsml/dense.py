"""The VSML RNN read as one ordinary Meta-RNN whose dense weights have shared and zero blocks.

View (b) of Kirsch & Schmidhuber (arXiv 2012.14905, figure 2): stacking every cell's state of
an A×B layer into one vector s = [h_11, …, h_AB] (length A·B·H) turns the grid into a single
LSTM with input u = [m→_1, …, m→_A, m←_1, …, m←_B] and

    W_ih[(g, ab), a']  = W_f[g]  if a' = a   (else 0)      (g: gate, ab: cell)
    W_ih[(g, ab), b']  = W_b[g]  if b' = b   (else 0)
    W_hh[(g, ab), a'b'] = W_h[g] if a'b' = ab (else 0)     (block diagonal)

and the message read-out is one more sparse matrix: m→'_b = Σ_a (U_f/A) h_ab + u_f. This
module materialises those matrices and runs them through `torch.lstm_cell` (PyTorch's own LSTM
step), without the grid code of `model.py`, so that the two views can be checked against each
other. The block matrices grow as (A·B·H)², so this is for small grids only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .model import VSMLConfig

__all__ = ["DenseLayer", "DenseMetaRNN", "dense_layer"]


@dataclass(frozen=True)
class DenseLayer:
    """The dense matrices of one A×B layer (gate order of `torch.lstm_cell`: i, f, g, o).

    `w_ih` `(4n, (A+B)·M)`, `w_hh` `(4n, n)`, `b` `(4n,)` with n = A·B·H; `read_f` `(B·M, A·B·M)`
    and `read_b` `(A·M, A·B·M)` average per-cell messages; `cell_f`, `cell_b` `(A·B·M, n)` are
    the block-diagonal per-cell heads with biases `cell_f_bias`, `cell_b_bias` `(A·B·M,)`.
    """

    a: int
    b: int
    w_ih: Tensor
    w_hh: Tensor
    bias: Tensor
    cell_f: Tensor
    cell_f_bias: Tensor
    cell_b: Tensor
    cell_b_bias: Tensor
    read_f: Tensor
    read_b: Tensor


def dense_layer(params: Mapping[str, Tensor], cfg: VSMLConfig, a: int, b: int) -> DenseLayer:
    """Materialise the block matrices of an `a`×`b` layer from shared `params` (no population)."""
    if a < 1 or b < 1:
        raise ValueError(f"layer sizes must be >= 1, got a={a}, b={b}")
    H, M = cfg.state_size, cfg.msg_size
    n = a * b * H
    dtype = params["w_h"].dtype
    # Our gates are stored (i, f, o, g); torch.lstm_cell wants (i, f, g, o).
    perm = torch.cat(
        [torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)]
    )
    w_f, w_b, w_h = params["w_f"][:, perm], params["w_b"][:, perm], params["w_h"][:, perm]
    offset = torch.zeros(4 * H, dtype=dtype)
    offset[:H], offset[H : 2 * H] = cfg.input_bias, cfg.forget_bias
    beta = params["bias"][perm] + offset  # (4H,) in torch order
    w_ih = torch.zeros(4, a, b, H, a + b, M, dtype=dtype)
    w_hh = torch.zeros(4, a, b, H, a, b, H, dtype=dtype)
    for ia in range(a):
        for ib in range(b):
            # (M, 4H) -> (4, H, M): gate g, unit j reads message slot m.
            w_ih[:, ia, ib, :, ia, :] = w_f.T.reshape(4, H, M)
            w_ih[:, ia, ib, :, a + ib, :] = w_b.T.reshape(4, H, M)
            w_hh[:, ia, ib, :, ia, ib, :] = w_h.T.reshape(4, H, H)
    bias = beta.view(4, 1, 1, H).expand(4, a, b, H).reshape(4 * n)
    eye = torch.eye(a * b, dtype=dtype)
    cell_f = torch.kron(eye, params["head_f.weight"].T.contiguous())  # (A·B·M, n)
    cell_b = torch.kron(eye, params["head_b.weight"].T.contiguous())
    read_f = torch.zeros(b, M, a, b, M, dtype=dtype)
    read_b = torch.zeros(a, M, a, b, M, dtype=dtype)
    eye_m = torch.eye(M, dtype=dtype)
    for ia in range(a):
        for ib in range(b):
            read_f[ib, :, ia, ib, :] = eye_m / a
            read_b[ia, :, ia, ib, :] = eye_m / b
    return DenseLayer(
        a,
        b,
        w_ih.reshape(4 * n, (a + b) * M),
        w_hh.reshape(4 * n, n),
        bias,
        cell_f,
        params["head_f.bias"].repeat(a * b),
        cell_b,
        params["head_b.bias"].repeat(a * b),
        read_f.reshape(b * M, a * b * M),
        read_b.reshape(a * M, a * b * M),
    )


class DenseMetaRNN:
    """A stack of dense Meta-RNN layers with the VSML tick schedule, for one parameter set.

    `step(x, error)` takes x `(N, A_1)` and error `(N, B_L, k)` and returns logits `(N, B_L)`.
    States `h`, `c` are `(N, A·B·H)` per layer, laid out cell-major as in `model.LayerState`
    flattened, so `load_states` can start from a grid's state.
    """

    def __init__(self, params: Mapping[str, Tensor], cfg: VSMLConfig, sizes: Sequence[int]):
        if len(sizes) < 2:
            raise ValueError(f"sizes must list >= 2 widths, got {list(sizes)}")
        self.cfg, self.sizes = cfg, list(sizes)
        self.p = dict(params)
        self.layers = [
            dense_layer(params, cfg, a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=False)
        ]
        self.h: list[Tensor] = []
        self.c: list[Tensor] = []
        self.fwd_in: list[Tensor] = []
        self.bwd_in: list[Tensor] = []

    def load_states(self, h: Sequence[Tensor], c: Sequence[Tensor], batch: int) -> None:
        """Start from given cell states, each `(N, A, B, H)`; messages start at zero."""
        M = self.cfg.msg_size
        dt = self.layers[0].w_hh.dtype
        self.h = [t.reshape(batch, -1).clone() for t in h]
        self.c = [t.reshape(batch, -1).clone() for t in c]
        self.fwd_in = [torch.zeros(batch, ly.a * M, dtype=dt) for ly in self.layers]
        self.bwd_in = [torch.zeros(batch, ly.b * M, dtype=dt) for ly in self.layers]

    def _messages(self, i: int, h: Tensor) -> tuple[Tensor, Tensor]:
        ly, cfg = self.layers[i], self.cfg
        M = cfg.msg_size
        mf = h @ ly.cell_f.T + ly.cell_f_bias  # (N, A·B·M)
        mb = h @ ly.cell_b.T + ly.cell_b_bias
        if cfg.layer_norm:
            n = h.shape[0]
            mf = (
                F.layer_norm(mf.view(n, -1, M), (M,)) * self.p["ln_f.scale"]
                + self.p["ln_f.offset"]
            )
            mb = (
                F.layer_norm(mb.view(n, -1, M), (M,)) * self.p["ln_b.scale"]
                + self.p["ln_b.offset"]
            )
            mf, mb = mf.reshape(n, -1), mb.reshape(n, -1)
        return mf @ ly.read_f.T, mb @ ly.read_b.T  # (N, B·M), (N, A·M)

    def step(self, x: Tensor | None, error: Tensor | None, *, reverse: bool = False) -> Tensor:
        cfg = self.cfg
        M = cfg.msg_size
        if x is not None:
            self.fwd_in[0] = F.pad(x.unsqueeze(-1), (0, M - 1)).reshape(x.shape[0], -1)
        if error is not None:
            self.bwd_in[-1] = F.pad(error, (0, M - error.shape[-1])).reshape(error.shape[0], -1)
        order = range(len(self.layers) - 1, -1, -1) if reverse else range(len(self.layers))
        logits = None
        for i in order:
            ly = self.layers[i]
            u = torch.cat([self.fwd_in[i], self.bwd_in[i]], dim=-1)  # (N, (A+B)·M)
            h, c = self.h[i], self.c[i]
            for _ in range(cfg.micro_ticks):
                h, c = torch.lstm_cell(u, (h, c), ly.w_ih, ly.w_hh, ly.bias, None)
            self.h[i], self.c[i] = h, c
            fwd, bwd = self._messages(i, h)
            if i > 0:
                self.bwd_in[i - 1] = bwd
            if i < len(self.layers) - 1:
                self.fwd_in[i + 1] = fwd
            else:
                logits = fwd.view(fwd.shape[0], ly.b, M)[..., cfg.output_idx] * cfg.logit_scale
                if cfg.tanh_bound:
                    logits = torch.tanh(logits / cfg.tanh_bound) * cfg.tanh_bound
        assert logits is not None
        return logits
