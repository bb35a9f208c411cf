"""Paper experiments, one module each, found automatically; `execute` runs one into a Run."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from pathlib import Path
from typing import Any

import torch

from badgerlab import distributed
from badgerlab.errors import UserError
from badgerlab.experiment import ConfigError, Experiment, build_config
from badgerlab.runs import Run, RunError, RunRecord

__all__ = ["ExperimentError", "execute", "get", "registry"]


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


def execute(
    name: str,
    *,
    scale: str = "quick",
    overrides: dict[str, Any] | None = None,
    out: str | Path = "runs",
    resume: str | Path | None = None,
    config_file: str | Path | None = None,
    quiet: bool = True,
    variant: str | None = None,
) -> RunRecord:
    """Validate the config, open (or resume) a Run, run the experiment and read the run back.

    With `resume`, the stored config is used as is (overrides are refused: a resumed run must
    continue the same computation). With `config_file` (a run's `config.json`), its config is
    the base and `overrides` apply on top. `variant` names a paper-data variant: its run folder
    is `<out>/<name>--<variant>/`.
    """
    exp = get(name)
    if resume is not None:
        if overrides:
            raise ConfigError("--resume continues the stored config; drop the --set overrides")
        stored = Run.open(resume)
        if stored.experiment != exp.name:
            raise RunError(f"{str(resume)!r} is a run of {stored.experiment!r}, not {exp.name!r}")
        stored_scale = stored.config.get("scale", "quick")
        cfg = build_config(exp.Config, {}, stored.config, scale=stored_scale)
        open_run = lambda: Run.resume(resume, quiet=quiet)  # noqa: E731
    else:
        if config_file is not None:
            base = _read_config_file(config_file, exp)
            scale = base.get("scale", scale)
            cfg = build_config(exp.Config, base, overrides or {}, scale=scale)
        else:
            cfg = exp.config(scale, overrides)
        open_run = lambda: Run.create(  # noqa: E731
            exp.name, cfg.model_dump(mode="json"), out=out, quiet=quiet, variant=variant
        )
    torch.set_num_threads(cfg.threads)
    if distributed.launched():  # under torchrun: one process per rank, rank 0 writes
        distributed.init_from_env(cfg.device)
    run = distributed.main_run(open_run)
    try:
        claims = exp.run(cfg, run)
        run.finish(list(claims or []))
    except BaseException as err:
        run.fail(f"{type(err).__name__}: {err}")
        raise
    distributed.barrier()
    return Run.open(run.dir)


def _read_config_file(path: str | Path, exp: Experiment) -> dict[str, Any]:
    import json

    try:
        meta = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"--config {str(path)!r} is unreadable: {err}") from None
    cfg = meta.get("config", meta) if isinstance(meta, dict) else None
    if not isinstance(cfg, dict):
        raise ConfigError(f"--config {str(path)!r} holds no config object")
    if isinstance(meta, dict) and meta.get("experiment") not in (None, exp.name):
        raise ConfigError(f"--config {str(path)!r} belongs to experiment {meta['experiment']!r}")
    return cfg
