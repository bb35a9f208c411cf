"""learned-learners: smoke run with every claim and figure, PES resumes mid-unroll exactly."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from badgerlab.experiments.learned_learners import EXPERIMENT
from badgerlab.runner import execute
from badgerlab.runs import Run

CLAIMS = {
    "lopt-vs-adam",
    "lopt-long-horizon",
    "lopt-no-divergence",
    "adam-learned",
    "sgd-learned",
    "lopt-final-loss",
    "adam-final-loss",
    "sgd-final-loss",
    "lopt-vs-init",
    "baseline-lr-at-edge",
}


def test_smoke_run_has_the_claims_figures_and_finite_numbers(smoke_record):
    rec = smoke_record("learned-learners")
    assert rec.finished
    by_id = {c["id"]: c for c in rec.claims}
    assert CLAIMS <= set(by_id)
    for c in rec.claims:
        assert c["measured"] is not None, c
    assert by_id["lopt-vs-adam"]["threshold"] == 1.1
    assert "adam-learned" in by_id["lopt-vs-adam"]["requires"]
    assert {"meta_test_curves.png", "update_vs_gradient.png", "meta_training.png"} <= {
        p.name for p in rec.dir.iterdir()
    }


def test_pes_run_killed_mid_unroll_resumes_to_the_same_claims(tmp_path, monkeypatch):
    over = {
        "method": "pes",
        "shaping": "none",
        "datasets": ("iris",),
        "generations": 4,
        "checkpoint_every": 1,
    }
    ref = execute("learned-learners", scale="smoke", overrides=over, out=tmp_path / "a")
    real, calls = Run.save_checkpoint, {"n": 0}

    def save(self, *args, **kwargs):
        real(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:  # after generation 1: the particles are one truncation in
            raise RuntimeError("simulated kill")

    with monkeypatch.context() as m:
        m.setattr(Run, "save_checkpoint", save)
        with pytest.raises(RuntimeError, match="simulated"):
            execute("learned-learners", scale="smoke", overrides=over, out=tmp_path / "b")
    (crashed,) = (tmp_path / "b" / "learned-learners").iterdir()
    rec = execute("learned-learners", resume=crashed)
    assert {c["id"]: c["measured"] for c in rec.claims} == {
        c["id"]: c["measured"] for c in ref.claims
    }


def test_config_rejects_bad_values():
    with pytest.raises(ValidationError, match="popsize"):
        EXPERIMENT.Config(popsize=5)
    with pytest.raises(ValidationError, match="truncation"):
        EXPERIMENT.Config(method="pes", steps=10, truncation=3)
    with pytest.raises(ValidationError, match="shaping"):
        EXPERIMENT.Config(method="pes", shaping="centred_ranks")
    with pytest.raises(ValidationError, match="hidden"):
        EXPERIMENT.Config(hidden=1, init_step=0.03)
