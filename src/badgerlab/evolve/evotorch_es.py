"""CMA-ES, PGPE and SNES from EvoTorch behind the functional ask/tell contract."""

from __future__ import annotations

import copy
import functools
import logging
import math
import warnings
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .core import EvolutionStrategy, check_center, check_popsize, check_tell, register_es

__all__ = [
    "CMAESState",
    "PGPEState",
    "SNESState",
    "cmaes_ask",
    "cmaes_init",
    "cmaes_tell",
    "pgpe_ask",
    "pgpe_init",
    "pgpe_tell",
    "snes_ask",
    "snes_init",
    "snes_tell",
]

# EvoTorch imports Ray on import (seconds), so every import of it below is deferred.


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


def _check_positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def _rank_order(fitness: Tensor, maximize: bool) -> Tensor:
    """0 for the best member, P−1 for the worst; ties keep population order (stable sort)."""
    order = torch.argsort(fitness, descending=maximize, stable=True)
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(order.numel(), device=order.device)
    return ranks


# ----------------------------------------------------------------------------------------- CMA-ES


class CMAESState(NamedTuple):
    """State of CMA-ES (the fields EvoTorch's ``CMAES`` updates each generation)."""

    m: Tensor  # mean, (D,)
    sigma: Tensor  # step size, ()
    C: Tensor  # covariance shape, (D, D); (D,) when separable
    A: Tensor  # factor with C = A Aᵀ (Cholesky), same shape as C
    p_sigma: Tensor  # evolution path of σ, (D,)
    p_c: Tensor  # evolution path of C, (D,)
    step: Tensor  # generations told so far, () int64
    popsize: int
    maximize: bool
    separable: bool
    active: bool
    csa_squared: bool
    limit_C_decomposition: bool
    stdev_min: float | None
    stdev_max: float | None


@functools.lru_cache(maxsize=16)
def _cmaes_template(
    dim: int,
    popsize: int,
    maximize: bool,
    separable: bool,
    active: bool,
    csa_squared: bool,
    limit_C_decomposition: bool,
    stdev_min: float | None,
    stdev_max: float | None,
    dtype: torch.dtype,
    device: str,
) -> Any:
    """An EvoTorch ``CMAES`` whose constants (weights, learning rates) serve every generation.

    Its mutable attributes are overwritten from our state before each use, so the object is
    only a bundle of constants and update methods; the state itself lives in ``CMAESState``.
    """
    from evotorch import Problem
    from evotorch.algorithms import CMAES

    def never_called(x: Tensor) -> Tensor:
        raise RuntimeError("the ask/tell CMA-ES never evaluates through its Problem")

    # Problem logs its dtype/device at INFO through its own handler, and CMAES copy-constructs
    # tensors with torch.tensor(t), which warns; library code stays quiet.
    logger = logging.getLogger("evotorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            problem = Problem(
                "max" if maximize else "min",
                never_called,
                solution_length=dim,
                initial_bounds=(-1.0, 1.0),
                dtype=dtype,
                device=device,
                vectorized=True,
            )
            return CMAES(
                problem,
                stdev_init=1.0,
                popsize=popsize,
                center_init=torch.zeros(dim, dtype=dtype),
                separable=separable,
                active=active,
                csa_squared=csa_squared,
                limit_C_decomposition=limit_C_decomposition,
                stdev_min=stdev_min,
                stdev_max=stdev_max,
            )
    finally:
        logger.setLevel(level)


def _template_of(state: CMAESState) -> Any:
    return _cmaes_template(
        state.m.shape[0],
        state.popsize,
        state.maximize,
        state.separable,
        state.active,
        state.csa_squared,
        state.limit_C_decomposition,
        state.stdev_min,
        state.stdev_max,
        state.m.dtype,
        str(state.m.device),
    )


