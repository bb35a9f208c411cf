"""Outer loops that meta-train a learner from scratch: ES over a population, or truncated BPTT.

The meta-objective (Kirsch & Schmidhuber 2021, https://arxiv.org/abs/2012.14905) is the
mean online cross-entropy over an episode started from random initial states,

    J(V) = E_tasks [ 1/T Σ_t CE(ŷ_t(V; x_1..t, y_1..t−1), y_t) ],

minimised either by antithetic ES from `badgerlab.evolve` (the reference: σ 0.05, Adam 0.025,
both members of a pair on the same episode) or by backpropagation through time, truncated
every `truncation` examples, with Adam 1e-3 and gradient-norm clipping (the reference's BPTT
config). All state is tensors, so both loops checkpoint and resume exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .baselines import Learner, VSMLLearner
from .model import LayerState, episode, init_state

__all__ = [
    "AdamState",
    "adam_init",
    "adam_update",
    "bptt_step",
    "es_ask_params",
    "es_init",
    "es_initial_states",
    "es_step",
    "flatten",
    "meta_loss",
    "population_fitness",
    "unflatten",
]


def flatten(params: Mapping[str, Tensor], shapes: Mapping[str, tuple[int, ...]]) -> Tensor:
    """Concatenate parameters in `shapes` order: `(D,)`, or `(P, D)` with a population axis."""
    first = params[next(iter(shapes))]
    lead = first.shape[: first.ndim - len(shapes[next(iter(shapes))])]
    return torch.cat([params[k].reshape(*lead, -1) for k in shapes], dim=-1)


def unflatten(vec: Tensor, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Tensor]:
    """Inverse of `flatten`: `(D,)` or `(P, D)` → named tensors (with the leading axis)."""
    total = sum(math.prod(s) for s in shapes.values())
    if vec.shape[-1] != total:
        raise ValueError(f"vec has {vec.shape[-1]} entries, the shapes need {total}")
    lead = vec.shape[:-1]
    out, i = {}, 0
    for k, s in shapes.items():
        n = math.prod(s)
        out[k] = vec[..., i : i + n].reshape(*lead, *s)
        i += n
    return out


def meta_loss(
    learner: Learner,
    params: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    num_classes: int,
    *,
    generator: torch.Generator | None = None,
    tied: int = 1,
) -> Tensor:
    """J per population member: mean CE over time and sequences, `(P,)`."""
    out = learner.run(params, x, y, num_classes, generator=generator, tied=tied)
    return out.loss.mean(dim=(0, 2))  # (P,)


class AdamState(NamedTuple):
    """Functional Adam (Kingma & Ba 2015): moments per named parameter and the step count."""

    m: dict[str, Tensor]
    v: dict[str, Tensor]
    step: Tensor


def adam_init(params: Mapping[str, Tensor]) -> AdamState:
    return AdamState(
        {k: torch.zeros_like(v) for k, v in params.items()},
        {k: torch.zeros_like(v) for k, v in params.items()},
        torch.zeros((), dtype=torch.int64),
    )


def adam_update(
    params: Mapping[str, Tensor],
    grads: Mapping[str, Tensor],
    state: AdamState,
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> tuple[dict[str, Tensor], AdamState]:
    """θ ← θ − lr·m̂/(√v̂ + ε) with bias-corrected moments."""
    b1, b2 = betas
    step = state.step + 1
    t = float(step)
    new_p, m, v = {}, {}, {}
    for k, p in params.items():
        g = grads[k]
        m[k] = b1 * state.m[k] + (1 - b1) * g
        v[k] = b2 * state.v[k] + (1 - b2) * g * g
        mh = m[k] / (1 - b1**t)
        vh = v[k] / (1 - b2**t)
        new_p[k] = p - lr * mh / (vh.sqrt() + eps)
    return new_p, AdamState(m, v, step)


def _segment_grads(
    learner: VSMLLearner,
    leaves: dict[str, Tensor],
    x: Tensor,
    y: Tensor,
    num_classes: int,
    truncation: int,
    generator: torch.Generator | None,
) -> tuple[Tensor, list[Tensor | None]]:
    # Truncated BPTT: the state flows forward through the whole episode, gradients only
    # within segments of `truncation` examples; their sum is the truncated gradient of J.
    T = x.shape[0]
    sizes = (x.shape[-1], *learner.hidden, num_classes)
    states, error = None, None
    total = x.new_zeros(())
    acc: list[Tensor | None] = [None] * len(leaves)
    for t0 in range(0, T, truncation):
        r = episode(
            leaves,
            x[t0 : t0 + truncation],
            y[t0 : t0 + truncation],
            learner.cfg,
            sizes=sizes,
            states=states,
            error=error,
            generator=generator,
        )
        seg = r.loss.sum(0).mean() / T  # this segment's share of the mean over the episode
        raw = torch.autograd.grad(seg, list(leaves.values()), allow_unused=True)
        acc = [
            a if g is None else (g if a is None else a + g) for a, g in zip(acc, raw, strict=True)
        ]
        total = total + seg.detach()
        states = [LayerState(*(t.detach() for t in st)) for st in r.states]
        error = r.error.detach()
    return total, acc


def bptt_step(
    learner: Learner,
    params: Mapping[str, Tensor],
    opt: AdamState,
    x: Tensor,
    y: Tensor,
    num_classes: int,
    *,
    lr: float = 1e-3,
    clip: float = 25.0,
    truncation: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[dict[str, Tensor], AdamState, float, float]:
    """One meta-gradient step by BPTT on episodes x `(T, N, A)`, y `(T, N)`.

    With `truncation=K` (VSML learners) gradients flow only within segments of K examples
    while the states run through the whole episode; otherwise through the whole episode.
    The gradient of J is clipped to global norm `clip` (0 disables), then Adam updates V.
    Returns new params, optimiser state, J and the unclipped gradient norm.
    """
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if truncation is not None and truncation < 1:
        raise ValueError(f"truncation must be >= 1 or None, got {truncation}")
    leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    if truncation is not None and truncation < x.shape[0]:
        if not isinstance(learner, VSMLLearner):
            raise ValueError(f"truncation needs a VSMLLearner, got {type(learner).__name__}")
        loss, raw = _segment_grads(learner, leaves, x, y, num_classes, truncation, generator)
    else:
        loss = meta_loss(learner, leaves, x, y, num_classes, generator=generator).mean()
        raw = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    # A single layer never sends backward messages, so head_b gets no gradient there.
    grads = [
        torch.zeros_like(v) if g is None else g for v, g in zip(leaves.values(), raw, strict=True)
    ]
    gdict = dict(zip(leaves, grads, strict=True))
    # Summed in sorted-name order: the same float rounding however the parameters were loaded.
    norm = torch.sqrt(sum((gdict[k] * gdict[k]).sum() for k in sorted(gdict)))
    if clip > 0 and float(norm) > clip:
        gdict = {k: g * (clip / norm) for k, g in gdict.items()}
    with torch.no_grad():
        new_params, opt = adam_update(leaves, gdict, opt, lr=lr)
    return {k: v.detach() for k, v in new_params.items()}, opt, float(loss.detach()), float(norm)


def es_init(
    learner: Learner,
    params: Mapping[str, Tensor],
    *,
    es: str = "openai-es",
    popsize: int = 64,
    **options: Any,
):
    """An ES state centred on `params` for `badgerlab.evolve`'s algorithm `es`."""
    from badgerlab.evolve import get_es

    algo = get_es(es)
    center = flatten(params, learner.param_shapes()).detach()
    return algo.init(center, popsize=popsize, maximize=False, **options)


