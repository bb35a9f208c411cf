"""Outer loops (ES on a population, BPTT) and the Meta-RNN baseline."""

from __future__ import annotations

import pytest
import torch

from badgerlab.evolve import get_es
from badgerlab.vsml.baselines import MetaRNN, VSMLLearner
from badgerlab.vsml.metatrain import (
    adam_init,
    bptt_step,
    es_init,
    es_initial_states,
    es_step,
    flatten,
    meta_loss,
    population_fitness,
    unflatten,
)
from badgerlab.vsml.model import VSMLConfig

TINY = VSMLConfig(msg_size=4, state_size=6, layer_norm=True, feed_label=True)


def _episodes(T, N, A, C, seed, pairs=None):
    g = torch.Generator().manual_seed(seed)
    lead = (T, N) if pairs is None else (T, pairs, N)
    return torch.randn(*lead, A, generator=g), torch.randint(0, C, lead, generator=g)


def test_flatten_roundtrip_with_population():
    learner = VSMLLearner(TINY)
    p = learner.init_params(population=3, generator=torch.Generator().manual_seed(0))
    flat = flatten(p, learner.param_shapes())
    assert flat.shape == (3, sum(v[0].numel() for v in p.values()))
    back = unflatten(flat, learner.param_shapes())
    for k in p:
        torch.testing.assert_close(back[k], p[k])
    with pytest.raises(ValueError, match="entries"):
        unflatten(flat[:, :-1], learner.param_shapes())


@pytest.mark.parametrize("learner", [VSMLLearner(TINY), MetaRNN(6, 4, hidden=8)])
def test_population_losses_equal_separate_evaluations(learner):
    g = torch.Generator().manual_seed(0)
    p = learner.init_params(population=4, generator=g)
    x, y = _episodes(5, 3, 5, 3, seed=1)
    batched = meta_loss(learner, p, x, y, 3, generator=torch.Generator().manual_seed(2))
    assert batched.shape == (4,)
    if isinstance(learner, VSMLLearner):
        return  # VSML draws its random initial states per member; see the tied test below
    for k in range(4):
        pk = {n: v[k] for n, v in p.items()}
        single = meta_loss(learner, pk, x, y, 3)
        torch.testing.assert_close(batched[k], single[0], rtol=1e-5, atol=1e-6)


def test_tied_members_share_initial_states():
    learner = VSMLLearner(TINY)
    p = learner.init_params(population=1, generator=torch.Generator().manual_seed(0))
    pop = {k: v.expand(4, *v.shape[1:]).contiguous() for k, v in p.items()}
    x, y = _episodes(4, 2, 5, 3, seed=1)
    tied = meta_loss(learner, pop, x, y, 3, generator=torch.Generator().manual_seed(3), tied=2)
    torch.testing.assert_close(tied[0], tied[1])
    torch.testing.assert_close(tied[2], tied[3])
    assert abs(float(tied[0] - tied[2])) > 1e-6  # different draws between pairs


def test_es_step_on_a_population_matches_openai_es_tell():
    learner = VSMLLearner(TINY)
    p = learner.init_params(generator=torch.Generator().manual_seed(0))
    state = es_init(learner, p, es="openai-es", popsize=6, sigma=0.05, lr=0.025)
    x, y = _episodes(4, 2, 5, 3, seed=1, pairs=3)  # (T, P/2, N, A)
    g = torch.Generator().manual_seed(7)
    new_state, mean_j = es_step(learner, "openai-es", state, x, y, 3, generator=g)
    # Redo the generation by hand: same noise, each member evaluated on its pair's episodes.
    g2 = torch.Generator().manual_seed(7)
    es = get_es("openai-es")
    pop = es.ask(state, generator=g2)
    fit = meta_loss(
        learner,
        unflatten(pop, learner.param_shapes()),
        x.repeat_interleave(2, 1),
        y.repeat_interleave(2, 1),
        3,
        generator=g2,
        tied=2,
    )
    want = es.tell(state, pop, fit)
    torch.testing.assert_close(new_state.center, want.center)
    assert mean_j == pytest.approx(float(fit.mean()), rel=1e-6)
    assert not torch.equal(new_state.center, state.center)
    with pytest.raises(ValueError, match="dividing"):
        bad = torch.cat([x, x[:, :1]], dim=1)  # 4 groups for 6 members
        es_step(learner, "openai-es", state, bad, torch.cat([y, y[:, :1]], 1), 3, generator=g)


