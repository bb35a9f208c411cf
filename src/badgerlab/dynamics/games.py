"""Symmetric zero-sum games: payoff matrices, functional forms φ(v, w), and their Hodge split.

A symmetric zero-sum game is an antisymmetric evaluation matrix ``A`` with ``A[i, j]`` the payoff
of agent ``i`` against agent ``j`` (``A = -Aᵀ``), or a functional form ``φ(v, w) = -φ(w, v)`` over
parametric agents (Balduzzi et al. 2019, "Open-ended learning in symmetric zero-sum games",
https://arxiv.org/abs/1901.08106). Matrices are float64 numpy arrays; functional forms are torch
functions so that best responses can be found by gradient ascent.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import scipy.linalg
import torch

__all__ = [
    "BIASED_RPS",
    "DiscGame",
    "FunctionalGame",
    "HodgeDecomposition",
    "MixtureGame",
    "as_generator",
    "biased_rock_paper_scissors",
    "blotto",
    "blotto_strategies",
    "check_antisymmetric",
    "cyclic_share",
    "evaluation_matrix",
    "hodge_decomposition",
    "random_skew_symmetric",
    "rock_paper_scissors",
    "schur_components",
    "spinning_top",
    "transitive_game",
]

#: The biased rock-paper-scissors of Balduzzi et al. 2019 (§5); its Nash is (1/16, 10/16, 5/16).
BIASED_RPS = np.array([[0.0, -0.25, 0.5], [0.25, 0.0, -0.05], [-0.5, 0.05, 0.0]])


def _int_arg(name: str, value, minimum: int) -> int:
    """``value`` as an int, or ValueError naming ``name`` unless it is an integer >= minimum
    (``True``/``False`` and floats such as 2.5 are refused; 3.0 is accepted)."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if isinstance(value, (float, np.floating)) and math.isfinite(value):
        ok = float(value).is_integer()
    if not ok or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _positive(name: str, value, *, allow_zero: bool = False) -> float:
    """``value`` as a float, or ValueError naming ``name`` unless it is finite and > 0
    (>= 0 with ``allow_zero``)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")
    return v


def as_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    """A numpy Generator from a seed, a Generator (returned as is) or None (fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise TypeError(
        f"rng must be a numpy Generator, an int seed or None, got {type(rng).__name__}"
    )


def check_antisymmetric(
    A: np.ndarray | torch.Tensor, *, name: str = "A", atol: float = 1e-9
) -> np.ndarray:
    """``A`` as float64, or ValueError when it is not a finite antisymmetric square matrix."""
    A = np.asarray(A, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1] or A.size == 0:
        raise ValueError(f"{name} must be a non-empty square matrix, got shape {A.shape}")
    if not np.all(np.isfinite(A)):
        raise ValueError(f"{name} has NaN or infinite entries")
    scale = max(1.0, float(np.abs(A).max(initial=0.0)))
    if not np.allclose(A, -A.T, atol=atol * scale, rtol=0.0):
        raise ValueError(f"{name} must be antisymmetric (A = -A^T) for a symmetric zero-sum game")
    return A


def rock_paper_scissors() -> np.ndarray:
    """Rock, paper, scissors: ``A[i, j] = 1`` when ``i`` beats ``j``; Nash uniform, value 0."""
    return np.array([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]])


def biased_rock_paper_scissors(bias: tuple[float, float, float] | None = None) -> np.ndarray:
    """RPS with unequal stakes: ``[[0, -a, b], [a, 0, -c], [-b, c, 0]]`` for ``bias = (a, b, c)``.

    The default is ``BIASED_RPS`` (a, b, c) = (.25, .5, .05), whose unique Nash is
    (c, b, a) / (a + b + c) = (1/16, 10/16, 5/16).
    """
    if bias is None:
        return BIASED_RPS.copy()
    stakes = np.asarray(bias, dtype=np.float64).ravel()
    if stakes.shape != (3,) or not np.all(np.isfinite(stakes)) or stakes.min() <= 0:
        raise ValueError(f"bias must be three positive finite stakes, got {bias!r}")
    a, b, c = (float(x) for x in stakes)
    return np.array([[0.0, -a, b], [a, 0.0, -c], [-b, c, 0.0]])


