"""Every registered experiment runs end to end at smoke scale with well-formed claims."""

from __future__ import annotations

import math
import typing

import pytest

from badgerlab.experiments import registry
from badgerlab.runs import OPS, STATUSES

NAMES = sorted(registry())
KEYS = {"id", "statement", "paper", "measured", "std", "n_seeds", "op", "threshold", "status"}


def test_registry_finds_experiments():
    assert "online-learners" in NAMES
    for name, exp in registry().items():
        assert exp.name == name
        assert set(exp.minutes) >= {"smoke", "quick"}
        assert exp.bibtex.strip().startswith("@")
        exp.config("smoke")
        exp.config("quick")
        exp.config("paper")


def test_every_experiment_is_on_the_skeleton():
    """train -> plots -> claims, no hand-written `run`, and no function over 80 lines."""
    import ast
    import inspect

    for name, exp in registry().items():
        assert exp.run is None, f"{name} still passes its own run()"
        assert exp.train and exp.plots and exp.claims, name
        tree = ast.parse(inspect.getsource(inspect.getmodule(exp.train)))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= 80, f"{name}: {node.name} is {length} lines long"


def _bounded(metadata) -> bool:
    return any(getattr(m, a, None) is not None for m in metadata for a in ("ge", "gt", "le", "lt"))


def _unbounded_numbers(annotation, metadata) -> bool:
    """True when a number in this annotation can take any value (no ge/gt/le/lt)."""
    if typing.get_origin(annotation) is typing.Annotated:
        inner, *extra = typing.get_args(annotation)
        meta = [m for e in extra for m in getattr(e, "metadata", [e])]
        return _unbounded_numbers(inner, [*metadata, *meta])
    if annotation in (int, float):
        return not _bounded(metadata)
    args = [a for a in typing.get_args(annotation) if a is not type(None) and a is not Ellipsis]
    if typing.get_origin(annotation) in (list, tuple):
        return any(_unbounded_numbers(a, []) for a in args)
    return any(_unbounded_numbers(a, metadata) for a in args)


@pytest.mark.parametrize("name", NAMES)
def test_every_config_field_is_described_and_bounded(name):
    for key, info in registry()[name].Config.model_fields.items():
        assert info.description, f"{name}.{key} has no description"
        assert not _unbounded_numbers(info.annotation, info.metadata), f"{name}.{key} unbounded"


@pytest.mark.parametrize("name", NAMES)
def test_smoke_run_has_well_formed_claims(name, smoke_record):
    rec = smoke_record(name)
    assert rec.finished
    claims = rec.claims
    assert claims, f"{name} made no claims"
    ids = [c["id"] for c in claims]
    assert len(ids) == len(set(ids))
    for c in claims:
        assert KEYS <= set(c), c
        assert c["op"] in OPS and c["status"] in STATUSES
        assert c["status"] != "inconclusive" or c["requires"], c
        if c["status"] in ("pass", "fail", "info", "smoke"):
            assert isinstance(c["measured"], (int, float)) and math.isfinite(c["measured"])
            assert c["n_seeds"] >= 1
        if c["op"] != "info":
            thr = c["threshold"]
            assert isinstance(thr, (int, float)) or (isinstance(thr, dict) and thr["ref"] in ids)
    assert all(c["status"] != "pass" and c["status"] != "fail" for c in claims), (
        "smoke scale records claims without judging them"
    )
    assert rec.summary["plots"], f"{name} saved no plot"
    for plot in rec.summary["plots"]:
        assert (rec.dir / plot).stat().st_size > 1000
        assert len(rec.summary["captions"][plot]) > 20, f"{name}: {plot} has no caption"


@pytest.mark.parametrize("name", NAMES)
def test_device_is_never_silently_ignored(name):
    import torch

    from badgerlab.experiment import ConfigError

    exp = registry()[name]
    assert set(exp.devices) <= {"cpu", "cuda"} and "cpu" in exp.devices
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device='cuda:7'"):
            exp.config("smoke", {"device": "cuda:7"})
    if "cuda" not in exp.devices:
        with pytest.raises(ConfigError, match="runs on cpu only"):
            exp.config("smoke", {"device": "cuda"})
