"""Run records: the run folder, metrics, plots, atomic checkpoints, resume, and claims."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from badgerlab.errors import UserError

__all__ = [
    "OPS",
    "STATUSES",
    "Checkpoint",
    "Claim",
    "Run",
    "RunError",
    "RunRecord",
    "atomic_write_bytes",
    "atomic_write_text",
    "evaluate_claims",
]

OPS = (">", ">=", "<", "<=", "info")
STATUSES = ("pass", "fail", "info", "error")


class RunError(UserError):
    """A run folder is missing, unreadable or not resumable."""


# ---------------------------------------------------------------------------------------------
# atomic files


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, then `os.replace` it in."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.item() if obj.numel() == 1 else obj.tolist()
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _dumps(obj: Any, **kw: Any) -> str:
    return json.dumps(obj, default=_json_default, allow_nan=True, **kw)


# ---------------------------------------------------------------------------------------------
# claims


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass
class Claim:
    """One checkable statement of a paper, with what this run measured.

    `threshold` is a number or `{"ref": "<claim id>"}` (compared with that claim's `measured`);
    `status` is filled by `evaluate_claims`: `pass | fail | info | error`. A claim whose
    measurement is missing or not finite is `error`, never dropped.
    """

    id: str
    statement: str
    paper: str | float | None
    measured: float | None
    std: float | None = None
    n_seeds: int = 0
    op: str = "info"
    threshold: float | dict[str, str] | None = None
    status: str = "error"
    note: str = ""

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"claim {self.id!r}: op must be one of {OPS}, got {self.op!r}")
        if self.op != "info" and self.threshold is None:
            raise ValueError(f"claim {self.id!r}: op {self.op!r} needs a threshold")
        if isinstance(self.threshold, dict) and set(self.threshold) != {"ref"}:
            raise ValueError(f"claim {self.id!r}: threshold dict must be {{'ref': id}}")

    @classmethod
    def measure(
        cls,
        id: str,
        statement: str,
        values: Sequence[float] | float | None,
        *,
        paper: str | float | None = None,
        op: str = "info",
        threshold: float | dict[str, str] | None = None,
        note: str = "",
    ) -> Claim:
        """A claim from per-seed values: mean, sample std (0 for one seed) and their count.

        >>> c = Claim.measure("acc", "accuracy above chance", [0.8, 0.9], op=">", threshold=0.5)
        >>> round(c.measured, 3), round(c.std, 4), c.n_seeds
        (0.85, 0.0707, 2)
        """
        if values is None:
            vals: list[float] = []
        elif isinstance(values, (int, float)):
            vals = [float(values)]
        else:
            vals = [float(v) for v in values]
        if not vals or not all(math.isfinite(v) for v in vals):
            mean, std = None, None
        else:
            t = torch.tensor(vals, dtype=torch.float64)
            mean = float(t.mean())
            std = float(t.std()) if len(vals) > 1 else 0.0
        return cls(id, statement, paper, mean, std, len(vals), op, threshold, "error", note)


def _compare(a: float, op: str, b: float) -> bool:
    return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op]


def evaluate_claims(claims: Sequence[Claim]) -> list[Claim]:
    """Fill each claim's status, resolving `{"ref": id}` thresholds against the other claims."""
    by_id = {c.id: c for c in claims}
    if len(by_id) != len(claims):
        raise ValueError("claim ids must be unique")
    out = []
    for c in claims:
        c = Claim(**asdict(c))
        if not _finite(c.measured):
            c.status, c.measured = "error", None
        elif c.op == "info":
            c.status = "info"
        else:
            thr = c.threshold
            if isinstance(thr, dict):
                ref = by_id.get(thr["ref"])
                thr = ref.measured if ref is not None else None
            if not _finite(thr):
                c.status = "error"
                c.note = (c.note + "; " if c.note else "") + "threshold has no measured value"
            else:
                c.status = "pass" if _compare(c.measured, c.op, thr) else "fail"
        out.append(c)
    return out


# ---------------------------------------------------------------------------------------------
# run folders


def _utc_stamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, str]:
    from badgerlab import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "badgerlab": __version__,
    }


@dataclass
class Checkpoint:
    """The newest checkpoint of a run: tensors (safetensors) and a JSON state."""

    step: int
    tensors: dict[str, torch.Tensor]
    state: dict[str, Any]


@dataclass
class RunRecord:
    """A run folder read back: config, metrics, summary (None if unfinished), newest checkpoint."""

    dir: Path
    experiment: str
    config: dict[str, Any]
    meta: dict[str, Any]
    metrics: list[dict[str, Any]]
    summary: dict[str, Any] | None
    checkpoint: Checkpoint | None = None

    @property
    def finished(self) -> bool:
        return self.summary is not None and self.summary.get("status") == "finished"

    @property
    def claims(self) -> list[dict[str, Any]]:
        return list((self.summary or {}).get("claims", []))


