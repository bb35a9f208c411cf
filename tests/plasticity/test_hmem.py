"""H-Mem: closed-form write/read, saturation, permutation invariance of pairs, bad inputs."""

from __future__ import annotations

import pytest
import torch

from badgerlab.plasticity import hmem


def test_one_write_from_zero_then_read_is_closed_form():
    g = torch.Generator().manual_seed(0)
    B, m = 4, 6
    k, v, q = (torch.randn(B, m, generator=g, dtype=torch.float64) for _ in range(3))
    W = hmem.write(torch.zeros(B, m, m, dtype=torch.float64), k, v, gamma_pos=0.01, w_max=1.0)
    expected = 0.01 * 1.0 * (q * k).sum(-1, keepdim=True) * v
    torch.testing.assert_close(hmem.read(W, q), expected, rtol=0, atol=1e-15)


def test_module_one_pair_story_reads_gamma_wmax_qk_v():
    """Through the module: a one-step story gives W_1 = γ₊ w_max k vᵀ with the mixed v."""
    torch.manual_seed(0)
    net = hmem.HMem(5, 3, 4, 2, gamma_pos=0.05, w_max=2.0).double()
    g = torch.Generator().manual_seed(1)
    e = torch.randn(2, 1, 5, generator=g, dtype=torch.float64)
    W = net.memorize(e)
    k, v = net.extract(e[:, 0])
    v = net.ln_d(net.W_d(torch.cat([v, torch.zeros_like(v)], -1)))  # read-before-write: v_h = 0
    q = torch.randn(2, 4, generator=g, dtype=torch.float64)
    expected = 0.05 * 2.0 * (q * k).sum(-1, keepdim=True) * v
    torch.testing.assert_close(hmem.read(W, q), expected, rtol=1e-12, atol=1e-12)


def test_decay_term_alone():
    """With γ₊ = 0 the write is W − γ₋ W ⊙ (k² 1ᵀ): each row decays by its key's square."""
    W = torch.ones(1, 2, 3, dtype=torch.float64)
    k = torch.tensor([[2.0, 0.5]], dtype=torch.float64)
    out = hmem.write(W, k, torch.ones(1, 3, dtype=torch.float64), gamma_pos=0.0, gamma_neg=0.1)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([1 - 0.4, 1 - 0.025]).double())


def test_saturation_many_writes_stay_in_bounds():
    """Non-negative keys/values (a + b ≤ 1): 2000 writes never leave [0, w_max] ⊂ [−w_max, w_max],
    and a key/value written over and over drives W to its fixed point γ₊kv w_max/(γ₊kv + γ₋k²)."""
    g = torch.Generator().manual_seed(0)
    B, m, w_max = 3, 5, 0.7
    W = torch.zeros(B, m, m, dtype=torch.float64)
    for _ in range(2000):
        k = 3 * torch.rand(B, m, generator=g, dtype=torch.float64)
        v = 3 * torch.rand(B, m, generator=g, dtype=torch.float64)
        W = hmem.write(W, k, v, gamma_pos=0.05, gamma_neg=0.05, w_max=w_max)
        assert W.min() >= 0.0 and W.max() <= w_max
    k = torch.full((1, 2), 2.0, dtype=torch.float64)
    v = torch.full((1, 2), 2.0, dtype=torch.float64)
    W = torch.zeros(1, 2, 2, dtype=torch.float64)
    for _ in range(3000):
        W = hmem.write(W, k, v, gamma_pos=0.01, gamma_neg=0.01, w_max=1.0)
    torch.testing.assert_close(W, torch.full_like(W, 0.5), rtol=0, atol=1e-9)
    W = torch.zeros(1, 2, 2, dtype=torch.float64)
    for _ in range(3000):  # no decay: pure saturation towards w_max, never past it
        W = hmem.write(W, k, v, gamma_pos=0.01, gamma_neg=0.0, w_max=1.0)
        assert W.max() <= 1.0
    assert W.min() > 0.999


