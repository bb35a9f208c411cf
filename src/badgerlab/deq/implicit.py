"""Gradients of fixed points: implicit (IFT), phantom, unrolled; Jacobian regularisers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch
from torch import Tensor

from badgerlab.deq.solvers import SolverStats, get_solver, relative_residual

T = TypeVar("T")

__all__ = [
    "implicit_solve",
    "jacobian_frobenius",
    "phantom_grad",
    "saved_bytes",
    "spectral_radius",
    "unrolled_solve",
]


def implicit_solve(
    f: Callable[[Tensor], Tensor],
    z0: Tensor,
    *,
    solver: str = "anderson",
    tol: float = 1e-4,
    max_steps: int = 50,
    solver_options: Mapping[str, Any] | None = None,
    backward_solver: str | None = None,
    backward_tol: float | None = None,
    backward_max_steps: int | None = None,
    backward_options: Mapping[str, Any] | None = None,
    on_backward: Callable[[SolverStats], None] | None = None,
) -> tuple[Tensor, SolverStats]:
    """Solve z* = f(z*) without a graph and differentiate it with the implicit function theorem.

    Bai, Kolter & Koltun, "Deep Equilibrium Models", arXiv:1909.01377, eq. (5)–(6). With
    J = ∂f/∂z at z*, the gradient of a loss L is ∂L/∂θ = u ∂f(z*)/∂θ, where u solves

        u = u J + ∂L/∂z*,

    found with a solver over vector–Jacobian products u ↦ uJ + ∂L/∂z*. The forward solve runs
    under `torch.no_grad`; autograd records one f-evaluation for the output and one for the
    VJPs, so the memory saved for backward does not depend on the number of solver steps.

    Args:
        f: (B, ...) -> (B, ...), closing over the input x and parameters θ; samples must be
            independent (no batch statistics).
        z0: (B, ...) starting point (detached).
        solver, tol, max_steps, solver_options: the forward solver (see `solvers.SOLVERS`).
        backward_*: the same for the backward solve; default to the forward's.
        on_backward: called with the backward solve's `SolverStats` (to log them).

    Returns:
        z: (B, ...) f(z*), differentiable to f's inputs with the implicit gradient.
        stats: the forward solve's `SolverStats`.
    """
    solve = get_solver(solver)
    with torch.no_grad():
        z_star, stats = solve(
            f, z0.detach(), tol=tol, max_steps=max_steps, **dict(solver_options or {})
        )
    if not torch.is_grad_enabled():
        return z_star, stats
    z = f(z_star)
    if not z.requires_grad:
        return z, stats
    z_in = z_star.detach().requires_grad_()
    with torch.enable_grad():
        f_in = f(z_in)
    b_solve = get_solver(backward_solver or solver)
    if backward_options is not None:
        b_opts = dict(backward_options)
    elif backward_solver in (None, solver):
        b_opts = dict(solver_options or {})
    else:
        b_opts = {}
    b_tol = tol if backward_tol is None else backward_tol
    b_steps = max_steps if backward_max_steps is None else backward_max_steps

    def hook(grad: Tensor | None) -> Tensor | None:
        if grad is None:  # an undefined gradient stays undefined
            return None

        def vjp(u: Tensor) -> Tensor:
            (uj,) = torch.autograd.grad(f_in, z_in, u, retain_graph=True)
            return uj + grad

        with torch.no_grad():
            u, b_stats = b_solve(vjp, grad, tol=b_tol, max_steps=b_steps, **b_opts)
        if on_backward is not None:
            on_backward(b_stats)
        return u

    z.register_hook(hook)
    return z, stats


def phantom_grad(
    f: Callable[[Tensor], Tensor], z_star: Tensor, *, steps: int = 1, tau: float = 1.0
) -> Tensor:
    """k-step phantom gradient from a fixed point (Geng et al., arXiv:2111.05177).

    z ← (1 − τ) z + τ f(z), k times, starting from z* detached; autograd sees only these k
    steps. k = 1, τ = 1 is Jacobian-free backpropagation (Fung et al., arXiv:2103.12803): the
    implicit gradient with (I − J)⁻¹ replaced by I.
    """
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"tau must be in (0, 1], got {tau}")
    z = z_star.detach()
    for _ in range(steps):
        z = f(z) if tau == 1.0 else (1.0 - tau) * z + tau * f(z)
    return z


def unrolled_solve(
    f: Callable[[Tensor], Tensor], z0: Tensor, *, depth: int
) -> tuple[Tensor, SolverStats]:
    """`depth` plain iterations z ← f(z), all recorded by autograd (the weight-tied baseline).

    Stats report the relative residual of each step; `converged` uses tol = 1e-4.
    """
    if int(depth) != depth or depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth}")
    z = z0
    trace = []
    for _ in range(depth):
        fz = f(z)
        with torch.no_grad():
            trace.append(relative_residual(z.reshape(len(z), -1), fz.reshape(len(z), -1)))
        z = fz
    tr = torch.stack(trace, dim=1)
    lowest, arg = tr.min(dim=1)
    return z, SolverStats(arg + 1, tr, lowest, lowest < 1e-4)


def jacobian_frobenius(
    fz: Tensor,
    z: Tensor,
    *,
    samples: int = 1,
    create_graph: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Hutchinson estimate of ‖∂f/∂z‖²_F per sample (Bai, Koltun & Kolter, arXiv:2106.14342).

    ‖J‖²_F = E_ε ‖εᵀ J‖² for ε ~ N(0, I); each sample of ε costs one VJP. The paper's
    regulariser is this estimate divided by the dimension of z.

    Args:
        fz: (B, ...) f(z), with a graph to `z`.
        z: (B, ...) the point it was evaluated at (requires grad).
        samples: number of probe vectors averaged.
        create_graph: keep the graph so the estimate can be minimised.
        generator: draws the probes ε (the global generator when None).

    Returns:
        (B,) estimate.
    """
    if int(samples) != samples or samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples}")
    total = fz.new_zeros(fz.shape[0])
    for i in range(samples):
        eps = _probe(fz, generator)
        (vj,) = torch.autograd.grad(
            fz, z, eps, create_graph=create_graph, retain_graph=create_graph or i < samples - 1
        )
        total = total + vj.reshape(len(vj), -1).pow(2).sum(dim=1)
    return total / samples