def blotto_strategies(coins: int, fields: int) -> np.ndarray:
    """Every way to place ``coins`` coins on ``fields`` fields, ``(S, fields)`` int64.

    Ordered lexicographically (first field slowest), which is OpenSpiel's action order for
    ``blotto(coins=.., fields=..)``; there are ``C(coins + fields - 1, fields - 1)`` of them.
    """
    coins = _int_arg("coins", coins, 1)
    fields = _int_arg("fields", fields, 2)
    rows = [c for c in itertools.product(range(coins + 1), repeat=fields) if sum(c) == coins]
    return np.array(rows, dtype=np.int64)


def blotto(coins: int = 10, fields: int = 3) -> np.ndarray:
    """Colonel Blotto: ``A[i, j] = sign(#fields i wins - #fields j wins)``, value 0.

    >>> blotto(10, 3).shape
    (66, 66)
    """
    S = blotto_strategies(coins, fields)
    won = np.sign(S[:, None, :] - S[None, :, :]).sum(-1)  # (S, S)
    return np.sign(won).astype(np.float64)


def random_skew_symmetric(
    n: int, *, rng: np.random.Generator | int | None = None, scale: float = 1.0
) -> np.ndarray:
    """``A = scale · (G - Gᵀ) / √2`` with ``G`` standard normal: entries have std ``scale``."""
    n = _int_arg("n", n, 1)
    scale = _positive("scale", scale, allow_zero=True)
    G = as_generator(rng).standard_normal((n, n))
    return scale * (G - G.T) / math.sqrt(2.0)


def transitive_game(ratings: np.ndarray | torch.Tensor) -> np.ndarray:
    """The purely transitive game ``A[i, j] = r_i - r_j`` (``grad(r)`` in Balduzzi 2018)."""
    r = np.asarray(ratings, dtype=np.float64)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"ratings must be 1-D and non-empty, got shape {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError("ratings has NaN or infinite entries")
    return r[:, None] - r[None, :]


class HodgeDecomposition(NamedTuple):
    """``A = transitive + cyclic`` with ``transitive = grad(ratings)`` and ``div(cyclic) = 0``."""

    transitive: np.ndarray
    cyclic: np.ndarray
    ratings: np.ndarray


def hodge_decomposition(A: np.ndarray | torch.Tensor) -> HodgeDecomposition:
    """Combinatorial Hodge decomposition of an antisymmetric matrix (Balduzzi et al. 2018, §3).

    ``div(A) = A·1 / n`` gives the ratings ``r``; ``grad(r) = r1ᵀ - 1rᵀ`` is the transitive part
    and ``rot(A) = A - grad(div(A))`` the cyclic part. The two are orthogonal in the Frobenius
    inner product, so ``‖A‖² = ‖transitive‖² + ‖cyclic‖²``
    (https://arxiv.org/abs/1806.02643).
    """
    A = check_antisymmetric(A)
    r = A.mean(axis=1)
    T = r[:, None] - r[None, :]
    return HodgeDecomposition(T, A - T, r)


def cyclic_share(A: np.ndarray | torch.Tensor) -> float:
    """The share of the game's squared Frobenius norm in its cyclic part, in [0, 1]."""
    h = hodge_decomposition(A)
    total = float((h.transitive**2).sum() + (h.cyclic**2).sum())
    return 0.0 if total == 0.0 else float((h.cyclic**2).sum()) / total


