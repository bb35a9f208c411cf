"""alpha-Rank: rank strategies by the stationary distribution of an evolutionary Markov chain.

Omidshafiei et al. 2019, "α-Rank: Multi-Agent Evaluation by Evolution",
https://arxiv.org/abs/1903.01373. A monomorphic population of size ``m`` playing ``s`` is
invaded by a mutant ``r`` that fixates with probability (Fermi selection at intensity ``α``)

    ρ(u) = (1 - e^{-u}) / (1 - e^{-m u}),   u = α (f(r) - f(s)),   ρ(0) = 1/m,

and the chain moves ``s -> r`` with probability ``η ρ`` (``η = 1 / Σ_k (|S_k| - 1)``). The
ranking is the chain's stationary distribution ``π``. We follow OpenSpiel's local selection
model: in the single-population case ``f(r) - f(s) = M[r, s] - M[s, r]``; with ``K``
populations the profiles differ in one population ``k`` and ``f = M_k[profile]``.

Numerics: for ``u < 0`` the form above overflows at large ``α``; we use
``ρ = e^{(m-1)u} expm1(u) / expm1(m u)``, which underflows to 0 instead. The stationary
distribution is computed per closed communicating class with the GTH algorithm (Grassmann,
Taksar & Heyman 1985), which has no subtractions and stays accurate when transition
probabilities span hundreds of orders of magnitude. A chain with several closed classes has
several stationary distributions: all are returned and ``unique`` is False.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.csgraph
import torch

__all__ = [
    "AlphaRankResult",
    "alpharank",
    "fixation_probability",
    "stationary_distributions",
    "transition_matrix",
]


class AlphaRankResult(NamedTuple):
    """alpha-Rank's answer.

    ``pi``: the stationary distribution over profiles (strategies for one population), the
    uniform mixture of ``stationary`` when there are several; ``unique``: whether the chain has
    one stationary distribution; ``stationary``: ``(K, P)`` the extreme stationary
    distributions, one per closed class; ``classes``: the profile indices of each closed class;
    ``transition``: the ``(P, P)`` Markov matrix; ``shape``: strategies per population.
    """

    pi: np.ndarray
    unique: bool
    stationary: np.ndarray
    classes: list[np.ndarray]
    transition: np.ndarray
    shape: tuple[int, ...]

    def marginals(self) -> list[np.ndarray]:
        """``π`` summed onto each population's strategies (one population: ``[pi]``)."""
        if len(self.shape) == 1:
            return [self.pi]
        joint = self.pi.reshape(self.shape)
        axes = range(len(self.shape))
        return [joint.sum(axis=tuple(a for a in axes if a != k)) for k in axes]


def fixation_probability(u: np.ndarray | float, m: int) -> np.ndarray:
    """``ρ(u) = (1 - e^{-u}) / (1 - e^{-m u})`` without overflow; ``ρ(0) = 1/m``.

    >>> fixation_probability(np.array([-1e4 * 50, 0.0, 1e4]), 50).tolist()
    [0.0, 0.02, 1.0]
    """
    if m < 2:
        raise ValueError(f"population size m must be >= 2, got {m}")
    u = np.asarray(u, dtype=np.float64)
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        pos = np.expm1(-u) / np.expm1(-m * u)  # finite for u > 0
        neg = np.exp((m - 1) * u) * np.expm1(u) / np.expm1(m * u)  # finite for u < 0
    rho = np.where(u > 0, pos, neg)
    # |u| below 1e-14 is treated as neutral drift, as OpenSpiel does, to agree with it exactly
    return np.where(np.abs(u) < 1e-14, 1.0 / m, rho)


