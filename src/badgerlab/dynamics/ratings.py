"""Elo (Bradley–Terry) and multidimensional Elo (mElo_2k) ratings and their win predictions.

Elo predicts ``p̂_ij = σ(r_i - r_j)`` and so can only express transitive games. mElo_2k
(Balduzzi et al. 2018, "Re-evaluating evaluation", https://arxiv.org/abs/1806.02643, §3.2)
adds ``2k`` cyclic coordinates per agent: ``p̂_ij = σ(r_i - r_j + c_iᵀ Ω c_j)`` with
``Ω = Σ_{i=1}^k (e_{2i-1} e_{2i}ᵀ - e_{2i} e_{2i-1}ᵀ)``. Ratings here are in logits; multiply
by ``ELO_SCALE = 400 / ln 10`` for the chess scale.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import torch

from badgerlab.dynamics.games import (
    _int_arg,
    _positive,
    check_antisymmetric,
    hodge_decomposition,
    schur_components,
)

__all__ = [
    "ELO_SCALE",
    "MElo",
    "bradley_terry",
    "elo_probability",
    "elo_update",
    "melo_fit",
    "melo_from_logits",
    "melo_probability",
    "melo_update",
    "omega",
]

ELO_SCALE = 400.0 / math.log(10.0)


def _square(W, name: str) -> np.ndarray:
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] != W.shape[1] or W.size == 0:
        raise ValueError(f"{name} must be a non-empty square matrix, got shape {W.shape}")
    if not np.all(np.isfinite(W)) or (W < 0).any():
        raise ValueError(f"{name} must have finite non-negative entries")
    return W


def _vector(r, name: str) -> np.ndarray:
    r = np.asarray(r, dtype=np.float64)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError(f"{name} has NaN or infinite entries")
    return r


def _pair(i, j, n: int) -> tuple[int, int]:
    """Two distinct player indices in ``0..n-1`` (a player does not play itself)."""
    i, j = _int_arg("i", i, 0), _int_arg("j", j, 0)
    if i >= n or j >= n:
        raise ValueError(f"i and j must index the {n} ratings, got i={i}, j={j}")
    if i == j:
        raise ValueError(f"i and j must be different players, got i = j = {i}")
    return i, j


def _score(score) -> float:
    if not 0.0 <= score <= 1.0:  # NaN fails too
        raise ValueError(f"score must be in [0, 1], got {score}")
    return float(score)


def bradley_terry(
    wins: np.ndarray | torch.Tensor,
    *,
    prior: float = 0.0,
    max_iter: int = 10000,
    tol: float = 1e-12,
) -> np.ndarray:
    """Elo ratings (logits, mean 0) by Bradley–Terry maximum likelihood, MM updates.

    ``wins[i, j]`` counts (or weighs) wins of ``i`` over ``j``; a draw is half a win each.
    Hunter 2004's minorise-maximise step is ``γ_i <- W_i / Σ_j n_ij / (γ_i + γ_j)`` with
    ``W_i`` the wins of ``i`` and ``n_ij = wins_ij + wins_ji``; ``r = log γ``. ``prior`` adds
    ``prior`` wins each way to every pair (a Beta prior), which makes the MLE exist when the
    win graph is not strongly connected — without it that case raises ValueError.

    >>> r = bradley_terry(np.array([[0.0, 2.0], [1.0, 0.0]]))
    >>> round(float((r[0] - r[1]) * ELO_SCALE), 4), round(400 * math.log10(2), 4)
    (120.412, 120.412)
    """
    W = _square(wins, "wins").copy()
    n = W.shape[0]
    prior = _positive("prior", prior, allow_zero=True)
    max_iter = _int_arg("max_iter", max_iter, 1)
    tol = _positive("tol", tol)
    W += prior * (1.0 - np.eye(n))
    np.fill_diagonal(W, 0.0)
    n_comp, _ = scipy.sparse.csgraph.connected_components(
        scipy.sparse.csr_matrix(W > 0), directed=True, connection="strong"
    )
    if n_comp > 1:
        raise ValueError(
            "wins: the win graph is not strongly connected (some agent never wins or never "
            "loses against a group), so the Bradley-Terry MLE does not exist; pass prior > 0"
        )
    N = W + W.T
    w = W.sum(axis=1)
    gamma = np.ones(n)
    for _ in range(max_iter):
        new = w / (N / (gamma[:, None] + gamma[None, :])).sum(axis=1)
        new /= np.exp(np.log(new).mean())  # fix the free scale: geometric mean 1
        done = np.abs(np.log(new) - np.log(gamma)).max() < tol
        gamma = new
        if done:
            break
    return np.log(gamma)


def elo_probability(r: np.ndarray | torch.Tensor) -> np.ndarray:
    """``P[i, j] = σ(r_i - r_j)`` for logit ratings ``r`` ``(n,)``."""
    r = _vector(r, "r")
    return 1.0 / (1.0 + np.exp(-(r[:, None] - r[None, :])))


def elo_update(
    r: np.ndarray, i: int, j: int, score: float, *, k: float = 16.0 / ELO_SCALE
) -> np.ndarray:
    """One online Elo update after ``i`` scored ``score`` ∈ [0, 1] against ``j``.

    ``δ = score - σ(r_i - r_j)``; ``r_i += k δ``, ``r_j -= k δ`` (the default ``k`` is chess's
    K = 16 in logits). Returns new ratings; ``r`` is not modified.
    """
    score = _score(score)
    r = _vector(r, "r").copy()
    i, j = _pair(i, j, len(r))
    k = _positive("k", k, allow_zero=True)
    delta = score - 1.0 / (1.0 + math.exp(-(r[i] - r[j])))
    r[i] += k * delta
    r[j] -= k * delta
    return r


def omega(dim: int) -> np.ndarray:
    """``Ω`` ``(dim, dim)``: ``dim/2`` blocks ``[[0, 1], [-1, 0]]`` on the diagonal."""
    dim = _int_arg("dim", dim, 0)
    if dim % 2:
        raise ValueError(f"dim must be even and >= 0, got {dim}")
    W = np.zeros((dim, dim))
    for b in range(0, dim, 2):
        W[b, b + 1], W[b + 1, b] = 1.0, -1.0
    return W


class MElo(NamedTuple):
    """mElo_2k parameters: ratings ``r`` ``(n,)`` and cyclic vectors ``c`` ``(n, 2k)``.

    They are not unique (``c -> c R`` for any symplectic ``R`` predicts the same), so compare
    predicted probabilities, never ``c`` itself.
    """

    r: np.ndarray
    c: np.ndarray


def _melo_arrays(r, c) -> tuple[np.ndarray, np.ndarray]:
    r = _vector(r, "r")
    c = np.asarray(c, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != len(r) or c.shape[1] % 2:
        raise ValueError(f"c must have shape ({len(r)}, 2k), got {c.shape}")
    if not np.all(np.isfinite(c)):
        raise ValueError("c has NaN or infinite entries")
    return r, c


def melo_probability(r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``P[i, j] = σ(r_i - r_j + c_iᵀ Ω c_j)``."""
    r, c = _melo_arrays(r, c)
    logits = r[:, None] - r[None, :] + c @ omega(c.shape[1]) @ c.T
    return 1.0 / (1.0 + np.exp(-logits))


