"""The 27-term polynomial plasticity rule of Confavreux et al. 2020, its algebra and an oracle.

For a linear neuron y = wᵀx with N inputs the rule is

    Δw_i = η Σ_{α,β,γ ∈ {0,1,2}} θ_αβγ x_i^α y^β w_i^γ,

with θ flattened as θ[9α + 3β + γ] (27 coefficients). Oja's rule Δw = η y (x − y w) is
θ_110 = 1, θ_021 = −1 and all others 0; its fixed point is the first principal component of
the input covariance with |w| = 1.

A layer of M linear outputs y = W x (W: (M, N)) uses the same 27 local terms at every synapse
w_ij (with y_i for y) plus two lateral terms, which carry the other outputs' activity into
the update of output i (29 coefficients θ[27] = λ_<, θ[28] = λ_>):

    Δw_ij = η [ Σ_αβγ θ_αβγ x_j^α y_i^β w_ij^γ
                + λ_< y_i Σ_{k<i} y_k w_kj  +  λ_> y_i Σ_{k>i} y_k w_kj ].

Sanger's rule (the generalised Hebbian algorithm) Δw_i = η y_i (x − Σ_{k≤i} y_k w_k) is
θ_110 = 1, θ_021 = −1, λ_< = −1, λ_> = 0: its fixed point is W's rows = the first M principal
components in order, each of unit norm. The diagonal k = i of Sanger's sum is the local
θ_021 monomial, so the lateral sums are strict (k < i, k > i): with k ≤ i the lateral column
would repeat θ_021 for the first output and the least-squares oracle could not tell them
apart. Oja's subspace rule (λ_< = λ_> = −1) finds the same subspace but not the components,
so the meta-loss that asks for u_i at row i separates the two by λ_>.

Reference: Confavreux, Zenke, Agnes, Lillicrap & Vogels, "A meta-learning approach to
(re)discover plasticity rules that carve a desired function into a neural network", NeurIPS
2020 (https://proceedings.neurips.cc/paper/2020/hash/bdbd5ebfde4934142c8a88e7a3796cd5).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "LATERAL",
    "NUM_LAYER_TERMS",
    "NUM_TERMS",
    "TERMS",
    "fit_layer_rule",
    "fit_rule",
    "layer_monomials",
    "layer_update",
    "monomials",
    "oja_theta",
    "run_layer_rule",
    "run_rule",
    "sanger_theta",
    "term_index",
    "term_name",
    "update",
]

#: (α, β, γ) of each coefficient, in the order of the flat θ: index 9α + 3β + γ.
TERMS: tuple[tuple[int, int, int], ...] = tuple(
    (a, b, c) for a in range(3) for b in range(3) for c in range(3)
)
NUM_TERMS = len(TERMS)
#: Names of the two lateral coefficients of a layer rule, θ[27] and θ[28].
LATERAL = ("λ_<", "λ_>")
NUM_LAYER_TERMS = NUM_TERMS + len(LATERAL)


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
    """``"θ_αβγ"`` of a flat index, e.g. ``term_name(12) == "θ_110"``; 27, 28: λ_<, λ_>."""
    if not isinstance(index, int) or not 0 <= index < NUM_LAYER_TERMS:
        raise ValueError(f"index must be an int in 0..28, got {index!r}")
    if index >= NUM_TERMS:
        return LATERAL[index - NUM_TERMS]
    a, b, c = TERMS[index]
    return f"θ_{a}{b}{c}"


def oja_theta(*, dtype: torch.dtype = torch.float32) -> Tensor:
    """Oja's rule as a coefficient vector (27,): θ_110 = 1, θ_021 = −1."""
    theta = torch.zeros(NUM_TERMS, dtype=dtype)
    theta[term_index(1, 1, 0)] = 1.0
    theta[term_index(0, 2, 1)] = -1.0
    return theta