def _probe(like: Tensor, generator: torch.Generator | None) -> Tensor:
    if generator is None:
        return torch.randn_like(like)
    out = torch.randn(like.shape, generator=generator, dtype=like.dtype)
    return out.to(like.device)


def spectral_radius(
    fz: Tensor, z: Tensor, *, iters: int = 30, generator: torch.Generator | None = None
) -> Tensor:
    """Power-method estimate of the spectral radius ρ(∂f/∂z) per sample.

    v ← vᵀJ / ‖vᵀJ‖ converges to the dominant left eigenvector when one eigenvalue has the
    largest modulus; ‖vᵀJ‖ for a unit v then estimates ρ. A DEQ is locally contractive where
    ρ < 1 (Bai, Koltun & Kolter, arXiv:2106.14342, section 3).

    Args:
        fz: (B, ...) f(z), with a graph to `z`.
        z: (B, ...) the point (requires grad).
        iters: power iterations (VJPs).
        generator: draws the starting vector (the global generator when None).

    Returns:
        (B,) estimate of ρ.
    """
    if int(iters) != iters or iters < 1:
        raise ValueError(f"iters must be a positive integer, got {iters}")
    v = _probe(fz, generator)
    v = v / v.reshape(len(v), -1).norm(dim=1).reshape(-1, *[1] * (v.dim() - 1))
    rho = fz.new_zeros(fz.shape[0])
    for _ in range(iters):
        (vj,) = torch.autograd.grad(fz, z, v, retain_graph=True)
        rho = vj.reshape(len(vj), -1).norm(dim=1)
        v = vj / rho.clamp_min(torch.finfo(rho.dtype).tiny).reshape(-1, *[1] * (vj.dim() - 1))
    return rho.detach()


def saved_bytes(fn: Callable[[], T]) -> tuple[T, int]:
    """Run `fn()` and count the bytes autograd saves for backward while it runs.

    Uses `torch.autograd.graph.saved_tensors_hooks`; tensors sharing one storage (a weight
    saved by every unrolled step) are counted once, by the storage's size, since that is the
    memory actually held until backward.
    """
    seen: dict[tuple[int, str], int] = {}

    def pack(t: Tensor) -> Tensor:
        st = t.untyped_storage()
        seen[(st.data_ptr(), str(t.device))] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())
