"""Meta-training the per-parameter learned optimizer (`lopt`) on a family of small MLP tasks.

Metz, Maheswaranathan, Sun, Freeman, Poole & Sohl-Dickstein 2020,
https://arxiv.org/abs/2009.11243; persistent ES: Vicol, Metz & Sohl-Dickstein 2021,
https://arxiv.org/abs/2112.13835.

*Tasks.* A `Task` is full-batch classification of ``x (N, D)`` with a small MLP (hidden widths,
activation and initial scale drawn at random); ``task.loss(params)`` is the mean cross-entropy,
a pure function of the parameter list. `sample_task` draws a task of a `TaskFamily` (a random
class subset of bundled digits, a random Gaussian projection of its 64 pixels to ``dim`` inputs)
with an explicit ``torch.Generator``; `dataset_task` builds the meta-test tasks on other bundled
sets.

*Inner loop.* `unroll(θ, task, inner, T)` applies ``lopt.lopt_step`` with ``mlp_head(θ)`` T times
and returns the losses ``L_t = L(p_t)``, t = 1 … T, after every update; it is pure, so
``torch.func.grad`` and ``vmap`` run through it. The meta-loss (`meta_objective`) is the mean
of ``log clip(L_t, L_min, L_max)`` over the unroll (the paper's log-loss, clipped so a diverging
inner run gives a bounded value and a solved task stops pulling), or the final log-loss.

*Outer estimators of ∇_θ E[meta-loss]* (antithetic pairs θ ± σε_k, k = 1 … P/2):

- truncated BPTT (`bptt_grad`): exact gradients through segments of K steps, the inner state
  detached between segments;
- antithetic ES (`es_grad`): ĝ = (1/(Pσ)) Σ_k (L(θ+σε_k) − L(θ−σε_k)) ε_k, the gradient of the
  Gaussian-smoothed loss E_ε[L(θ+σε)];
- PES (`pes_grad`): each particle keeps its own inner state across truncations and the sum of
  the noise it has used, ξ_k = Σ_τ ε_k^τ; the truncation's losses are weighted by ξ instead of
  ε: ĝ = (1/(Pσ)) Σ_k (L_k^+ − L_k^−) ξ_k. Summed over the truncations of one unroll this is
  unbiased for the gradient of the full-unroll loss smoothed with an independent perturbation
  per truncation (Vicol et al., eq. 6). After one truncation PES is exactly antithetic ES.

`es_generation` and `pes_generation` turn these into updates of an OpenAI-ES state from
``badgerlab.evolve`` (raw differences, Adam), so the outer loop checkpoints and resumes exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.func import grad_and_value, vmap
from torch.utils._pytree import tree_leaves, tree_map

from badgerlab.evolve.openai_es import OpenAIESState, openai_es_ask, openai_es_tell
from badgerlab.learned.lopt import (
    Head,
    LOptState,
    init_state,
    lopt_step,
    mlp_head,
    num_theta,
    theta_from_vector,
)

__all__ = [
    "ACTIVATIONS",
    "LOPT_BIBTEX",
    "LOPT_PAPER",
    "Inner",
    "PESState",
    "Task",
    "TaskFamily",
    "antithetic_grad",
    "bptt_grad",
    "dataset_task",
    "es_generation",
    "es_grad",
    "hidden_of",
    "init_inner",
    "init_params",
    "meta_objective",
    "pes_generation",
    "pes_grad",
    "pes_init",
    "population",
    "population_unroll",
    "replicate",
    "sample_task",
    "unroll",
    "unroll_head",
]

LOPT_PAPER = (
    "Metz, Maheswaranathan, Sun, Freeman, Poole & Sohl-Dickstein, Tasks, stability, "
    "architecture, and compute: Training more effective learned optimizers, and using them to "
    "train themselves, arXiv 2020"
)
LOPT_BIBTEX = """@article{metz2020tasks,
  title   = {Tasks, stability, architecture, and compute: Training more effective learned
             optimizers, and using them to train themselves},
  author  = {Metz, Luke and Maheswaranathan, Niru and Sun, Ruoxi and Freeman, C. Daniel and
             Poole, Ben and Sohl-Dickstein, Jascha},
  journal = {arXiv preprint arXiv:2009.11243},
  year    = {2020}
}"""

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "elu": torch.nn.functional.elu,
}
OBJECTIVES = ("mean", "final")

#: The inner state: the task's parameter list and the optimizer's moments.
Inner = tuple[list[Tensor], LOptState]
#: fn(θ population (P, D), batched inner) -> (batched inner, meta-losses (P,)).
PopulationFn = Callable[[Tensor, object], tuple[object, Tensor]]


@dataclass(frozen=True, eq=False)
class Task:
    """Full-batch classification of ``x (N, D)`` into ``num_classes`` by an MLP."""

    x: Tensor  # (N, D)
    y: Tensor  # (N,) int64 in [0, num_classes)
    num_classes: int
    widths: tuple[int, ...]  # hidden widths
    activation: str
    init_scale: float
    name: str = ""

    def __post_init__(self) -> None:
        if self.x.ndim != 2 or self.y.shape != (self.x.shape[0],):
            raise ValueError(f"x must be (N, D) and y (N,), got {self.x.shape}, {self.y.shape}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {list(ACTIVATIONS)}, got {self.activation!r}"
            )
        if not all(isinstance(w, int) and w >= 1 for w in self.widths):
            raise ValueError(f"widths must be ints >= 1, got {self.widths!r}")
        if not (math.isfinite(self.init_scale) and self.init_scale > 0):
            raise ValueError(f"init_scale must be finite and > 0, got {self.init_scale!r}")

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """Shapes of [W_1, b_1, …, W_L, b_L]; W_l is (fan_in, fan_out)."""
        dims = [self.x.shape[1], *self.widths, self.num_classes]
        return [s for a, b in zip(dims, dims[1:], strict=False) for s in ((a, b), (b,))]

    def logits(self, params: Sequence[Tensor]) -> Tensor:
        """``(N, num_classes)``: h ← act(h W_l + b_l), no activation on the last layer."""
        h, act = self.x, ACTIVATIONS[self.activation]
        n = len(params) // 2
        for i in range(n):
            h = h @ params[2 * i] + params[2 * i + 1]
            h = act(h) if i < n - 1 else h
        return h

    def loss(self, params: Sequence[Tensor]) -> Tensor:
        """Mean cross-entropy over the task's examples, ``()``."""
        return torch.nn.functional.cross_entropy(self.logits(params), self.y)