def test_permuting_pairs_leaves_the_answer_unchanged():
    """Writes of pairs whose keys have disjoint supports commute exactly (each touches its own
    rows of W), so any order of the pairs gives the same read."""
    g = torch.Generator().manual_seed(0)
    B, m, P = 2, 6, 3
    keys = torch.zeros(P, B, m, dtype=torch.float64)
    for p in range(P):
        keys[p, :, 2 * p : 2 * p + 2] = torch.rand(B, 2, generator=g, dtype=torch.float64) + 0.5
    vals = torch.randn(P, B, m, generator=g, dtype=torch.float64)
    q = torch.rand(B, m, generator=g, dtype=torch.float64)
    answers = []
    for order in ([0, 1, 2], [2, 0, 1], [1, 2, 0]):
        W = torch.zeros(B, m, m, dtype=torch.float64)
        for p in order:
            W = hmem.write(W, keys[p], vals[p], gamma_pos=0.3, gamma_neg=0.2)
        answers.append(hmem.read(W, q))
    for a in answers[1:]:
        torch.testing.assert_close(a, answers[0], rtol=0, atol=1e-14)


def test_model_answer_invariant_to_pair_order_when_keys_disjoint():
    """The full model: H-Mem with a key extractor whose keys of different pairs are disjoint
    (block weights, inputs on disjoint blocks) answers the same for every order of the pairs."""
    torch.manual_seed(0)
    m, P = 6, 3
    net = hmem.HMem(2 * P, 2 * P, m, 4, gamma_neg=0.0).double()
    with torch.no_grad():
        net.W_k.weight.copy_(torch.kron(torch.eye(P), torch.ones(2, 2)).double())
        # LayerNorm would spread a block key over all units: make it the identity map on k
        net.ln_k = torch.nn.Identity()
    e = torch.kron(torch.eye(P), torch.ones(1, 2)).double()[None].repeat(2, 1, 1)  # (B, P, 2P)
    e = e * (1 + torch.rand(2, P, 1, dtype=torch.float64))
    query = torch.rand(2, 2 * P, dtype=torch.float64)
    # read-before-write sees k_tᵀ W = 0 for disjoint keys, so the mixed values do not depend
    # on the order either
    outs = [net(e[:, perm], query) for perm in ([0, 1, 2], [2, 1, 0], [1, 0, 2])]
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], rtol=0, atol=1e-12)


def test_no_plasticity_memory_stays_zero_and_output_is_constant():
    torch.manual_seed(0)
    net = hmem.HMem(4, 3, 5, 7, gamma_pos=0.0)
    W = net.memorize(torch.randn(3, 6, 4))
    assert torch.count_nonzero(W) == 0
    out = net(torch.randn(3, 6, 4), torch.randn(3, 3))
    torch.testing.assert_close(out, torch.zeros_like(out))