def cmaes_init(
    center: Tensor,
    *,
    popsize: int,
    maximize: bool = False,
    sigma: float = 1.0,
    separable: bool = False,
    active: bool = True,
    csa_squared: bool = False,
    limit_C_decomposition: bool = True,
    stdev_min: float | None = None,
    stdev_max: float | None = None,
) -> CMAESState:
    """Initial CMA-ES state: mean ``center (D,)``, step size ``sigma``, C = I.

    The update rules and all constants are EvoTorch's ``CMAES`` (active CMA-ES with Cholesky
    sampling, Hansen's default learning rates); see its documentation for the options.
    Hansen, "The CMA Evolution Strategy: A Tutorial", https://arxiv.org/abs/1604.00772.
    The state is tensors only, so ``state_dict``/``load_state`` resume exactly.
    """
    center = check_center(center)
    popsize = check_popsize(popsize, minimum=4)
    for name, value in (
        ("maximize", maximize),
        ("separable", separable),
        ("active", active),
        ("csa_squared", csa_squared),
        ("limit_C_decomposition", limit_C_decomposition),
    ):
        _check_bool(name, value)
    sigma = _check_positive("sigma", sigma)
    stdev_min = None if stdev_min is None else float(stdev_min)
    stdev_max = None if stdev_max is None else float(stdev_max)
    D = center.shape[0]
    C = torch.ones_like(center) if separable else torch.eye(D, dtype=center.dtype).to(center)
    return CMAESState(
        m=center,
        sigma=torch.tensor(sigma, dtype=center.dtype, device=center.device),
        C=C,
        A=C.clone(),
        p_sigma=torch.zeros_like(center),
        p_c=torch.zeros_like(center),
        step=torch.zeros((), dtype=torch.int64, device=center.device),
        popsize=popsize,
        maximize=maximize,
        separable=separable,
        active=active,
        csa_squared=csa_squared,
        limit_C_decomposition=limit_C_decomposition,
        stdev_min=stdev_min,
        stdev_max=stdev_max,
    )


def cmaes_ask(state: CMAESState, *, generator: torch.Generator) -> Tensor:
    """Population ``x = m + σ A z`` with ``z ~ N(0, I)``, shape ``(P, D)``."""
    m = state.m
    z = torch.randn(state.popsize, m.shape[0], generator=generator, dtype=m.dtype, device=m.device)
    y = z * state.A if state.separable else z @ state.A.T  # (P, D)
    return m + state.sigma * y


def cmaes_tell(state: CMAESState, x: Tensor, fitness: Tensor) -> CMAESState:
    """One CMA-ES generation: EvoTorch's update of m, p_σ, σ, p_c, C (and A) from ranked ``x``.

    ``z`` is recovered from ``x`` by a triangular solve, ``z = A⁻¹ (x − m)/σ``, because ``ask``
    returns only ``x``.
    """
    from evotorch.algorithms.cmaes import _h_sig, _limit_stdev

    x, fitness = check_tell(x, fitness, popsize=state.popsize, dim=state.m.shape[0])
    es = copy.copy(_template_of(state))
    es.m, es.sigma, es.C, es.A = state.m, state.sigma, state.C, state.A
    es.p_sigma, es.p_c = state.p_sigma, state.p_c
    y = (x - state.m) / state.sigma  # (P, D)
    if state.separable:
        z = y / state.A
    else:
        z = torch.linalg.solve_triangular(state.A, y.T, upper=False).T  # (P, D)
    weights = es.weights[_rank_order(fitness, state.maximize)]  # (P,)
    step = int(state.step)
    local_disp, shaped_disp = es.update_m(z, y, weights)
    es.update_p_sigma(local_disp)
    es.update_sigma()
    h_sig = _h_sig(es.p_sigma, es.c_sigma, step)
    es.update_p_c(shaped_disp, h_sig)
    es.update_C(z, y, weights, h_sig)
    if state.stdev_min is not None or state.stdev_max is not None:
        es.C = _limit_stdev(es.sigma, es.C, state.stdev_min, state.stdev_max)
    if (step + 1) % es.decompose_C_freq == 0:
        es.decompose_C()
    # Row-major copies: torch.linalg.cholesky returns a column-major A, and a restored
    # checkpoint is row-major; matmul rounds differently on the two layouts, which would
    # break bit-exact resume.
    return state._replace(
        m=es.m.contiguous(),
        sigma=es.sigma.contiguous(),
        C=es.C.contiguous(),
        A=es.A.contiguous(),
        p_sigma=es.p_sigma.contiguous(),
        p_c=es.p_c.contiguous(),
        step=state.step + 1,
    )