def sanger_theta(*, dtype: torch.dtype = torch.float32) -> Tensor:
    """Sanger's rule as a layer coefficient vector (29,): θ_110 = 1, θ_021 = −1, λ_< = −1."""
    theta = torch.zeros(NUM_LAYER_TERMS, dtype=dtype)
    theta[:NUM_TERMS] = oja_theta(dtype=dtype)
    theta[NUM_TERMS] = -1.0
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

    Returns Δw with w's shape. Factored as Σ_γ w^γ Σ_α x^α (Σ_β θ_αβγ y^β) (two small
    matmuls), which never forms the (…, N, 27) monomials.
    """
    if theta.shape[-1] != NUM_TERMS:
        raise ValueError(f"theta must end in 27 coefficients, got shape {tuple(theta.shape)}")
    y = (w * x).sum(-1)  # (…,)
    if theta.ndim == 2:  # batched rules: w (P, B, N), y (P, B)
        T = theta.reshape(-1, 3, 3, 3).transpose(1, 2).reshape(-1, 3, 9)  # (P, β, α·γ)
    else:
        T = theta.reshape(3, 3, 3).transpose(0, 1).reshape(3, 9)  # (β, α·γ)
    C = (_powers(y) @ T).unflatten(-1, (3, 3))  # C_αγ = Σ_β θ_αβγ y^β: (…, α, γ)
    XC = _powers(x) @ C  # Σ_α x^α C_αγ: (…, N, γ)
    return eta * (XC * _powers(w)).sum(-1)


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


def _check_layer(x: Tensor, W: Tensor) -> None:
    if W.ndim < 2 or x.shape[-1] != W.shape[-1]:
        raise ValueError(
            f"W must be (…, M, N) and x (…, N) with the same N, got {tuple(W.shape)} and "
            f"{tuple(x.shape)}"
        )


def _lateral(y: Tensor, W: Tensor) -> Tensor:
    """(…, M), (…, M, N) → (…, M, N, 2): y_i Σ_{k<i} y_k w_kj and y_i Σ_{k>i} y_k w_kj."""
    yw = y[..., None] * W  # (…, M, N)
    upto = yw.cumsum(-2)  # Σ_{k≤i}
    below, above = upto - yw, upto[..., -1:, :] - upto
    return torch.stack([below, above], -1) * y[..., None, None]


def layer_monomials(x: Tensor, W: Tensor) -> Tensor:
    """The 29 monomials of every synapse w_ij: x (…, N), W (…, M, N) → (…, M, N, 29)."""
    _check_layer(x, W)
    xe = x.unsqueeze(-2).expand_as(W)  # (…, M, N)
    y = (W * xe).sum(-1)  # (…, M)
    return torch.cat([monomials(xe, y, W), _lateral(y, W)], -1)


def layer_update(theta: Tensor, x: Tensor, W: Tensor, *, eta: float) -> Tensor:
    """ΔW of the 29-term layer rule (module docstring) with y = W x.

    Args:
        theta: (29,), or (P, 29) for P rules at once.
        x: inputs (…, N); with a (P, 29) θ, (B, N) shared by the P rules.
        W: weights (…, M, N); with a (P, 29) θ, (P, B, M, N).
        eta: learning rate η.

    Returns ΔW with W's shape. The local part is ``update`` applied to each output's row.
    """
    if theta.shape[-1] != NUM_LAYER_TERMS:
        raise ValueError(f"theta must end in 29 coefficients, got shape {tuple(theta.shape)}")
    _check_layer(x, W)
    xe = x.unsqueeze(-2).expand(*x.shape[:-1], W.shape[-2], x.shape[-1])  # (…, M, N)
    y = (W * xe).sum(-1)  # (…, M)
    lat = _lateral(y, W)  # (…, M, N, 2)
    if theta.ndim == 2:  # W (P, B, M, N): fold (B, M) into update's batch axis
        P_, B, M, N = W.shape
        local = update(theta[:, :NUM_TERMS], xe.reshape(B * M, N), W.reshape(P_, B * M, N),
                       eta=eta).reshape(W.shape)  # fmt: skip
        lam = theta[:, NUM_TERMS:].reshape(P_, 1, 1, 1, 2)
    else:
        local = update(theta[:NUM_TERMS], xe, W, eta=eta)
        lam = theta[NUM_TERMS:]
    return local + eta * (lat * lam).sum(-1)


def run_layer_rule(
    theta: Tensor, W0: Tensor, xs: Tensor, *, eta: float, clip: float = 10.0, trace: bool = False
) -> Tensor:
    """``run_rule`` for a layer: W0 (…, M, N) (batched θ: (P, B, M, N)), xs (T, …, N)."""
    W, out = W0, [W0]
    for t in range(xs.shape[0]):
        W = (W + layer_update(theta, xs[t], W, eta=eta)).clamp(-clip, clip)
        W = torch.nan_to_num(W, nan=0.0)
        if trace:
            out.append(W)
    return torch.stack(out) if trace else W


def fit_layer_rule(x: Tensor, W: Tensor, dW: Tensor, *, eta: float = 1.0) -> Tensor:
    """The identifiability oracle for a layer: least squares of ΔW/η on the 29 monomials.

    Args:
        x: inputs (S, N); W, dW: weights before each step and their changes (S, M, N).

    Returns θ̂ (29,) in float64. λ_< is seen only by outputs i ≥ 2 and λ_> only by i < M, so
    M ≥ 2 is needed; a design of rank < 29 raises a ValueError.
    """
    if x.ndim != 2 or W.ndim != 3 or W.shape != dW.shape or W.shape[::2] != x.shape:
        raise ValueError(
            f"x must be (S, N) and W, dW (S, M, N), got {x.shape}, {W.shape}, {dW.shape}"
        )
    x, W, dW = x.double(), W.double(), dW.double()
    A = layer_monomials(x, W).reshape(-1, NUM_LAYER_TERMS)  # (S·M·N, 29)
    b = (dW / eta).reshape(-1, 1)
    rank = int(torch.linalg.matrix_rank(A))
    if rank < NUM_LAYER_TERMS:
        raise ValueError(f"the samples span only {rank} of the 29 monomials: θ is not identified")
    return torch.linalg.lstsq(A, b, driver="gelsd").solution[:, 0]
