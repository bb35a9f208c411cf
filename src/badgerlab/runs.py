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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors

from badgerlab.errors import UserError

__all__ = [
    "OPS",
    "STATUSES",
    "Checkpoint",
    "Claim",
    "FollowerRun",
    "Run",
    "RunLike",
    "RunError",
    "RunRecord",
    "Unit",
    "atomic_write_bytes",
    "atomic_write_text",
    "condition",
    "count_statuses",
    "evaluate_claims",
]

OPS = (">", ">=", "<", "<=", "info")
STATUSES = ("pass", "fail", "inconclusive", "info", "error", "smoke")


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
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.filename is None:  # e.g. ENOSPC from write()
            raise OSError(err.errno, err.strerror, str(path)) from err
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


def condition(what: str, measured: Any, op: str, threshold: float) -> dict[str, Any]:
    """An inline precondition of a claim: `measured op threshold` must hold for it to be judged.

    >>> condition("Meta-RNN in-distribution accuracy", 0.326, ">", 0.533)["op"]
    '>'
    """
    if op not in OPS or op == "info":
        raise ValueError(f"condition {what!r}: op must be one of > >= < <=, got {op!r}")
    value = float(measured) if _finite(measured) else None
    return {"what": str(what), "measured": value, "op": op, "threshold": float(threshold)}


@dataclass
class Claim:
    """One checkable statement of a paper, with what this run measured.

    `threshold` is a number or `{"ref": "<claim id>"}` (compared with that claim's `measured`).
    `requires` lists preconditions that must hold for the claim to be judged: a claim id (that
    claim must `pass`) or an inline `condition(...)`; when one does not hold the claim is
    `inconclusive` and its note says which, with the number. `status` is filled by
    `evaluate_claims`: `pass | fail | inconclusive | info | error | smoke`. A claim whose
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
    requires: list[str | dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"claim {self.id!r}: op must be one of {OPS}, got {self.op!r}")
        if self.op != "info" and self.threshold is None:
            raise ValueError(f"claim {self.id!r}: op {self.op!r} needs a threshold")
        if isinstance(self.threshold, dict) and set(self.threshold) != {"ref"}:
            raise ValueError(f"claim {self.id!r}: threshold dict must be {{'ref': id}}")
        self.requires = list(self.requires)
        for req in self.requires:
            ok = isinstance(req, str) or (
                isinstance(req, dict) and {"what", "measured", "op", "threshold"} <= set(req)
            )
            if not ok:
                raise ValueError(
                    f"claim {self.id!r}: a requirement is a claim id or a condition(...), "
                    f"got {req!r}"
                )

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
        requires: Sequence[str | dict[str, Any]] = (),
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
        return cls(
            id, statement, paper, mean, std, len(vals), op, threshold, "error", note,
            list(requires),
        )  # fmt: skip


def _compare(a: float, op: str, b: float) -> bool:
    return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op]


_NEGATE = {">": "<=", ">=": "<", "<": ">=", "<=": ">"}


def _add_note(c: Claim, text: str) -> None:
    c.note = f"{c.note}; {text}" if c.note else text


def _judge(c: Claim, by_id: Mapping[str, Claim]) -> None:
    if not _finite(c.measured):
        c.status, c.measured = "error", None
        return
    if c.op == "info":
        c.status = "info"
        return
    thr = c.threshold
    if isinstance(thr, dict):
        ref = by_id.get(thr["ref"])
        thr = ref.measured if ref is not None else None
    if not _finite(thr):
        c.status = "error"
        _add_note(c, "threshold has no measured value")
    else:
        c.status = "pass" if _compare(c.measured, c.op, thr) else "fail"


def _unmet(req: str | dict[str, Any], by_id: Mapping[str, Claim]) -> str | None:
    """Why a precondition does not hold (None when it holds)."""
    if isinstance(req, str):
        ref = by_id[req]
        if ref.status == "pass":
            return None
        got = "missing" if ref.measured is None else f"{ref.measured:.4g}"
        return f"requires claim {req} to pass; it is {ref.status} (measured {got})"
    value, op, thr = req["measured"], req["op"], req["threshold"]
    if _finite(value) and _compare(value, op, thr):
        return None
    got = "missing" if not _finite(value) else f"{value:.4g}"
    return f"precondition not met: {req['what']} {got} {_NEGATE[op]} {thr:.4g}"


def evaluate_claims(claims: Sequence[Claim], *, scale: str | None = None) -> list[Claim]:
    """Fill each claim's status: thresholds (`{"ref": id}` resolved), then preconditions.

    A judged claim whose precondition fails becomes `inconclusive`; a required claim id that
    does not exist, or a cycle of requirements, is `error`. At `scale="smoke"` judged claims
    are recorded with status `smoke`: a smoke run proves the code runs, not the paper.
    """
    by_id = {c.id: Claim(**asdict(c)) for c in claims}
    if len(by_id) != len(claims):
        raise ValueError("claim ids must be unique")
    for c in by_id.values():
        _judge(c, by_id)
    done: set[str] = set()

    def resolve(c: Claim, path: tuple[str, ...]) -> None:
        if c.id in done:
            return
        if c.id in path:
            c.status = "error"
            _add_note(c, "its preconditions form a cycle: " + " -> ".join((*path, c.id)))
            done.add(c.id)
            return
        for req in c.requires:
            if isinstance(req, str):
                if req not in by_id:
                    c.status = "error"
                    _add_note(c, f"requires claim {req!r}, which this run does not have")
                    done.add(c.id)
                    return
                resolve(by_id[req], (*path, c.id))
        if c.status in ("pass", "fail"):
            reasons = [r for r in (_unmet(req, by_id) for req in c.requires) if r]
            if reasons:
                c.status = "inconclusive"
                _add_note(c, "; ".join(reasons))
        done.add(c.id)

    for c in by_id.values():
        resolve(c, ())
    out = list(by_id.values())
    if scale == "smoke":
        for c in out:
            if c.status in ("pass", "fail", "inconclusive"):
                _add_note(c, f"smoke scale: would be {c.status}; recorded, not judged")
                c.status = "smoke"
    return out


def count_statuses(claims: Sequence[Mapping[str, Any] | Claim]) -> dict[str, int]:
    """How many claims have each status (every status listed, zeros included)."""
    counts = dict.fromkeys(STATUSES, 0)
    for c in claims:
        st = c.status if isinstance(c, Claim) else c.get("status", "error")
        counts[st] = counts.get(st, 0) + 1
    return counts


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
    """Complete metric lines, and the byte length they occupy (a partial last line is dropped).

    Reading stops at the first line that is not a JSON object (garbage or a torn write).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    except OSError as err:
        raise RunError(f"{str(path)!r} is unreadable: {err.strerror or err}") from None
    rows, good = [], 0
    for line in data.split(b"\n")[:-1] if data else []:
        try:
            row = json.loads(line)
        except ValueError:  # not JSON, or not UTF-8
            break
        if not isinstance(row, dict):
            break
        rows.append(row)
        good += len(line) + 1
    return rows, good


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise RunError(f"{what} {str(path)!r} does not exist") from None
    except OSError as err:
        raise RunError(f"{what} {str(path)!r} is unreadable: {err.strerror or err}") from None
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise RunError(f"{what} {str(path)!r} is not valid UTF-8 JSON: {err}") from None


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