# ------------------------------------------------------------------------------------------- PGPE


class PGPEState(NamedTuple):
    """State of PGPE: EvoTorch's functional ``PGPEState`` plus the population size."""

    inner: Any  # evotorch.algorithms.functional.funcpgpe.PGPEState
    popsize: int


def pgpe_init(
    center: Tensor,
    *,
    popsize: int,
    maximize: bool = False,
    sigma: float = 0.1,
    center_lr: float = 0.05,
    stdev_lr: float = 0.1,
    optimizer: str = "clipup",
    ranking: str = "centered",
    stdev_max_change: float = 0.2,
) -> PGPEState:
    """Initial PGPE state (EvoTorch's ``evotorch.algorithms.functional.pgpe``).

    Symmetric (antithetic) sampling with a learned separable σ; ``optimizer`` is ``"clipup"``
    (ClipUp's max speed is ``2·center_lr``), ``"adam"`` or ``"sgd"``; ``ranking`` is one of
    EvoTorch's ranking methods. Sehnke et al. 2010, "Parameter-exploring policy gradients";
    Toklu et al. 2020, ClipUp, https://arxiv.org/abs/2008.02387.
    """
    from evotorch.algorithms.functional import pgpe

    center = check_center(center)
    popsize = check_popsize(popsize, even=True)
    _check_bool("maximize", maximize)
    with warnings.catch_warnings():
        # evotorch copy-constructs tensors with torch.tensor(t), which warns; harmless here.
        warnings.simplefilter("ignore", UserWarning)
        inner = pgpe(
            center_init=center,
            center_learning_rate=_check_positive("center_lr", center_lr),
            stdev_learning_rate=_check_positive("stdev_lr", stdev_lr),
            objective_sense="max" if maximize else "min",
            ranking_method=ranking,
            optimizer=optimizer,
            stdev_init=_check_positive("sigma", sigma),
            stdev_max_change=_check_positive("stdev_max_change", stdev_max_change),
            symmetric=True,
        )
    return PGPEState(inner=inner, popsize=popsize)


def pgpe_ask(state: PGPEState, *, generator: torch.Generator) -> Tensor:
    """Antithetic population ``(P, D)`` in EvoTorch's layout (pairs ``2k``, ``2k+1``)."""
    from evotorch.distributions import SymmetricSeparableGaussian

    # evotorch's pgpe_ask draws from torch's global generator; sampling the same distribution
    # class with our generator keeps runs reproducible and resumable.
    params = {"mu": pgpe_center(state), "sigma": state.inner.stdev}
    return SymmetricSeparableGaussian(params).sample(state.popsize, generator=generator)


def pgpe_tell(state: PGPEState, x: Tensor, fitness: Tensor) -> PGPEState:
    """One PGPE step through EvoTorch's ``pgpe_tell`` (ranked fitnesses, separable σ update)."""
    from evotorch.algorithms.functional import pgpe_tell as _pgpe_tell

    center = pgpe_center(state)
    x, fitness = check_tell(x, fitness, popsize=state.popsize, dim=center.shape[0])
    return state._replace(inner=_pgpe_tell(state.inner, x, fitness))


def pgpe_center(state: PGPEState) -> Tensor:
    """The current mean, shape ``(D,)``."""
    return state.inner.optimizer_state.center


