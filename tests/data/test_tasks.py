"""The episode sampler: shapes, class subsets, relabelling, projections, determinism."""

from __future__ import annotations

import pytest
import torch

from badgerlab.data import TaskSampler, load


def test_shapes_labels_and_determinism():
    d = load("digits")
    s = TaskSampler(d, length=50, num_classes=4)
    a, b = s.sample(6, seed=3), s.sample(6, seed=3)
    assert a.x.shape == (6, 50, 64) and a.y.shape == (6, 50) and a.num_classes == 4
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, s.sample(6, seed=4).x)
    assert int(a.y.min()) >= 0 and int(a.y.max()) <= 3


def test_labels_are_a_permutation_of_a_class_subset():
    d = load("digits")
    s = TaskSampler(d, length=400, num_classes=3)
    e = s.sample(4, seed=0)
    # Every example of an episode must be a real row of the dataset, and its new label a fixed
    # function of its old one (a bijection between 3 old classes and 0..2).
    flat = d.x.reshape(len(d), -1)
    mappings = []
    for ep in range(4):
        idx = torch.cdist(e.x[ep], flat).argmin(1)
        assert torch.allclose(flat[idx], e.x[ep])
        old = d.y[idx]
        pairs = set(zip(old.tolist(), e.y[ep].tolist(), strict=True))
        assert len({o for o, _ in pairs}) == 3 and len(pairs) == 3
        mappings.append(frozenset(pairs))
    assert len(set(mappings)) > 1


def test_fixed_and_per_episode_projection_and_resize():
    d = load("digits")
    fixed = TaskSampler(d, length=10, project_to=5, seed=1)
    e = fixed.sample(2, seed=0)
    raw = TaskSampler(d, length=10, seed=1).sample(2, seed=0)
    assert e.x.shape == (2, 10, 5)
    torch.testing.assert_close(e.x, raw.x @ fixed._fixed)
    per = TaskSampler(d, length=10, project_to=5, projection="episode").sample(2, seed=0)
    assert per.x.shape == (2, 10, 5)
    small = TaskSampler(d, length=10, resize=4).sample(1, seed=0)
    assert small.x.shape == (1, 10, 16)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"length": 0},
        {"length": 5, "num_classes": 11},
        {"length": 5, "project_to": 0},
        {"length": 5, "projection": "bad"},
    ],
)
def test_bad_arguments_name_the_value(kwargs):
    with pytest.raises(ValueError):
        TaskSampler(load("digits"), **kwargs)
    with pytest.raises(ValueError, match="resize"):
        TaskSampler(load("iris"), length=5, resize=4)