def _tables(payoffs) -> list[np.ndarray]:
    if isinstance(payoffs, (np.ndarray, torch.Tensor)):
        tables = [np.asarray(payoffs, dtype=np.float64)]
    elif isinstance(payoffs, Sequence) and len(payoffs) > 0:
        tables = [np.asarray(t, dtype=np.float64) for t in payoffs]
    else:
        raise TypeError("payoffs must be an array or a non-empty list of arrays")
    for k, t in enumerate(tables):
        if not np.all(np.isfinite(t)):
            raise ValueError(f"payoffs[{k}] has NaN or infinite entries")
    if len(tables) == 1:
        M = tables[0]
        if M.ndim != 2 or M.shape[0] != M.shape[1]:
            raise ValueError(f"a single-population payoff table must be square, got {M.shape}")
    else:
        K = len(tables)
        shape = tables[0].shape
        for k, t in enumerate(tables):
            if t.ndim != K or t.shape != shape:
                raise ValueError(
                    f"payoffs[{k}] must have shape {shape} (one axis per population), "
                    f"got {t.shape}"
                )
    return tables


def _rates(diff: np.ndarray, alpha: float, m: int, eps: float) -> np.ndarray:
    """Fixation probability of a move with fitness gain ``diff``; ``alpha=inf`` is the
    ε-perturbed response graph (better: 1-ε, worse: ε, tie: 1/2)."""
    if math.isinf(alpha):
        return np.where(np.abs(diff) <= 1e-14, 0.5, np.where(diff > 0, 1.0 - eps, eps))
    return fixation_probability(alpha * diff, m)


def transition_matrix(
    payoffs, *, alpha: float = 100.0, m: int = 50, inf_alpha_eps: float = 0.01
) -> tuple[np.ndarray, tuple[int, ...]]:
    """The alpha-Rank Markov matrix ``C`` ``(P, P)`` and the strategies per population.

    Profiles of several populations are numbered in C order (the last population fastest),
    as OpenSpiel numbers them.
    """
    tables = _tables(payoffs)
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0 (or inf), got {alpha}")
    if not 0.0 <= inf_alpha_eps <= 0.5:
        raise ValueError(f"inf_alpha_eps must be in [0, 0.5], got {inf_alpha_eps}")
    if len(tables) == 1:
        M = tables[0]
        n = M.shape[0]
        if n == 1:
            return np.ones((1, 1)), (1,)
        eta = 1.0 / (n - 1)
        C = eta * _rates(M - M.T, alpha, m, inf_alpha_eps)  # C[s, r] uses M[r, s] - M[s, r]
        C = C.T.copy()
        np.fill_diagonal(C, 0.0)
        np.fill_diagonal(C, 1.0 - C.sum(axis=1))
        return C, (n,)
    shape = tables[0].shape
    P = math.prod(shape)
    eta = 1.0 / sum(s - 1 for s in shape)
    C = np.zeros((P, P))
    ids = np.arange(P).reshape(shape)
    for k, nk in enumerate(shape):
        # moves of population k: from profile s to the profile with s_k replaced by r
        f = np.moveaxis(tables[k], k, -1).reshape(-1, nk)  # (P / nk, nk)
        idx = np.moveaxis(ids, k, -1).reshape(-1, nk)  # (P / nk, nk)
        rates = eta * _rates(f[:, None, :] - f[:, :, None], alpha, m, inf_alpha_eps)
        # rates[b, s, r] is the move idx[b, s] -> idx[b, r]
        C[idx[:, :, None], idx[:, None, :]] = rates
    np.fill_diagonal(C, 0.0)
    np.fill_diagonal(C, 1.0 - C.sum(axis=1))
    return C, shape


def _gth(P: np.ndarray) -> np.ndarray:
    """Stationary distribution of an irreducible stochastic matrix by GTH state reduction."""
    P = np.array(P, dtype=np.float64)
    n = P.shape[0]
    for k in range(n - 1, 0, -1):
        s = P[k, :k].sum()
        P[:k, k] /= s
        P[:k, :k] += np.outer(P[:k, k], P[k, :k])
    pi = np.zeros(n)
    pi[0] = 1.0
    for k in range(1, n):
        pi[k] = pi[:k] @ P[:k, k]
    return pi / pi.sum()


