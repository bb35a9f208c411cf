"""HebbNet: a thresholded Hebbian hidden layer with top-p sparse updates, and its baselines.

Hidden layer W (H, D) on inputs x (B, D) made unit vectors, x̂ = x / |x| (every layer here
sees x̂; the Krotov–Hopfield rule needs it, and one preprocessing keeps the comparison fair).

HebbNet (Gupta, Ambikapathi & Ramasamy, ICASSP 2021; Beyond Backpropagation workshop,
NeurIPS 2020; no code was released):

    y_bj = relu(w_j · x̂_b)                              hidden activations (B, H)
    t_b  = (1/H) Σ_j y_bj                               activation threshold (per input)
    ΔW   = (η / B) Σ_b (1[y_b > t_b] ⊙ y_b) x̂_bᵀ        thresholded Hebb (H, D)
    ΔW  ← ΔW ⊙ M,  M = 1 on the ⌈p·H·D⌉ entries of largest |ΔW|   sparse update (p = 1%)
    W   ← W + ΔW,  then each row w_j ← w_j / |w_j|

The paper raises the Hebbian activation threshold and keeps only the largest p of the weight
updates; it gives no code. Choices made here where it is ambiguous: the threshold is the mean
activation over the hidden units of the same input (a fixed number can be passed instead;
``threshold=0.0`` is plain Hebb ΔW = η y x̂ᵀ on ReLU units), the update is averaged over a
minibatch before the top-p selection, and the rows are renormalised after each step (plain
Hebb grows without bound). The renormalisation is a separate step, so ``hebbnet_update``
changes exactly ⌈p·H·D⌉ entries whenever at least that many candidate updates are non-zero.

Krotov & Hopfield 2019 ("Unsupervised learning by competing hidden units", PNAS,
https://arxiv.org/abs/1806.10181), with the Lebesgue exponent p = 2:

    Q_bμ = w_μ · x̂_b;   g_bμ = 1 for the largest Q_b·, −Δ for the k-th largest, 0 otherwise
    ds_μ = Σ_b g_bμ (x̂_b − Q_bμ w_μ);   ΔW = η ds / max|ds|

Started, as in its code, from N(0, 1) entries (rows of norm ≈ √D, which the rule shrinks to
1 one winner at a time: from unit rows a single unit wins every input). Inputs are
normalised inside the rule (users of DimaKrotov/Biological_Learning got NaNs
without it); a zero input stays zero and yields no NaN.

Features for the classifier on top: f = relu(W x̂) for every hidden layer (HebbNet, Krotov–
Hopfield, a random projection of the same width); then a linear softmax classifier trained by
full-batch gradient descent (Adam). A backprop MLP D → H → C of the same width is the ceiling.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "BIBTEX",
    "PAPER",
    "features",
    "hebbnet_step",
    "hebbnet_update",
    "init_hidden",
    "krotov_step",
    "krotov_update",
    "linear_classifier",
    "top_p_mask",
    "unit_rows",
]

PAPER = (
    "Gupta, Ambikapathi & Ramasamy, HebbNet: A Simplified Hebbian Learning Framework to do "
    "Biologically Plausible Learning, ICASSP 2021"
)
BIBTEX = """@inproceedings{gupta2021hebbnet,
  title={HebbNet: A Simplified Hebbian Learning Framework to do Biologically Plausible
         Learning},
  author={Gupta, Manas and Ambikapathi, ArulMurugan and Ramasamy, Savitha},
  booktitle={IEEE International Conference on Acoustics, Speech and Signal Processing (ICASSP)},
  pages={3115--3119},
  year={2021}
}"""


def _check_wx(W: Tensor, x: Tensor) -> None:
    if W.ndim != 2 or x.ndim != 2 or W.shape[1] != x.shape[1]:
        raise ValueError(
            f"W must be (H, D) and x (B, D) with the same D, got {tuple(W.shape)} and "
            f"{tuple(x.shape)}"
        )
    if not (torch.isfinite(W).all() and torch.isfinite(x).all()):
        raise ValueError("W and x must be finite")


def _check_eta(eta: float) -> None:
    if not (isinstance(eta, (int, float)) and math.isfinite(eta) and eta > 0):
        raise ValueError(f"eta must be a finite number > 0, got {eta!r}")


def unit_rows(x: Tensor, eps: float = 1e-12) -> Tensor:
    """x / |x| per row (…, D); rows of norm below eps are returned as they are (no NaN)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def init_hidden(hidden: int, d_in: int, generator: torch.Generator) -> Tensor:
    """(H, D) Gaussian rows made unit vectors: the random projection and both rules' start."""
    if hidden < 1 or d_in < 1:
        raise ValueError(f"hidden and d_in must be >= 1, got {hidden} and {d_in}")
    return unit_rows(torch.randn(hidden, d_in, generator=generator))