# ------------------------------------------------------------------------------------------- SNES


class SNESState(NamedTuple):
    """State of SNES: the mean and per-coordinate σ of EvoTorch's ``ExpSeparableGaussian``."""

    mu: Tensor  # (D,)
    sigma: Tensor  # (D,)
    center_lr: Tensor  # ()
    stdev_lr: Tensor  # ()
    popsize: int
    maximize: bool
    ranking: str


def snes_init(
    center: Tensor,
    *,
    popsize: int,
    maximize: bool = False,
    sigma: float = 1.0,
    center_lr: float = 1.0,
    stdev_lr: float | None = None,
    ranking: str = "nes",
) -> SNESState:
    r"""Initial SNES state (separable natural ES, EvoTorch's ``ExpSeparableGaussian`` updates).

    μ ← μ + η_μ Σ wᵢ (xᵢ − μ), σ ← σ·exp(½ η_σ Σ wᵢ (zᵢ² − 1)) with NES utilities wᵢ; the
    default η_σ is :math:`0.2 (3 + \ln D)/\sqrt{D}`. Schaul et al. 2011, "High dimensions and
    heavy tails for natural evolution strategies".
    """
    center = check_center(center)
    popsize = check_popsize(popsize)
    _check_bool("maximize", maximize)
    D = center.shape[0]
    if stdev_lr is None:
        stdev_lr = 0.2 * (3 + math.log(D)) / math.sqrt(D)
    scalar = functools.partial(torch.tensor, dtype=center.dtype, device=center.device)
    return SNESState(
        mu=center,
        sigma=torch.full_like(center, _check_positive("sigma", sigma)),
        center_lr=scalar(_check_positive("center_lr", center_lr)),
        stdev_lr=scalar(_check_positive("stdev_lr", stdev_lr)),
        popsize=popsize,
        maximize=maximize,
        ranking=str(ranking),
    )


def _snes_distribution(state: SNESState) -> Any:
    from evotorch.distributions import ExpSeparableGaussian

    return ExpSeparableGaussian({"mu": state.mu, "sigma": state.sigma})


def snes_ask(state: SNESState, *, generator: torch.Generator) -> Tensor:
    """Population ``x = μ + σ ⊙ z``, ``z ~ N(0, I)``, shape ``(P, D)``."""
    return _snes_distribution(state).sample(state.popsize, generator=generator)


def snes_tell(state: SNESState, x: Tensor, fitness: Tensor) -> SNESState:
    """One SNES step through EvoTorch's ``ExpSeparableGaussian`` gradient and update."""
    x, fitness = check_tell(x, fitness, popsize=state.popsize, dim=state.mu.shape[0])
    dist = _snes_distribution(state)
    grads = dist.compute_gradients(
        x,
        fitness,
        objective_sense="max" if state.maximize else "min",
        ranking_method=state.ranking,
    )
    new = dist.update_parameters(
        grads, learning_rates={"mu": state.center_lr, "sigma": state.stdev_lr}
    )
    return state._replace(mu=new.parameters["mu"], sigma=new.parameters["sigma"])


register_es(
    EvolutionStrategy(
        name="cmaes",
        init=cmaes_init,
        ask=cmaes_ask,
        tell=cmaes_tell,
        center=lambda state: state.m,
        description="CMA-ES (EvoTorch's update rules over tensor state)",
    )
)
register_es(
    EvolutionStrategy(
        name="pgpe",
        init=pgpe_init,
        ask=pgpe_ask,
        tell=pgpe_tell,
        center=pgpe_center,
        description="PGPE with ClipUp (evotorch.algorithms.functional)",
    )
)
register_es(
    EvolutionStrategy(
        name="snes",
        init=snes_init,
        ask=snes_ask,
        tell=snes_tell,
        center=lambda state: state.mu,
        description="SNES (EvoTorch's ExpSeparableGaussian)",
    )
)