def _lu(P: np.ndarray) -> np.ndarray | None:
    """``πᵀ(P - I) = 0, Σπ = 1`` by one LU solve; None when the answer is not trustworthy."""
    n = P.shape[0]
    G = P.T - np.eye(n)
    G[-1, :] = 1.0
    b = np.zeros(n)
    b[-1] = 1.0
    try:
        with warnings.catch_warnings():
            # ill-conditioning is judged by the residual check below, then GTH takes over
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            pi = scipy.linalg.solve(G, b, check_finite=False)
    except (scipy.linalg.LinAlgError, ValueError):
        return None
    if not np.all(np.isfinite(pi)) or pi.min() < -1e-12:
        return None
    pi = np.clip(pi, 0.0, None)
    pi /= pi.sum()
    if np.abs(pi @ P - pi).max() > 1e-12:
        return None
    return pi


def stationary_distributions(
    C: np.ndarray, *, method: str = "auto"
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Every extreme stationary distribution of the stochastic matrix ``C``: ``(K, P)``.

    One per closed communicating class (a strongly connected component with no edge leaving);
    transient states get 0. ``method``: ``gth`` (always accurate), ``lu`` (fast, used by
    ``auto`` when its result passes a residual and sign check, GTH otherwise).
    """
    if method not in ("auto", "gth", "lu"):
        raise ValueError(f"method must be 'auto', 'gth' or 'lu', got {method!r}")
    C = np.asarray(C, dtype=np.float64)
    n = C.shape[0]
    graph = scipy.sparse.csr_matrix((C > 0) & ~np.eye(n, dtype=bool))
    n_comp, labels = scipy.sparse.csgraph.connected_components(
        graph, directed=True, connection="strong"
    )
    rows, cols = graph.nonzero()
    leaves = np.zeros(n_comp, dtype=bool)
    leaves[labels[rows][labels[rows] != labels[cols]]] = True
    classes = [np.flatnonzero(labels == c) for c in range(n_comp) if not leaves[c]]
    out = np.zeros((len(classes), n))
    for i, idx in enumerate(classes):
        if len(idx) == 1:
            out[i, idx] = 1.0
            continue
        sub = C[np.ix_(idx, idx)]
        pi = _lu(sub) if method in ("auto", "lu") else None
        if pi is None:
            if method == "lu":
                raise RuntimeError("LU stationary solve is inaccurate here; use method='gth'")
            pi = _gth(sub)
        out[i, idx] = pi
    return out, classes


def alpharank(
    payoffs,
    *,
    alpha: float = 100.0,
    m: int = 50,
    inf_alpha_eps: float = 0.01,
    method: str = "auto",
) -> AlphaRankResult:
    """alpha-Rank of a single-population (``M`` ``(n, n)``) or K-population game.

    ``payoffs``: one square matrix ``M[i, j]`` = payoff of ``i`` against ``j`` (as a list of
    one table, like OpenSpiel), or ``K`` tables each of shape ``(n_1, ..., n_K)`` where
    ``tables[k][profile]`` is population ``k``'s payoff. ``alpha = math.inf`` is the
    infinite-α limit on the response graph perturbed by ``inf_alpha_eps`` (0 keeps it
    unperturbed, which usually has several stationary distributions).

    >>> from badgerlab.dynamics.games import rock_paper_scissors
    >>> alpharank(rock_paper_scissors(), alpha=1e4).pi.round(6).tolist()
    [0.333333, 0.333333, 0.333333]
    """
    C, shape = transition_matrix(payoffs, alpha=alpha, m=m, inf_alpha_eps=inf_alpha_eps)
    stationary, classes = stationary_distributions(C, method=method)
    pi = stationary.mean(axis=0)
    return AlphaRankResult(pi, len(classes) == 1, stationary, classes, C, shape)
