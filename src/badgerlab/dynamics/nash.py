"""Nash equilibria of two-player zero-sum matrix games: maximin LPs and the max-entropy Nash.

The maximin strategies come from one linear program (scipy's HiGHS), the opponent's from its
dual. Nash averaging (Balduzzi et al. 2018, "Re-evaluating evaluation",
https://arxiv.org/abs/1806.02643) needs the *maximum-entropy* Nash, which is unique; it is
found in two steps: one LP finds the largest support of any Nash and the constraints no Nash can
make slack, then a barrier method maximises the entropy on the affine set they leave.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.sparse
import torch

from badgerlab.dynamics.games import check_antisymmetric

__all__ = [
    "NashAveraging",
    "MaxEntropyError",
    "NashEquilibrium",
    "max_entropy_nash",
    "max_entropy_nash_avt",
    "max_entropy_point",
    "nash_averaging",
    "nash_averaging_avt",
    "solve_zero_sum",
]


class NashEquilibrium(NamedTuple):
    """Maximin strategies of a zero-sum game with row payoffs ``M``, and its value."""

    row: np.ndarray
    col: np.ndarray
    value: float


def _matrix(M: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    M = np.asarray(M, dtype=np.float64)
    if M.ndim != 2 or M.size == 0:
        raise ValueError(f"{name} must be a non-empty 2-D payoff matrix, got shape {M.shape}")
    if not np.all(np.isfinite(M)):
        raise ValueError(f"{name} has NaN or infinite entries")
    return M


def _clean(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 0.0, None)
    return p / p.sum()


def solve_zero_sum(M: np.ndarray | torch.Tensor) -> NashEquilibrium:
    """A Nash equilibrium of the zero-sum game where the row player receives ``M[i, j]``.

    Row LP: ``max_{x ∈ Δ, v} v`` s.t. ``Mᵀx ≥ v·1``. The column player's maximin strategy is
    the dual of those constraints. ``value = xᵀ M y``.

    >>> from badgerlab.dynamics.games import rock_paper_scissors
    >>> eq = solve_zero_sum(rock_paper_scissors())
    >>> eq.row.round(6).tolist(), round(eq.value, 9)
    ([0.333333, 0.333333, 0.333333], 0.0)
    """
    M = _matrix(M, "M")
    m, n = M.shape
    # variables (x_1..x_m, v); minimise -v
    c = np.zeros(m + 1)
    c[-1] = -1.0
    A_ub = np.hstack([-M.T, np.ones((n, 1))])  # v - (Mᵀx)_j <= 0
    A_eq = np.zeros((1, m + 1))
    A_eq[0, :m] = 1.0
    bounds = [(0.0, None)] * m + [(None, None)]
    res = scipy.optimize.linprog(
        c, A_ub=A_ub, b_ub=np.zeros(n), A_eq=A_eq, b_eq=[1.0], bounds=bounds, method="highs"
    )
    if res.status != 0:
        raise RuntimeError(f"zero-sum LP failed: {res.message}")
    x = _clean(res.x[:m])
    # the duals of v - (Mᵀx)_j <= 0 are -y_j (HiGHS reports marginals as ∂objective/∂b)
    y = _clean(-res.ineqlin.marginals)
    return NashEquilibrium(x, y, float(x @ M @ y))


class MaxEntropyError(RuntimeError):
    """The maximum-entropy point could not be found to the required accuracy."""


def _faces(B: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The face structure of ``{p ∈ Δ : B p <= 0}`` from one LP.

    Over the cone ``{q >= 0 : B q <= 0}`` maximise ``Σ t + Σ s`` with ``0 <= t <= min(q, 1)``
    and ``0 <= s <= min(-B q, 1)``. Sums of scaled feasible points stay feasible, so at the
    optimum ``t_i = 1`` exactly for the strategies some point of the polytope plays (the
    largest support ``S``) and ``s_i = 1`` exactly for the rows some point makes slack (the
    others are implicit equalities). ``q / Σq`` is a point with both properties at once.
    Returns ``(S mask, slack-row mask, p0)``.
    """
    k, n = B.shape
    c = np.concatenate([np.zeros(n), -np.ones(n), -np.ones(k)])
    A_ub = scipy.sparse.bmat(
        [
            [scipy.sparse.csr_matrix(B), None, scipy.sparse.eye(k)],
            [-scipy.sparse.eye(n), scipy.sparse.eye(n), None],
        ],
        format="csr",
    )
    bounds = [(0.0, None)] * n + [(0.0, 1.0)] * (n + k)
    # every optimum has t, s in {0, 1}: the dual simplex, or the interior-point method when
    # the simplex stalls (it does on some tables with many copies)
    for method in ("highs-ds", "highs-ipm"):
        res = scipy.optimize.linprog(
            c, A_ub=A_ub, b_ub=np.zeros(k + n), bounds=bounds, method=method
        )
        if res.status == 0 and res.x is not None:
            break
    else:
        raise MaxEntropyError(f"support LP failed: {res.message}")
    q, t, s = res.x[:n], res.x[n : 2 * n], res.x[2 * n :]
    support = t > 0.5
    if not support.any():
        raise ValueError("the polytope {p in simplex : B p <= 0} is empty")
    p0 = np.where(support, q, 0.0)
    return support, s > 0.5, p0 / p0.sum()


