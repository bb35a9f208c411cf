"""ES registry and exact save/restore of functional ES state (tensors + JSON)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor

from badgerlab.registry import Registry

__all__ = [
    "ES",
    "EvolutionStrategy",
    "available_es",
    "get_es",
    "load_state",
    "register_es",
    "state_dict",
    "state_meta",
]

GENERATOR_KEY = "generator"


@dataclass(frozen=True)
class EvolutionStrategy:
    """One ES algorithm as four pure functions over a NamedTuple state.

    Every registered algorithm has the same signature:

    - ``init(center (D,), *, popsize, maximize=False, **options) -> state``
    - ``ask(state, *, generator) -> x (P, D)``
    - ``tell(state, x (P, D), fitness (P,)) -> state``
    - ``center(state) -> (D,)``: the current mean (the solution to report).

    ``resumable`` says whether ``state_dict``/``load_state`` restore the run bit for bit; the CLI
    warns when resuming an algorithm where it is False.
    """

    name: str
    init: Callable[..., Any]
    ask: Callable[..., Tensor]
    tell: Callable[..., Any]
    center: Callable[[Any], Tensor]
    resumable: bool = True
    description: str = field(default="", compare=False)


ES: Registry[EvolutionStrategy] = Registry("es")


def register_es(es: EvolutionStrategy, *, overwrite: bool = False) -> EvolutionStrategy:
    """Add ``es`` to the registry under ``es.name`` and return it."""
    if not isinstance(es, EvolutionStrategy):
        raise TypeError(f"es must be an EvolutionStrategy, got {type(es).__name__}")
    return ES.register(es.name, es, overwrite=overwrite)


def get_es(name: str) -> EvolutionStrategy:
    """The registered algorithm called ``name`` (see ``available_es()``)."""
    return ES.get(name)


def available_es() -> list[str]:
    """Names of every registered algorithm, sorted."""
    return ES.names()


def _is_namedtuple(obj: Any) -> bool:
    return isinstance(obj, tuple) and hasattr(obj, "_fields")


def _walk(obj: Any, prefix: str, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    if isinstance(obj, Tensor):
        tensors[prefix] = obj
    elif _is_namedtuple(obj):
        for name, value in zip(obj._fields, obj, strict=True):
            _walk(value, f"{prefix}.{name}" if prefix else name, tensors, meta)
    elif isinstance(obj, tuple):
        for i, value in enumerate(obj):
            _walk(value, f"{prefix}.{i}" if prefix else str(i), tensors, meta)
    elif obj is None or isinstance(obj, (bool, int, float, str)):
        meta[prefix] = obj
    else:
        raise TypeError(
            f"state field {prefix!r} has type {type(obj).__name__}; an ES state holds only "
            "tensors, NamedTuples/tuples of them and plain bool/int/float/str/None values"
        )


def state_dict(
    state: NamedTuple, *, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """Every tensor of ``state`` under a dotted key, cloned to CPU (safetensors-ready).

    With ``generator``, its state is stored under ``"generator"`` too, so sampling resumes
    exactly. Plain hyper-parameters are not included: see ``state_meta``.
    """
    tensors: dict[str, Tensor] = {}
    _walk(state, "", tensors, {})
    # Clones: safetensors refuses tensors that share storage, and the checkpoint must not
    # alias a state that keeps evolving.
    out = {k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}
    if GENERATOR_KEY in out:
        raise ValueError(f"state has a field named {GENERATOR_KEY!r}, which is reserved")
    if generator is not None:
        out[GENERATOR_KEY] = generator.get_state().clone()
    return out


def state_meta(state: NamedTuple) -> dict[str, Any]:
    """The plain (non-tensor) fields of ``state`` as a JSON-able dict, with dotted keys."""
    meta: dict[str, Any] = {}
    _walk(state, "", {}, meta)
    json.dumps(meta)  # fail here, not at save time, if something is not JSON-able
    return meta


def _rebuild(template: Any, prefix: str, tensors: Mapping[str, Tensor]) -> Any:
    if isinstance(template, Tensor):
        if prefix not in tensors:
            raise ValueError(f"tensors lacks the state field {prefix!r}")
        value = tensors[prefix]
        if value.shape != template.shape or value.dtype != template.dtype:
            raise ValueError(
                f"state field {prefix!r} has shape {tuple(value.shape)} and dtype {value.dtype}, "
                f"expected {tuple(template.shape)} and {template.dtype}"
            )
        return value.to(template.device).clone()
    if _is_namedtuple(template):
        return type(template)(
            *(
                _rebuild(v, f"{prefix}.{n}" if prefix else n, tensors)
                for n, v in zip(template._fields, template, strict=True)
            )
        )
    if isinstance(template, tuple):
        return tuple(
            _rebuild(v, f"{prefix}.{i}" if prefix else str(i), tensors)
            for i, v in enumerate(template)
        )
    return template


def load_state(
    template: NamedTuple,
    tensors: Mapping[str, Tensor],
    *,
    meta: Mapping[str, Any] | None = None,
    generator: torch.Generator | None = None,
) -> Any:
    """Restore a state saved with ``state_dict``.

    ``template`` is a state built by ``init`` with the same configuration (it gives the
    structure, dtypes, devices and plain hyper-parameters); its tensors are replaced by those in
    ``tensors``. With ``meta`` (from ``state_meta``), the plain fields must match the template's,
    so resuming under a changed configuration fails loudly. With ``generator``, the saved
    generator state is restored into it in place.
    """
    if meta is not None:
        own = json.loads(json.dumps(state_meta(template)))
        saved = json.loads(json.dumps(dict(meta)))
        if own != saved:
            diff = sorted(k for k in own.keys() | saved.keys() if own.get(k) != saved.get(k))
            raise ValueError(f"saved ES state differs from the template in fields {diff}")
    state = _rebuild(template, "", tensors)
    if generator is not None:
        if GENERATOR_KEY not in tensors:
            raise ValueError("tensors holds no generator state; save with state_dict(generator=)")
        generator.set_state(tensors[GENERATOR_KEY].clone())
    return state


def check_center(center: Any) -> Tensor:
    """Validate an initial mean: a finite floating tensor of shape (D,)."""
    if not isinstance(center, Tensor):
        raise TypeError(f"center must be a torch.Tensor, got {type(center).__name__}")
    if center.ndim != 1 or center.numel() == 0:
        raise ValueError(f"center must have shape (D,) with D >= 1, got {tuple(center.shape)}")
    if not center.is_floating_point():
        raise TypeError(f"center must be a floating tensor, got dtype {center.dtype}")
    if not torch.isfinite(center).all():
        raise ValueError("center contains NaN or inf")
    return center.detach().clone()


def check_tell(x: Any, fitness: Any, *, popsize: int, dim: int) -> tuple[Tensor, Tensor]:
    """Validate ``tell``'s population ``x (P, D)`` and ``fitness (P,)``; returns them detached."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not isinstance(fitness, Tensor):
        raise TypeError(f"fitness must be a torch.Tensor, got {type(fitness).__name__}")
    if tuple(x.shape) != (popsize, dim):
        raise ValueError(f"x must have shape ({popsize}, {dim}), got {tuple(x.shape)}")
    if tuple(fitness.shape) != (popsize,):
        raise ValueError(f"fitness must have shape ({popsize},), got {tuple(fitness.shape)}")
    if not torch.isfinite(fitness).all():
        raise ValueError(f"fitness contains NaN or inf: {fitness.tolist()}")
    return x.detach(), fitness.detach().to(x.dtype)


def check_popsize(popsize: Any, *, minimum: int = 2, even: bool = False) -> int:
    """Validate a population size."""
    if isinstance(popsize, bool) or not isinstance(popsize, int):
        raise TypeError(f"popsize must be an int, got {popsize!r}")
    if popsize < minimum or (even and popsize % 2):
        kind = "an even int" if even else "an int"
        raise ValueError(f"popsize must be {kind} >= {minimum}, got {popsize}")
    return popsize
