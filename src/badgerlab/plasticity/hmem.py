"""H-Mem: a memory matrix written by Hebbian plasticity, read by a learned query (+ baselines).

Each story step t carries an embedding e_t (B, E). Keys and values are extracted and
layer-normalised, then the value is mixed with what the memory already holds for the key
(read-before-write), and the pair is written by a saturating Hebbian rule with decay:

    k_t = LN(ReLU(W_k e_t)),   v_t = LN(ReLU(W_v e_t))                      (B, m)
    v_h = k_tᵀ W_{t−1},        v_t ← LN(W_d [v_t; v_h] + b_d)               (B, m)
    W_t = W_{t−1} + γ₊ (w_max − W_{t−1}) ⊙ (k_t v_tᵀ) − γ₋ W_{t−1} ⊙ (k_t² 1ᵀ),   W_0 = 0,

with W (B, m, m), γ₊ = γ₋ = 0.01 and w_max = 1 fixed (not learned, as the reference). A query
embedding e_q (B, E_q) reads the memory in H hops and the answer is a linear readout:

    q_1 = ReLU(W_q e_q),   v̂_1 = q_1ᵀ W_T
    q_h = LN(W_q^h [e_q; v̂_{h−1}]),   v̂_h = q_hᵀ W_T      (h = 2 … H)
    y = W_o v̂_H                                           (B, C)

Saturation: for an entry with a = γ₊ k_i v_j and b = γ₋ k_i² the write is the affine map
W ↦ (1 − a − b) W + a w_max; when k, v ≥ 0 and a + b ≤ 1 it maps [−w_max, w_max] into itself
(from W_0 = 0 every entry stays in [0, w_max]). The reference layer-normalises k and v, so
they are signed and that bound is not guaranteed there; we keep the reference's rule.

Baselines of the same memory size m: `LSTMBaseline` (the story, then the query, as one
sequence) and `MemNetBaseline`, a key-value memory network that stores every (k_t, v_t) in a
slot and reads by softmax attention: no plasticity, unbounded slots.

Reference: Limbacher & Legenstein, "H-Mem: Harnessing synaptic plasticity with Hebbian Memory
Networks", NeurIPS 2020 (https://doi.org/10.1101/2020.07.01.180372); code IGITUGraz/H-Mem.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "BIBTEX",
    "PAPER",
    "HMem",
    "LSTMBaseline",
    "MemNetBaseline",
    "read",
    "write",
]

PAPER = (
    "Limbacher & Legenstein, H-Mem: Harnessing synaptic plasticity with Hebbian Memory "
    "Networks, NeurIPS 2020"
)
BIBTEX = """@inproceedings{limbacher2020hmem,
  title={H-Mem: Harnessing synaptic plasticity with Hebbian Memory Networks},
  author={Limbacher, Thomas and Legenstein, Robert},
  booktitle={Advances in Neural Information Processing Systems},
  volume={33},
  pages={21627--21637},
  year={2020}
}"""


def _check_batch(name: str, x: Tensor, ndim: int) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got dtype {x.dtype}")


def _check_gamma(gamma_pos: float, gamma_neg: float, w_max: float) -> None:
    for name, val in (("gamma_pos", gamma_pos), ("gamma_neg", gamma_neg)):
        if not 0.0 <= float(val) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {val!r}")
    if not float(w_max) > 0.0:
        raise ValueError(f"w_max must be > 0, got {w_max!r}")


def write(
    W: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    gamma_pos: float = 0.01,
    gamma_neg: float = 0.01,
    w_max: float = 1.0,
) -> Tensor:
    """One Hebbian write: W + γ₊ (w_max − W) ⊙ (k vᵀ) − γ₋ W ⊙ (k² 1ᵀ).

    W: (B, m, n) memory, k: (B, m) key, v: (B, n) value; returns the new (B, m, n) memory.

    >>> W = write(torch.zeros(1, 2, 2), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]]))
    >>> [[round(x, 6) for x in row] for row in W[0].tolist()]
    [[0.0, 0.02], [0.0, 0.0]]
    """
    _check_batch("W", W, 3)
    _check_batch("k", k, 2)
    _check_batch("v", v, 2)
    B, m, n = W.shape
    if tuple(k.shape) != (B, m):
        raise ValueError(f"k must have shape {(B, m)} to match W, got {tuple(k.shape)}")
    if tuple(v.shape) != (B, n):
        raise ValueError(f"v must have shape {(B, n)} to match W, got {tuple(v.shape)}")
    _check_gamma(gamma_pos, gamma_neg, w_max)
    return _write(W, k, v, gamma_pos, gamma_neg, w_max)


def _write(W: Tensor, k: Tensor, v: Tensor, gamma_pos, gamma_neg, w_max) -> Tensor:
    """`write` without the argument checks (the module's inner loop checks once per story),
    in three full-size ops: with a = γ₊ k vᵀ, W' = W ⊙ ((1 − γ₋ k²) 1ᵀ − a) + w_max a."""
    a = (gamma_pos * k)[:, :, None] * v[:, None, :]  # (B, m, n)
    keep = (1.0 - gamma_neg * k * k)[:, :, None] - a  # (B, m, n)
    return torch.addcmul(a if w_max == 1.0 else w_max * a, W, keep)


def read(W: Tensor, q: Tensor) -> Tensor:
    """Read the memory with a query: v̂ = qᵀ W. W: (B, m, n), q: (B, m); returns (B, n).

    >>> read(torch.eye(2)[None], torch.tensor([[3.0, 4.0]])).tolist()
    [[3.0, 4.0]]
    """
    _check_batch("W", W, 3)
    _check_batch("q", q, 2)
    if tuple(q.shape) != tuple(W.shape[:2]):
        raise ValueError(
            f"q must have shape {tuple(W.shape[:2])} to match W, got {tuple(q.shape)}"
        )
    return torch.einsum("bm,bmn->bn", q, W)  # (B, n)


def _check_sizes(**sizes: int) -> None:
    for name, val in sizes.items():
        if not isinstance(val, int) or isinstance(val, bool) or val < 1:
            raise ValueError(f"{name} must be a positive int, got {val!r}")


def _check_inputs(
    story: Tensor, query: Tensor, input_size: int, query_size: int, mask: Tensor | None = None
) -> None:
    _check_batch("story", story, 3)
    _check_batch("query", query, 2)
    if story.shape[-1] != input_size:
        raise ValueError(f"story must have last dim {input_size}, got {tuple(story.shape)}")
    if tuple(query.shape) != (story.shape[0], query_size):
        raise ValueError(
            f"query must have shape {(story.shape[0], query_size)}, got {tuple(query.shape)}"
        )
    _check_mask(mask, story)


def _check_mask(mask: Tensor | None, story: Tensor) -> None:
    """`mask` (B, T) bool marks the real steps of a padded story; None means all are real."""
    if mask is None:
        return
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got {getattr(mask, 'dtype', type(mask))}")
    if tuple(mask.shape) != tuple(story.shape[:2]):
        raise ValueError(
            f"mask must have shape {tuple(story.shape[:2])} to match story, "
            f"got {tuple(mask.shape)}"
        )
    if not bool(mask.any(-1).all()):
        raise ValueError("mask must keep at least one step of every story")


class HMem(nn.Module):
    """H-Mem (module docstring for the equations): story (B, T, E), query (B, E_q) → (B, C).

    `gamma_pos=0` turns plasticity off (W stays 0: the ablation). `sum_hops=True` reads out
    y = W_o Σ_h v̂_h (the reference's question-answering model) instead of W_o v̂_H. `forward`
    returns the logits; `memorize` the final memory W_T (B, m, m); `answer(W, query)` the
    logits.
    """

    def __init__(
        self,
        input_size: int,
        query_size: int,
        memory_size: int,
        num_outputs: int,
        *,
        hops: int = 1,
        gamma_pos: float = 0.01,
        gamma_neg: float = 0.01,
        w_max: float = 1.0,
        sum_hops: bool = False,
    ) -> None:
        super().__init__()
        _check_sizes(
            input_size=input_size,
            query_size=query_size,
            memory_size=memory_size,
            num_outputs=num_outputs,
            hops=hops,
        )
        _check_gamma(gamma_pos, gamma_neg, w_max)
        self.input_size, self.query_size, self.memory_size = input_size, query_size, memory_size
        self.gamma_pos, self.gamma_neg, self.w_max = float(gamma_pos), float(gamma_neg), w_max
        self.sum_hops = bool(sum_hops)
        m = memory_size
        self.W_k = nn.Linear(input_size, m, bias=False)
        self.W_v = nn.Linear(input_size, m, bias=False)
        self.ln_k, self.ln_v, self.ln_d = nn.LayerNorm(m), nn.LayerNorm(m), nn.LayerNorm(m)
        self.W_d = nn.Linear(2 * m, m)
        self.W_q = nn.Linear(query_size, m, bias=False)
        self.W_hops = nn.ModuleList(nn.Linear(query_size + m, m) for _ in range(hops - 1))
        self.ln_hops = nn.ModuleList(nn.LayerNorm(m) for _ in range(hops - 1))
        self.W_o = nn.Linear(m, num_outputs, bias=False)

    def extract(self, e: Tensor) -> tuple[Tensor, Tensor]:
        """k = LN(ReLU(W_k e)), v = LN(ReLU(W_v e)); e: (…, E) → two (…, m)."""
        return self.ln_k(F.relu(self.W_k(e))), self.ln_v(F.relu(self.W_v(e)))

    def memorize(self, story: Tensor, mask: Tensor | None = None) -> Tensor:
        """Write every step of `story` (B, T, E) into W_0 = 0; returns W_T (B, m, m).

        With `mask` (B, T) bool a step whose entry is False (padding) leaves W unchanged.
        """
        _check_mask(mask, story)
        B, T, _ = story.shape
        m = self.memory_size
        keys, vals = self.extract(story)  # every step at once: (B, T, m) each
        # W_d [v; v_h] + b = W_d[:, :m] v + b + W_d[:, m:] v_h: the first part needs no memory
        mixed = F.linear(vals, self.W_d.weight[:, :m], self.W_d.bias)  # (B, T, m)
        W_dh = self.W_d.weight[:, m:]
        if mask is not None:  # a zero key writes nothing: W ⊙ 1 + 0 leaves W exactly as it was
            keys = keys * mask[..., None]
        W = story.new_zeros(B, m, m)
        for t in range(T):
            k = keys[:, t]
            v_h = torch.bmm(k[:, None], W)[:, 0]  # read-before-write kᵀW, (B, m)
            v = self.ln_d(mixed[:, t] + F.linear(v_h, W_dh))
            W = _write(W, k, v, self.gamma_pos, self.gamma_neg, self.w_max)
        return W

    def answer(self, W: Tensor, query: Tensor) -> Tensor:
        """Read W (B, m, m) in H hops with `query` (B, E_q); returns logits (B, C)."""
        q = F.relu(self.W_q(query))
        v_hat = read(W, q)
        total = v_hat
        for lin, ln in zip(self.W_hops, self.ln_hops, strict=True):
            q = ln(lin(torch.cat([query, v_hat], dim=-1)))
            v_hat = read(W, q)
            total = total + v_hat
        return self.W_o(total if self.sum_hops else v_hat)

    def forward(self, story: Tensor, query: Tensor, mask: Tensor | None = None) -> Tensor:
        _check_inputs(story, query, self.input_size, self.query_size, mask)
        return self.answer(self.memorize(story, mask), query)


class MemNetBaseline(nn.Module):
    """Key-value memory network without plasticity, the same extraction and size as `HMem`.

    Slots K = [k_1 … k_T], V = [v_1 … v_T] (B, T, m) with k_t, v_t as in H-Mem (no mixing);
    read a = softmax(K q) (B, T), v̂ = aᵀ V; hops q_h = LN(W_q^h [e_q; v̂_{h−1}]); y = W_o v̂.
    """

    def __init__(
        self,
        input_size: int,
        query_size: int,
        memory_size: int,
        num_outputs: int,
        *,
        hops: int = 1,
    ) -> None:
        super().__init__()
        _check_sizes(
            input_size=input_size,
            query_size=query_size,
            memory_size=memory_size,
            num_outputs=num_outputs,
            hops=hops,
        )
        self.input_size, self.query_size = input_size, query_size
        m = memory_size
        self.W_k = nn.Linear(input_size, m, bias=False)
        self.W_v = nn.Linear(input_size, m, bias=False)
        self.ln_k, self.ln_v = nn.LayerNorm(m), nn.LayerNorm(m)
        self.W_q = nn.Linear(query_size, m, bias=False)
        self.W_hops = nn.ModuleList(nn.Linear(query_size + m, m) for _ in range(hops - 1))
        self.ln_hops = nn.ModuleList(nn.LayerNorm(m) for _ in range(hops - 1))
        self.W_o = nn.Linear(m, num_outputs, bias=False)

    def forward(self, story: Tensor, query: Tensor, mask: Tensor | None = None) -> Tensor:
        """Logits (B, C); `mask` (B, T) bool hides padding slots from the attention."""
        _check_inputs(story, query, self.input_size, self.query_size, mask)
        K = self.ln_k(F.relu(self.W_k(story)))  # (B, T, m)
        V = self.ln_v(F.relu(self.W_v(story)))  # (B, T, m)
        q = F.relu(self.W_q(query))
        hops = [(None, None), *zip(self.W_hops, self.ln_hops, strict=True)]
        v_hat = q
        for lin, ln in hops:
            if lin is not None:
                q = ln(lin(torch.cat([query, v_hat], dim=-1)))
            scores = torch.einsum("btm,bm->bt", K, q)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            a = torch.softmax(scores, dim=-1)  # (B, T)
            v_hat = torch.einsum("bt,btm->bm", a, V)  # (B, m)
        return self.W_o(v_hat)


class LSTMBaseline(nn.Module):
    """An LSTM reads the story steps [e_t; 0] then the query step [0; e_q]; y = W_o h_{T+1}.

    story (B, T, E), query (B, E_q) → logits (B, C); `hidden_size` plays the memory size.
    """

    def __init__(
        self, input_size: int, query_size: int, hidden_size: int, num_outputs: int
    ) -> None:
        super().__init__()
        _check_sizes(
            input_size=input_size,
            query_size=query_size,
            hidden_size=hidden_size,
            num_outputs=num_outputs,
        )
        self.input_size, self.query_size = input_size, query_size
        self.lstm = nn.LSTM(input_size + query_size, hidden_size, batch_first=True)
        self.W_o = nn.Linear(hidden_size, num_outputs)

    def forward(self, story: Tensor, query: Tensor, mask: Tensor | None = None) -> Tensor:
        """Logits (B, C). With `mask` (B, T) bool the real steps must come first (right
        padding): the LSTM reads each story's own length (a packed sequence), then the query."""
        _check_inputs(story, query, self.input_size, self.query_size, mask)
        B, T, E = story.shape
        steps = torch.cat([story, story.new_zeros(B, T, self.query_size)], dim=-1)
        last = torch.cat([query.new_zeros(B, E), query], dim=-1)[:, None]
        if mask is None:
            out, _ = self.lstm(torch.cat([steps, last], dim=1))  # (B, T + 1, hidden)
            return self.W_o(out[:, -1])
        lengths = mask.sum(-1)
        if not bool((mask == (torch.arange(T) < lengths[:, None])).all()):
            raise ValueError("LSTMBaseline needs right-padded stories: mask must be a prefix")
        packed = nn.utils.rnn.pack_padded_sequence(
            steps, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        _, state = self.lstm(packed)
        out, _ = self.lstm(last, state)  # (B, 1, hidden)
        return self.W_o(out[:, -1])