@dataclass(frozen=True)
class TaskFamily:
    """Digits subsets: k ∈ [min_classes, max_classes] classes, a Gaussian projection of the
    64 pixels to dim ∈ dims inputs, ≤ max_examples examples, an MLP with depth ∈ depths hidden
    layers of widths ∈ widths, activation ∈ activations and log-uniform init scale."""

    split: str = "train"
    min_classes: int = 2
    max_classes: int = 10
    dims: tuple[int, ...] = (8, 16, 32)
    max_examples: int = 256
    widths: tuple[int, ...] = (8, 16, 32)
    depths: tuple[int, ...] = (1, 2)
    activations: tuple[str, ...] = ("relu", "tanh", "elu", "sigmoid")
    init_scales: tuple[float, float] = (0.5, 2.0)

    def __post_init__(self) -> None:
        if self.split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {self.split!r}")
        if not 2 <= self.min_classes <= self.max_classes <= 10:
            raise ValueError(
                f"need 2 <= min_classes ({self.min_classes}) <= max_classes "
                f"({self.max_classes}) <= 10"
            )
        for name in ("dims", "widths", "depths"):
            v = getattr(self, name)
            if not v or not all(isinstance(w, int) and w >= 1 for w in v):
                raise ValueError(f"{name} must be a non-empty tuple of ints >= 1, got {v!r}")
        if self.max_examples < 10:
            raise ValueError(f"max_examples must be >= 10, got {self.max_examples}")
        bad = [a for a in self.activations if a not in ACTIVATIONS] or not self.activations
        if bad:
            raise ValueError(f"activations must be among {list(ACTIVATIONS)}, got {bad!r}")
        lo, hi = self.init_scales
        if not 0 < lo <= hi:
            raise ValueError(f"init_scales must satisfy 0 < lo <= hi, got {self.init_scales!r}")