@pytest.mark.parametrize("learner", [VSMLLearner(TINY), MetaRNN(6, 3, hidden=8)])
@pytest.mark.parametrize("groups", [1, 4])
def test_any_share_of_the_population_gets_the_same_fitness(learner, groups):
    # What a Ray actor computes for its rows equals those rows' J in the whole population,
    # whatever the split (shares of 3 cut antithetic pairs apart).
    P = 8
    p = learner.init_params(generator=torch.Generator().manual_seed(0))
    state = es_init(learner, p, es="openai-es", popsize=P)
    flat = get_es("openai-es").ask(state, generator=torch.Generator().manual_seed(1))
    rows = torch.cat([flat, torch.arange(P, dtype=flat.dtype)[:, None]], dim=1)
    x, y = _episodes(4, 2, 5, 3, seed=2, pairs=groups)
    states = es_initial_states(learner, x, 3, generator=torch.Generator().manual_seed(3))
    whole = population_fitness(rows, learner, P, x, y, 3, states)
    shares = [population_fitness(r, learner, P, x, y, 3, states) for r in rows.split(3)]
    torch.testing.assert_close(torch.cat(shares), whole, rtol=1e-6, atol=1e-7)
    if groups == 4:  # members of one group share episodes and initial states
        pop = {
            k: v[:1].expand(P, *v.shape[1:])
            for k, v in unflatten(flat, learner.param_shapes()).items()
        }
        same = population_fitness(
            torch.cat([flatten(pop, learner.param_shapes()), rows[:, -1:]], 1),
            learner,
            P,
            x,
            y,
            3,
            states,
        )
        torch.testing.assert_close(same[0::2], same[1::2])
        assert float((same[0] - same[2]).abs()) > 1e-6


@pytest.mark.parametrize("learner", [VSMLLearner(TINY), MetaRNN(5, 3, hidden=16)])
def test_bptt_reduces_meta_loss_on_fixed_episodes(learner):
    # 40 Adam steps on one fixed batch must lower its meta-loss by at least 10% (fixed margin).
    x, y = _episodes(8, 8, 5, 3, seed=4)
    p = learner.init_params(generator=torch.Generator().manual_seed(0))
    opt = adam_init(p)

    def j(params):
        return float(
            meta_loss(learner, params, x, y, 3, generator=torch.Generator().manual_seed(5)).mean()
        )

    before = j(p)
    for _ in range(40):
        p, opt, _, norm = bptt_step(
            learner,
            p,
            opt,
            x,
            y,
            3,
            lr=1e-2,
            clip=25.0,
            generator=torch.Generator().manual_seed(5),
        )
        assert norm >= 0
    assert j(p) < 0.9 * before


def test_bptt_clips_the_gradient_norm():
    learner = VSMLLearner(TINY)
    x, y = _episodes(4, 2, 5, 3, seed=4)
    p = learner.init_params(generator=torch.Generator().manual_seed(0))
    # With a tiny clip and SGD-like first Adam step the update size is lr per coordinate
    # whatever the clip, so check the reported norm and that clipping leaves a finite step.
    p2, _, _, norm = bptt_step(learner, p, adam_init(p), x, y, 3, lr=1e-3, clip=1e-8)
    assert norm > 1e-8
    for k in p:
        assert torch.isfinite(p2[k]).all()
        assert float((p2[k] - p[k]).abs().max()) <= 1e-3 + 1e-9


def test_metarnn_checks_its_padding():
    m = MetaRNN(4, 3, hidden=8)
    x, y = _episodes(3, 2, 5, 3, seed=0)
    with pytest.raises(ValueError, match="at most"):
        m.run(m.init_params(), x, y, 3)


def test_truncated_bptt_sees_the_same_loss_and_only_local_gradients():
    learner = VSMLLearner(TINY)
    x, y = _episodes(6, 3, 5, 3, seed=2)
    p = learner.init_params(generator=torch.Generator().manual_seed(0))

    def step(k):
        return bptt_step(
            learner,
            p,
            adam_init(p),
            x,
            y,
            3,
            lr=1e-3,
            truncation=k,
            generator=torch.Generator().manual_seed(4),
        )

    full, trunc_all, trunc2 = step(None), step(6), step(2)
    assert trunc_all[2] == pytest.approx(full[2], rel=1e-6)
    assert trunc2[2] == pytest.approx(full[2], rel=1e-5)  # the forward pass is unchanged
    assert trunc_all[3] == pytest.approx(full[3], rel=1e-5)
    assert trunc2[3] != pytest.approx(full[3], rel=1e-3)  # gradients cut between segments
    with pytest.raises(ValueError, match="VSMLLearner"):
        m = MetaRNN(5, 3, hidden=8)
        bptt_step(m, m.init_params(), adam_init(m.init_params()), x, y, 3, truncation=2)