def _null_space(K: np.ndarray) -> np.ndarray:
    _, sv, Vt = np.linalg.svd(K)
    tol = max(K.shape) * np.finfo(float).eps * max(1.0, sv[0] if len(sv) else 0.0) * 1e3
    rank = int((sv > tol).sum())
    return Vt[rank:].T  # (n, n - rank)


def _center(
    x0: np.ndarray, N: np.ndarray, BI: np.ndarray, rI0: np.ndarray, z: np.ndarray, t: float
) -> tuple[np.ndarray, float]:
    """Damped Newton on ``φ_t(z) = t Σ x log x - Σ log x - Σ log r`` with ``x = x0 + N z``,
    ``r = rI0 - BI z``; every accepted step keeps ``x > 0`` and ``r > 0``. Returns ``z`` and
    the last Newton decrement ``λ²`` (small when ``z`` is the centre).

    The line search compares ``φ_t(z + s Δz) - φ_t(z)`` computed as a difference (with
    ``log1p`` of the relative changes), never two values of ``φ_t`` of size ``t``: at
    ``t ~ 1e13`` those differ in digits that float64 no longer holds.
    """

    def change(x: np.ndarray, r: np.ndarray, dx: np.ndarray, dr: np.ndarray) -> float:
        u, w = dx / x, dr / r
        if u.min(initial=0.0) <= -1.0 or w.min(initial=0.0) <= -1.0:
            return np.inf  # the step leaves the interior
        lu, lw = np.log1p(u), np.log1p(w)
        # Σ (x+dx) log(x+dx) - x log x = Σ dx log x + (x + dx) log1p(u)
        ent = float(dx @ np.log(x)) + float((x + dx) @ lu)
        return t * ent - float(lu.sum()) - float(lw.sum())

    decrement = np.inf
    for _ in range(100):
        x, r = x0 + N @ z, rI0 - BI @ z
        g = N.T @ (t * (np.log(x) + 1.0) - 1.0 / x) + BI.T @ (1.0 / r)  # (d,)
        H = (N.T * (t / x + 1.0 / x**2)) @ N + (BI.T * (1.0 / r**2)) @ BI  # (d, d)
        try:
            dz = -scipy.linalg.solve(H, g, assume_a="pos", check_finite=False)
        except (np.linalg.LinAlgError, ValueError):
            dz = -np.linalg.lstsq(H, g, rcond=None)[0]
        decrement = float(-g @ dz)
        if not np.isfinite(decrement) or decrement / 2 <= 1e-13:
            break
        Ndz, Bdz = N @ dz, -(BI @ dz)
        step = 1.0
        while change(x, r, step * Ndz, step * Bdz) > -0.25 * step * decrement:
            step *= 0.5
            if step < 1e-14:  # no descent left at this precision: keep the last point
                return z, decrement
        z = z + step * dz
    return z, decrement


def _rows(B: np.ndarray) -> np.ndarray:
    """``B`` with each row scaled to max-abs 1 and zero rows dropped (the polytope is the
    same; the LPs and the barrier see entries of one scale)."""
    scale = np.abs(B).max(axis=1)
    keep = scale > 0
    return B[keep] / scale[keep, None]


