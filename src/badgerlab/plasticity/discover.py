"""Meta-learning a polynomial plasticity rule so that a linear neuron finds the first PC.

Inner loop: from random w₀, T steps of Δw = η Σ θ_αβγ x^α y^β w^γ on x ~ N(0, C) for a random
covariance C with a clear top eigenvector u₁. Meta-loss (Confavreux et al. 2020, capped as
our trial needed):

    L(θ) = E_C min(1 − cos²(w_T, u₁) + (|w_T| − 1)², cap).

Outer loop: an ES from ``badgerlab.evolve`` (centred ranks), then an L1 phase in which each
tell is followed by the proximal step of λ|θ|₁, the soft threshold
θ ← sign(θ) max(|θ| − α λ, 0), which sets small coefficients exactly to 0.

The same code rediscovers Sanger's rule for a layer of M outputs (``n_outputs=M``): the 29-term
rule of ``polynomial.layer_update``, tasks whose covariance has M separated top eigenvalues
(``sample_layer_tasks``) and the meta-loss averaged over the rows, row i scored against u_i:

    L(θ) = E_C min((1/M) Σ_i [1 − cos²(w_i,T, u_i) + (|w_i,T| − 1)²], cap).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from badgerlab.evolve import get_es

from .polynomial import run_layer_rule, run_rule

__all__ = [
    "LayerTasks",
    "Tasks",
    "cos2_pc1",
    "es_generation",
    "layer_meta_loss",
    "meta_loss",
    "sample_layer_tasks",
    "sample_tasks",
    "soft_threshold",
]


class Tasks(NamedTuple):
    """A batch of inner-loop tasks: inputs, their top eigenvector and initial weights."""

    xs: Tensor  # (T, B, N) inputs x_t ~ N(0, C_b)
    pc1: Tensor  # (B, N) unit top eigenvector u₁ of C_b
    w0: Tensor  # (B, N) initial weights


def sample_tasks(
    batch: int, *, n_inputs: int, steps: int, generator: torch.Generator, gap: float = 0.5
) -> Tasks:
    """B random covariances C = Q diag(λ) Qᵀ, λ₁ = 1, λ_{2..N} ~ U(0.05, 1 − gap).

    Q is a random orthogonal matrix (QR of a Gaussian), so u₁ = Q[:, 0]; w₀ ~ N(0, I/N).
    """
    if batch < 1 or n_inputs < 2 or steps < 1:
        raise ValueError(f"need batch >= 1, n_inputs >= 2, steps >= 1, got {batch, n_inputs}")
    if not 0.0 < gap < 0.95:
        raise ValueError(f"gap must be in (0, 0.95), got {gap}")
    g = generator
    Q, _ = torch.linalg.qr(torch.randn(batch, n_inputs, n_inputs, generator=g))  # (B, N, N)
    lam = 0.05 + (0.95 - gap) * torch.rand(batch, n_inputs, generator=g)
    lam[:, 0] = 1.0
    L = Q * lam.sqrt()[:, None, :]  # (B, N, N): x = L z
    z = torch.randn(steps, batch, n_inputs, generator=g)  # (T, B, N)
    xs = torch.einsum("bij,tbj->tbi", L, z)  # (T, B, N)
    w0 = torch.randn(batch, n_inputs, generator=g) / n_inputs**0.5
    return Tasks(xs, Q[:, :, 0], w0)


class LayerTasks(NamedTuple):
    """Inner-loop tasks of a layer of M outputs."""

    xs: Tensor  # (T, B, N) inputs x_t ~ N(0, C_b)
    pcs: Tensor  # (B, M, N) unit eigenvectors u_1..u_M of C_b, by decreasing eigenvalue
    w0: Tensor  # (B, M, N) initial weights


def sample_layer_tasks(
    batch: int,
    *,
    n_inputs: int,
    n_outputs: int,
    steps: int,
    generator: torch.Generator,
    gap: float = 0.4,
) -> LayerTasks:
    """B random covariances with eigenvalues λ_m = 1 − (m − 1)·gap for m ≤ M (the components
    to find) and λ_{M+1..N} ~ U(0.05, 1 − M·gap), in a random orthonormal basis Q;
    W₀ ~ N(0, I/N) per row. For M = 2, gap 0.4: λ = 1, 0.6 and the rest in (0.05, 0.2).
    """
    if batch < 1 or steps < 1 or not 1 <= n_outputs < n_inputs:
        raise ValueError(
            f"need batch >= 1, steps >= 1, 1 <= n_outputs < n_inputs, got {batch}, {steps}, "
            f"{n_outputs}, {n_inputs}"
        )
    if not (0.0 < gap and 1 - n_outputs * gap > 0.05):
        raise ValueError(f"gap must be in (0, 0.95/n_outputs), got {gap}")
    g, M = generator, n_outputs
    Q, _ = torch.linalg.qr(torch.randn(batch, n_inputs, n_inputs, generator=g))  # (B, N, N)
    lam = 0.05 + (0.95 - M * gap) * torch.rand(batch, n_inputs, generator=g)
    lam[:, :M] = 1.0 - gap * torch.arange(M, dtype=lam.dtype)
    L = Q * lam.sqrt()[:, None, :]  # (B, N, N): x = L z
    z = torch.randn(steps, batch, n_inputs, generator=g)
    xs = torch.einsum("bij,tbj->tbi", L, z)  # (T, B, N)
    w0 = torch.randn(batch, M, n_inputs, generator=g) / n_inputs**0.5
    return LayerTasks(xs, Q[:, :, :M].transpose(1, 2), w0)


def cos2_pc1(w: Tensor, pc1: Tensor) -> Tensor:
    """cos²(w, u₁) over the last axis."""
    return (w * pc1).sum(-1) ** 2 / (w.pow(2).sum(-1) * pc1.pow(2).sum(-1)).clamp_min(1e-12)


def meta_loss(theta: Tensor, tasks: Tasks, *, eta: float, cap: float = 2.0) -> Tensor:
    """L(θ) for θ (27,) → () or (P, 27) → (P,); differentiable through the unrolled loop."""
    batched = theta.ndim == 2
    w0 = tasks.w0.expand(theta.shape[0], *tasks.w0.shape) if batched else tasks.w0
    wT = run_rule(theta, w0, tasks.xs, eta=eta)  # (P?, B, N)
    loss = 1 - cos2_pc1(wT, tasks.pc1) + (wT.norm(dim=-1) - 1) ** 2
    return torch.nan_to_num(loss, nan=cap).clamp(max=cap).mean(-1)


def layer_meta_loss(theta: Tensor, tasks: LayerTasks, *, eta: float, cap: float = 2.0) -> Tensor:
    """The layer meta-loss for θ (29,) → () or (P, 29) → (P,); differentiable."""
    batched = theta.ndim == 2
    w0 = tasks.w0.expand(theta.shape[0], *tasks.w0.shape) if batched else tasks.w0
    WT = run_layer_rule(theta, w0, tasks.xs, eta=eta)  # (P?, B, M, N)
    per_row = 1 - cos2_pc1(WT, tasks.pcs) + (WT.norm(dim=-1) - 1) ** 2  # (P?, B, M)
    return torch.nan_to_num(per_row.mean(-1), nan=cap).clamp(max=cap).mean(-1)


def soft_threshold(theta: Tensor, t: float) -> Tensor:
    """prox of t|θ|₁: sign(θ) max(|θ| − t, 0)."""
    return theta.sign() * (theta.abs() - t).clamp_min(0.0)


def es_generation(
    es_name: str,
    state,
    generator: torch.Generator,
    *,
    batch: int,
    n_inputs: int,
    steps: int,
    eta: float,
    cap: float = 2.0,
    l1: float = 0.0,
    mask: Tensor | None = None,
    n_outputs: int = 1,
    gap: float | None = None,
):
    """One ES generation on fresh tasks (shared by the population): ask, L, tell, L1 prox.

    ``n_outputs = 1``: the 27-term rule of one neuron (Oja's target); ``n_outputs = M >= 2``:
    the 29-term layer rule scored on M components (Sanger's target). ``gap``: the eigenvalue
    gap of the sampled covariances (None: the sampler's default).

    Returns ``(state, mean population loss)``. With ``l1 > 0`` the centre is soft-thresholded
    by α·l1 (α the ES learning rate) after the tell. ``mask`` (27,) of 0/1 keeps the rule on a
    support: members and centre are multiplied by it (the relaxed-lasso refit after the L1
    phase, which undoes the shrinkage of the kept terms).
    """
    es = get_es(es_name)
    kw = {} if gap is None else {"gap": gap}
    if n_outputs == 1:
        tasks = sample_tasks(batch, n_inputs=n_inputs, steps=steps, generator=generator, **kw)
        loss_fn = meta_loss
    else:
        tasks = sample_layer_tasks(batch, n_inputs=n_inputs, n_outputs=n_outputs, steps=steps,
                                   generator=generator, **kw)  # fmt: skip
        loss_fn = layer_meta_loss
    x = es.ask(state, generator=generator)  # (P, 27) or (P, 29)
    if mask is not None:
        x = x * mask
    losses = loss_fn(x, tasks, eta=eta, cap=cap)  # (P,)
    state = es.tell(state, x, losses)
    if l1 > 0:
        center = soft_threshold(es.center(state), float(state.lr) * l1)
        state = state._replace(center=center)
    if mask is not None:
        state = state._replace(center=es.center(state) * mask)
    return state, float(losses.mean())
