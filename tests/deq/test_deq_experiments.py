"""deq-mnist and mdeq-shapes: smoke runs, and a crash after a checkpoint resumes exactly."""

from __future__ import annotations

import pytest

from badgerlab.runner import execute
from badgerlab.runs import Run

DROP = {"elapsed", "time"}


def _crash_after(monkeypatch, n: int) -> None:
    real = Run.save_checkpoint
    calls = {"n": 0}

    def save(self, *args, **kwargs):
        real(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == n:
            raise RuntimeError("simulated kill right after a checkpoint")

    monkeypatch.setattr(Run, "save_checkpoint", save)


@pytest.mark.parametrize(
    ("name", "overrides", "crash_at"),
    [
        ("deq-mnist", {"epochs": 1}, 2),
        # mid-seed: model, optimizer and shuffling generator come back from the checkpoint
        ("mdeq-shapes", {"seeds": 2, "epochs": 2}, 1),
        # between seeds
        ("mdeq-shapes", {"seeds": 2, "epochs": 2}, 3),
    ],
)
def test_resume_after_crash_gives_identical_results(
    name, overrides, crash_at, tmp_path, monkeypatch
):
    ref = execute(name, scale="smoke", overrides=overrides, out=tmp_path / "a")
    assert ref.finished
    with monkeypatch.context() as m:
        _crash_after(m, crash_at)
        with pytest.raises(RuntimeError, match="simulated"):
            execute(name, scale="smoke", overrides=overrides, out=tmp_path / "b")
    (crashed,) = (tmp_path / "b" / name).iterdir()
    rec = execute(name, resume=crashed)
    assert rec.finished
    got = {c["id"]: c["measured"] for c in rec.claims}
    want = {c["id"]: c["measured"] for c in ref.claims}
    assert got == want
    strip = [{k: v for k, v in r.items() if k not in DROP} for r in rec.metrics]
    assert strip == [{k: v for k, v in r.items() if k not in DROP} for r in ref.metrics]


def test_claims_of_deq_mnist_smoke(tmp_path):
    rec = execute("deq-mnist", scale="smoke", out=tmp_path)
    claims = {c["id"]: c for c in rec.claims}
    # memory is measured, not trained: these two hold at every scale (smoke records the
    # judgement it would make without making it)
    for cid in ("memory-deq-32-over-8", "memory-unrolled-32-over-8"):
        assert claims[cid]["status"] == "smoke" and "would be pass" in claims[cid]["note"]
    assert claims["memory-deq-32-over-8"]["measured"] == 1.0
    for cid in ("deq-minus-unrolled-accuracy", "anderson-steps", "jacreg-anderson-steps"):
        assert claims[cid]["status"] == "smoke"


def test_make_shapes():
    import math

    import torch

    from badgerlab.experiments.mdeq_shapes import SHAPES, make_shapes

    x, y, m = make_shapes(600, 16, 0.0, torch.Generator().manual_seed(0))
    assert x.shape == (600, 1, 16, 16) and m.shape == (600, 16, 16) and y.shape == (600,)
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    assert set(y.tolist()) == set(range(len(SHAPES)))
    # without noise the mask is exactly the set of pixels brighter than the background
    bg = x[:, 0].masked_fill(m.bool(), 2).flatten(1).amin(1)
    fg = x[:, 0].masked_fill(~m.bool(), -1).flatten(1).amax(1)
    assert (fg > bg).all()
    # areas relative to the half-size r follow the shapes: disk πr², square (1.7r)², triangle 2r²
    area = m.flatten(1).sum(1)
    side = m.any(1).sum(1).float()  # columns covered
    ratio = area / side**2
    for c, expect in enumerate((math.pi / 4, 1.0, 0.5)):
        assert abs(float(ratio[y == c].mean()) - expect) < 0.12
    x2, y2, m2 = make_shapes(600, 16, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2) and torch.equal(y, y2)