@runtime_checkable
class RunLike(Protocol):
    """What an experiment may use of its run: a writing `Run` or a read-only follower."""

    dir: Path
    config: dict[str, Any]
    resumed: bool
    download: bool

    def log(self, step: int, **metrics: Any) -> None: ...
    def units(self, keys: Sequence[str], *, description: str = ...) -> Iterator[Unit]: ...
    def save_figure(self, fig: Any, name: str, *, caption: str) -> Path: ...
    def save_json(self, name: str, obj: Any) -> Path: ...
    def progress(self, total: int, description: str, *, completed: int = 0) -> Any: ...


class Unit:
    """One resumable piece of an experiment's work (e.g. one seed × method × dataset).

    Handed out by `Run.units`. `restore()` gives back the state tree this unit last passed to
    `checkpoint` before a kill (None on a fresh start); `checkpoint(state)` saves it atomically
    with every finished unit's result; `finish(result)` records the result (a state tree: dicts,
    lists, tensors, numbers) and checkpoints. See `badgerlab.state` for what a tree may hold.
    """

    def __init__(self, run: Run, key: str, index: int, state: Any) -> None:
        self.run, self.key, self.index = run, key, index
        self._state = state
        self.finished = False

    def restore(self) -> Any | None:
        """The state saved by this unit's last `checkpoint` before the run was interrupted."""
        state, self._state = self._state, None
        return state

    def checkpoint(self, state: Any, *, step: int | None = None) -> None:
        """Save this unit's in-progress state (and all finished results) atomically."""
        if self.finished:
            raise RuntimeError(f"unit {self.key!r} is already finished")
        self.run._save_units(current=(self.key, state), step=step)

    def finish(self, result: Any) -> Any:
        """Record the unit's result and checkpoint; returns `result`."""
        if self.finished:
            raise RuntimeError(f"unit {self.key!r} is already finished")
        self.run._results[self.key] = result
        self.finished = True
        self.run._save_units(current=None, step=None)
        return result