def schur_components(A: np.ndarray | torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` strongest rotational components of an antisymmetric ``A`` by real Schur form.

    ``A = Q T Qᵀ`` with ``T`` block diagonal of 2×2 blocks ``[[0, λ], [-λ, 0]]``. Returns
    ``C`` ``(n, 2k)`` and ``λ`` ``(k,)`` (descending) with ``C Ω Cᵀ`` the best rank-2k
    approximation of ``A``, ``Ω = Σ_i e_{2i-1}e_{2i}ᵀ - e_{2i}e_{2i-1}ᵀ`` — the cyclic
    vectors of mElo_2k (Balduzzi et al. 2018, https://arxiv.org/abs/1806.02643).
    """
    A = check_antisymmetric(A)
    n = A.shape[0]
    k = _int_arg("k", k, 0)
    if not 0 <= 2 * k <= n:
        raise ValueError(f"k must satisfy 0 <= 2k <= n = {n}, got k={k}")
    T, Q = scipy.linalg.schur(A, output="real")
    blocks = []
    i = 0
    while i < n - 1:
        lam = T[i, i + 1]
        if abs(lam) > 0 and abs(T[i + 1, i] + lam) <= 1e-8 * max(1.0, abs(lam)):
            q1, q2 = Q[:, i], Q[:, i + 1]
            if lam < 0:  # orient each block so that its λ is positive
                q1, q2, lam = q2, q1, -lam
            blocks.append((lam, q1, q2))
            i += 2
        else:
            i += 1
    blocks.sort(key=lambda b: -b[0])
    C = np.zeros((n, 2 * k))
    lams = np.zeros(k)
    for j, (lam, q1, q2) in enumerate(blocks[:k]):
        C[:, 2 * j], C[:, 2 * j + 1] = math.sqrt(lam) * q1, math.sqrt(lam) * q2
        lams[j] = lam
    return C, lams


def spinning_top(
    n: int,
    cyclic: float,
    *,
    rng: np.random.Generator | int | None = None,
    width: float = 0.2,
) -> tuple[np.ndarray, np.ndarray]:
    """A game shaped as a spinning top (Czarnecki et al. 2020, https://arxiv.org/abs/2004.09468).

    Agents have transitive levels ``t`` evenly spaced in [0, 1]. The cyclic part is a random
    skew-symmetric matrix modulated by ``w(t_i) w(t_j)``, ``w(t) = exp(-(t - 1/2)² / (2 width²))``,
    so that non-transitivity is strongest in the middle; its gradient (transitive) component is
    projected out so the two parts are orthogonal. Both parts are normalised and mixed as
    ``A = √(1-c) T/‖T‖ + √c R/‖R‖``, hence ``cyclic_share(A) == c`` exactly. Returns ``(A, t)``.
    """
    n = _int_arg("n", n, 3)
    if not 0.0 <= cyclic <= 1.0:  # NaN fails too
        raise ValueError(f"cyclic must be in [0, 1], got {cyclic}")
    width = _positive("width", width)
    t = np.linspace(0.0, 1.0, n)
    T = transitive_game(t)
    w = np.exp(-((t - 0.5) ** 2) / (2 * width**2))
    R = random_skew_symmetric(n, rng=rng) * w[:, None] * w[None, :]
    R = hodge_decomposition(R).cyclic
    A = math.sqrt(1.0 - cyclic) * T / np.linalg.norm(T) + math.sqrt(cyclic) * R / np.linalg.norm(R)
    return A * n, t  # rescaled so that typical entries are O(1)


# ---------------------------------------------------------------------------------------------
# functional-form games


def evaluation_matrix(
    phi: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    agents: torch.Tensor,
    opponents: torch.Tensor | None = None,
) -> np.ndarray:
    """``A[i, j] = φ(agents[i], opponents[j])`` (opponents default to the agents themselves).

    ``phi`` must broadcast over leading dims: ``(P, 1, D), (1, Q, D) -> (P, Q)``.
    """
    V = agents
    W = agents if opponents is None else opponents
    with torch.no_grad():
        out = phi(V[:, None, :], W[None, :, :])  # (P, Q)
    return out.double().cpu().numpy()


class FunctionalGame:
    """A symmetric zero-sum functional-form game ``φ(v, w) = -φ(w, v)`` over agents in R^dim.

    Subclasses define ``phi`` (broadcasting over leading dims), ``project`` (onto the agents'
    domain) and ``sample``. ``best_response`` finds ``argmax_v Σ_j σ_j φ(v, w_j)`` by projected
    gradient ascent from several starts — the gradient oracle of PSRO on functional forms.
    """

    dim: int = 2

    def phi(self, v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def project(self, v: torch.Tensor) -> torch.Tensor:
        return v

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.project(torch.randn(n, self.dim, generator=generator, dtype=torch.float64))

    def matrix(self, agents: torch.Tensor, opponents: torch.Tensor | None = None) -> np.ndarray:
        return evaluation_matrix(self.phi, agents, opponents)

    def payoff_against(self, v: torch.Tensor, opponents: torch.Tensor, weights) -> torch.Tensor:
        """``Σ_j σ_j φ(v, w_j)`` for each row of ``v`` ``(P, D)`` -> ``(P,)``."""
        sigma = torch.as_tensor(np.asarray(weights), dtype=v.dtype)
        return self.phi(v[:, None, :], opponents[None, :, :].to(v.dtype)) @ sigma

    def best_response(
        self,
        opponents: torch.Tensor,
        weights,
        *,
        init: torch.Tensor | None = None,
        steps: int = 100,
        lr: float = 0.1,
        restarts: int = 8,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Projected gradient ascent on ``Σ_j σ_j φ(v, w_j)``; the best of the starts, ``(D,)``.

        ``init`` (``(D,)``), when given, is one of the starts (a policy continuing training).
        """
        steps = _int_arg("steps", steps, 0)
        restarts = _int_arg("restarts", restarts, 1)
        lr = _positive("lr", lr)
        starts = self.sample(restarts, generator)
        if init is not None:
            starts = torch.cat([init.reshape(1, -1).to(starts.dtype), starts[1:]])
        v = starts.clone().requires_grad_(True)
        for _ in range(steps):
            f = self.payoff_against(v, opponents, weights).sum()
            (g,) = torch.autograd.grad(f, v)
            with torch.no_grad():
                v = self.project(v + lr * g)
            v.requires_grad_(True)
        with torch.no_grad():
            f = self.payoff_against(v, opponents, weights)
        return v[int(torch.argmax(f))].detach()

    def exploitability(self, opponents: torch.Tensor, weights, **kw) -> float:
        """``max_v Σ_j σ_j φ(v, w_j)`` (the game's value is 0), by ``best_response``."""
        v = self.best_response(opponents, weights, **kw)
        return float(self.payoff_against(v[None], opponents, weights)[0])


class DiscGame(FunctionalGame):
    """The disc game ``φ(v, w) = vᵀ [[0, -1], [1, 0]] w`` on the unit disc (Balduzzi 2019, §3).

    Purely cyclic: every agent on the boundary is beaten by another. The best response to a
    mixture with mean ``w̄`` is ``[[0, -1], [1, 0]] w̄ / ‖w̄‖`` and the exploitability ``‖w̄‖``.
    """

    dim = 2

    def phi(self, v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return v[..., 1] * w[..., 0] - v[..., 0] * w[..., 1]

    def project(self, v: torch.Tensor) -> torch.Tensor:
        norm = v.norm(dim=-1, keepdim=True)
        return v / norm.clamp(min=1.0)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        # uniform on the disc: radius √U, angle uniform
        u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        r, a = u[:, 0].sqrt(), 2 * math.pi * u[:, 1]
        return torch.stack([r * torch.cos(a), r * torch.sin(a)], dim=-1)

    def exploitability(self, opponents: torch.Tensor, weights, **kw) -> float:
        sigma = torch.as_tensor(np.asarray(weights), dtype=torch.float64)
        return float((sigma @ opponents.double()).norm())


class MixtureGame(FunctionalGame):
    """The functional form of a matrix game: agent ``v`` (logits) plays ``softmax(v)``.

    ``φ(v, w) = softmax(v)ᵀ A softmax(w)``, antisymmetric when ``A`` is. Exploitability is
    exact: ``max_i (A p̄)_i`` for the mixture's mean strategy ``p̄``.
    """

    def __init__(self, A: np.ndarray | torch.Tensor) -> None:
        self.A_np = check_antisymmetric(A)
        self.A = torch.as_tensor(self.A_np)
        self.dim = self.A.shape[0]

    def phi(self, v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        p, q = torch.softmax(v, -1), torch.softmax(w, -1)
        return torch.einsum("...i,ij,...j->...", p, self.A.to(p.dtype), q)

    def exploitability(self, opponents: torch.Tensor, weights, **kw) -> float:
        sigma = np.asarray(weights, dtype=np.float64)
        mean = sigma @ torch.softmax(opponents.double(), -1).numpy()
        return float((self.A_np @ mean).max())
