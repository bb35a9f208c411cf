"""Fixed-point solvers for z* = f(z*) on batches: plain iteration, Anderson, Broyden."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor

from badgerlab.registry import Registry

__all__ = [
    "SOLVERS",
    "Solver",
    "SolverStats",
    "anderson",
    "broyden",
    "fixed_point",
    "get_solver",
    "register_solver",
    "relative_residual",
]


class SolverStats(NamedTuple):
    """What a solve did, per sample of the batch `B`.

    steps: (B,) int64, evaluations of f until the returned iterate (the first step whose
        relative residual fell below `tol`, else the step with the lowest residual).
    trace: (B, T) relative residual after each of the T evaluations made; a sample that has
        stopped keeps being iterated while others run, and its trace shows those steps.
    lowest: (B,) relative residual of the returned iterate: the lowest up to the step where
        the sample stopped (NaN counts as +inf, so a sample that never improves on its
        start still returns its first iterate).
    converged: (B,) bool, `lowest < tol`.
    """

    steps: Tensor
    trace: Tensor
    lowest: Tensor
    converged: Tensor


class Solver(Protocol):
    def __call__(
        self,
        f: Callable[[Tensor], Tensor],
        z0: Tensor,
        *,
        tol: float,
        max_steps: int,
        early_stop: bool = True,
        **opts: Any,
    ) -> tuple[Tensor, SolverStats]: ...


def relative_residual(z: Tensor, fz: Tensor) -> Tensor:
    """‖f(z) − z‖ / ‖f(z)‖ per sample; `z`, `fz`: (B, D) -> (B,).

    The denominator is clamped at the dtype's smallest normal number, so z = f(z) = 0 counts
    as converged (0) while any other zero-denominator case counts as far from it.
    """
    num = (fz - z).norm(dim=1)
    den = fz.norm(dim=1).clamp_min(torch.finfo(fz.dtype).tiny)
    return num / den


def _check(z0: Tensor, tol: float, max_steps: int) -> None:
    if not isinstance(z0, Tensor) or z0.dim() < 1 or z0.shape[0] == 0:
        shape = tuple(z0.shape) if isinstance(z0, Tensor) else type(z0).__name__
        raise ValueError(f"z0 must be a tensor (B, ...) with B >= 1, got {shape}")
    if not z0.is_floating_point():
        raise TypeError(f"z0 must be floating point, got dtype {z0.dtype}")
    if not (tol >= 0.0):
        raise ValueError(f"tol must be >= 0, got {tol}")
    if int(max_steps) != max_steps or max_steps < 1:
        raise ValueError(f"max_steps must be a positive integer, got {max_steps}")


class _Tracker:
    """Per-sample bookkeeping shared by the solvers: best iterate, first convergence, trace.

    A sample is frozen at the first evaluation whose residual is below `tol`: its returned
    iterate and step count then no longer depend on how long the rest of the batch runs, so
    solving a sample alone or inside any batch gives the same answer.
    """

    def __init__(self, fz0: Tensor, res0: Tensor, tol: float) -> None:
        self.tol = tol
        self.best = fz0.clone()
        self.lowest = torch.nan_to_num(res0, nan=torch.inf)
        self.steps = torch.ones_like(res0, dtype=torch.long)
        self.done = self.lowest < tol
        self.trace = [res0]

    def update(self, fz: Tensor, res: Tensor, step: int) -> None:
        self.trace.append(res)
        res = torch.nan_to_num(res, nan=torch.inf)
        better = (res < self.lowest) & ~self.done
        self.best = torch.where(better[:, None], fz, self.best)
        self.lowest = torch.where(better, res, self.lowest)
        self.steps = torch.where(better, torch.full_like(self.steps, step), self.steps)
        self.done = self.done | (res < self.tol)

    def result(self, shape: torch.Size) -> tuple[Tensor, SolverStats]:
        stats = SolverStats(
            self.steps, torch.stack(self.trace, dim=1), self.lowest, self.lowest < self.tol
        )
        return self.best.reshape(shape), stats


def _flat(f: Callable[[Tensor], Tensor], shape: torch.Size) -> Callable[[Tensor], Tensor]:
    def g(z: Tensor) -> Tensor:  # (B, D) -> (B, D)
        return f(z.reshape(shape)).reshape(shape[0], -1)

    return g


def fixed_point(
    f: Callable[[Tensor], Tensor],
    z0: Tensor,
    *,
    tol: float = 1e-4,
    max_steps: int = 50,
    early_stop: bool = True,
) -> tuple[Tensor, SolverStats]:
    """Plain fixed-point (Picard) iteration z_{k+1} = f(z_k).

    Args:
        f: maps a batch (B, ...) to a batch of the same shape; samples must not interact.
        z0: (B, ...) starting point.
        tol: stop a sample once ‖f(z) − z‖ / ‖f(z)‖ < tol.
        max_steps: budget of evaluations of f.
        early_stop: leave the loop once every sample has converged. False runs the whole
            budget (converged samples stay frozen, so the results are the same) without a
            data-dependent branch, which `torch.func.vmap` needs.

    Returns:
        z*: (B, ...) the image f(z) of the returned iterate, and its `SolverStats`.

    >>> z, st = fixed_point(lambda z: 0.5 * z + 1.0, torch.zeros(2, 3), tol=1e-8, max_steps=60)
    >>> torch.allclose(z, torch.full((2, 3), 2.0)), bool(st.converged.all())
    (True, True)
    """
    _check(z0, tol, max_steps)
    shape = z0.shape
    g = _flat(f, shape)
    z = z0.reshape(shape[0], -1)
    fz = g(z)
    tr = _Tracker(fz, relative_residual(z, fz), tol)
    for step in range(2, max_steps + 1):
        if early_stop and bool(tr.done.all()):
            break
        z = fz
        fz = g(z)
        tr.update(fz, relative_residual(z, fz), step)
    return tr.result(shape)


def _anderson_mix(
    X: Tensor, G: Tensor, GG: Tensor, n: int, newest: int, *, beta: float, lam: float
) -> Tensor:
    """The next Anderson iterate from the first n slots of the ring buffers X, G (B, m, D) and
    G Gᵀ (B, m, m); `newest` is the slot of the latest iterate (the fallback's plain step)."""
    if n == 1:
        return X[:, newest] + beta * G[:, newest]
    tiny = torch.finfo(X.dtype).tiny
    eye = torch.eye(n, dtype=X.dtype, device=X.device)
    H = GG[:, :n, :n]  # (B, n, n)
    scale = H.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(tiny)
    H = H + (lam * scale)[:, None, None] * eye
    w, info = torch.linalg.solve_ex(H, torch.ones_like(H[:, :, :1]))  # (B, n, 1)
    alpha = w[:, :, 0] / w[:, :, 0].sum(dim=1, keepdim=True)  # (B, n)
    ok = (info == 0) & torch.isfinite(alpha).all(dim=1)
    if not bool(ok.all()):
        alpha = torch.where(ok[:, None], alpha, eye[newest])
    a = alpha[:, None, :]  # (B, 1, n)
    # x = β α F + (1 − β) α X  =  α X + β α G
    return (a @ X[:, :n])[:, 0] + beta * (a @ G[:, :n])[:, 0]


def anderson(
    f: Callable[[Tensor], Tensor],
    z0: Tensor,
    *,
    tol: float = 1e-4,
    max_steps: int = 50,
    early_stop: bool = True,
    m: int = 5,
    beta: float = 1.0,
    lam: float = 1e-4,
) -> tuple[Tensor, SolverStats]:
    """Anderson acceleration (Walker & Ni 2011; as in Bai et al., arXiv:1909.01377).

    Keeps the last n = min(k, m) iterates X = [x_{k-n} .. x_{k-1}] and their images
    F = [f(x_{k-n}) .. f(x_{k-1})], with residuals G = F − X (each (B, n, D)), and solves

        α = argmin_α ‖α G‖² + λ‖α‖²   subject to   1ᵀα = 1,

    i.e. (G Gᵀ + λ I) w = 1, α = w / 1ᵀw, then mixes x_k = β α F + (1 − β) α X
    (= α X + β α G).
    λ = lam · mean(diag G Gᵀ): we scale the regulariser by the residuals' size, where the
    reference implementations use a fixed λ that swamps the system once residuals get small.
    A system that is singular or gives a non-finite α falls back, for that sample only, to a
    (damped) plain step x_k = x_{k-1} + β g(x_{k-1}).

    Args:
        f, z0, tol, max_steps, early_stop: as for `fixed_point`.
        m: memory, number of past iterates mixed (>= 1).
        beta: damping β in (0, 1].
        lam: relative Tikhonov regularisation λ (>= 0).
    """
    _check(z0, tol, max_steps)
    if int(m) != m or m < 1:
        raise ValueError(f"m must be a positive integer, got {m}")
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"beta must be in (0, 1], got {beta}")
    if not lam >= 0.0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    shape = z0.shape
    fn = _flat(f, shape)
    x = z0.reshape(shape[0], -1)
    B, D = x.shape
    # X and the residuals G = F − X live in preallocated ring buffers: fresh (B, m, D)
    # temporaries every step cost more than the mixing itself on CPU
    X = x.new_zeros(B, m, D)
    G = x.new_zeros(B, m, D)
    GG = x.new_zeros(B, m, m)  # G Gᵀ, one row and column refreshed per step
    tiny = torch.finfo(x.dtype).tiny
    fx = fn(x)
    X[:, 0] = x
    torch.sub(fx, x, out=G[:, 0])
    GG[:, 0, 0] = G[:, 0].square().sum(dim=1)
    tr = _Tracker(fx, G[:, 0].norm(dim=1) / fx.norm(dim=1).clamp_min(tiny), tol)
    for step in range(2, max_steps + 1):
        if early_stop and bool(tr.done.all()):
            break
        k = step - 1  # iterates stored so far
        n = min(k, m)
        newest = (k - 1) % m
        x = _anderson_mix(X, G, GG, n, newest, beta=beta, lam=lam)
        fx = fn(x)
        slot = k % m
        X[:, slot] = x
        torch.sub(fx, x, out=G[:, slot])
        row = (G[:, slot, None, :] @ G.transpose(1, 2))[:, 0]  # (B, m)
        GG[:, slot, :] = row
        GG[:, :, slot] = row
        tr.update(fx, G[:, slot].norm(dim=1) / fx.norm(dim=1).clamp_min(tiny), step)
    return tr.result(shape)