def _plain_file_name(name: Any) -> bool:
    return (
        isinstance(name, str)
        and name.startswith("ckpt-")
        and name.endswith(".safetensors")
        and "/" not in name
        and "\\" not in name
        and name not in (".", "..")
    )


class Run:
    """An open run folder. Create with `Run.create`, continue with `Run.resume`.

    Layout: `config.json`, `metrics.jsonl` (one flushed line per `log`), `summary.json`, PNG
    plots, `checkpoints/` (`ckpt-<step>-<id>.safetensors` + `ckpt.json`, each written to a
    temporary file and renamed, JSON last, so the pair on disk is always complete). While open,
    the run holds an exclusive `flock` on `<dir>/.lock` (the kernel drops it when the process
    dies), so two processes never write one folder.
    """

    writes = True
    _last_opened: Path | None = None

    @classmethod
    def last_opened(cls) -> Path | None:
        """The newest run folder this process opened for writing (for a resume hint)."""
        return Run._last_opened

    def __init__(self, dir: Path, meta: dict[str, Any], *, quiet: bool, resumed: bool) -> None:
        self.dir = Path(dir)
        self.meta = meta
        self.experiment = meta["experiment"]
        self.config = meta["config"]
        self.quiet = quiet
        self.resumed = resumed
        self.started = time.time()
        self._lines = 0
        self._results: dict[str, Any] = {}
        self._pending: tuple[str, Any] | None = None
        self._units_step = 0
        self._lock_fd: int | None = None
        self._metrics: Any = None
        self._tb = None
        self._plots: list[str] = sorted(p.name for p in self.dir.glob("*.png"))
        self._captions: dict[str, str] = {}
        self.download = False
        if self.writes:
            self._lock()
            Run._last_opened = self.dir
            try:
                self._metrics = open(self.dir / "metrics.jsonl", "ab")  # noqa: SIM115
            except OSError as err:
                self._unlock()
                raise RunError(
                    f"cannot write {str(self.dir / 'metrics.jsonl')!r}: {err.strerror or err}"
                ) from None
            if self.config.get("tensorboard"):
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.dir / "tensorboard"))

    # -- the lock -----------------------------------------------------------------------------

    def _lock(self) -> None:
        import fcntl

        path = self.dir / ".lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise RunError(f"cannot lock run folder {str(self.dir)!r}: {err.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            finally:
                os.close(fd)
            raise RunError(f"run folder {str(self.dir)!r} is in use by pid {pid}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    # -- opening ------------------------------------------------------------------------------

    @staticmethod
    def new_dir(
        experiment: str, seed: int, *, out: str | Path = "runs", variant: str | None = None
    ) -> Path:
        """Make a fresh run folder `<out>/<experiment>[--<variant>]/<UTC stamp>-s<seed>/`.

        Two processes starting in the same second get different folders: `mkdir` of the leaf
        is atomic, and a clash moves on to the next suffix.
        """
        out = Path(out)
        for p in (out, *out.parents):
            if p.exists() and not p.is_dir():
                raise RunError(f"--out {str(out)!r}: {str(p)!r} is a file, not a folder")
        root = out / (experiment if variant is None else f"{experiment}--{variant}")
        stamp = _utc_stamp()
        try:
            root.mkdir(parents=True, exist_ok=True)
            for n in range(1, 10_000):
                path = root / (f"{stamp}-s{seed}" if n == 1 else f"{stamp}-{n}-s{seed}")
                try:
                    path.mkdir()
                except FileExistsError:
                    continue
                (path / "checkpoints").mkdir()
                return path
        except OSError as err:
            raise RunError(
                f"cannot create a run folder under {str(root)!r}: {err.strerror or err}"
            ) from None
        raise RunError(f"cannot create a run folder under {str(root)!r}: too many clashes")

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
        path = cls.new_dir(experiment, int(config.get("seed", 0)), out=out, variant=variant)
        meta = {
            "experiment": experiment,
            "variant": variant,
            "config": dict(config),
            "versions": _versions(),
            "git_commit": _git_commit(),
            "created": path.name.split("-")[0],
        }
        try:
            atomic_write_text(path / "config.json", _dumps(meta, indent=2) + "\n")
        except OSError as err:
            raise RunError(f"cannot write into {str(path)!r}: {err.strerror or err}") from None
        return cls(path, meta, quiet=quiet, resumed=False)

    @staticmethod
    def _read_meta(path: Path) -> dict[str, Any]:
        path = Path(path)
        if not path.is_dir():
            raise RunError(f"run folder {str(path)!r} does not exist")
        cfg = path / "config.json"
        meta = _read_json(cfg, "run config")
        if (
            not isinstance(meta, dict)
            or not isinstance(meta.get("experiment"), str)
            or not isinstance(meta.get("config"), dict)
        ):
            raise RunError(f"{str(cfg)!r} is not a badgerlab run config")
        return meta

    @classmethod
    def resume(cls, path: str | Path, *, quiet: bool = False) -> Run:
        """Reopen an unfinished run: metrics are cut back to the newest checkpoint's line count,
        so lines written after it (and a half-written last line) are dropped and redone.

        A metrics file with fewer complete lines than the checkpoint recorded is refused: the
        missing lines could not be recomputed, and a resumed run must lose nothing.
        """
        path = Path(path)
        meta = cls._read_meta(path)
        run = cls(path, meta, quiet=quiet, resumed=True)  # takes the lock before any change
        try:
            _remove_stale_temps(path)
            ckpt = _load_checkpoint(path, experiment=meta["experiment"])
            keep = int(ckpt.state.get("_metrics_lines", 0)) if ckpt else 0
            rows, _ = _read_metrics(path / "metrics.jsonl")
            if len(rows) < keep:
                raise RunError(
                    f"{str(path / 'metrics.jsonl')!r} has {len(rows)} complete lines but the "
                    f"checkpoint was taken after {keep}: metrics were lost, refusing to resume"
                )
            kept = rows[:keep]
            run._metrics.close()
            atomic_write_text(
                path / "metrics.jsonl",
                "".join(_dumps(r, separators=(",", ":")) + "\n" for r in kept),
            )
            run._metrics = open(path / "metrics.jsonl", "ab")  # noqa: SIM115
            with contextlib.suppress(FileNotFoundError):
                (path / "summary.json").unlink()
            run._lines = len(kept)
            if ckpt is not None:
                run._load_units(ckpt)
        except BaseException:
            run.close()
            raise
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunRecord:
        """Read a run folder back (finished or not)."""
        path = Path(path)
        meta = cls._read_meta(path)
        rows, _ = _read_metrics(path / "metrics.jsonl")
        summary = None
        if (path / "summary.json").exists():
            summary = _read_json(path / "summary.json", "run summary")
            if not isinstance(summary, dict):
                raise RunError(f"{str(path / 'summary.json')!r} is not a JSON object")
        return RunRecord(
            path, meta["experiment"], meta["config"], meta, rows, summary, _load_checkpoint(path)
        )

    # -- writing ------------------------------------------------------------------------------

    def log(self, step: int, **metrics: Any) -> None:
        """Append one JSON line `{"step": step, **metrics}` and flush it to disk."""
        row = {"step": int(step), **metrics}
        self._lines += 1
        if not self.writes:
            return
        self._metrics.write((_dumps(row, separators=(",", ":")) + "\n").encode())
        self._metrics.flush()
        os.fsync(self._metrics.fileno())
        if self._tb is not None:
            for k, v in metrics.items():
                if _finite(v):
                    self._tb.add_scalar(k, v, int(step))

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """Every metric line written so far (including those kept from before a resume)."""
        if self._metrics is not None and not self._metrics.closed:
            self._metrics.flush()
        return _read_metrics(self.dir / "metrics.jsonl")[0]

    # -- resumable units ----------------------------------------------------------------------

    def units(self, keys: Sequence[str], *, description: str = "units") -> Iterator[Unit]:
        """Yield a `Unit` for each key not finished before an interruption, in order.

        Results of finished units (restored from the checkpoint, or recorded this session) are
        in `run.results`. Each yielded unit must be finished before the next is asked for.

        >>> # for unit in run.units([f"seed{s}" for s in seeds]):
        >>> #     state = unit.restore() or fresh_state()
        >>> #     ...; unit.checkpoint(state); ...
        >>> #     unit.finish({"accuracy": acc})
        """
        keys = list(keys)
        if len(set(keys)) != len(keys) or not all(isinstance(k, str) and k for k in keys):
            raise ValueError(f"unit keys must be unique non-empty strings, got {keys}")
        unknown = set(self._results) - set(keys)
        if unknown:
            raise RunError(
                f"the checkpoint in {str(self.dir)!r} holds units {sorted(unknown)} that this "
                "configuration does not have"
            )
        todo = [k for k in keys if k not in self._results]
        with self.progress(len(keys), description, completed=len(keys) - len(todo)) as bar:
            for index, key in enumerate(keys):
                if key in self._results:
                    continue
                pending = self._pending
                state = pending[1] if pending is not None and pending[0] == key else None
                self._pending = None
                unit = Unit(self, key, index, state)
                yield unit
                if not unit.finished:
                    raise RuntimeError(f"unit {key!r} was not finished before the next one")
                bar.update(1, unit=key)

    @property
    def results(self) -> dict[str, Any]:
        """Finished units' results by key (restored ones included)."""
        return dict(self._results)

    def _save_units(self, *, current: tuple[str, Any] | None, step: int | None) -> None:
        from badgerlab.state import flatten

        tensors: dict[str, torch.Tensor] = {}
        done = []
        for i, (key, result) in enumerate(self._results.items()):
            t, skel = flatten(result, f"done.{i}")
            tensors.update(t)
            done.append([key, skel])
        cur = None
        if current is not None:
            t, skel = flatten(current[1], "current")
            tensors.update(t)
            cur = {"key": current[0], "state": skel}
        self._units_step = int(step) if step is not None else self._units_step + 1
        self.save_checkpoint(self._units_step, tensors, {"units": {"done": done, "current": cur}})

    def _load_units(self, ckpt: Checkpoint) -> None:
        from badgerlab.state import StateError, unflatten

        units = ckpt.state.get("units")
        if units is None:
            return
        try:
            for key, skel in units["done"]:
                self._results[str(key)] = unflatten(ckpt.tensors, skel)
            cur = units["current"]
            if cur is not None:
                self._pending = (str(cur["key"]), unflatten(ckpt.tensors, cur["state"]))
        except (StateError, KeyError, TypeError, ValueError) as err:
            raise RunError(
                f"checkpoint in {str(self.dir / 'checkpoints')!r} does not match this run: {err}"
            ) from None
        self._units_step = ckpt.step

    # -- checkpoints (the units API is built on these) ----------------------------------------

    def save_checkpoint(
        self,
        step: int,
        tensors: Mapping[str, torch.Tensor] | None = None,
        state: Mapping[str, Any] | None = None,
    ) -> None:
        """Save tensors (safetensors) and a JSON-able state atomically, tensors first.

        The state also records how many metric lines exist, which `resume` restores exactly.
        Experiments use `units` instead; this is the layer below it.
        """
        if not self.writes:
            return
        ck = self.dir / "checkpoints"
        ck.mkdir(exist_ok=True)
        tens = {k: v.detach().contiguous().cpu() for k, v in (tensors or {}).items()}
        # A fresh file name every save: the JSON on disk always names a complete tensor file,
        # even when a step is saved twice and the process dies between the two writes.
        name = f"ckpt-{int(step)}-{uuid.uuid4().hex[:12]}.safetensors"
        # Serialised in memory and written by Python, so a full disk is a plain OSError
        # (ENOSPC) naming the file, not an opaque error from the safetensors writer.
        atomic_write_bytes(ck / name, save_tensors(tens))
        body = {
            "step": int(step),
            "experiment": self.experiment,
            "tensors": name,
            "state": dict(state or {}),
        }
        body["state"]["_metrics_lines"] = self._lines
        atomic_write_text(ck / "ckpt.json", _dumps(body))
        for old in ck.glob("ckpt-*.safetensors"):
            if old.name != name:
                with contextlib.suppress(FileNotFoundError):
                    old.unlink()

    def load_checkpoint(self) -> Checkpoint | None:
        """The newest checkpoint, or None for a fresh run."""
        return _load_checkpoint(self.dir, experiment=self.experiment)

    # -- artefacts ----------------------------------------------------------------------------

    def save_figure(self, fig: Any, name: str, *, caption: str) -> Path:
        """Save a matplotlib figure as `<name>.png` in the run folder (atomically) and close it.

        `caption` (required) tells a reader what the plot shows and what to look for; the
        report prints it under the figure.
        """
        import io

        import matplotlib.pyplot as plt

        if not isinstance(caption, str) or not caption.strip():
            raise TypeError(f"figure {name!r} needs a caption (a non-empty str), got {caption!r}")
        path = self.dir / f"{name}.png"
        self._captions[path.name] = caption.strip()
        if not self.writes:
            plt.close(fig)
            return path
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        atomic_write_bytes(path, buf.getvalue())
        if path.name not in self._plots:
            self._plots.append(path.name)
        return path

    def save_json(self, name: str, obj: Any) -> Path:
        """Write an extra JSON artefact (e.g. per-example curves) into the run folder."""
        path = self.dir / f"{name}.json"
        if self.writes:
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
        evaluated = evaluate_claims(list(claims), scale=self.config.get("scale"))
        summary = {
            "experiment": self.experiment,
            "status": "finished",
            "claims": [asdict(c) for c in evaluated],
            "counts": count_statuses(evaluated),
            "plots": list(self._plots),
            "captions": {p: self._captions.get(p, "") for p in self._plots},
            "elapsed_s": time.time() - self.started,
            **extra,
        }
        if self.writes:
            atomic_write_text(self.dir / "summary.json", _dumps(summary, indent=2) + "\n")
        self.close()
        return summary

    def fail(self, error: str) -> None:
        """Record a crash in `summary.json` (status `crashed`), keeping checkpoints for resume."""
        if self.writes:
            summary = {"experiment": self.experiment, "status": "crashed", "error": error}
            with contextlib.suppress(OSError):  # a full disk must not hide the first error
                atomic_write_text(self.dir / "summary.json", _dumps(summary, indent=2) + "\n")
        self.close()

    def close(self) -> None:
        if self._metrics is not None and not self._metrics.closed:
            with contextlib.suppress(OSError):
                self._metrics.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        self._unlock()


class FollowerRun(Run):
    """A non-zero DDP rank's view of rank 0's run folder: reads like a `Run`, writes nothing.

    It takes no lock, logs nowhere, and restores units from rank 0's checkpoint, so every rank
    walks the same units with the same results.
    """

    writes = False

    def __init__(self, dir: Path) -> None:
        dir = Path(dir)
        meta = self._read_meta(dir)
        super().__init__(dir, meta, quiet=True, resumed=False)
        ckpt = _load_checkpoint(dir, experiment=meta["experiment"])
        if ckpt is not None:
            self.resumed = True
            self._lines = int(ckpt.state.get("_metrics_lines", 0))
            self._load_units(ckpt)


def _remove_stale_temps(path: Path) -> None:
    """Temporary files a kill left behind mid-write (only ours: `.<name>.<random>.tmp`)."""
    for folder in (path, path / "checkpoints"):
        for tmp in folder.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()


def _load_checkpoint(path: Path, *, experiment: str | None = None) -> Checkpoint | None:
    ck = Path(path) / "checkpoints"
    meta = ck / "ckpt.json"
    if not meta.exists():
        return None
    body = _read_json(meta, "checkpoint")
    if not isinstance(body, dict):
        raise RunError(f"checkpoint {str(meta)!r} is not a JSON object")
    step = body.get("step")
    if isinstance(step, bool) or not isinstance(step, int):
        raise RunError(f"checkpoint {str(meta)!r} has no integer 'step'")
    name = body.get("tensors")
    if not _plain_file_name(name):
        raise RunError(
            f"checkpoint {str(meta)!r} names tensor file {name!r}; expected a plain "
            "'ckpt-*.safetensors' name inside checkpoints/"
        )
    state = body.get("state", {})
    if not isinstance(state, dict):
        raise RunError(f"checkpoint {str(meta)!r} has a 'state' that is not an object")
    owner = body.get("experiment")
    if experiment is not None and owner is not None and owner != experiment:
        raise RunError(f"checkpoint {str(meta)!r} belongs to {owner!r}, not {experiment!r}")
    file = ck / name
    if not file.is_file():
        raise RunError(f"checkpoint tensor file {str(file)!r} is missing")
    try:
        tensors = load_file(str(file))  # safetensors: never unpickles
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
        raise RunError(f"checkpoint tensor file {str(file)!r} is unreadable: {err}") from None
    return Checkpoint(step, tensors, state)