def _interior(x0: np.ndarray, N: np.ndarray, BI: np.ndarray, rI0: np.ndarray) -> np.ndarray:
    """``z`` with ``x0 + N z > 0`` and ``rI0 - BI z > 0``: ``0`` when the LP's point already is
    comfortably interior, else the point of largest margin ``δ`` (one LP in ``(z, δ)``)."""
    d = N.shape[1]
    margin = min(x0.min(), rI0.min() if rI0.size else np.inf)
    if margin > 1e-9:
        return np.zeros(d)
    c = np.zeros(d + 1)
    c[-1] = -1.0
    A_ub = np.vstack(
        [np.hstack([-N, np.ones((len(x0), 1))]), np.hstack([BI, np.ones((len(rI0), 1))])]
    )
    res = scipy.optimize.linprog(
        c,
        A_ub=A_ub,
        b_ub=np.concatenate([x0, rI0]),
        bounds=[(None, None)] * d + [(None, 1.0)],
        method="highs",
    )
    if res.status != 0 or res.x is None or res.x[-1] <= 0:
        raise MaxEntropyError(
            "no strictly interior point on the face of largest support "
            f"({res.message if res.x is None else f'margin {res.x[-1]:.3g}'})"
        )
    return res.x[:d]


def max_entropy_point(B: np.ndarray | torch.Tensor, *, gap: float = 1e-11) -> np.ndarray:
    """``argmax_{p ∈ Δ, B p <= 0} H(p)``, the maximum-entropy point of a polytope in the simplex.

    One LP (``_faces``) gives the largest support ``S``, the implicit equalities ``E`` and a
    point ``p0`` that is strictly inside every other constraint. On the affine set
    ``{p_S : B_{E,S} p_S = 0, 1ᵀp_S = 1} = {p0 + N z}`` the maximiser is interior (it plays
    all of ``S``). A barrier method with barriers on both ``p_S > 0`` and the other rows,
    Newton steps on ``t·Σ p log p - Σ_S log p - Σ_{i∉E} log(-(B p)_i)`` for ``t -> ∞``, finds
    it to a duality gap ``(|S| + #rows)/t <= gap``; no step ever leaves the interior.
    ``B`` is ``(k, n)``; returns ``p`` ``(n,)``. Raises ``MaxEntropyError`` when the result is
    not a probability vector with ``max(B p) <= 1e-9``.
    """
    if not 0 < gap < 1:  # NaN fails too; gap = 0 would never stop raising t
        raise ValueError(f"gap must be in (0, 1), got {gap}")
    B = _rows(_matrix(B, "B"))
    k, n = B.shape
    if k == 0:  # no constraint is left: the whole simplex
        return np.full(n, 1.0 / n)
    support, slack, p0 = _faces(B)
    p = np.zeros(n)
    idx = np.flatnonzero(support)
    BS = B[:, idx]  # (k, |S|)
    K = np.vstack([BS[~slack], np.ones((1, len(idx)))])  # implicit equalities and Σp = 1
    # put p0 exactly on the affine set (the LP meets it only up to its tolerance)
    rhs = np.zeros(K.shape[0])
    rhs[-1] = 1.0
    x0 = p0[idx] - np.linalg.lstsq(K, K @ p0[idx] - rhs, rcond=None)[0]
    N = _null_space(K)  # (|S|, d)
    BI = BS[slack] @ N  # (|I|, d): how each slack row moves along the affine set
    rI0 = -(BS[slack] @ x0)  # (|I|,) > 0 slack at p0
    if N.shape[1] > 0:
        z = _interior(x0, N, BI, rI0)
        t = 1.0
        while True:
            z, decrement = _center(x0, N, BI, rI0, z, t)
            if (len(idx) + len(rI0)) / t < gap:
                break
            t *= 10.0
        if not decrement <= 1e-6:  # φ_t within ~λ² of its minimum: entropy within λ²/t
            raise MaxEntropyError(
                f"the barrier's last Newton solve did not converge (decrement {decrement:.3g})"
            )
        x = x0 + N @ z
    else:
        x = x0
    p[idx] = np.clip(x, 0.0, None)
    total = p.sum()
    if not np.isfinite(total) or total <= 0:
        raise MaxEntropyError(f"max-entropy solve produced a non-finite point on B of {B.shape}")
    p /= total
    violation = float((B @ p).max())
    if not np.all(np.isfinite(p)) or violation > 1e-9:
        raise MaxEntropyError(
            f"max-entropy point violates B p <= 0 by {violation:.3g} (B of shape {B.shape})"
        )
    return p


