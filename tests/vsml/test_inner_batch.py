"""Mini-batch inner learning (`VSMLConfig.inner_batch`): K batch entries are one learner."""

from __future__ import annotations

import pytest
import torch

from badgerlab.vsml.baselines import VSMLLearner
from badgerlab.vsml.model import (
    LayerState,
    VSMLConfig,
    average_weight_half,
    episode,
    init_params,
    init_state,
    reference_episode,
)

D64 = torch.float64


def _perturbed(cfg, population, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = init_params(cfg, population=population, generator=g, dtype=D64)
    return {k: v + 0.3 * torch.randn(v.shape, generator=g, dtype=D64) for k, v in p.items()}


def _data(T, P, N, A, B, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, P, N, A, generator=g, dtype=D64)
    return x, torch.randint(0, B, (T, P, N), generator=g)


def test_batch_of_one_agrees_with_independent_sequences():
    # The reference driver always merges and divides by K; with K = 1 both are the identity,
    # so it must give the independent-sequence fast path's numbers.
    cfg = VSMLConfig(feed_label=True)
    assert VSMLConfig().inner_batch == 1 and cfg.inner_batch == 1
    p = _perturbed(cfg, 2)
    st = init_state(
        cfg,
        (5, 4, 3),
        batch=3,
        population=2,
        generator=torch.Generator().manual_seed(1),
        dtype=D64,
    )
    x, y = _data(5, 2, 3, 5, 3, seed=2)
    fast = episode(p, x, y, cfg, states=st)
    logits, _, error = reference_episode(p, x, y, cfg, st)
    torch.testing.assert_close(fast.logits, logits, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast.error, error, rtol=1e-12, atol=1e-12)
    assert all(a is b for a, b in zip(average_weight_half(st, 1), st, strict=True))


@pytest.mark.parametrize("backward_pass", [False, True])
def test_minibatch_fast_path_equals_reference(backward_pass):
    cfg = VSMLConfig(inner_batch=2, feed_label=True, backward_pass=backward_pass, layer_norm=True)
    p = _perturbed(cfg, 2, seed=3)
    st = init_state(
        cfg,
        (6, 4, 3),
        batch=4,
        population=2,
        generator=torch.Generator().manual_seed(4),
        dtype=D64,
    )
    x, y = _data(6, 2, 4, 6, 3, seed=5)
    fast = episode(p, x, y, cfg, states=st)
    logits, states, error = reference_episode(p, x, y, cfg, st)
    torch.testing.assert_close(fast.logits, logits, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast.error, error, rtol=1e-12, atol=1e-12)
    for sf, sr in zip(fast.states, states, strict=True):
        torch.testing.assert_close(sf.c, sr.c, rtol=1e-12, atol=1e-12)
    # The mini-batch is not K independent learners: the same data without merging differ.
    indep = episode(
        p,
        x,
        y,
        VSMLConfig(feed_label=True, backward_pass=backward_pass, layer_norm=True),
        states=st,
    )
    assert (indep.logits[1:] - fast.logits[1:]).abs().max() > 1e-4


def test_average_weight_half_merges_only_the_weight_half_of_each_learner():
    g = torch.Generator().manual_seed(0)
    P, N, A, B, H, M, k = 2, 6, 3, 2, 5, 4, 3  # odd H: the first ⌊H/2⌋ = 2 units merge
    s = LayerState(
        *(
            torch.randn(*sh, generator=g, dtype=D64)
            for sh in [(P, N, A, B, H)] * 2 + [(P, N, A, M), (P, N, B, M)]
        )
    )
    (m,) = average_weight_half([s], k)
    for new, old in [(m.h, s.h), (m.c, s.c)]:
        grouped_new = new.view(P, N // k, k, A, B, H)
        grouped_old = old.view(P, N // k, k, A, B, H)
        # identical across the K entries of a learner, equal to their mean
        want = grouped_old[..., :2].mean(2, keepdim=True).expand(-1, -1, k, -1, -1, -1)
        torch.testing.assert_close(grouped_new[..., :2], want, rtol=0, atol=1e-15)
        assert torch.equal(new[..., 2:], old[..., 2:])
        # learners are not mixed: different groups keep different weight halves
        assert (grouped_new[:, 0, 0, ..., :2] - grouped_new[:, 1, 0, ..., :2]).abs().min() > 0
    assert torch.equal(m.fwd_in, s.fwd_in) and torch.equal(m.bwd_in, s.bwd_in)


def test_initial_state_is_one_draw_per_learner_and_error_is_divided_by_k():
    cfg = VSMLConfig(inner_batch=2, feed_label=True)
    st = init_state(cfg, (4, 3), batch=4, population=2, generator=torch.Generator().manual_seed(0))
    c = st[0].c.view(2, 2, 2, 4, 3, 16)  # (P, learners, K, A, B, H)
    assert torch.equal(c[:, :, 0], c[:, :, 1])
    assert (c[:, 0, 0, ..., :8] - c[:, 1, 0, ..., :8]).abs().min() > 0
    assert (c[0, :, :, ..., :8] - c[1, :, :, ..., :8]).abs().min() > 0
    p = init_params(cfg, population=2, generator=torch.Generator().manual_seed(1))
    x = torch.randn(3, 2, 4, 4)
    y = torch.randint(0, 3, (3, 2, 4))
    r = episode(p, x, y, cfg, states=st)
    onehot = torch.nn.functional.one_hot(y[-1], 3).float()
    want = (torch.softmax(r.logits[-1], -1) - onehot) / 2
    torch.testing.assert_close(r.error[..., 0], want)
    assert torch.equal(r.error[..., 1], onehot)  # the label is not divided
    # After the last example nothing is merged: entries of one learner saw different data.
    assert (r.states[0].h[:, 0, ..., :8] - r.states[0].h[:, 1, ..., :8]).abs().max() > 0


def test_tied_learner_init_repeats_each_learner_per_member():
    # VSMLLearner's `tied` (antithetic ES pairs): members 2j and 2j+1 share initial states;
    # with inner_batch each shared draw is also one draw per mini-batch learner.
    cfg = VSMLConfig(inner_batch=2)
    learner = VSMLLearner(cfg)
    p = init_params(cfg, population=4, generator=torch.Generator().manual_seed(0))
    x = torch.randn(4, 4, 6, 5)
    y = torch.randint(0, 3, (4, 4, 6))
    out = learner.run(p, x, y, 3, generator=torch.Generator().manual_seed(7), tied=2)
    base = init_state(
        cfg, (5, 3), batch=6, population=2, generator=torch.Generator().manual_seed(7)
    )
    c = base[0].c.view(2, 3, 2, 5, 3, 16)
    assert torch.equal(c[:, :, 0], c[:, :, 1])
    states = [LayerState(*(t.repeat_interleave(2, dim=0) for t in s)) for s in base]
    r = episode(p, x, y, cfg, states=states)
    torch.testing.assert_close(out.logits, r.logits, rtol=0, atol=0)
    # Tied members with equal parameters give equal runs.
    same = {k: v[[0, 0, 1, 1]] for k, v in p.items()}
    o2 = learner.run(
        same,
        x[:, [0, 0, 1, 1]],
        y[:, [0, 0, 1, 1]],
        3,
        generator=torch.Generator().manual_seed(7),
        tied=2,
    )
    assert torch.equal(o2.logits[:, 0], o2.logits[:, 1]) and torch.equal(
        o2.logits[:, 2], o2.logits[:, 3]
    )


def test_bad_inner_batch_is_rejected_with_its_value():
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="inner_batch"):
            VSMLConfig(inner_batch=bad)
    cfg = VSMLConfig(inner_batch=2)
    with pytest.raises(ValueError, match="inner_batch=2"):
        init_state(cfg, (4, 3), batch=3)
    p = init_params(cfg)
    with pytest.raises(ValueError, match="inner_batch=2"):
        episode(p, torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.long), cfg, sizes=(4, 3))
