"""A Hebbian experiment interrupted mid-training and resumed ends with the same numbers."""

from __future__ import annotations

import pytest

from badgerlab.hebbian import train
from badgerlab.runner import execute


def test_interrupted_run_resumes_to_identical_claims(tmp_path, monkeypatch):
    overrides = {"generations": 3}
    full = execute("hebbian-quick", scale="smoke", overrides=overrides, out=tmp_path / "a")

    calls = {"n": 0}
    original = train.ESTrainer.step

    def crash_on_fourth(self):
        calls["n"] += 1
        if calls["n"] == 4:  # hebbian done (3 generations), static after one generation
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(train.ESTrainer, "step", crash_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        execute("hebbian-quick", scale="smoke", overrides=overrides, out=tmp_path / "b")
    monkeypatch.setattr(train.ESTrainer, "step", original)
    (run_dir,) = (tmp_path / "b" / "hebbian-quick").iterdir()
    resumed = execute("hebbian-quick", resume=run_dir)

    assert [c["measured"] for c in resumed.claims] == [c["measured"] for c in full.claims]
    steps = [(m["phase"], m["generation"]) for m in resumed.metrics]
    assert steps == [(m["phase"], m["generation"]) for m in full.metrics]
