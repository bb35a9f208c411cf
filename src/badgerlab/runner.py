"""Execute one experiment into a run folder, or reproduce many and write the report."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from badgerlab import ddp
from badgerlab.experiment import SCALES, ConfigError, Experiment, build_config
from badgerlab.experiments import get, registry
from badgerlab.runs import Run, RunError, RunRecord, atomic_write_text

__all__ = ["execute", "reproduce"]


def _config(
    exp: Experiment,
    *,
    scale: str | None,
    overrides: dict[str, Any],
    resume: str | Path | None,
    config_file: str | Path | None,
) -> Any:
    if resume is not None:
        given = [
            flag
            for flag, value in (
                ("--set", overrides),
                ("--scale", scale),
                ("--config", config_file),
            )
            if value
        ]
        if given:
            raise ConfigError(f"--resume continues the stored config; drop {', '.join(given)}")
        stored = Run.open(resume)
        if stored.experiment != exp.name:
            raise RunError(f"{str(resume)!r} is a run of {stored.experiment!r}, not {exp.name!r}")
        stored_scale = stored.config.get("scale", "quick")
        if stored_scale not in SCALES:
            raise RunError(f"{str(resume)!r} records an unknown scale {stored_scale!r}")
        cfg = build_config(exp.Config, {}, stored.config, scale=stored_scale)
        exp.check_device(cfg.device)
        return cfg
    if config_file is not None:
        base = _read_config_file(config_file, exp)
        if scale is not None and base.get("scale", scale) != scale:
            raise ConfigError(
                f"--scale {scale} contradicts the scale {base.get('scale')!r} of --config; "
                "drop one"
            )
        cfg = build_config(exp.Config, base, overrides, scale=base.get("scale", scale or "quick"))
        exp.check_device(cfg.device)
        return cfg
    return exp.config(scale or "quick", overrides)


def execute(
    name: str,
    *,
    scale: str | None = None,
    overrides: dict[str, Any] | None = None,
    out: str | Path = "runs",
    resume: str | Path | None = None,
    config_file: str | Path | None = None,
    quiet: bool = True,
    variant: str | None = None,
    download: bool = False,
) -> RunRecord:
    """Validate the config, open (or resume) a Run, run the experiment and read the run back.

    With `resume`, the stored config is used as is (`overrides`, `scale` and `config_file` are
    refused: a resumed run must continue the same computation). With `config_file` (a run's
    `config.json`), its config is the base and `overrides` apply on top. `variant` names a
    paper-data variant: its run folder is `<out>/<name>--<variant>/`. `download` lets the
    experiment fetch missing datasets (`run.download`). Everything that can be checked is
    checked before a run folder is made.
    """
    exp = get(name)
    cfg = _config(
        exp, scale=scale, overrides=dict(overrides or {}), resume=resume, config_file=config_file
    )
    if getattr(cfg, "tensorboard", False):
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise ConfigError("tensorboard=true needs the tensorboard package")
    if resume is not None:
        open_run = lambda: Run.resume(resume, quiet=quiet)  # noqa: E731
    else:
        open_run = lambda: Run.create(  # noqa: E731
            exp.name, cfg.model_dump(mode="json"), out=out, quiet=quiet, variant=variant
        )
    torch.set_num_threads(cfg.threads)
    if ddp.launched():  # under torchrun: one process per rank, rank 0 writes
        ddp.init_from_env(cfg.device)
    run = ddp.main_run(open_run)
    run.download = download
    try:
        claims = exp.execute(cfg, run)
        run.finish(claims)
    except BaseException as err:
        run.fail(f"{type(err).__name__}: {err}")
        raise
    ddp.barrier()
    return Run.open(run.dir)


def _read_config_file(path: str | Path, exp: Experiment) -> dict[str, Any]:
    try:
        meta = json.loads(Path(path).read_bytes())
    except (OSError, ValueError) as err:
        raise ConfigError(f"--config {str(path)!r} is unreadable: {err}") from None
    cfg = meta.get("config", meta) if isinstance(meta, dict) else None
    if not isinstance(cfg, dict):
        raise ConfigError(f"--config {str(path)!r} holds no config object")
    if isinstance(meta, dict) and meta.get("experiment") not in (None, exp.name):
        raise ConfigError(f"--config {str(path)!r} belongs to experiment {meta['experiment']!r}")
    return cfg


def _jobs(exp: Experiment, skipped: list[dict[str, str]]) -> list[tuple[str | None, dict]]:
    from badgerlab.data import available

    jobs: list[tuple[str | None, dict]] = [(None, {})]
    for v in exp.variants:
        missing = [d for d in v.datasets if not available(d)]
        if not missing:
            jobs.append((v.name, dict(v.overrides)))
            continue
        fetch = " && ".join(f"badgerlab datasets --download {d}" for d in missing)
        skipped.append(
            {
                "experiment": exp.name,
                "variant": v.name,
                "missing": ", ".join(missing),
                "command": f"{fetch} && badgerlab reproduce --only {exp.name}",
            }
        )
    return jobs


def reproduce(
    *,
    only: Sequence[str] | None = None,
    scale: str = "quick",
    out: str | Path = "runs",
    quiet: bool = False,
    console: Any = None,
) -> tuple[Path, list[str]]:
    """Run the named experiments (default: all) at `scale`, then their paper-data variants whose
    data is present; write the report. Returns the path of report.md and the labels of the runs
    that crashed: a crash is listed in the report and the other experiments still run."""
    from badgerlab.report import check_output_root, write_report

    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; expected one of {', '.join(SCALES)}")
    exps = [get(n) for n in (list(only) if only else sorted(registry()))]  # names first
    check_output_root(Path(out), create=True)
    skipped: list[dict[str, str]] = []
    crashed: list[dict[str, str]] = []
    for exp in exps:
        for variant, overrides in _jobs(exp, skipped):
            label = exp.name if variant is None else f"{exp.name}--{variant}"
            if console is not None:
                console.rule(f"{label} ({scale})")
            t0 = time.time()
            try:
                execute(
                    exp.name, scale=scale, overrides=overrides, out=out, quiet=quiet,
                    variant=variant,
                )  # fmt: skip
            except Exception as err:  # noqa: BLE001 - one crash must not stop the others
                crashed.append({"run": label, "error": f"{type(err).__name__}: {err}"})
                if console is not None:
                    console.print(f"[red]{label} crashed: {type(err).__name__}: {err}[/red]")
            else:
                if console is not None:
                    console.print(f"{label} finished in {time.time() - t0:.0f} s")
    atomic_write_text(Path(out) / "skipped.json", json.dumps(skipped, indent=1))
    atomic_write_text(Path(out) / "crashed.json", json.dumps(crashed, indent=1))
    return write_report(out), [c["run"] for c in crashed]