@pytest.mark.parametrize("cls", [hmem.HMem, hmem.MemNetBaseline, hmem.LSTMBaseline])
def test_models_shapes_and_gradients(cls):
    torch.manual_seed(0)
    net = cls(8, 4, 6, 10)
    out = net(torch.randn(5, 7, 8), torch.randn(5, 4))
    assert out.shape == (5, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_hops_change_the_read():
    torch.manual_seed(0)
    net = hmem.HMem(4, 4, 5, 3, hops=3)
    assert len(net.W_hops) == 2
    assert net(torch.randn(2, 3, 4), torch.randn(2, 4)).shape == (2, 3)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: hmem.write(torch.zeros(2, 3, 3), torch.zeros(2, 4), torch.zeros(2, 3)), "k"),
        (lambda: hmem.write(torch.zeros(2, 3, 3), torch.zeros(2, 3), torch.zeros(1, 3)), "v"),
        (lambda: hmem.write(torch.zeros(3, 3), torch.zeros(2, 3), torch.zeros(2, 3)), "W"),
        (
            lambda: hmem.write(
                torch.zeros(1, 2, 2), torch.zeros(1, 2), torch.zeros(1, 2), gamma_pos=-0.1
            ),
            "gamma_pos",
        ),
        (
            lambda: hmem.write(
                torch.zeros(1, 2, 2), torch.zeros(1, 2), torch.zeros(1, 2), w_max=0.0
            ),
            "w_max",
        ),
        (lambda: hmem.read(torch.zeros(1, 2, 2), torch.zeros(1, 3)), "q"),
        (lambda: hmem.HMem(0, 3, 4, 2), "input_size"),
        (lambda: hmem.HMem(3, 3, 4, 2, hops=0), "hops"),
        (lambda: hmem.HMem(3, 3, 4, 2, gamma_neg=2.0), "gamma_neg"),
        (lambda: hmem.HMem(3, 2, 4, 2)(torch.zeros(1, 2, 4), torch.zeros(1, 2)), "story"),
        (lambda: hmem.HMem(3, 2, 4, 2)(torch.zeros(1, 2, 3), torch.zeros(2, 2)), "query"),
        (lambda: hmem.LSTMBaseline(3, 2, 0, 2), "hidden_size"),
        (lambda: hmem.MemNetBaseline(3, 2, 4, 2)(torch.zeros(2, 3), torch.zeros(1, 2)), "story"),
    ],
)
def test_bad_inputs_name_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_integer_tensor_rejected():
    with pytest.raises(ValueError, match="W"):
        hmem.read(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2))


@pytest.mark.parametrize("cls", [hmem.HMem, hmem.MemNetBaseline, hmem.LSTMBaseline])
def test_padding_mask_equals_the_unpadded_story(cls):
    """A right-padded story with its mask answers exactly as the story alone (float64)."""
    torch.manual_seed(0)
    net = cls(5, 3, 6, 4).double()
    g = torch.Generator().manual_seed(2)
    story = torch.randn(2, 4, 5, generator=g, dtype=torch.float64)
    query = torch.randn(2, 3, generator=g, dtype=torch.float64)
    lengths = (4, 2)
    padded = torch.cat([story, torch.randn(2, 3, 5, generator=g, dtype=torch.float64)], 1)
    mask = torch.arange(7)[None] < torch.tensor(lengths)[:, None]
    out = net(padded, query, mask)
    for b, n in enumerate(lengths):
        alone = net(story[b : b + 1, :n], query[b : b + 1])
        torch.testing.assert_close(out[b : b + 1], alone, rtol=1e-12, atol=1e-12)


def test_bad_masks_are_refused():
    net = hmem.HMem(5, 3, 6, 4)
    story, query = torch.randn(2, 4, 5), torch.randn(2, 3)
    with pytest.raises(ValueError, match="mask must be a bool"):
        net(story, query, torch.ones(2, 4))
    with pytest.raises(ValueError, match="mask must have shape"):
        net(story, query, torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one step"):
        net(story, query, torch.zeros(2, 4, dtype=torch.bool))
    lstm = hmem.LSTMBaseline(5, 3, 6, 4)
    with pytest.raises(ValueError, match="right-padded"):
        lstm(story, query, torch.tensor([[False, True, True, True]] * 2))


def test_sum_hops_reads_out_the_sum_of_every_hop():
    torch.manual_seed(0)
    net = hmem.HMem(5, 3, 4, 2, hops=3, sum_hops=True).double()
    g = torch.Generator().manual_seed(3)
    story = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
    query = torch.randn(2, 3, generator=g, dtype=torch.float64)
    W = net.memorize(story)
    q = torch.relu(net.W_q(query))
    reads = [hmem.read(W, q)]
    for lin, ln in zip(net.W_hops, net.ln_hops, strict=True):
        q = ln(lin(torch.cat([query, reads[-1]], -1)))
        reads.append(hmem.read(W, q))
    torch.testing.assert_close(net(story, query), net.W_o(sum(reads)), rtol=1e-12, atol=1e-12)
    net.sum_hops = False
    torch.testing.assert_close(net(story, query), net.W_o(reads[-1]), rtol=1e-12, atol=1e-12)
