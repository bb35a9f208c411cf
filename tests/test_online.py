"""Online learners: batched episodes equal independent ones; learning beats chance."""

from __future__ import annotations

import torch

from badgerlab.data import TaskSampler, load
from badgerlab.online import online_learn


def test_batched_equals_one_optimizer_per_episode():
    e = TaskSampler(load("digits"), length=30, num_classes=5).sample(3, seed=0)
    res = online_learn(e.x, e.y, 5, optimizer="adam", lr=1e-2, hidden=(8,), seed=0)
    # Reference: train each episode alone with torch.optim.Adam on a plain module whose
    # parameters are the batched initial parameters of that episode.
    g = torch.Generator().manual_seed(0)
    w1 = (torch.rand(3, 64, 8, generator=g) * 2 - 1) * 64**-0.5
    b1 = (torch.rand(3, 1, 8, generator=g) * 2 - 1) * 64**-0.5
    w2 = (torch.rand(3, 8, 5, generator=g) * 2 - 1) * 8**-0.5
    b2 = (torch.rand(3, 1, 5, generator=g) * 2 - 1) * 8**-0.5
    for ep in range(3):
        p = [t[ep].clone().requires_grad_() for t in (w1, b1, w2, b2)]
        opt = torch.optim.Adam(p, lr=1e-2)
        for t in range(30):
            h = torch.relu(e.x[ep, t : t + 1] @ p[0] + p[1])
            logits = h @ p[2] + p[3]
            assert bool(logits.argmax(-1)[0] == e.y[ep, t]) == bool(res.correct[ep, t])
            loss = torch.nn.functional.cross_entropy(logits, e.y[ep, t : t + 1])
            assert abs(loss.item() - float(res.loss[ep, t])) < 1e-5
            opt.zero_grad()
            loss.backward()
            opt.step()


def test_online_adam_learns_digits_well_above_chance():
    # The setting and threshold: MLP(160), 500 examples, last 20% >= 0.70 (chance 0.1).
    e = TaskSampler(load("digits"), length=500).sample(8, seed=1)
    res = online_learn(e.x, e.y, 10, optimizer="adam", lr=1e-3, hidden=(160,), seed=1)
    curve = res.accuracy_curve
    assert float(curve[:20].mean()) < 0.35  # near chance before learning
    assert float(curve[-100:].mean()) >= 0.70


def test_learners_are_a_registry():
    import pytest

    from badgerlab.online import LEARNERS, get_learner, register_learner

    with pytest.raises(ValueError, match="'rmsprop'"):
        get_learner("rmsprop")
    register_learner("sgd-half", lambda p, lr: torch.optim.SGD(p, lr=lr / 2))
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_learner("sgd-half", lambda p, lr: torch.optim.SGD(p, lr=lr))
        x = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0))
        y = torch.randint(0, 2, (2, 5), generator=torch.Generator().manual_seed(1))
        half = online_learn(x, y, 2, optimizer="sgd-half", lr=0.2)
        full = online_learn(x, y, 2, optimizer="sgd", lr=0.1)
        torch.testing.assert_close(half.loss, full.loss)
    finally:
        LEARNERS.pop("sgd-half")
