"""The story generator of hmem-associations: the answer is the queried key's value, the query is
another image of that key's class, distractors come from other classes; seeded determinism."""

from __future__ import annotations

import pytest
import torch

from badgerlab.experiments import hmem_associations as ha


def _setup(n_per_class: int = 5):
    y = torch.arange(10).repeat_interleave(n_per_class)
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]
    # feature = (class, image index) so that every step can be decoded
    feats = torch.stack([y.float(), torch.arange(len(y)).float()], dim=1)
    return y, feats, ha._pool(y)


@pytest.mark.parametrize("P, d", [(3, 0), (3, 5), (9, 2), (10, 0)])
def test_story_invariants(P, d):
    y, feats, pool = _setup()
    V, B = 10, 64
    s, q, a = ha.stories(feats, pool, B, P, d, V, torch.Generator().manual_seed(1))
    assert s.shape == (B, P + d, 2 + V) and q.shape == (B, 2) and a.shape == (B,)
    for b in range(B):
        key_cls = s[b, :P, 0].long()
        values = s[b, :P, 2:].argmax(-1)
        assert len(set(key_cls.tolist())) == P and len(set(values.tolist())) == P
        assert torch.all(s[b, :P, 2:].sum(-1) == 1) and torch.all(s[b, P:, 2:] == 0)
        assert not set(s[b, P:, 0].long().tolist()) & set(key_cls.tolist())
        (j,) = torch.nonzero(key_cls == q[b, 0].long())[0]
        assert a[b] == values[j]
        assert q[b, 1] != s[b, j, 1]  # a new image of the key's class
        assert y[int(q[b, 1])] == q[b, 0]


def test_stories_are_seeded():
    _, feats, pool = _setup()
    one = ha.stories(feats, pool, 8, 3, 4, 10, torch.Generator().manual_seed(3))
    two = ha.stories(feats, pool, 8, 3, 4, 10, torch.Generator().manual_seed(3))
    for x, z in zip(one, two, strict=True):
        assert torch.equal(x, z)


def test_config_rejects_more_pairs_than_values():
    with pytest.raises(ValueError, match="n_values"):
        ha.Config(pairs=5, n_values=4, capacity_pairs=(2, 3))
    with pytest.raises(ValueError, match="eval_delays"):
        ha.Config(eval_delays=(0, 5))


@pytest.mark.parametrize("P, d", [(3, 0), (20, 0), (5, 4)])
def test_pair_story_invariants(P, d):
    """Two-image keys: P distinct ordered class pairs with distinct values; distractors are pairs
    of no key; the query shows new images of both halves of one key; the answer is its value."""
    y, feats, pool = _setup()
    V, B = 20, 32
    s, q, a = ha.pair_stories(feats, pool, B, P, d, V, torch.Generator().manual_seed(1))
    assert s.shape == (B, P + d, 4 + V) and q.shape == (B, 4) and a.shape == (B,)
    for b in range(B):
        key_cls = [(int(x), int(z)) for x, z in zip(s[b, :P, 0], s[b, :P, 2], strict=True)]
        values = s[b, :P, 4:].argmax(-1)
        assert len(set(key_cls)) == P and len(set(values.tolist())) == P
        assert torch.all(s[b, P:, 4:] == 0)
        noise = {(int(x), int(z)) for x, z in zip(s[b, P:, 0], s[b, P:, 2], strict=True)}
        assert not noise & set(key_cls)
        j = key_cls.index((int(q[b, 0]), int(q[b, 2])))
        assert a[b] == values[j]
        assert q[b, 1] != s[b, j, 1] and q[b, 3] != s[b, j, 3]  # new images of both halves
        assert y[int(q[b, 1])] == q[b, 0] and y[int(q[b, 3])] == q[b, 2]


def test_config_rejects_more_capacity_pairs_than_values():
    with pytest.raises(ValueError, match="capacity_values"):
        ha.Config(capacity_keys="two-image", capacity_pairs=(3, 25), capacity_values=20)
    with pytest.raises(ValueError, match="key classes"):
        ha.Config(capacity_keys="image", capacity_pairs=(3, 12), capacity_values=20)
