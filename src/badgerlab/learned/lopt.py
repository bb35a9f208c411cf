"""A per-parameter MLP learned optimizer (Metz et al., https://arxiv.org/abs/2009.11243).

For every parameter tensor p with gradient g the optimizer keeps momenta
m_k ← β_k m_k + (1−β_k) g at decays β_k ∈ ``DECAYS`` and a second moment
v ← β_v v + (1−β_v) g² (β_v = ``RMS_DECAY``). A *head* maps these to the update Δp, applied as
p ← p + Δp. The learned head (`mlp_head`, as `mlp_lopt` of google/learned_optimization) builds
per-parameter features

    f = [p, g, m_1 … m_K, v, g/√(v+ε), m_1/√(v+ε)],

normalises each feature by its second moment over the tensor, f / √(mean(f²)+ε), appends the
step embeddings tanh(t/ω) for ω ∈ ``TIMESCALES`` and runs one small MLP per parameter with two
outputs (d, a):

    Δp = d · exp(0.001 · a) · 0.001

Hand-set heads (`sgd_theta` read by the MLP, `adam_head`) reproduce SGD and Adam exactly: the
special cases the tests check. Every function is pure (params, state in; params, state out), so
`torch.func.grad` and `vmap` run through a whole unrolled inner loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "DECAYS",
    "RMS_DECAY",
    "TIMESCALES",
    "Head",
    "LOptState",
    "adam_head",
    "features",
    "init_state",
    "init_theta",
    "lopt_step",
    "mlp_head",
    "num_features",
    "num_theta",
    "sgd_theta",
    "theta_from_vector",
    "theta_to_vector",
]

DECAYS = (0.5, 0.9, 0.99, 0.999, 0.9999)
RMS_DECAY = 0.999
TIMESCALES = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)
EPS = 1e-8
_KEYS = ("w1", "b1", "w2", "b2")

#: head(p, g, m (K, *p.shape), v (*p.shape), t ()) -> Δp (*p.shape); t counts this step too.
Head = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]


class LOptState(NamedTuple):
    step: Tensor  # (), updates taken so far
    momenta: tuple[Tensor, ...]  # one (K, *p.shape) per parameter tensor
    rms: tuple[Tensor, ...]  # one (*p.shape) per parameter tensor: EMA of g²


def num_features() -> int:
    """Inputs of the MLP: K + 5 per-parameter features and the step embeddings."""
    return len(DECAYS) + 5 + len(TIMESCALES)


def num_theta(hidden: int) -> int:
    """Number of meta-parameters of a head with ``hidden`` units: F·H + H + 2H + 2."""
    return num_features() * hidden + hidden + 2 * hidden + 2


def init_state(params: Sequence[Tensor]) -> LOptState:
    """Zero momenta and second moments, step 0, for the tensors ``params``."""
    if len(params) == 0:
        raise ValueError("params must hold at least one tensor, got an empty sequence")
    ref = params[0]
    return LOptState(
        step=torch.zeros((), dtype=ref.dtype, device=ref.device),
        momenta=tuple(p.new_zeros((len(DECAYS), *p.shape)) for p in params),
        rms=tuple(torch.zeros_like(p) for p in params),
    )


def lopt_step(
    params: Sequence[Tensor], grads: Sequence[Tensor], state: LOptState, *, head: Head
) -> tuple[list[Tensor], LOptState]:
    """One optimizer step: update the moments, then p ← p + head(p, g, m, v, t).

    ``params`` and ``grads`` are matching sequences of tensors; returns the new parameters (a
    list) and state.
    """
    if not (len(params) == len(grads) == len(state.momenta)):
        raise ValueError(
            f"params ({len(params)}), grads ({len(grads)}) and state "
            f"({len(state.momenta)}) must have the same length"
        )
    t = state.step + 1
    new_params, momenta, rms = [], [], []
    for i, (p, g, m, v) in enumerate(zip(params, grads, state.momenta, state.rms, strict=True)):
        if g.shape != p.shape:
            raise ValueError(f"grads[{i}] has shape {tuple(g.shape)}, params[{i}] {p.shape}")
        beta = torch.tensor(DECAYS, dtype=g.dtype, device=g.device).view(-1, *[1] * g.dim())
        m = beta * m + (1 - beta) * g  # (K, *shape)
        v = RMS_DECAY * v + (1 - RMS_DECAY) * g * g
        new_params.append(p + head(p, g, m, v, t))
        momenta.append(m)
        rms.append(v)
    return new_params, LOptState(t, tuple(momenta), tuple(rms))


def features(p: Tensor, g: Tensor, m: Tensor, v: Tensor, t: Tensor, *, normalise: bool = True):
    """The MLP's input for every entry of p: ``(p.numel(), num_features())``."""
    r = torch.rsqrt(v + EPS)
    f = torch.stack([p, g, *m, v, g * r, m[0] * r], dim=-1)  # (*shape, K+5)
    f = f.reshape(-1, f.shape[-1])  # (n, K+5)
    if normalise:
        f = f * torch.rsqrt((f * f).mean(0, keepdim=True) + EPS)
    omega = torch.tensor(TIMESCALES, dtype=p.dtype, device=p.device)
    emb = torch.tanh(t / omega).expand(f.shape[0], -1)  # (n, len(TIMESCALES))
    return torch.cat([f, emb], dim=-1)  # (n, F)