def top_p_mask(delta: Tensor, p: float) -> Tensor:
    """0/1 mask (delta's shape) on exactly ⌈p·numel⌉ entries of largest |delta| (p in (0, 1])."""
    if not (isinstance(p, (int, float)) and 0 < p <= 1):
        raise ValueError(f"p must be in (0, 1], got {p!r}")
    k = math.ceil(p * delta.numel())
    mask = torch.zeros(delta.numel(), dtype=delta.dtype, device=delta.device)
    mask[delta.abs().flatten().topk(k).indices] = 1
    return mask.reshape(delta.shape)


def hebbnet_update(
    W: Tensor, x: Tensor, *, eta: float, p: float = 0.01, threshold: float | str = "mean"
) -> Tensor:
    """ΔW (H, D) of HebbNet's rule (module docstring) for a minibatch x (B, D).

    threshold: ``"mean"`` (mean activation over hidden units, per input) or a number t;
    p: fraction of entries kept (1.0: the dense rule).
    """
    _check_wx(W, x)
    _check_eta(eta)
    if not (isinstance(p, (int, float)) and 0 < p <= 1):
        raise ValueError(f"p must be in (0, 1], got {p!r}")
    xh = unit_rows(x)
    y = F.relu(xh @ W.T)  # (B, H)
    if threshold == "mean":
        t = y.mean(1, keepdim=True)
    elif isinstance(threshold, (int, float)) and math.isfinite(threshold):
        t = torch.full_like(y[:, :1], float(threshold))
    else:
        raise ValueError(f"threshold must be 'mean' or a finite number, got {threshold!r}")
    post = y * (y > t)  # (B, H)
    dW = eta / x.shape[0] * post.T @ xh
    return dW if p >= 1 else dW * top_p_mask(dW, p)


def hebbnet_step(W: Tensor, x: Tensor, *, eta: float, p: float = 0.01, threshold="mean"):
    """W + ΔW with each row then renormalised to |w_j| = 1."""
    return unit_rows(W + hebbnet_update(W, x, eta=eta, p=p, threshold=threshold))


def krotov_update(
    W: Tensor, x: Tensor, *, eta: float, k: int = 2, delta: float = 0.4, normalise: bool = True
) -> Tensor:
    """ΔW (H, D) of the Krotov–Hopfield rule (module docstring) for a minibatch x (B, D).

    k: rank of the unit pushed away (k = 1: only the winner learns); delta: its strength Δ;
    normalise: make inputs unit vectors first (False only to show why it is needed).
    """
    _check_wx(W, x)
    _check_eta(eta)
    if not (isinstance(k, int) and 1 <= k <= W.shape[0]):
        raise ValueError(f"k must be an int in 1..{W.shape[0]} (hidden units), got {k!r}")
    if not (isinstance(delta, (int, float)) and 0 <= delta <= 10):
        raise ValueError(f"delta must be in [0, 10], got {delta!r}")
    v = unit_rows(x) if normalise else x
    Q = v @ W.T  # (B, H)
    ranks = Q.topk(k, dim=1).indices  # (B, k)
    g = torch.zeros_like(Q)
    g.scatter_(1, ranks[:, :1], 1.0)
    if k > 1:
        g.scatter_(1, ranks[:, k - 1 : k], -float(delta))
    ds = g.T @ v - (g * Q).sum(0)[:, None] * W  # (H, D)
    return eta * ds / ds.abs().max().clamp_min(1e-30)


def krotov_step(W: Tensor, x: Tensor, *, eta: float, k: int = 2, delta: float = 0.4) -> Tensor:
    """W + ΔW of the Krotov–Hopfield rule (no renormalisation: the rule drives |w_μ| → 1)."""
    return W + krotov_update(W, x, eta=eta, k=k, delta=delta)


def features(W: Tensor, x: Tensor) -> Tensor:
    """relu(W x̂): (B, D) → (B, H)."""
    _check_wx(W, x)
    return F.relu(unit_rows(x) @ W.T)


def linear_classifier(
    f: Tensor, y: Tensor, classes: int, *, lr: float, steps: int, weight_decay: float = 0.0
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Softmax regression on features f (N, H), trained by full-batch Adam from zero.

    The features are standardised with their own mean and std. Returns
    ``(weight (C, H), bias (C,), mean (H,), std (H,))``: logits = ((f − mean)/std) Wᵀ + b.
    """
    if f.ndim != 2 or y.shape != (f.shape[0],):
        raise ValueError(f"f must be (N, H) and y (N,), got {tuple(f.shape)}, {tuple(y.shape)}")
    if steps < 1 or classes < 2:
        raise ValueError(f"need steps >= 1 and classes >= 2, got {steps} and {classes}")
    _check_eta(lr)
    mean, std = f.mean(0), f.std(0).clamp_min(1e-6)
    z = (f - mean) / std
    w = torch.zeros(classes, f.shape[1], dtype=f.dtype, requires_grad=True)
    b = torch.zeros(classes, dtype=f.dtype, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        loss = F.cross_entropy(z @ w.T + b, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return w.detach(), b.detach(), mean, std