def es_ask_params(
    learner: Learner, es: str, state: Any, *, generator: torch.Generator
) -> tuple[Tensor, dict[str, Tensor]]:
    """Sample a population: flat `(P, D)` and as named parameters with a population axis."""
    from badgerlab.evolve import get_es

    flat = get_es(es).ask(state, generator=generator)  # (P, D)
    return flat, unflatten(flat, learner.param_shapes())


def population_fitness(
    rows: Tensor,
    learner: Learner,
    popsize: int,
    x: Tensor,
    y: Tensor,
    num_classes: int,
    states: list[LayerState] | None = None,
) -> Tensor:
    """J of population rows `(p, D + 1)`, each on its group's episodes and initial states:
    what one Ray actor (or the driver, in process) computes for its share of the population.

    The last column of `rows` is each member's index i in the whole population of `popsize`
    P; member i is scored on group g = i // (P/G) of x `(T, G, N, A)`, y `(T, G, N)` and, for
    VSML, of the random initial cell states `states` (layer states with leading axis G, or
    None). So a share of any rows gets the same J as in the whole population, and each share
    is one batched episode call. Returns `(p,)`, NaN and inf replaced by 1e3 (a loss).
    """
    theta, members = rows[:, :-1], rows[:, -1].round().long()
    group = members // (popsize // x.shape[1])  # (p,)
    params = unflatten(theta, learner.param_shapes())
    xx, yy = x[:, group], y[:, group]  # (T, p, N, A), (T, p, N)
    with torch.no_grad():
        if states is not None and isinstance(learner, VSMLLearner):
            own = [LayerState(*(t[group] for t in s)) for s in states]
            loss = episode(params, xx, yy, learner.cfg, states=own).loss
        else:
            loss = learner.run(params, xx, yy, num_classes).loss
    return torch.nan_to_num(loss.mean(dim=(0, 2)), nan=1e3, posinf=1e3)  # (p,)


