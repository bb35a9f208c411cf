"""alpha-Rank: rank strategies by the stationary distribution of an evolutionary Markov chain.

Omidshafiei et al. 2019, "α-Rank: Multi-Agent Evaluation by Evolution",
https://arxiv.org/abs/1903.01373. A monomorphic population of size ``m`` playing ``s`` is
invaded by a mutant ``r`` that fixates with probability (Fermi selection at intensity ``α``)

    ρ(u) = (1 - e^{-u}) / (1 - e^{-m u}),   u = α (f(r) - f(s)),   ρ(0) = 1/m,

and the chain moves ``s -> r`` with probability ``η ρ`` (``η = 1 / Σ_k (|S_k| - 1)``). The
ranking is the chain's stationary distribution ``π``. Two selection models, as in OpenSpiel:

- ``local`` (the paper's large-population form): in the single-population case
  ``f(r) - f(s) = M[r, s] - M[s, r]``, the mutant and the resident each against the other;
- ``moran`` (the finite-population Moran process of the paper's appendix, Eq. 2; Han et al.
  2013): with ``p`` mutants among ``m`` individuals each plays the other ``m - 1``,
  ``f_r(p) = ((p-1) M[r,r] + (m-p) M[r,s]) / (m-1)``,
  ``f_s(p) = ((m-p-1) M[s,s] + p M[s,r]) / (m-1)``, and
  ``ρ = 1 / Σ_{l=0}^{m-1} Π_{p=1}^{l} e^{-α (f_r(p) - f_s(p))}``.

With ``K`` populations the profiles differ in one population ``k`` and ``f = M_k[profile]``;
an individual meets only the other populations, whose strategies are fixed, so its fitness does
not depend on ``p`` and both models give the closed form above (OpenSpiel computes it so too).

Numerics: for ``u < 0`` the form above overflows at large ``α``; we use
``ρ = e^{(m-1)u} expm1(u) / expm1(m u)``, which underflows to 0 instead. The Moran sum's
exponent is a quadratic in ``l``, so ``ρ = exp(-logsumexp_l L_l)`` in closed form, finite at any
``α``. The stationary
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
    "moran_fixation_probabilities",
    "stationary_distributions",
    "transition_matrix",
]


SELECTIONS = ("local", "moran")


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
    m = _population_size(m)
    u = np.asarray(u, dtype=np.float64)
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        pos = np.expm1(-u) / np.expm1(-m * u)  # finite for u > 0
        neg = np.exp((m - 1) * u) * np.expm1(u) / np.expm1(m * u)  # finite for u < 0
    rho = np.where(u > 0, pos, neg)
    # |u| below 1e-14 is treated as neutral drift, as OpenSpiel does, to agree with it exactly
    return np.where(np.abs(u) < 1e-14, 1.0 / m, rho)


def _population_size(m) -> int:
    """``m`` as an int, or ValueError unless it is an integer >= 2 (2.0 is accepted)."""
    if isinstance(m, bool) or not isinstance(m, (int, float, np.integer, np.floating)):
        raise ValueError(f"population size m must be an integer >= 2, got {m!r}")
    if not (math.isfinite(m) and float(m).is_integer() and m >= 2):
        raise ValueError(f"population size m must be an integer >= 2, got {m!r}")
    return int(m)


def _as_float(t, name: str) -> np.ndarray:
    try:
        return np.asarray(t, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} is not an array of numbers ({err})") from None


def _tables(payoffs) -> list[np.ndarray]:
    """One square table (an array, a tensor, nested lists, or a list holding one table) or
    ``K`` tables of shape ``(n_1, ..., n_K)``."""
    if isinstance(payoffs, (np.ndarray, torch.Tensor)):
        tables = [_as_float(payoffs, "payoffs")]
    elif isinstance(payoffs, Sequence) and not isinstance(payoffs, (str, bytes)):
        if len(payoffs) == 0:
            raise ValueError("payoffs must not be empty")
        first = np.asarray(payoffs[0], dtype=object)
        if first.ndim == 1:  # rows of one table given as nested lists, e.g. RPS.tolist()
            tables = [_as_float(payoffs, "payoffs")]
        else:
            tables = [_as_float(t, f"payoffs[{k}]") for k, t in enumerate(payoffs)]
    else:
        raise ValueError(
            f"payoffs must be an array or a list of arrays, got {type(payoffs).__name__}"
        )
    for k, t in enumerate(tables):
        name = "payoffs" if len(tables) == 1 else f"payoffs[{k}]"
        if t.size == 0:
            raise ValueError(f"{name} is empty (shape {t.shape})")
        if not np.all(np.isfinite(t)):
            raise ValueError(f"{name} has NaN or infinite entries")
    if len(tables) == 1:
        M = tables[0]
        if M.ndim != 2 or M.shape[0] != M.shape[1]:
            raise ValueError(
                f"payoffs: a single-population table must be square (n, n), got {M.shape}; "
                "K populations take a list of K tables of shape (n_1, ..., n_K)"
            )
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


def moran_fixation_probabilities(M: np.ndarray, *, alpha: float, m: int) -> np.ndarray:
    """``ρ[s, r]``: a single ``r`` mutant fixating in ``m`` individuals playing ``s`` ``(n, n)``.

    The Moran process of Omidshafiei et al. 2019 (App., Eq. 2) on one population, each
    individual playing the other ``m - 1``: ``ρ = 1 / Σ_{l=0}^{m-1} e^{L_l}`` with
    ``L_l = -α Σ_{p=1}^{l} (f_r(p) - f_s(p))``. ``f_r(p) - f_s(p) = (a p + b) / (m-1)`` with
    ``a = M_rr - M_rs + M_ss - M_sr`` and ``b = m M_rs - M_rr - (m-1) M_ss``, so
    ``L_l = -α (a l(l+1)/2 + b l) / (m-1)`` and ``ρ = exp(-logsumexp(L))`` — no overflow at
    any ``α``. The diagonal is ``1/m`` (neutral drift).
    """
    (M,) = _tables(M)
    m = _population_size(m)
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be finite and > 0 for the Moran model, got {alpha}")
    d = np.diag(M)
    Mrs = M.T  # Mrs[s, r] = M[r, s]: the mutant r against the resident s
    a = d[None, :] - Mrs + d[:, None] - M  # (n, n) indexed [s, r]
    b = m * Mrs - d[None, :] - (m - 1) * d[:, None]
    c = -alpha / (m - 1)
    # streaming logsumexp over l = 0..m-1 (L_0 = 0): O(n²) memory, m passes
    top = np.zeros_like(M)
    acc = np.ones_like(M)
    with np.errstate(over="ignore", invalid="ignore"):
        for ell in range(1, m):
            L = c * (a * (ell * (ell + 1) / 2) + b * ell)
            new = np.maximum(top, L)
            acc = acc * np.exp(top - new) + np.exp(L - new)
            top = new
        rho = np.exp(-(top + np.log(acc)))
    return np.where(np.isposinf(top), 0.0, rho)  # an exponent past float64: ρ = 0


def transition_matrix(
    payoffs,
    *,
    alpha: float = 100.0,
    m: int = 50,
    inf_alpha_eps: float = 0.01,
    selection: str = "local",
) -> tuple[np.ndarray, tuple[int, ...]]:
    """The alpha-Rank Markov matrix ``C`` ``(P, P)`` and the strategies per population.

    Profiles of several populations are numbered in C order (the last population fastest),
    as OpenSpiel numbers them. ``selection``: ``local`` or ``moran`` (module docstring).
    """
    tables = _tables(payoffs)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)):
        raise ValueError(f"alpha must be a number > 0 (or inf), got {alpha!r}")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0 (or inf), got {alpha}")
    m = _population_size(m)
    if not 0.0 <= inf_alpha_eps <= 0.5:
        raise ValueError(f"inf_alpha_eps must be in [0, 0.5], got {inf_alpha_eps}")
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    if len(tables) == 1:
        M = tables[0]
        n = M.shape[0]
        if n == 1:
            return np.ones((1, 1)), (1,)
        eta = 1.0 / (n - 1)
        if selection == "moran":
            if math.isinf(alpha):
                raise ValueError(
                    "alpha=inf is the response graph of the local model; selection='moran' "
                    "needs a finite alpha"
                )
            C = eta * moran_fixation_probabilities(M, alpha=alpha, m=m)  # C[s, r]
        else:
            C = eta * _rates(M - M.T, alpha, m, inf_alpha_eps)  # C[s, r]: M[r, s] - M[s, r]
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
    if C.ndim != 2 or C.shape[0] != C.shape[1] or C.size == 0:
        raise ValueError(f"C must be a non-empty square matrix, got shape {C.shape}")
    if not np.all(np.isfinite(C)) or C.min() < 0 or np.abs(C.sum(axis=1) - 1).max() > 1e-9:
        raise ValueError("C must be row-stochastic (finite, >= 0, each row summing to 1)")
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
    selection: str = "local",
) -> AlphaRankResult:
    """alpha-Rank of a single-population (``M`` ``(n, n)``) or K-population game.

    ``payoffs``: one square matrix ``M[i, j]`` = payoff of ``i`` against ``j`` (as a list of
    one table, like OpenSpiel), or ``K`` tables each of shape ``(n_1, ..., n_K)`` where
    ``tables[k][profile]`` is population ``k``'s payoff. ``alpha = math.inf`` is the
    infinite-α limit on the response graph perturbed by ``inf_alpha_eps`` (0 keeps it
    unperturbed, which usually has several stationary distributions). ``selection``:
    ``local`` (default, as OpenSpiel's default) or ``moran``, the finite-population model
    (OpenSpiel's ``use_local_selection_model=False``); the two differ only for one population.

    >>> from badgerlab.dynamics.games import rock_paper_scissors
    >>> alpharank(rock_paper_scissors(), alpha=1e4).pi.round(6).tolist()
    [0.333333, 0.333333, 0.333333]
    """
    C, shape = transition_matrix(
        payoffs, alpha=alpha, m=m, inf_alpha_eps=inf_alpha_eps, selection=selection
    )
    stationary, classes = stationary_distributions(C, method=method)
    pi = stationary.mean(axis=0)
    return AlphaRankResult(pi, len(classes) == 1, stationary, classes, C, shape)
