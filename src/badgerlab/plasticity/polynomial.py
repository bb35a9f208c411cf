"""The 27-term polynomial plasticity rule of Confavreux et al. 2020, its algebra and an oracle.

For a linear neuron y = wᵀx with N inputs the rule is

    Δw_i = η Σ_{α,β,γ ∈ {0,1,2}} θ_αβγ x_i^α y^β w_i^γ,

with θ flattened as θ[9α + 3β + γ] (27 coefficients). Oja's rule Δw = η y (x − y w) is
θ_110 = 1, θ_021 = −1 and all others 0; its fixed point is the first principal component of
the input covariance with |w| = 1.

Reference: Confavreux, Zenke, Agnes, Lillicrap & Vogels, "A meta-learning approach to
(re)discover plasticity rules that carve a desired function into a neural network", NeurIPS
2020 (https://proceedings.neurips.cc/paper/2020/hash/bdbd5ebfde4934142c8a88e7a3796cd5).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "NUM_TERMS",
    "TERMS",
    "fit_rule",
    "monomials",
    "oja_theta",
    "run_rule",
    "term_index",
    "term_name",
    "update",
]

#: (α, β, γ) of each coefficient, in the order of the flat θ: index 9α + 3β + γ.
TERMS: tuple[tuple[int, int, int], ...] = tuple(
    (a, b, c) for a in range(3) for b in range(3) for c in range(3)
)
NUM_TERMS = len(TERMS)


def term_index(alpha: int, beta: int, gamma: int) -> int:
    """Flat index of θ_αβγ: 9α + 3β + γ.

    >>> term_index(1, 1, 0), term_index(0, 2, 1)
    (12, 7)
    """
    for name, v in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if not isinstance(v, int) or not 0 <= v <= 2:
            raise ValueError(f"{name} must be an int in 0..2, got {v!r}")
    return 9 * alpha + 3 * beta + gamma


def term_name(index: int) -> str:
    """``"θ_αβγ"`` of a flat index, e.g. ``term_name(12) == "θ_110"``."""
    if not isinstance(index, int) or not 0 <= index < NUM_TERMS:
        raise ValueError(f"index must be an int in 0..26, got {index!r}")
    a, b, c = TERMS[index]
    return f"θ_{a}{b}{c}"


def oja_theta(*, dtype: torch.dtype = torch.float32) -> Tensor:
    """Oja's rule as a coefficient vector (27,): θ_110 = 1, θ_021 = −1."""
    theta = torch.zeros(NUM_TERMS, dtype=dtype)
    theta[term_index(1, 1, 0)] = 1.0
    theta[term_index(0, 2, 1)] = -1.0
    return theta


def _powers(z: Tensor) -> Tensor:
    """(…,) → (…, 3): z⁰, z¹, z² (z⁰ = 1 even where z = 0)."""
    return torch.stack([torch.ones_like(z), z, z * z], -1)


def monomials(x: Tensor, y: Tensor, w: Tensor) -> Tensor:
    """Every monomial x_i^α y^β w_i^γ: x, w (…, N), y (…,) → (…, N, 27) in θ's order."""
    if x.shape != w.shape:
        raise ValueError(f"x and w must have the same shape, got {tuple(x.shape)} and {w.shape}")
    if y.shape != x.shape[:-1]:
        raise ValueError(f"y must have shape {tuple(x.shape[:-1])}, got {tuple(y.shape)}")
    X, Y, W = _powers(x), _powers(y)[..., None, :], _powers(w)  # (…,N,3) (…,1,3) (…,N,3)
    m = X[..., :, None, None] * Y[..., None, :, None] * W[..., None, None, :]  # (…, N, 3, 3, 3)
    return m.flatten(-3)  # (…, N, 27)


def update(theta: Tensor, x: Tensor, w: Tensor, *, eta: float) -> Tensor:
    """Δw = η Σ θ_αβγ x^α y^β w^γ with y = wᵀx.

    Args:
        theta: coefficients, (27,) or (P, 27) for P rules at once.
        x: presynaptic inputs, (…, N); with a (P, 27) θ, (B, N) broadcast over P.
        w: weights, (…, N); with a (P, 27) θ, (P, B, N).
        eta: learning rate η.

    Returns Δw with w's shape. Factored as Σ_αγ x^α (Σ_β θ_αβγ y^β) w^γ, which never forms
    the (…, N, 27) monomials.
    """
    if theta.shape[-1] != NUM_TERMS:
        raise ValueError(f"theta must end in 27 coefficients, got shape {tuple(theta.shape)}")
    y = (w * x).sum(-1)  # (…,)
    T = theta.reshape(*theta.shape[:-1], 3, 3, 3)  # (P?, α, β, γ)
    Yp = _powers(y)  # (…, 3)
    if theta.ndim == 2:  # batched rules: w (P, B, N), y (P, B)
        C = torch.einsum("pabc,pqb->pqac", T, Yp)  # (P, B, α, γ)
    else:
        C = torch.einsum("abc,...b->...ac", T, Yp)  # (…, α, γ)
    X, W = _powers(x), _powers(w)  # (…, N, 3)
    return eta * torch.einsum("...na,...ac,...nc->...n", X.expand_as(W), C, W)


def run_rule(
    theta: Tensor, w0: Tensor, xs: Tensor, *, eta: float, clip: float = 10.0, trace: bool = False
) -> Tensor:
    """Apply the rule for T steps: w_{t+1} = clip(w_t + Δw(θ, x_t, w_t)).

    Args:
        theta: (27,) or (P, 27).
        w0: initial weights (…, N) (with batched θ: (P, B, N)).
        xs: inputs (T, …, N) (with batched θ: (T, B, N), shared by the P rules).
        clip: |w| is clipped here each step so that a diverging rule stays finite; Oja's
            weights stay near the unit sphere and are never clipped. Differentiable.
        trace: if True return the trajectory (T + 1, …, N) instead of w_T.
    """
    w, out = w0, [w0]
    for t in range(xs.shape[0]):
        w = (w + update(theta, xs[t], w, eta=eta)).clamp(-clip, clip)
        w = torch.nan_to_num(w, nan=0.0)
        if trace:
            out.append(w)
    return torch.stack(out) if trace else w


def fit_rule(x: Tensor, w: Tensor, dw: Tensor, *, eta: float = 1.0) -> Tensor:
    """Least squares of Δw/η on the 27 monomials: the identifiability oracle.

    Args:
        x, w, dw: samples of inputs, weights before the step and their changes, (S, N) each
            (S steps or trajectories of one neuron, y = wᵀx per row).

    Returns θ̂ (27,) in float64 minimising Σ (Δw_i/η − Σ θ_αβγ x_i^α y^β w_i^γ)². If the data
    spans all 27 monomials (random w far from the fixed point), θ̂ equals the generating θ up to
    round-off; a rank-deficient design is reported, not papered over.
    """
    if not (x.shape == w.shape == dw.shape) or x.ndim != 2:
        raise ValueError(
            f"x, w, dw must be (S, N) of one shape, got {x.shape}, {w.shape}, {dw.shape}"
        )
    x, w, dw = x.double(), w.double(), dw.double()
    A = monomials(x, (w * x).sum(-1), w).reshape(-1, NUM_TERMS)  # (S·N, 27)
    b = (dw / eta).reshape(-1, 1)  # (S·N, 1)
    rank = int(torch.linalg.matrix_rank(A))
    if rank < NUM_TERMS:
        raise ValueError(f"the samples span only {rank} of the 27 monomials: θ is not identified")
    return torch.linalg.lstsq(A, b, driver="gelsd").solution[:, 0]
