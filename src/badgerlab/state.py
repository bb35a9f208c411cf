"""Checkpointable state: one tree format for optimiser, ES and training states, and its protocol.

A *state tree* is any nesting of dicts (str or int keys), lists, tuples, NamedTuples, tensors,
`torch.Generator`s and plain JSON values (None, bool, int, float, str). `flatten` splits it into
a flat `{name: tensor}` dict (safetensors-ready) and a JSON skeleton that remembers every
container's type and every dict's key order; `unflatten` rebuilds the same tree. Key order is
kept explicitly because safetensors returns tensors sorted by name, and a reduction that
iterates a dict in load order would otherwise round differently after a resume.

Objects that are not trees implement `Stateful` (`state_dict()` returns a tree,
`load_state(tree)` restores it in place). `torch.nn.Module.state_dict()` and
`torch.optim.Optimizer.state_dict()` already return trees (int keys included), so a unit's
state is usually just `{"model": model.state_dict(), "opt": opt.state_dict(), "g": generator}`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = ["StateError", "Stateful", "flatten", "unflatten"]


class StateError(ValueError):
    """A saved state does not match the tree format (missing tensor, unknown node)."""


@runtime_checkable
class Stateful(Protocol):
    """Anything whose state is saved as a tree and restored in place."""

    def state_dict(self) -> Any: ...

    def load_state(self, state: Any) -> None: ...


def _is_namedtuple(obj: Any) -> bool:
    return isinstance(obj, tuple) and hasattr(obj, "_fields")


def flatten(tree: Any, prefix: str = "") -> tuple[dict[str, Tensor], Any]:
    """Split `tree` into `(tensors, skeleton)`; tensors are detached contiguous CPU clones.

    >>> t, s = flatten({"w": torch.ones(2), "step": 3, "hist": [0.5, None]})
    >>> sorted(t), unflatten(t, s)["step"]
    (['w'], 3)
    """
    tensors: dict[str, Tensor] = {}
    skeleton = _flatten(tree, prefix, tensors)
    return tensors, skeleton


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _fresh(path: str, tensors: Mapping[str, Tensor]) -> str:
    # Keys may contain dots, so two paths can spell the same name: the skeleton keeps the real
    # name, and a clash just gets a suffix.
    name, n = path or "_", 1
    while name in tensors:
        n += 1
        name = f"{path or '_'}#{n}"
    return name


def _flatten(obj: Any, path: str, tensors: dict[str, Tensor]) -> Any:
    if isinstance(obj, Tensor):
        name = _fresh(path, tensors)
        tensors[name] = obj.detach().cpu().clone().contiguous()
        return {"__tensor__": name}
    if isinstance(obj, torch.Generator):
        name = _fresh(path, tensors)
        tensors[name] = obj.get_state().clone()
        return {"__generator__": name, "device": str(obj.device)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if _is_namedtuple(obj):
        cls = type(obj)
        pairs = zip(obj._fields, obj, strict=True)
        fields = [_flatten(v, _join(path, n), tensors) for n, v in pairs]
        return {"__namedtuple__": f"{cls.__module__}:{cls.__qualname__}", "fields": fields}
    if isinstance(obj, (list, tuple)):
        items = [_flatten(v, _join(path, i), tensors) for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if isinstance(obj, Mapping):
        items = []
        for k, v in obj.items():
            if isinstance(k, bool) or not isinstance(k, (str, int)):
                raise TypeError(f"state key {k!r} at {path or 'root'!r} must be a str or int")
            items.append([k, _flatten(v, _join(path, k), tensors)])
        return {"__dict__": items}
    raise TypeError(
        f"state at {path or 'root'!r} has type {type(obj).__name__}; a state tree holds dicts, "
        "lists, tuples, NamedTuples, tensors, torch.Generators and plain JSON values"
    )


def unflatten(tensors: Mapping[str, Tensor], skeleton: Any) -> Any:
    """Rebuild the tree saved by `flatten`; raises `StateError` when a piece is missing."""
    if skeleton is None or isinstance(skeleton, (bool, int, float, str)):
        return skeleton
    if isinstance(skeleton, list):
        return [unflatten(tensors, s) for s in skeleton]
    if not isinstance(skeleton, dict):
        raise StateError(f"state skeleton node of type {type(skeleton).__name__} is unknown")
    if "__tensor__" in skeleton:
        return _tensor(tensors, skeleton["__tensor__"]).clone()
    if "__generator__" in skeleton:
        g = torch.Generator(device=skeleton.get("device", "cpu"))
        g.set_state(_tensor(tensors, skeleton["__generator__"]).clone())
        return g
    if "__tuple__" in skeleton:
        return tuple(unflatten(tensors, s) for s in skeleton["__tuple__"])
    if "__namedtuple__" in skeleton:
        cls = _import(skeleton["__namedtuple__"])
        return cls(*(unflatten(tensors, s) for s in skeleton["fields"]))
    if "__dict__" in skeleton:
        return {k: unflatten(tensors, v) for k, v in skeleton["__dict__"]}
    raise StateError(f"state skeleton node with keys {sorted(skeleton)} is unknown")


def _tensor(tensors: Mapping[str, Tensor], name: Any) -> Tensor:
    if not isinstance(name, str) or name not in tensors:
        raise StateError(f"the saved tensors lack {name!r}")
    return tensors[name]


def _import(path: Any) -> Any:
    if not isinstance(path, str) or ":" not in path or not path.startswith("badgerlab."):
        # Only our own NamedTuple classes are rebuilt: a checkpoint never names code to import.
        raise StateError(f"state names the class {path!r}, which is not a badgerlab NamedTuple")
    module, _, qual = path.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in qual.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise StateError(f"state names the class {path!r}, which does not exist: {err}") from None
    if not (isinstance(obj, type) and issubclass(obj, tuple) and hasattr(obj, "_fields")):
        raise StateError(f"state names {path!r}, which is not a NamedTuple class")
    return obj