def _arrays(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    from badgerlab.data.bundled import load_bundled

    xtr, ytr, xte, yte, _ = load_bundled(name)
    x, y = (xtr, ytr) if split == "train" else (xte, yte)
    return x.reshape(len(x), -1).astype(np.float64), y


def _standardise(x: Tensor) -> Tensor:
    return (x - x.mean(0)) / (x.std(0) + 1e-6)


def _choice(seq: Sequence, g: torch.Generator):
    return seq[int(torch.randint(len(seq), (), generator=g))]


def sample_task(
    family: TaskFamily, generator: torch.Generator, *, dtype: torch.dtype = torch.float32
) -> Task:
    """One task of ``family``: classes, projection, examples, architecture from ``generator``."""
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    x_all, y_all = _arrays("digits", family.split)
    g = generator
    k = int(torch.randint(family.min_classes, family.max_classes + 1, (), generator=g))
    classes = torch.randperm(10, generator=g)[:k].sort().values
    keep = np.flatnonzero(np.isin(y_all, classes.numpy()))
    keep = keep[torch.randperm(len(keep), generator=g)[: family.max_examples].numpy()]
    x = torch.as_tensor(x_all[np.sort(keep)], dtype=torch.float64)
    y = torch.as_tensor(y_all[np.sort(keep)])
    y = torch.searchsorted(classes, y)  # relabel to 0 … k−1
    dim = _choice(family.dims, g)
    proj = torch.randn(x.shape[1], dim, generator=g, dtype=torch.float64) / math.sqrt(x.shape[1])
    x = _standardise(x @ proj).to(dtype)
    depth = _choice(family.depths, g)
    widths = tuple(_choice(family.widths, g) for _ in range(depth))
    act = _choice(family.activations, g)
    lo, hi = family.init_scales
    scale = math.exp(math.log(lo) + float(torch.rand((), generator=g)) * math.log(hi / lo))
    return Task(x, y, k, widths, act, scale, f"digits{k}-d{dim}-{act}{list(widths)}")


def dataset_task(
    name: str,
    *,
    widths: tuple[int, ...] = (32,),
    activation: str = "relu",
    init_scale: float = 1.0,
    max_examples: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Task:
    """The training split of a bundled set (standardised features) as a task; with
    ``max_examples``, a random subset of that many examples drawn by ``generator``."""
    from badgerlab.data.bundled import BUNDLED

    if name not in BUNDLED:
        raise ValueError(f"name must be one of {BUNDLED}, got {name!r}")
    x, y = _arrays(name, "train")
    if max_examples is not None and max_examples < len(x):
        if generator is None:
            raise ValueError("max_examples needs a generator to draw the subset")
        keep = np.sort(torch.randperm(len(x), generator=generator)[:max_examples].numpy())
        x, y = x[keep], y[keep]
    xt = _standardise(torch.as_tensor(x, dtype=torch.float64)).to(dtype)
    k = int(y.max()) + 1
    return Task(xt, torch.as_tensor(y), k, tuple(widths), activation, float(init_scale), name)


def init_params(task: Task, generator: torch.Generator) -> list[Tensor]:
    """W_l ~ N(0, s²/fan_in) with s = task.init_scale, b_l = 0."""
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    out = []
    for shape in task.shapes:
        if len(shape) == 2:
            w = torch.randn(shape, generator=generator, dtype=task.x.dtype)
            out.append(w * task.init_scale / math.sqrt(shape[0]))
        else:
            out.append(torch.zeros(shape, dtype=task.x.dtype))
    return out


def init_inner(task: Task, generator: torch.Generator) -> Inner:
    """Fresh parameters (`init_params`) and zero optimizer moments."""
    params = init_params(task, generator)
    return params, init_state(params)


def hidden_of(theta: Tensor) -> int:
    """Hidden width H of the head whose flat weights are ``theta (num_theta(H),)``."""
    if not isinstance(theta, Tensor) or theta.ndim != 1:
        raise ValueError(f"theta must be a 1-D tensor, got {getattr(theta, 'shape', theta)!r}")
    h = (theta.shape[0] - 2) // 22
    if h < 1 or num_theta(h) != theta.shape[0]:
        raise ValueError(f"theta has {theta.shape[0]} entries, not num_theta(H) for any H >= 1")
    return h


def _check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    return steps


def unroll_head(head: Head, task: Task, inner: Inner, steps: int) -> tuple[Inner, Tensor]:
    """``steps`` updates p ← p + head(…) with g = ∇L(p); returns the new inner state and
    ``losses (steps,)``, ``losses[t] = L(p_{t+1})`` (the loss after update t+1)."""
    _check_steps(steps)
    params, state = inner
    values = []
    for _ in range(steps):
        grads, value = grad_and_value(task.loss)(params)
        values.append(value)
        params, state = lopt_step(params, grads, state, head=head)
    losses = [*values[1:], task.loss(params)]
    return (params, state), torch.stack(losses)


def unroll(
    theta: Tensor, task: Task, inner: Inner, steps: int, *, normalise: bool = True
) -> tuple[Inner, Tensor]:
    """`unroll_head` with the learned head ``mlp_head(θ)``, θ flat ``(num_theta(H),)``;
    ``normalise`` as in `lopt.mlp_head` (features scaled by their second moment per tensor)."""
    head = mlp_head(theta_from_vector(theta, hidden_of(theta)), normalise=normalise)
    return unroll_head(head, task, inner, steps)


def meta_objective(
    losses: Tensor, *, kind: str = "mean", min_loss: float = 1e-5, max_loss: float = 10.0
) -> Tensor:
    """``losses (..., T)`` → ``(...)``: mean_t log clip(L_t, L_min, L_max) ("mean") or the
    last one ("final"); NaN counts as L_max, so a diverged unroll scores the worst value, and
    a loss that underflows to 0 stays finite. L_min also says when a task counts as solved:
    below it, driving the loss further down earns nothing."""
    if kind not in OBJECTIVES:
        raise ValueError(f"kind must be one of {OBJECTIVES}, got {kind!r}")
    if not (math.isfinite(min_loss) and min_loss > 0):
        raise ValueError(f"min_loss must be finite and > 0, got {min_loss!r}")
    if not (math.isfinite(max_loss) and max_loss > min_loss):
        raise ValueError(f"max_loss must be finite and > min_loss ({min_loss}), got {max_loss!r}")
    logs = torch.log(torch.nan_to_num(losses, nan=max_loss).clamp(min_loss, max_loss))
    return logs.mean(-1) if kind == "mean" else logs[..., -1]


def population(theta: Tensor, eps: Tensor, sigma: float) -> Tensor:
    """``x (P, D)`` with x[2k] = θ + σε_k, x[2k+1] = θ − σε_k (openai_es_ask's layout)."""
    if eps.ndim != 2 or eps.shape[1] != theta.shape[0]:
        raise ValueError(f"eps must be (P/2, {theta.shape[0]}), got {tuple(eps.shape)}")
    return torch.stack([theta + sigma * eps, theta - sigma * eps], 1).reshape(-1, theta.shape[0])


def antithetic_grad(losses: Tensor, eps: Tensor, sigma: float) -> Tensor:
    """ĝ = (1/(Pσ)) Σ_k (L_{2k} − L_{2k+1}) ε_k for ``losses (P,)``, ``eps (P/2, D)``."""
    if losses.shape != (2 * eps.shape[0],):
        raise ValueError(f"losses must be ({2 * eps.shape[0]},), got {tuple(losses.shape)}")
    pairs = losses.reshape(-1, 2)
    return (pairs[:, 0] - pairs[:, 1]) @ eps / (losses.shape[0] * sigma)


def replicate(tree, n: int):
    """Every tensor of ``tree`` stacked ``n`` times along a new first axis."""
    return tree_map(lambda t: t.expand(n, *t.shape).clone(), tree)


def population_unroll(
    task: Task,
    steps: int,
    *,
    kind: str = "mean",
    min_loss: float = 1e-5,
    max_loss: float = 10.0,
    normalise: bool = True,
) -> PopulationFn:
    """fn(θ (P, D), inner (batched over P)) → (inner, meta-losses (P,)): `unroll` vmapped."""
    _check_steps(steps)

    def one(theta, inner):
        inner, losses = unroll(theta, task, inner, steps, normalise=normalise)
        return inner, meta_objective(losses, kind=kind, min_loss=min_loss, max_loss=max_loss)

    return vmap(one)


def es_grad(theta: Tensor, fn: PopulationFn, inner, eps: Tensor, sigma: float) -> Tensor:
    """Antithetic ES estimate of ∇_θ E_ε[L(θ+σε)]: every member starts from ``inner``."""
    x = population(theta, eps, sigma)
    _, losses = fn(x, replicate(inner, x.shape[0]))
    return antithetic_grad(losses, eps, sigma)


class PESState(NamedTuple):
    """Persistent particles: ``inner`` batched over P members, ``xi (P/2, D)`` = Σ_τ ε^τ."""

    inner: object
    xi: Tensor


def pes_init(inner, popsize: int, dim: int) -> PESState:
    """All P particles at ``inner``, accumulated noise ξ = 0."""
    if isinstance(popsize, bool) or not isinstance(popsize, int) or popsize < 2 or popsize % 2:
        raise ValueError(f"popsize must be an even int >= 2, got {popsize!r}")
    dtype = tree_leaves(inner)[0].dtype
    return PESState(replicate(inner, popsize), torch.zeros(popsize // 2, dim, dtype=dtype))


def pes_grad(
    theta: Tensor, state: PESState, fn: PopulationFn, eps: Tensor, sigma: float
) -> tuple[Tensor, PESState, Tensor]:
    """One PES truncation: ξ ← ξ + ε, run each particle from its own state with θ ± σε, and
    ĝ = (1/(Pσ)) Σ_k (L_k^+ − L_k^−) ξ_k. Returns (ĝ (D,), new state, losses (P,))."""
    if eps.shape != state.xi.shape:
        raise ValueError(f"eps must have shape {tuple(state.xi.shape)}, got {tuple(eps.shape)}")
    xi = state.xi + eps
    inner, losses = fn(population(theta, eps, sigma), state.inner)
    return antithetic_grad(losses, xi, sigma), PESState(inner, xi), losses


def bptt_grad(
    theta: Tensor,
    task: Task,
    inner: Inner,
    steps: int,
    truncation: int,
    *,
    kind: str = "mean",
    min_loss: float = 1e-5,
    max_loss: float = 10.0,
) -> tuple[Tensor, Inner, Tensor]:
    """Truncated BPTT: the unroll of ``steps`` in segments of ``truncation``; each segment's
    meta-loss is differentiated exactly through its steps (the inner state entering it held
    fixed) and the gradients averaged. ``truncation == steps`` gives the exact ∇_θ of the
    whole unroll's meta-loss. Returns (ĝ (D,), final inner state, segment meta-losses (n,))."""
    _check_steps(steps)
    _check_steps(truncation)
    if steps % truncation:
        raise ValueError(f"truncation ({truncation}) must divide steps ({steps})")

    def segment(th, inn):
        new, losses = unroll(th, task, inn, truncation)
        return meta_objective(losses, kind=kind, min_loss=min_loss, max_loss=max_loss), new

    total, values = torch.zeros_like(theta), []
    for _ in range(steps // truncation):
        (g, (value, inner)) = grad_and_value(segment, has_aux=True)(theta, inner)
        inner = tree_map(torch.detach, inner)
        total, values = total + g, [*values, value.detach()]
    return total / len(values), inner, torch.stack(values)


def es_generation(
    es: OpenAIESState, fn: PopulationFn, inner, generator: torch.Generator
) -> tuple[OpenAIESState, Tensor]:
    """One OpenAI-ES generation: ask P members, unroll each from ``inner``, tell the meta-losses.
    Returns the new ES state and the losses ``(P,)``."""
    x = openai_es_ask(es, generator=generator)
    _, losses = fn(x, replicate(inner, x.shape[0]))
    return openai_es_tell(es, x, losses), losses


def pes_generation(
    es: OpenAIESState, pes: PESState, fn: PopulationFn, generator: torch.Generator
) -> tuple[OpenAIESState, PESState, Tensor]:
    """One PES truncation from the particles ``pes``; the ES state takes the step as if its
    population were θ ± σξ_k, so `openai_es_tell` (raw differences) applies −ĝ with Adam.
    θ moves between truncations (online PES, as Vicol et al. train): the estimate is unbiased
    for a θ held fixed over the unroll, and nearly so while the steps are small."""
    if es.shaping != "none":
        raise ValueError(f"PES needs raw fitness differences (shaping 'none'), got {es.shaping!r}")
    theta, sigma = es.center, float(es.sigma)
    eps = torch.randn(pes.xi.shape, generator=generator, dtype=theta.dtype)
    _, pes, losses = pes_grad(theta, pes, fn, eps, sigma)
    return openai_es_tell(es, population(theta, pes.xi, sigma), losses), pes, losses