def init_theta(
    hidden: int = 8, *, generator: torch.Generator | None = None, dtype: torch.dtype | None = None
) -> dict[str, Tensor]:
    """Weights of the learned head F → hidden (ReLU) → 2, small random init (Δp ≈ 0 at start)."""
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise ValueError(f"hidden must be an int >= 1, got {hidden!r}")
    f = num_features()
    kw = {"generator": generator, "dtype": dtype or torch.get_default_dtype()}
    return {
        "w1": torch.randn(f, hidden, **kw) / math.sqrt(f),
        "b1": torch.zeros(hidden, dtype=kw["dtype"]),
        "w2": torch.randn(hidden, 2, **kw) * 0.01 / math.sqrt(hidden),
        "b2": torch.zeros(2, dtype=kw["dtype"]),
    }


def theta_to_vector(theta: dict[str, Tensor]) -> Tensor:
    """The head's weights (w1, b1, w2, b2) as one vector ``(num_theta(H),)``, for ES."""
    missing = [k for k in _KEYS if k not in theta]
    if missing:
        raise ValueError(f"theta lacks {missing}; expected keys {_KEYS}")
    return torch.cat([theta[k].reshape(-1) for k in _KEYS])


def theta_from_vector(vec: Tensor, hidden: int) -> dict[str, Tensor]:
    """Inverse of `theta_to_vector` for a head with ``hidden`` units; ``vec (num_theta(H),)``."""
    if vec.ndim != 1 or vec.shape[0] != num_theta(hidden):
        raise ValueError(
            f"vec must have shape ({num_theta(hidden)},) for hidden={hidden}, "
            f"got {tuple(vec.shape)}"
        )
    f = num_features()
    sizes = {"w1": (f, hidden), "b1": (hidden,), "w2": (hidden, 2), "b2": (2,)}
    out, i = {}, 0
    for k, s in sizes.items():
        n = math.prod(s)
        out[k] = vec[i : i + n].reshape(s)
        i += n
    return out


def mlp_head(theta: dict[str, Tensor], *, normalise: bool = True) -> Head:
    """The learned head: Δp = d·exp(0.001·a)·0.001 with (d, a) = MLP_θ(features)."""
    if set(theta) != set(_KEYS):
        raise ValueError(f"theta must have keys {_KEYS}, got {sorted(theta)}")
    if theta["w1"].shape[0] != num_features():
        raise ValueError(f"theta['w1'] must have {num_features()} rows, got {theta['w1'].shape}")

    def head(p, g, m, v, t):
        x = features(p, g, m, v, t, normalise=normalise)
        h = torch.relu(x @ theta["w1"] + theta["b1"])  # (n, hidden)
        out = h @ theta["w2"] + theta["b2"]  # (n, 2)
        step = out[:, 0] * torch.exp(0.001 * out[:, 1]) * 0.001
        return step.reshape(p.shape)

    return head


def sgd_theta(lr: float, *, dtype: torch.dtype = torch.float64) -> dict[str, Tensor]:
    """Head weights (read with ``mlp_head(theta, normalise=False)``) whose output is −lr·g.

    Two ReLU units read g and −g; the direction is −1000·lr·(relu(g) − relu(−g)) and the
    magnitude 0, so Δp = −lr·g exactly.
    """
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    theta = {k: torch.zeros_like(v) for k, v in init_theta(2, dtype=dtype).items()}
    theta["w1"][1, 0], theta["w1"][1, 1] = 1.0, -1.0  # feature 1 is g
    theta["w2"][0, 0], theta["w2"][1, 0] = -1000.0 * lr, 1000.0 * lr
    return theta


def adam_head(lr: float = 1e-3, *, eps: float = 1e-8) -> Head:
    """Adam's update from the same moments (β1 = DECAYS[1] = 0.9, β2 = RMS_DECAY = 0.999):

    Δp = −lr · (m/(1−β1^t)) / (√(v/(1−β2^t)) + ε)    (Kingma & Ba, arXiv 1412.6980)
    """
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise ValueError(f"eps must be > 0, got {eps!r}")
    b1, b2 = DECAYS[1], RMS_DECAY

    def head(p, g, m, v, t):
        mhat = m[1] / (1 - b1**t)
        return -lr * mhat / (torch.sqrt(v / (1 - b2**t)) + eps)

    return head
