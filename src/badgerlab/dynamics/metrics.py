"""Population metrics: exploitability, NashConv, relative population performance, diversity.

Balduzzi et al. 2019, "Open-ended learning in symmetric zero-sum games",
https://arxiv.org/abs/1901.08106, §2–3.
"""

from __future__ import annotations

import numpy as np
import torch

from badgerlab.dynamics.games import check_antisymmetric
from badgerlab.dynamics.nash import _matrix, max_entropy_nash, solve_zero_sum

__all__ = [
    "effective_diversity",
    "exploitability",
    "nash_conv",
    "relative_population_performance",
]


def _dist(p, n: int, name: str) -> np.ndarray:
    try:
        p = np.asarray(p, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a probability vector of {n} numbers") from None
    if p.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name} has NaN or infinite entries: {p}")
    if (p < -1e-12).any() or abs(p.sum() - 1.0) > 1e-6:
        raise ValueError(f"{name} must be a probability vector (non-negative, sums to 1)")
    return p


def exploitability(A: np.ndarray | torch.Tensor, p) -> float:
    """``max_i (A p)_i``: what a best response gains against ``p`` in a symmetric zero-sum game.

    The value of the game is 0, so this is 0 exactly at a Nash equilibrium.
    """
    A = check_antisymmetric(A)
    return float((A @ _dist(p, A.shape[0], "p")).max())


def nash_conv(M: np.ndarray | torch.Tensor, x, y) -> float:
    """``max_i (M y)_i - min_j (xᵀM)_j`` for the zero-sum game with row payoffs ``M``.

    The sum of both players' best-response gains; 0 exactly at a Nash equilibrium.
    """
    M = _matrix(M, "M")
    x = _dist(x, M.shape[0], "x")
    y = _dist(y, M.shape[1], "y")
    return float((M @ y).max() - (x @ M).min())


def relative_population_performance(A_BC: np.ndarray | torch.Tensor) -> float:
    """``v(B, C) = pᵀ A_BC q`` at a Nash ``(p, q)`` of the game between populations B and C.

    ``A_BC[i, j] = φ(b_i, c_j)``; positive when population B is the stronger one.
    """
    return solve_zero_sum(A_BC).value


def effective_diversity(A: np.ndarray | torch.Tensor, p=None) -> float:
    """``pᵀ ⌊A⌋₊ p``: how much the agents of a population's Nash beat each other.

    ``⌊A⌋₊ = max(A, 0)``; ``p`` defaults to the max-entropy Nash of ``A``. RPS gives 1/3, a
    transitive population 0.

    >>> from badgerlab.dynamics.games import rock_paper_scissors
    >>> round(effective_diversity(rock_paper_scissors()), 9)
    0.333333333
    """
    A = check_antisymmetric(A)
    p = max_entropy_nash(A) if p is None else _dist(p, A.shape[0], "p")
    return float(p @ np.clip(A, 0.0, None) @ p)