def es_initial_states(
    learner: Learner, x: Tensor, num_classes: int, *, generator: torch.Generator
) -> list[LayerState] | None:
    """VSML's random initial cell states, one draw per episode group of x `(T, G, N, A)`
    (None for learners without random states): members of a group start alike."""
    if not isinstance(learner, VSMLLearner):
        return None
    sizes = (x.shape[-1], *learner.hidden, num_classes)
    return init_state(
        learner.cfg, sizes, batch=x.shape[2], population=x.shape[1], generator=generator,
        dtype=x.dtype, device=x.device,
    )  # fmt: skip


def es_step(
    learner: Learner,
    es: str,
    state: Any,
    x: Tensor,
    y: Tensor,
    num_classes: int,
    *,
    generator: torch.Generator,
    evaluate: Callable[..., Tensor] | None = None,
) -> tuple[Any, float]:
    """One ES generation on episode groups x `(T, G, N, A)`, y `(T, G, N)`, G dividing P.

    Member i is scored on group i // (P/G), with the group's initial states: G = P/2 gives
    each antithetic pair (members 2k, 2k+1) its own episodes, shared by its + and − members
    (the reference); G = 1 scores everyone on the same episodes (common random numbers, for
    rank-based ES such as CMA-ES). `evaluate` computes `population_fitness` elsewhere from
    the same arguments (e.g. `badgerlab.evolve.RayEvaluator(population_fitness, actors=N)`,
    one share of the rows per actor); None: in process, all P members in one batched call.
    Returns the new state and the population's mean J.
    """
    from badgerlab.evolve import get_es

    algo = get_es(es)
    flat = algo.ask(state, generator=generator)  # (P, D)
    P = flat.shape[0]
    if x.ndim != 4 or P % x.shape[1] or y.shape != x.shape[:3]:
        raise ValueError(
            f"x must be (T, G, N, A) with G dividing P={P} (P/2 = {P // 2}: one group per "
            f"pair) and y (T, G, N); got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    states = es_initial_states(learner, x, num_classes, generator=generator)
    members = torch.arange(P, dtype=flat.dtype, device=flat.device)
    rows = torch.cat([flat, members[:, None]], dim=1)  # (P, D + 1)
    fn = population_fitness if evaluate is None else evaluate
    fitness = fn(rows, learner, P, x, y, num_classes, states).to(flat)
    return algo.tell(state, flat, fitness), float(fitness.mean())
