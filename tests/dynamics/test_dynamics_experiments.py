"""The dynamics experiments resume from their checkpoints to the same numbers."""

from __future__ import annotations

import pytest

from badgerlab.runner import execute
from badgerlab.runs import Run


class _Stop(Exception):
    pass


def _claims(rec):
    return {c["id"]: c["measured"] for c in rec.claims}


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("dynamics-spinning-tops", {}),
        ("dynamics-psro", {"games": ["blotto", "disc"], "blotto_iterations": 20}),
        pytest.param("dynamics-ratings", {"seeds": 2}, marks=pytest.mark.slow),
        pytest.param("dynamics-qd", {"seeds": 2}, marks=pytest.mark.slow),
    ],
)
def test_interrupted_run_resumes_to_the_same_claims(name, overrides, tmp_path, monkeypatch):
    full = execute(name, scale="smoke", overrides=overrides, out=tmp_path / "a", quiet=True)
    original = Run.save_checkpoint
    calls = {"n": 0}

    def stop_after_first(self, *args, **kwargs):
        original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            raise _Stop

    monkeypatch.setattr(Run, "save_checkpoint", stop_after_first)
    with pytest.raises(_Stop):
        execute(name, scale="smoke", overrides=overrides, out=tmp_path / "b", quiet=True)
    monkeypatch.setattr(Run, "save_checkpoint", original)
    (run_dir,) = (tmp_path / "b" / name).iterdir()
    resumed = execute(name, resume=run_dir, quiet=True)
    assert resumed.finished
    assert _claims(resumed) == pytest.approx(_claims(full), nan_ok=True)
    steps = [m["step"] for m in resumed.metrics]
    assert steps == sorted(set(steps))  # no metric line lost or repeated