def max_entropy_nash(A: np.ndarray | torch.Tensor) -> np.ndarray:
    """The maximum-entropy Nash ``p`` of a symmetric zero-sum game (antisymmetric ``A``).

    The Nash set is ``{p ∈ Δ : A p <= 0}`` (the value is 0); its max-entropy point is unique.

    >>> from badgerlab.dynamics.games import biased_rock_paper_scissors
    >>> (max_entropy_nash(biased_rock_paper_scissors()) * 16).round(6).tolist()
    [1.0, 10.0, 5.0]
    """
    A = check_antisymmetric(A)
    return max_entropy_point(A)


class NashAveraging(NamedTuple):
    """Nash averaging of agent-vs-agent data: the max-entropy Nash and the ratings ``A p``."""

    nash: np.ndarray
    ratings: np.ndarray


def nash_averaging(A: np.ndarray | torch.Tensor) -> NashAveraging:
    """Nash averaging (Balduzzi 2018, §4): ``p*`` = max-entropy Nash of ``A``, ratings ``A p*``.

    Redundancy. A copy ``k'`` of agent ``k`` always gets the same mass as ``k`` (the
    max-entropy point is unique and the copies are interchangeable). Merging the copies maps
    the new Nash set onto the old one ``X*``, and on it the new objective is
    ``H(q) + q_k log 2``, not ``H(q)``. So the ratings are unchanged exactly when that shift
    does not move them: when ``A q`` is the same for every ``q ∈ X*`` — in particular when the
    Nash is unique, or when ``k`` is played by no Nash (then the copy gets 0). Otherwise
    (5,3-Blotto: the Nash set is a polytope along which the ratings of unplayed strategies
    range over e.g. [-0.75, -1/3]) copying a played agent moves mass towards it and changes
    the ratings of the agents off the support — Balduzzi 2018's invariance assumes a unique
    Nash, and this is the maths, not a numerical error. The agents the Nash plays are always
    rated 0.
    """
    A = check_antisymmetric(A)
    p = max_entropy_nash(A)
    return NashAveraging(p, A @ p)


def _normalise_tasks(S: np.ndarray) -> np.ndarray:
    lo, hi = S.min(axis=0), S.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)  # a task on which all agents score alike gives 0s
    return (S - lo) / span


def max_entropy_nash_avt(
    S: np.ndarray | torch.Tensor, *, normalise: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Max-entropy Nash ``(p_agents, p_tasks)`` of agent-vs-task scores ``S`` ``(m, n)``.

    The agents (rows) maximise and the tasks (columns) minimise ``S``, after per-task min-max
    normalisation as in Balduzzi 2018 App. D. The Nash set of the embedded antisymmetric game
    ``[[0, S], [-Sᵀ, 0]]`` is a product ``X* × Y*`` (both sides reach the value ``V``), so the
    joint entropy is maximised separately: ``X* = {x : Sᵀx >= V}``, ``Y* = {y : S y <= V}``.
    """
    S = _matrix(S, "S")
    if normalise:
        S = _normalise_tasks(S)
    V = solve_zero_sum(S).value
    # (V - Sᵀx)_t <= 0 written with 1ᵀx = 1 as (V·11ᵀ - Sᵀ) x <= 0
    x = max_entropy_point(V - S.T)
    y = max_entropy_point(S - V)
    return x, y


def nash_averaging_avt(
    S: np.ndarray | torch.Tensor,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Agent-vs-task Nash averaging: ``((p_a, p_e), (skill, difficulty))``.

    ``skill = S̃ p_e`` and ``difficulty = -S̃ᵀ p_a`` with ``S̃`` the min-max normalised scores,
    the same outputs as OpenSpiel's ``nash_averaging_avt_matrix``.
    """
    S = _normalise_tasks(_matrix(S, "S"))
    pa, pe = max_entropy_nash_avt(S, normalise=False)
    return (pa, pe), (S @ pe, -S.T @ pa)
