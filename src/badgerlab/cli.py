"""The `badgerlab` command: list, run, reproduce, report, datasets."""

from __future__ import annotations

import errno
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import click
import typer

try:  # typer >= 0.20 vendors its own copy of click
    from typer._click import exceptions as _tc
except ImportError:  # pragma: no cover - older typer uses click itself
    _tc = click.exceptions
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from badgerlab.errors import UserError

__all__ = ["app", "main"]

app = typer.Typer(
    name="badgerlab",
    help="Learned learning algorithms (Badger's NeurIPS 2020 picks): run and reproduce them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
# Tables of config fields need room: never narrower than 120 columns, even through a pipe.
out_console = Console(width=max(120, Console().width))

ScaleOpt = Annotated[
    str, typer.Option("--scale", help="size preset: smoke | quick | paper", show_default=True)
]
OutOpt = Annotated[Path, typer.Option("--out", help="root folder of run records")]


@app.command("list")
def list_cmd() -> None:
    """Each experiment, its paper, one line, and its quick budget in minutes."""
    from badgerlab.experiments import registry

    table = Table("experiment", "quick min", "paper", "what it shows")
    for name, exp in sorted(registry().items()):
        table.add_row(name, f"{exp.minutes.get('quick', '?')}", exp.paper, exp.description)
    out_console.print(table)


def _type_name(annotation: Any) -> str:
    """A short name for a config field's type: `int`, `list[int]`, `a | b`, `float | None`."""
    import types
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "None"
    if origin is typing.Literal:
        return " | ".join(str(a) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else _type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]"
    return getattr(annotation, "__name__", str(annotation))


def _config_help(name: str) -> None:
    from badgerlab.experiments import get

    exp = get(name)
    out_console.print(f"[bold]{exp.name}[/bold]: {exp.description}\n{exp.paper}\n")
    table = Table("key", "type", "default (quick)", "bounds", "smoke", "paper", "description")
    for key, info in exp.Config.model_fields.items():
        bounds = []
        for m in info.metadata:
            for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                if getattr(m, attr, None) is not None:
                    bounds.append(f"{sym}{getattr(m, attr)}")
            if getattr(m, "pattern", None):
                bounds.append(f"~{m.pattern}")
        table.add_row(
            key,
            escape(_type_name(info.annotation)),
            escape(repr(info.get_default(call_default_factory=True))),
            " ".join(bounds),
            *(
                escape(repr(exp.scales[s][key])) if key in exp.scales.get(s, {}) else ""
                for s in ("smoke", "paper")
            ),
            info.description or "",
        )
    out_console.print(table)
    out_console.print("Override any key with --set key=value (value parsed as JSON).")


@app.command(
    "run", context_settings={"help_option_names": []}, no_args_is_help=False, add_help_option=False
)
def run_cmd(
    ctx: typer.Context,
    name: Annotated[
        str | None, typer.Argument(help="experiment name (see `badgerlab list`)")
    ] = None,
    scale: Annotated[
        str | None, typer.Option("--scale", help="size preset: smoke | quick (default) | paper")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override a config key: key=value")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="first random seed")] = None,
    out: OutOpt = Path("runs"),
    resume: Annotated[
        Path | None, typer.Option("--resume", help="continue this run folder from its checkpoint")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="start from a run's config.json")
    ] = None,
    download: Annotated[
        bool, typer.Option("--download", help="fetch missing datasets into the cache")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bars")] = False,
    help_: Annotated[
        bool, typer.Option("--help", "-h", help="show this help, or an experiment's config")
    ] = False,
) -> None:
    """Run one experiment; `badgerlab run NAME --help` lists its config fields."""
    from badgerlab.experiment import parse_overrides
    from badgerlab.runner import execute

    if help_ or name is None:
        if name is None:
            typer.echo(ctx.get_help())
            if not help_:
                raise UserError("missing experiment NAME (see `badgerlab list`)")
            return
        _config_help(name)
        return
    overrides = parse_overrides(set_ or [])
    if seed is not None:
        overrides["seed"] = seed
    record = execute(
        name,
        scale=scale,
        overrides=overrides,
        out=out,
        resume=resume,
        config_file=config,
        quiet=quiet,
        download=download,
    )
    from badgerlab import ddp

    if ddp.is_main():
        _print_claims(record.dir, record.claims)
    ddp.cleanup()


def _print_claims(run_dir: Path, claims: list[dict[str, Any]]) -> None:
    from badgerlab.report import format_measured, format_threshold

    table = Table("claim", "measured", "op", "threshold", "status")
    colours = {
        "pass": "green",
        "fail": "red",
        "error": "red",
        "info": "cyan",
        "inconclusive": "yellow",
        "smoke": "magenta",
    }
    for c in claims:
        table.add_row(
            c["id"],
            format_measured(c),
            c["op"],
            format_threshold(c),
            f"[{colours.get(c['status'], 'white')}]{c['status']}[/]",
        )
    out_console.print(table)
    out_console.print(f"run folder: {run_dir}")


@app.command("reproduce")
def reproduce_cmd(
    only: Annotated[
        list[str] | None, typer.Option("--only", help="run only these experiments")
    ] = None,
    scale: ScaleOpt = "quick",
    out: OutOpt = Path("runs"),
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bars")] = False,
) -> None:
    """Run every experiment (or those named), its paper-data variants when their data is
    present, then write the report; exits 1 if any run crashed."""
    from badgerlab.runner import reproduce

    path, crashed = reproduce(
        only=only or None, scale=scale, out=out, quiet=quiet, console=out_console
    )
    out_console.print(f"report: {path}")
    typer.echo(str(path.resolve()))
    if crashed:
        print(f"crashed: {', '.join(crashed)} (see the report)", file=sys.stderr)
        raise typer.Exit(1)


@app.command("report")
def report_cmd(
    runs_dir: Annotated[Path, typer.Argument(help="root folder of run records")] = Path("runs"),
) -> None:
    """Write report.md and a self-contained report.html from the newest finished runs.

    Run folders whose summary.json is malformed are listed in the report as unreadable, and
    the command then exits 2 naming the first of them, so a script notices.
    """
    from badgerlab.report import scan_runs, write_report
    from badgerlab.runs import RunError

    path = write_report(runs_dir)
    typer.echo(str(path.resolve()))
    _, unreadable = scan_runs(runs_dir)
    if unreadable:
        first, why = unreadable[0]
        raise RunError(
            f"{len(unreadable)} run folder(s) unreadable, left out of the report (listed in "
            f"it): {str(first)!r}: {why}"
        )


@app.command("datasets")
def datasets_cmd(
    download: Annotated[
        list[str] | None, typer.Option("--download", help="fetch this dataset into the cache")
    ] = None,
) -> None:
    """Each known dataset and where it was found, or that it must be downloaded."""
    from badgerlab import data

    for name in download or []:
        data.registry.info_for(name)
        _fetch_with_bar(name)
    from badgerlab.data.download import SOURCES

    table = Table("dataset", "kind", "found", "where", "checksum", "description")
    for name, info in sorted(data.DATASETS.items()):
        where = data.locate(name)
        if where is None:
            found, path = "no", f"badgerlab datasets --download {name}"
        elif where[0] == "bundled":
            found, path = "bundled", "ships with an installed package"
        else:
            found, path = where[0], str(where[1])
        src = SOURCES.get(name)
        check = "" if src is None else ("verified" if src.verified else "unverified")
        table.add_row(name, info.kind, found, path, check, info.description)
    out_console.print(table)


def _fetch_with_bar(name: str) -> None:
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    from badgerlab.data import cache_dir
    from badgerlab.data.download import fetch

    with Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn()) as p:
        tasks: dict[str, Any] = {}

        def progress(file: str, done: int, total: int | None) -> None:
            if file not in tasks:
                tasks[file] = p.add_task(file, total=total)
            p.update(tasks[file], completed=done, total=total)

        fetch(name, cache=cache_dir(), progress=progress)


def _resume_hint(argv: list[str] | None) -> str:
    """The command that continues the newest run folder this process opened."""
    from badgerlab.runs import Run

    opened = Run.last_opened()
    args = list(sys.argv[1:] if argv is None else argv)
    if opened is None or len(args) < 2 or args[0] != "run":
        return "nothing was checkpointed yet" if opened is None else f"run folder {opened}"
    return f"continue with: badgerlab run {args[1]} --resume {opened}"


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors give one line on stderr and exit 2; crashes exit 1."""
    usage = (click.UsageError, _tc.UsageError, click.ClickException, _tc.ClickException)
    try:
        # Without standalone mode click returns an Exit's code instead of raising it.
        code = app(args=argv, standalone_mode=False, prog_name="badgerlab")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (click.exceptions.NoArgsIsHelpError, _tc.NoArgsIsHelpError) as err:
        if err.ctx is not None:
            print(err.ctx.get_help())
        return 0
    except usage as err:
        print(f"error: {err.format_message()}".replace("\n", " "), file=sys.stderr)
        return 2
    except (click.exceptions.Abort, typer.Abort) as err:
        # click turns both Ctrl-C and a stray EOFError into Abort; only the first is the user's
        if isinstance(err.__cause__, EOFError):
            traceback.print_exception(err.__cause__)
            return 1
        print(f"interrupted: {_resume_hint(argv)}", file=sys.stderr)
        return 130
    except (click.exceptions.Exit, typer.Exit) as err:
        return int(err.exit_code)
    except KeyboardInterrupt:
        print(f"interrupted: {_resume_hint(argv)}", file=sys.stderr)
        return 130
    except OSError as err:
        if err.errno != errno.ENOSPC:
            traceback.print_exc()
            return 1
        from badgerlab.runs import Run

        where = err.filename or Run.last_opened() or "the run folder"
        print(f"error: no space left on device writing {where}; {_resume_hint(argv)}",
              file=sys.stderr)  # fmt: skip
        return 1
    except Exception:  # noqa: BLE001 - a crash: show the traceback, exit 1
        traceback.print_exc()
        return 1
    if code == 130:  # typer turns Ctrl-C into Exit(130) and, unless standalone, returns it
        print(f"interrupted: {_resume_hint(argv)}", file=sys.stderr)
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
