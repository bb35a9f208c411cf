"""Every registered experiment runs end to end at smoke scale with well-formed claims."""

from __future__ import annotations

import math

import pytest

from badgerlab.experiments import execute, registry
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


@pytest.mark.parametrize("name", NAMES)
def test_smoke_run_has_well_formed_claims(name, tmp_path):
    rec = execute(name, scale="smoke", out=tmp_path, quiet=True)
    assert rec.finished
    claims = rec.claims
    assert claims, f"{name} made no claims"
    ids = [c["id"] for c in claims]
    assert len(ids) == len(set(ids))
    for c in claims:
        assert KEYS <= set(c), c
        assert c["op"] in OPS and c["status"] in STATUSES
        if c["status"] in ("pass", "fail", "info"):
            assert isinstance(c["measured"], (int, float)) and math.isfinite(c["measured"])
            assert c["n_seeds"] >= 1
        if c["op"] != "info":
            thr = c["threshold"]
            assert isinstance(thr, (int, float)) or (isinstance(thr, dict) and thr["ref"] in ids)
    assert rec.summary["plots"], f"{name} saved no plot"
    for plot in rec.summary["plots"]:
        assert (rec.dir / plot).stat().st_size > 1000
