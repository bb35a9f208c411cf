"""Shared test set-up: one torch thread, real data from ../shared/data, CI-aware skips."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("MPLBACKEND", "Agg")

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
if "BADGERLAB_DATA" not in os.environ and _SHARED.is_dir():
    os.environ["BADGERLAB_DATA"] = str(_SHARED)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_or_fail(reason: str) -> None:
    """Skip locally; under CI=true a missing dataset or dependency is a failure."""
    if IN_CI:
        pytest.fail(f"CI=true forbids skipping: {reason}")
    pytest.skip(reason)


@pytest.fixture
def require():
    """`require("mnist")` or `require(module="ray")`: skip (fail in CI) when absent."""

    def _require(dataset: str | None = None, *, module: str | None = None) -> None:
        if dataset is not None:
            from badgerlab.data import available

            if not available(dataset):
                skip_or_fail(f"dataset {dataset!r} not found (set BADGERLAB_DATA)")
        if module is not None:
            import importlib.util

            if importlib.util.find_spec(module) is None:
                skip_or_fail(f"optional dependency {module!r} is not installed")

    return _require


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """A fresh BADGERLAB_CACHE for tests that download or write into the cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("BADGERLAB_CACHE", str(cache))
    return cache


_SMOKE_RECORDS: dict[str, object] = {}


@pytest.fixture(scope="session")
def smoke_record(tmp_path_factory):
    """`smoke_record(name)`: one uninterrupted smoke run per experiment, shared by the tests
    that check its claims and the one that compares a killed-and-resumed run with it."""
    from badgerlab.runner import execute

    def _get(name: str):
        if name not in _SMOKE_RECORDS:
            out = tmp_path_factory.mktemp(f"smoke-{name}")
            _SMOKE_RECORDS[name] = execute(name, scale="smoke", out=out, quiet=True)
        return _SMOKE_RECORDS[name]

    return _get


NETNS = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "sh", "-c"]


def _netns_reason() -> str | None:
    """None if `unshare --net` works here, else why not."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip not found"
    probe = subprocess.run([*NETNS, "ip link set lo up"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"unshare --net failed: {probe.stderr.strip()}"
    return None


@pytest.fixture(scope="session")
def loopback_ray():
    """`loopback_ray(script, timeout=…)`: run a Python script inside its own network namespace
    with only `lo` up (Ray's traffic cannot leave the machine; the PID namespace takes every
    Ray process down with it) and return the JSON of its last `RESULT {json}` line. Skips
    (fails in CI) without Ray or without `unshare --net`."""

    def _run(script: Path, *, timeout: int) -> dict:
        pytest.importorskip("ray")
        reason = _netns_reason()
        if reason is not None:
            skip_or_fail(f"the Ray test needs a loopback-only namespace: {reason}")
        # A short private directory: Ray's unix socket paths must stay under ~107 characters.
        tmp = tempfile.mkdtemp(prefix="bray", dir="/tmp")
        env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_TMPDIR=tmp, HOME=tmp)
        try:
            proc = subprocess.run(
                [*NETNS, f"ip link set lo up; {sys.executable} {script}"],
                capture_output=True,
                text=True,
                env=env,
                timeout=timeout,
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
        return json.loads(lines[-1][len("RESULT ") :])

    return _run
