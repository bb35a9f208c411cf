"""Paper experiments, one module each, found automatically (`badgerlab.runner` runs them)."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from badgerlab.errors import UserError
from badgerlab.experiment import Experiment

__all__ = ["ExperimentError", "get", "registry"]


class ExperimentError(UserError):
    """Unknown experiment name."""


@cache
def registry() -> dict[str, Experiment]:
    """Every `EXPERIMENT` defined by a module of this package, by name."""
    found: dict[str, Experiment] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        exp = getattr(module, "EXPERIMENT", None)
        if not isinstance(exp, Experiment):
            continue
        if exp.name in found:
            raise RuntimeError(f"two experiments are named {exp.name!r}")
        found[exp.name] = exp
    return found


def get(name: str) -> Experiment:
    exps = registry()
    if name not in exps:
        raise ExperimentError(f"unknown experiment {name!r}; known: {', '.join(sorted(exps))}")
    return exps[name]
