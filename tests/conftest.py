"""Shared test set-up: one torch thread, real data from ../shared/data, CI-aware skips."""

from __future__ import annotations

import os
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
