"""The DEQ module around any f(z, x), and the minimal contractive DEQ layer."""

from __future__ import annotations

import inspect
import logging
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from badgerlab.deq.implicit import implicit_solve, phantom_grad, unrolled_solve
from badgerlab.deq.solvers import SOLVERS, SolverStats, get_solver

__all__ = ["DEQ", "ContractiveLayer", "DEQConfig"]

logger = logging.getLogger(__name__)


def _check_options(solver: str, options: dict[str, Any], field: str) -> None:
    if solver not in SOLVERS:
        raise ValueError(
            f"unknown solver {solver!r} ({field}); choose one of: {', '.join(SOLVERS)}"
        )
    params = inspect.signature(get_solver(solver)).parameters
    known = {n for n, p in params.items() if p.kind == p.KEYWORD_ONLY}
    known -= {"tol", "max_steps", "early_stop"}
    unknown = set(options) - known
    if unknown:
        raise ValueError(
            f"{field}: unknown option(s) {sorted(unknown)} for solver {solver!r}; "
            f"known: {sorted(known)}"
        )


class DEQConfig(BaseModel):
    """How a `DEQ` solves and differentiates; unknown keys and solver options are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    solver: str = Field("anderson", description="forward solver, a key of solvers.SOLVERS")
    tol: float = Field(1e-4, ge=0.0, le=1.0, description="relative-residual tolerance")
    max_steps: int = Field(40, ge=1, le=10_000, description="forward f-evaluation budget")
    solver_options: dict[str, float] = Field(
        default_factory=dict, description="keyword options of the forward solver (m, beta, lam)"
    )
    grad: Literal["implicit", "phantom", "unrolled"] = Field(
        "implicit",
        description="implicit (IFT), k-step phantom, or 'unrolled': exactly max_steps plain "
        "iterations, backpropagated through (the weight-tied baseline)",
    )
    backward_solver: str | None = Field(None, description="backward solver; default: forward's")
    backward_tol: float | None = Field(None, ge=0.0, le=1.0, description="default: tol")
    backward_max_steps: int | None = Field(None, ge=1, le=10_000, description="default: max_steps")
    backward_options: dict[str, float] | None = Field(
        None, description="options of the backward solver; default: the forward's if same"
    )
    phantom_steps: int = Field(1, ge=1, le=100, description="k of the phantom gradient")
    phantom_tau: float = Field(
        1.0, gt=0.0, le=1.0, description="damping τ of the phantom gradient"
    )

    @model_validator(mode="after")
    def _known_options(self) -> DEQConfig:
        _check_options(self.solver, self.solver_options, "solver_options")
        if self.backward_solver is not None or self.backward_options is not None:
            _check_options(
                self.backward_solver or self.solver,
                self.backward_options or {},
                "backward_options",
            )
        return self


class DEQ(nn.Module):
    """A deep equilibrium layer: returns z* = f(z*, x) (Bai et al., arXiv:1909.01377).

    `f` is a module `f(z, x) -> z` that treats samples independently. Optional methods of `f`:
    `inject(x)` does the input-only work once per solve (its result is what `f` receives as
    x); `init_z(x)` gives the starting point when `forward` gets no `z0`; `refresh()` is
    called once before each training-mode solve, so state such as a spectral-norm power
    iteration moves between solves and never within one.

    After each call, `stats` holds the forward `SolverStats` and, after backward,
    `backward_stats` those of the implicit backward solve. Samples that did not converge are
    flagged in the stats and logged at INFO level on this module's logger.
    """

    def __init__(self, f: nn.Module, config: DEQConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        if not callable(f):
            raise TypeError(f"f must be a callable module f(z, x), got {type(f).__name__}")
        if config is not None and not isinstance(config, DEQConfig):
            raise TypeError(f"config must be a DEQConfig, got {type(config).__name__}")
        base = config.model_dump() if config is not None else {}
        self.config = DEQConfig(**{**base, **overrides})
        self.f = f
        self.stats: SolverStats | None = None
        self.backward_stats: SolverStats | None = None

    def _store_backward(self, stats: SolverStats) -> None:
        self.backward_stats = stats
        if not bool(stats.converged.all()):
            logger.info(
                "DEQ backward solve: %d/%d samples not converged (max lowest residual %.3g)",
                int((~stats.converged).sum()),
                len(stats.converged),
                float(stats.lowest.max()),
            )

    def forward(self, x: Tensor, z0: Tensor | None = None) -> Tensor:
        cfg = self.config
        if self.training and hasattr(self.f, "refresh"):
            self.f.refresh()
        u = self.f.inject(x) if hasattr(self.f, "inject") else x
        if z0 is None:
            if not hasattr(self.f, "init_z"):
                raise ValueError("z0 is required when f has no init_z(x) method")
            z0 = self.f.init_z(x)

        def fn(z: Tensor) -> Tensor:
            return self.f(z, u)

        if cfg.grad == "unrolled":  # a fixed-depth weight-tied network, in training and eval
            z, stats = unrolled_solve(fn, z0, depth=cfg.max_steps)
        elif cfg.grad == "implicit":
            z, stats = implicit_solve(
                fn,
                z0,
                solver=cfg.solver,
                tol=cfg.tol,
                max_steps=cfg.max_steps,
                solver_options=cfg.solver_options,
                backward_solver=cfg.backward_solver,
                backward_tol=cfg.backward_tol,
                backward_max_steps=cfg.backward_max_steps,
                backward_options=cfg.backward_options,
                on_backward=self._store_backward,
            )
        else:
            solve = get_solver(cfg.solver)
            with torch.no_grad():
                z_star, stats = solve(
                    fn, z0.detach(), tol=cfg.tol, max_steps=cfg.max_steps, **cfg.solver_options
                )
            z = z_star
            if torch.is_grad_enabled():
                z = phantom_grad(fn, z_star, steps=cfg.phantom_steps, tau=cfg.phantom_tau)
        self.stats = stats
        if not bool(stats.converged.all()):
            logger.info(
                "DEQ solve: %d/%d samples not converged (max lowest residual %.3g)",
                int((~stats.converged).sum()),
                len(stats.converged),
                float(stats.lowest.max()),
            )
        return z


class ContractiveLayer(nn.Module):
    """The source post's minimal DEQ, contractive by construction:

        f(z, x) = σ(γ · W / σ_max(W) · z + U x + b),

    with σ = tanh (1-Lipschitz) and γ < 1, so ‖∂f/∂z‖₂ ≤ γ and f is a γ-contraction in z.
    σ_max(W) is estimated by power iteration with persistent vectors (Miyato et al.,
    arXiv:1802.05957); `refresh` advances it between solves. The estimate approaches σ_max
    from below, so the bound is γ·σ_max/σ̂ with σ̂ → σ_max; `exact_lipschitz` checks it.

    Args:
        in_features: size of x.
        width: size of z.
        gamma: contraction factor γ in (0, 1).
        power_iters: power iterations per `refresh`.
    """

    def __init__(
        self, in_features: int, width: int, *, gamma: float = 0.9, power_iters: int = 2
    ) -> None:
        super().__init__()
        if not 0.0 < gamma < 1.0:
            raise ValueError(f"gamma must be in (0, 1), got {gamma}")
        if in_features < 1 or width < 1:
            raise ValueError(f"in_features and width must be >= 1, got {in_features}, {width}")
        self.gamma = gamma
        self.power_iters = power_iters
        self.width = width
        self.weight = nn.Parameter(torch.empty(width, width))
        nn.init.orthogonal_(self.weight)
        self.inject_ = nn.Linear(in_features, width)
        u = torch.randn(width)
        self.register_buffer("_u", u / u.norm())
        self.register_buffer("_v", torch.zeros(width))
        self.refresh(iters=50)

    @torch.no_grad()
    def refresh(self, iters: int | None = None) -> None:
        """Advance the power iteration for σ_max(W) by `iters` (default `power_iters`) steps."""
        W = self.weight
        u = self._u
        for _ in range(self.power_iters if iters is None else iters):
            v = W.t() @ u
            v = v / v.norm().clamp_min(1e-12)
            u = W @ v
            u = u / u.norm().clamp_min(1e-12)
        self._u.copy_(u)
        self._v.copy_(v)

    def sigma(self) -> Tensor:
        """σ̂ = uᵀ W v, differentiable in W."""
        return self._u @ self.weight @ self._v

    def normalized_weight(self) -> Tensor:
        return self.gamma * self.weight / self.sigma()

    def exact_lipschitz(self) -> float:
        """‖γ W / σ̂‖₂ computed exactly (for checks; an SVD)."""
        return float(torch.linalg.matrix_norm(self.normalized_weight().detach(), ord=2))

    def inject(self, x: Tensor) -> Tensor:
        """U x + b: (B, in_features) -> (B, width)."""
        return self.inject_(x)

    def init_z(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[0], self.width)

    def forward(self, z: Tensor, u: Tensor) -> Tensor:
        """f(z, u) with u = `inject(x)`: (B, width), (B, width) -> (B, width)."""
        return torch.tanh(z @ self.normalized_weight().t() + u)