def melo_update(
    state: MElo, i: int, j: int, score: float, *, lr_r: float = 0.1, lr_c: float = 0.01
) -> MElo:
    """One online mElo_2k update (Balduzzi 2018, Algorithm 1) after ``i`` scored ``score``.

    ``δ = score - p̂_ij``; ``r_i += η_r δ``, ``r_j -= η_r δ``, ``c_i += η_c δ Ω c_j``,
    ``c_j -= η_c δ Ω c_i`` — stochastic gradient ascent on the log-likelihood.
    """
    score = _score(score)
    r, c = (a.copy() for a in _melo_arrays(state.r, state.c))
    i, j = _pair(i, j, len(r))
    lr_r = _positive("lr_r", lr_r, allow_zero=True)
    lr_c = _positive("lr_c", lr_c, allow_zero=True)
    W = omega(c.shape[1])
    p = 1.0 / (1.0 + math.exp(-(r[i] - r[j] + c[i] @ W @ c[j])))
    delta = score - p
    ci, cj = c[i].copy(), c[j].copy()
    r[i] += lr_r * delta
    r[j] -= lr_r * delta
    c[i] += lr_c * delta * (W @ cj)
    c[j] -= lr_c * delta * (W @ ci)
    return MElo(r, c)


def melo_from_logits(L: np.ndarray | torch.Tensor, dim: int) -> MElo:
    """mElo_dim in closed form from antisymmetric log-odds ``L[i, j] = logit P[i, j]``.

    Hodge: ``r = div(L)``; the cyclic remainder's best rank-``dim`` approximation comes from
    its real Schur form (``schur_components``). Exact when ``L`` has that form.
    """
    L = check_antisymmetric(L, name="L")
    dim = _int_arg("dim", dim, 0)
    if dim % 2 or dim > L.shape[0]:
        raise ValueError(f"dim must be even with 0 <= dim <= n = {L.shape[0]}, got {dim}")
    h = hodge_decomposition(L)
    c, _ = schur_components(h.cyclic, dim // 2)
    return MElo(h.ratings, c)


def melo_fit(
    wins: np.ndarray | torch.Tensor,
    *,
    dim: int = 2,
    steps: int = 500,
    prior: float = 0.5,
    seed: int = 0,
) -> MElo:
    """mElo_dim by maximum likelihood on win counts ``wins[i, j]`` (L-BFGS, float64).

    The log-likelihood ``Σ_ij wins_ij log σ(r_i - r_j + c_iᵀΩc_j)`` is maximised from the
    closed form of the empirical log-odds (``prior`` pseudo-wins each way keep them finite).
    ``dim = 0`` gives Elo's Bradley–Terry fit.
    """
    W = _square(wins, "wins")
    n = W.shape[0]
    dim = _int_arg("dim", dim, 0)
    steps = _int_arg("steps", steps, 1)
    prior = _positive("prior", prior, allow_zero=True)
    if dim % 2 or dim > n:
        raise ValueError(f"dim must be even with 0 <= dim <= n = {n}, got {dim}")
    Wp = W + prior * (1.0 - np.eye(n))
    total = Wp + Wp.T
    emp = np.where(total > 0, Wp / np.where(total > 0, total, 1.0), 0.5)
    L0 = np.log(np.clip(emp, 1e-9, 1.0)) - np.log(np.clip(1.0 - emp, 1e-9, 1.0))
    L0 = (L0 - L0.T) / 2
    init = melo_from_logits(L0, dim)
    gen = torch.Generator().manual_seed(seed)
    r = torch.tensor(init.r, requires_grad=True)
    # a small random nudge breaks the symmetry of an all-zero cyclic start
    c0 = torch.as_tensor(init.c) + 1e-3 * torch.randn(n, dim, generator=gen, dtype=torch.float64)
    c = c0.clone().requires_grad_(True)
    Wt = torch.as_tensor(W)
    Om = torch.as_tensor(omega(dim))
    opt = torch.optim.LBFGS([r, c], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = r[:, None] - r[None, :] + c @ Om @ c.T  # (n, n)
        loss = -(Wt * torch.nn.functional.logsigmoid(logits)).sum() / Wt.sum().clamp(min=1.0)
        loss = loss + 1e-6 * (r.square().sum() + c.square().sum())  # keeps the MLE bounded
        loss.backward()
        return loss

    opt.step(closure)
    r_out = r.detach().numpy()
    return MElo(r_out - r_out.mean(), c.detach().numpy())