def broyden(
    f: Callable[[Tensor], Tensor],
    z0: Tensor,
    *,
    tol: float = 1e-4,
    max_steps: int = 50,
    early_stop: bool = True,
    memory: int | None = None,
) -> tuple[Tensor, SolverStats]:
    """Broyden's "good" method on g(z) = f(z) − z (Broyden 1965; Bai et al. arXiv:1909.01377).

    Keeps a low-rank inverse-Jacobian estimate H ≈ (∂g/∂z)⁻¹ = −I + Σᵢ uᵢ vᵢᵀ and steps
    z ← z − H g(z). With s = Δz and y = Δg, the rank-one update is

        H ← H + (s − H y)(sᵀ H) / (sᵀ H y).

    An update whose denominator sᵀHy vanishes is skipped for that sample.

    Args:
        f, z0, tol, max_steps, early_stop: as for `fixed_point`.
        memory: rank kept (oldest update dropped first); default `max_steps`, i.e. exact.
    """
    _check(z0, tol, max_steps)
    mem = max_steps if memory is None else memory
    if int(mem) != mem or mem < 1:
        raise ValueError(f"memory must be a positive integer, got {memory}")
    shape = z0.shape
    fn = _flat(f, shape)
    z = z0.reshape(shape[0], -1)
    B, D = z.shape
    U = z.new_zeros(B, mem, D)
    V = z.new_zeros(B, mem, D)
    fz = fn(z)
    gz = fz - z
    tr = _Tracker(fz, relative_residual(z, fz), tol)
    eps = torch.finfo(z.dtype).eps

    def h_mv(y: Tensor, n: int) -> Tensor:  # H y: (B, D)
        if n == 0:
            return -y
        Vy = y[:, None, :] @ V[:, :n].transpose(1, 2)  # (B, 1, n)
        return -y + (Vy @ U[:, :n])[:, 0]

    def h_vm(s: Tensor, n: int) -> Tensor:  # sᵀ H: (B, D)
        if n == 0:
            return -s
        sU = s[:, None, :] @ U[:, :n].transpose(1, 2)  # (B, 1, n)
        return -s + (sU @ V[:, :n])[:, 0]

    for step in range(2, max_steps + 1):
        n = min(step - 2, mem)  # rank-one updates stored
        if early_stop and bool(tr.done.all()):
            break
        s = -h_mv(gz, n)
        z = z + s
        fz = fn(z)
        g_new = fz - z
        tr.update(fz, relative_residual(z, fz), step)
        y = g_new - gz
        gz = g_new
        hy = h_mv(y, n)
        sh = h_vm(s, n)
        den = (s * hy).sum(dim=1)  # (B,)
        good = den.abs() > eps * s.norm(dim=1) * hy.norm(dim=1)
        u = torch.where(good[:, None], (s - hy) / torch.where(good, den, 1.0)[:, None], 0.0)
        slot = (step - 2) % mem
        U[:, slot], V[:, slot] = u, sh
    return tr.result(shape)


SOLVERS: Registry[Solver] = Registry("solver")
SOLVERS.register("fixed_point", fixed_point)
SOLVERS.register("anderson", anderson)
SOLVERS.register("broyden", broyden)


def get_solver(name: str) -> Solver:
    """The solver registered under `name` (a `ValueError` listing the choices otherwise)."""
    return SOLVERS.get(name)


def register_solver(name: str, solver: Solver, *, overwrite: bool = False) -> None:
    """Add a solver `solver(f, z0, *, tol, max_steps, early_stop, **opts) -> (z*, stats)`.

    Once registered it can be chosen by name, e.g. `--set solver=NAME` in `deq-mnist`.
    """
    if not callable(solver):
        raise TypeError(f"solver must be callable, got {type(solver).__name__}")
    SOLVERS.register(name, solver, overwrite=overwrite)