def _read_metrics(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Complete metric lines, and the byte length they occupy (a partial last line is dropped)."""
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    rows, good = [], 0
    for line in data.split(b"\n")[:-1] if data else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
        good += len(line) + 1
    return rows, good


class _NullProgress:
    def update(self, advance: float = 1, **fields: Any) -> None:
        pass


class _RichProgress:
    def __init__(self, progress: Any, task: Any) -> None:
        self._progress, self._task = progress, task

    def update(self, advance: float = 1, **fields: Any) -> None:
        text = "  ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items()
        )
        self._progress.update(self._task, advance=advance, info=text)


class Run:
    """An open run folder. Create with `Run.create`, continue with `Run.resume`.

    Layout: `config.json`, `metrics.jsonl` (one flushed line per `log`), `summary.json`, PNG
    plots, `checkpoints/` (`ckpt.safetensors` + `ckpt.json`, each written to a temporary file
    and renamed, JSON last, so the pair on disk is always complete).
    """

    def __init__(self, dir: Path, meta: dict[str, Any], *, quiet: bool, resumed: bool) -> None:
        self.dir = Path(dir)
        self.meta = meta
        self.experiment = meta["experiment"]
        self.config = meta["config"]
        self.quiet = quiet
        self.resumed = resumed
        self.started = time.time()
        self._metrics = open(self.dir / "metrics.jsonl", "ab")  # noqa: SIM115
        self._plots: list[str] = sorted(p.name for p in self.dir.glob("*.png"))
        self._tb = None
        if self.config.get("tensorboard"):
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise RunError("tensorboard=true needs the tensorboard package") from err
            self._tb = SummaryWriter(str(self.dir / "tensorboard"))

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        experiment: str,
        config: Mapping[str, Any],
        *,
        out: str | Path = "runs",
        quiet: bool = False,
        variant: str | None = None,
    ) -> Run:
        """A new folder `<out>/<experiment>[--<variant>]/<UTC stamp>-s<seed>/` with its
        `config.json`."""
        root = Path(out) / (experiment if variant is None else f"{experiment}--{variant}")
        stamp = _utc_stamp()
        seed = config.get("seed", 0)
        path = root / f"{stamp}-s{seed}"
        n = 1
        while path.exists():  # two runs within one second
            n += 1
            path = root / f"{stamp}-{n}-s{seed}"
        (path / "checkpoints").mkdir(parents=True)
        meta = {
            "experiment": experiment,
            "variant": variant,
            "config": dict(config),
            "versions": _versions(),
            "git_commit": _git_commit(),
            "created": stamp,
        }
        atomic_write_text(path / "config.json", _dumps(meta, indent=2) + "\n")
        return cls(path, meta, quiet=quiet, resumed=False)

    @staticmethod
    def _read_meta(path: Path) -> dict[str, Any]:
        path = Path(path)
        cfg = path / "config.json"
        if not path.is_dir():
            raise RunError(f"run folder {str(path)!r} does not exist")
        try:
            meta = json.loads(cfg.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise RunError(
                f"run folder {str(path)!r} has no readable config.json ({err})"
            ) from None
        if not isinstance(meta, dict) or "experiment" not in meta or "config" not in meta:
            raise RunError(f"{str(cfg)!r} is not a badgerlab run config")
        return meta

    @classmethod
    def resume(cls, path: str | Path, *, quiet: bool = False) -> Run:
        """Reopen an unfinished run: metrics are cut back to the newest checkpoint's line count,
        so lines written after it (and a half-written last line) are dropped and redone."""
        path = Path(path)
        meta = cls._read_meta(path)
        ckpt = _load_checkpoint(path)
        keep = int(ckpt.state.get("_metrics_lines", 0)) if ckpt else 0
        rows, _ = _read_metrics(path / "metrics.jsonl")
        kept = rows[:keep]
        atomic_write_text(
            path / "metrics.jsonl", "".join(_dumps(r, separators=(",", ":")) + "\n" for r in kept)
        )
        with contextlib.suppress(FileNotFoundError):
            (path / "summary.json").unlink()
        run = cls(path, meta, quiet=quiet, resumed=True)
        run._lines = len(kept)
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunRecord:
        """Read a run folder back (finished or not)."""
        path = Path(path)
        meta = cls._read_meta(path)
        rows, _ = _read_metrics(path / "metrics.jsonl")
        summary = None
        if (path / "summary.json").exists():
            try:
                summary = json.loads((path / "summary.json").read_text())
            except json.JSONDecodeError as err:
                raise RunError(f"{str(path / 'summary.json')!r} is unreadable: {err}") from None
        return RunRecord(
            path, meta["experiment"], meta["config"], meta, rows, summary, _load_checkpoint(path)
        )

    # -- writing ------------------------------------------------------------------------------

    _lines = 0

    def log(self, step: int, **metrics: Any) -> None:
        """Append one JSON line `{"step": step, **metrics}` and flush it to disk."""
        row = {"step": int(step), **metrics}
        self._metrics.write((_dumps(row, separators=(",", ":")) + "\n").encode())
        self._metrics.flush()
        os.fsync(self._metrics.fileno())
        self._lines += 1
        if self._tb is not None:
            for k, v in metrics.items():
                if _finite(v):
                    self._tb.add_scalar(k, v, int(step))

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """Every metric line written so far (including those kept from before a resume)."""
        self._metrics.flush()
        return _read_metrics(self.dir / "metrics.jsonl")[0]

    def save_checkpoint(
        self,
        step: int,
        tensors: Mapping[str, torch.Tensor] | None = None,
        state: Mapping[str, Any] | None = None,
    ) -> None:
        """Save tensors (safetensors) and a JSON-able state atomically, tensors first.

        The state also records how many metric lines exist, which `resume` restores exactly.
        Use explicit `torch.Generator`s and store `generator.get_state()` among the tensors.
        """
        ck = self.dir / "checkpoints"
        ck.mkdir(exist_ok=True)
        tens = {k: v.detach().contiguous().cpu() for k, v in (tensors or {}).items()}
        # A fresh file name every save: the JSON on disk always names a complete tensor file,
        # even when a step is saved twice and the process dies between the two writes.
        name = f"ckpt-{int(step)}-{uuid.uuid4().hex[:12]}.safetensors"
        fd, tmp = tempfile.mkstemp(dir=ck, prefix=".ckpt.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(tens, tmp)
            os.replace(tmp, ck / name)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        body = {"step": int(step), "tensors": name, "state": dict(state or {})}
        body["state"]["_metrics_lines"] = self._lines
        atomic_write_text(ck / "ckpt.json", _dumps(body))
        for old in ck.glob("ckpt-*.safetensors"):
            if old.name != name:
                with contextlib.suppress(FileNotFoundError):
                    old.unlink()

    def load_checkpoint(self) -> Checkpoint | None:
        """The newest checkpoint, or None for a fresh run."""
        return _load_checkpoint(self.dir)

    def save_figure(self, fig: Any, name: str) -> Path:
        """Save a matplotlib figure as `<name>.png` in the run folder (atomically) and close it."""
        import io

        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        path = self.dir / f"{name}.png"
        atomic_write_bytes(path, buf.getvalue())
        if path.name not in self._plots:
            self._plots.append(path.name)
        return path

    def save_json(self, name: str, obj: Any) -> Path:
        """Write an extra JSON artefact (e.g. per-example curves) into the run folder."""
        path = self.dir / f"{name}.json"
        atomic_write_text(path, _dumps(obj, indent=1))
        return path

    @contextlib.contextmanager
    def progress(
        self, total: int, description: str, *, completed: int = 0
    ) -> Iterator[_NullProgress | _RichProgress]:
        """A rich progress bar (nothing when quiet); `bar.update(advance, metric=value)`."""
        if self.quiet:
            yield _NullProgress()
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
        )
        with Progress(*columns, transient=False) as prog:
            task = prog.add_task(description, total=total, completed=completed, info="")
            yield _RichProgress(prog, task)

    def finish(self, claims: Sequence[Claim], **extra: Any) -> dict[str, Any]:
        """Evaluate the claims and write `summary.json`; returns the summary."""
        evaluated = evaluate_claims(list(claims))
        summary = {
            "experiment": self.experiment,
            "status": "finished",
            "claims": [asdict(c) for c in evaluated],
            "plots": list(self._plots),
            "elapsed_s": time.time() - self.started,
            **extra,
        }
        atomic_write_text(self.dir / "summary.json", _dumps(summary, indent=2) + "\n")
        self.close()
        return summary

    def fail(self, error: str) -> None:
        """Record a crash in `summary.json` (status `crashed`), keeping checkpoints for resume."""
        summary = {"experiment": self.experiment, "status": "crashed", "error": error}
        atomic_write_text(self.dir / "summary.json", _dumps(summary, indent=2) + "\n")
        self.close()

    def close(self) -> None:
        if not self._metrics.closed:
            self._metrics.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _load_checkpoint(path: Path) -> Checkpoint | None:
    ck = Path(path) / "checkpoints"
    meta = ck / "ckpt.json"
    if not meta.exists():
        return None
    try:
        body = json.loads(meta.read_text())
        tensors = load_file(str(ck / body["tensors"]))
    except (OSError, json.JSONDecodeError, KeyError, ValueError) as err:
        raise RunError(f"checkpoint in {str(ck)!r} is unreadable: {err}") from None
    return Checkpoint(int(body["step"]), tensors, body.get("state", {}))
