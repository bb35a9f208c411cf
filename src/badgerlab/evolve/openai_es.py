"""OpenAI-ES with antithetic sampling, fitness shaping, Adam or SGD, and lr/σ annealing."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .core import EvolutionStrategy, check_center, check_popsize, check_tell, register_es
from .shaping import get_shaping

__all__ = [
    "HEBBIAN_DEFAULTS",
    "VSML_DEFAULTS",
    "OpenAIESState",
    "openai_es_ask",
    "openai_es_center",
    "openai_es_init",
    "openai_es_tell",
]

#: The VSML reference (Kirsch & Schmidhuber 2021): raw antithetic differences, Adam.
VSML_DEFAULTS: dict[str, Any] = {
    "sigma": 0.05,
    "lr": 0.025,
    "shaping": "none",
    "optimizer": "adam",
    "lr_decay": 1.0,
    "lr_min": 0.0,
    "sigma_decay": 1.0,
    "sigma_min": 0.0,
    "l2": 0.0,
}

#: The Hebbian reference (Najarro & Risi 2020): centred ranks, plain SGD, annealed lr and σ.
HEBBIAN_DEFAULTS: dict[str, Any] = {
    "sigma": 0.1,
    "lr": 0.2,
    "shaping": "centred_ranks",
    "optimizer": "sgd",
    "lr_decay": 0.995,
    "lr_min": 0.001,
    "sigma_decay": 0.999,
    "sigma_min": 0.01,
    "l2": 0.0,
}


class OpenAIESState(NamedTuple):
    """State of OpenAI-ES: tensors that evolve, then plain hyper-parameters."""

    center: Tensor  # θ, (D,)
    sigma: Tensor  # σ, ()
    lr: Tensor  # α, ()
    m: Tensor  # Adam first moment, (D,); zeros under SGD
    v: Tensor  # Adam second moment, (D,); zeros under SGD
    step: Tensor  # generations told so far, () int64
    popsize: int
    maximize: bool
    shaping: str
    optimizer: str
    beta1: float
    beta2: float
    eps: float
    lr_decay: float
    lr_min: float
    sigma_decay: float
    sigma_min: float
    l2: float


def _check_positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not (value >= 0 if allow_zero else value > 0) or value != value or value == float("inf"):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value}")
    return value


def openai_es_init(
    center: Tensor,
    *,
    popsize: int,
    maximize: bool = False,
    sigma: float = 0.05,
    lr: float = 0.025,
    shaping: str = "none",
    optimizer: str = "adam",
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    lr_decay: float = 1.0,
    lr_min: float = 0.0,
    sigma_decay: float = 1.0,
    sigma_min: float = 0.0,
    l2: float = 0.0,
) -> OpenAIESState:
    """Initial OpenAI-ES state around ``center`` (D,).

    Args:
        center: initial mean θ₀, shape ``(D,)``.
        popsize: P, even: P/2 antithetic pairs.
        maximize: True if higher fitness is better (rewards), False for losses.
        sigma: initial noise scale σ.
        lr: initial learning rate α of the optimizer.
        shaping: a name from ``shaping.available_shapings()``.
        optimizer: ``"adam"`` (moments kept in the state) or ``"sgd"``.
        beta1, beta2, eps: Adam's constants.
        lr_decay, lr_min: after each generation α ← max(α·lr_decay, lr_min).
        sigma_decay, sigma_min: after each generation σ ← max(σ·sigma_decay, sigma_min).
        l2: penalty λ; each member's utility loses λ·mean(xᵢ²).
    """
    center = check_center(center)
    popsize = check_popsize(popsize, even=True)
    if not isinstance(maximize, bool):
        raise TypeError(f"maximize must be a bool, got {maximize!r}")
    get_shaping(shaping)
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    sigma = _check_positive("sigma", sigma)
    lr = _check_positive("lr", lr)
    for name, value in (("beta1", beta1), ("beta2", beta2)):
        if not 0.0 <= float(value) < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    for name, value in (("lr_decay", lr_decay), ("sigma_decay", sigma_decay)):
        if not 0.0 < float(value) <= 1.0:
            raise ValueError(f"{name} must be in (0, 1], got {value}")
    eps = _check_positive("eps", eps)
    lr_min = _check_positive("lr_min", lr_min, allow_zero=True)
    sigma_min = _check_positive("sigma_min", sigma_min, allow_zero=True)
    l2 = _check_positive("l2", l2, allow_zero=True)
    scalar = functools.partial(torch.tensor, dtype=center.dtype, device=center.device)
    return OpenAIESState(
        center=center,
        sigma=scalar(sigma),
        lr=scalar(lr),
        m=torch.zeros_like(center),
        v=torch.zeros_like(center),
        step=torch.zeros((), dtype=torch.int64, device=center.device),
        popsize=popsize,
        maximize=maximize,
        shaping=shaping,
        optimizer=optimizer,
        beta1=float(beta1),
        beta2=float(beta2),
        eps=eps,
        lr_decay=float(lr_decay),
        lr_min=lr_min,
        sigma_decay=float(sigma_decay),
        sigma_min=sigma_min,
        l2=l2,
    )


def openai_es_ask(state: OpenAIESState, *, generator: torch.Generator) -> Tensor:
    """Antithetic population ``x (P, D)``: ``x[2k] = θ + σεₖ``, ``x[2k+1] = θ − σεₖ``.

    Members ``2k`` and ``2k+1`` form pair ``k`` (``pair = arange(P) // 2``); to follow the VSML
    reference, evaluate both members of a pair on the same data and each pair on its own data.
    """
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    theta = state.center
    eps = torch.randn(
        state.popsize // 2,
        theta.shape[0],
        generator=generator,
        dtype=theta.dtype,
        device=theta.device,
    )  # (P/2, D)
    x = torch.stack([theta + state.sigma * eps, theta - state.sigma * eps], dim=1)  # (P/2, 2, D)
    return x.reshape(state.popsize, theta.shape[0])  # (P, D)


def openai_es_tell(state: OpenAIESState, x: Tensor, fitness: Tensor) -> OpenAIESState:
    r"""One OpenAI-ES update from the population ``x (P, D)`` and its ``fitness (P,)``.

    With utilities :math:`u_i = \pm F_i - \lambda\,\overline{x_i^2}` (sign + when maximising),
    shaped weights :math:`w = \mathrm{shaping}(u)` and pairs :math:`k` with noise
    :math:`\varepsilon_k = (x_{2k} - x_{2k+1}) / 2\sigma`, the ascent direction is

    .. math::
        g = \frac{1}{P\sigma} \sum_k (w_{2k} - w_{2k+1})\,\varepsilon_k ,

    which for ``shaping="none"`` is the VSML estimate
    :math:`\frac{1}{P/2}\sum_k \frac{L^+_k - L^-_k}{2\sigma}\varepsilon_k` (sign flipped for a
    loss) and for ``centred_ranks`` the Hebbian update :math:`\frac{\alpha}{P\sigma}\sum_i F_i
    \varepsilon_i`. Then θ ← θ + α·g (SGD) or θ ← θ + α·m̂/(√v̂ + ε) (Adam), and α, σ anneal.
    Pairs are differenced before summing, so equal fitnesses give exactly a zero gradient.
    Salimans et al. 2017, https://arxiv.org/abs/1703.03864; Kirsch & Schmidhuber 2021,
    https://arxiv.org/abs/2012.14905; Najarro & Risi 2020, https://arxiv.org/abs/2007.02686.
    """
    P, D = state.popsize, state.center.shape[0]
    x, fitness = check_tell(x, fitness, popsize=P, dim=D)
    sigma = state.sigma
    pairs = x.reshape(P // 2, 2, D)  # (P/2, 2, D)
    eps = (pairs[:, 0] - pairs[:, 1]) / (2 * sigma)  # (P/2, D)
    u = fitness if state.maximize else -fitness  # (P,)
    if state.l2 > 0:
        u = u - state.l2 * x.pow(2).mean(dim=1)
    w = get_shaping(state.shaping)(u).reshape(P // 2, 2)  # (P/2, 2)
    g = (w[:, 0] - w[:, 1]) @ eps / (P * sigma)  # (D,)

    m, v, step = state.m, state.v, state.step + 1
    if state.optimizer == "adam":
        m = state.beta1 * m + (1 - state.beta1) * g
        v = state.beta2 * v + (1 - state.beta2) * g * g
        t = step.to(g.dtype)
        m_hat = m / (1 - state.beta1**t)
        v_hat = v / (1 - state.beta2**t)
        update = m_hat / (v_hat.sqrt() + state.eps)
    else:
        update = g
    return state._replace(
        center=state.center + state.lr * update,
        sigma=torch.clamp(sigma * state.sigma_decay, min=state.sigma_min),
        lr=torch.clamp(state.lr * state.lr_decay, min=state.lr_min),
        m=m,
        v=v,
        step=step,
    )


def openai_es_center(state: OpenAIESState) -> Tensor:
    """The current mean θ, shape ``(D,)``."""
    return state.center


register_es(
    EvolutionStrategy(
        name="openai-es",
        init=functools.partial(openai_es_init, **VSML_DEFAULTS),
        ask=openai_es_ask,
        tell=openai_es_tell,
        center=openai_es_center,
        description="OpenAI-ES, VSML defaults: raw antithetic differences, σ 0.05, Adam 0.025",
    )
)
register_es(
    EvolutionStrategy(
        name="openai-es-ranks",
        init=functools.partial(openai_es_init, **HEBBIAN_DEFAULTS),
        ask=openai_es_ask,
        tell=openai_es_tell,
        center=openai_es_center,
        description="OpenAI-ES, Hebbian defaults: centred ranks, SGD lr 0.2×0.995, σ 0.1×0.999",
    )
)
