"""The fast VSML path (split projections, fused gates, blocks) equals the plain reference cell."""

from __future__ import annotations

import pytest
import torch

from badgerlab.vsml.model import (
    LayerState,
    VSMLConfig,
    episode,
    init_params,
    init_state,
    reference_cell,
    reference_episode,
)

D64 = torch.float64


def _perturbed(cfg, population, dtype, seed=0):
    # Non-zero biases and LayerNorm affine parts, so that no term hides behind a zero.
    g = torch.Generator().manual_seed(seed)
    p = init_params(cfg, population=population, generator=g, dtype=dtype)
    return {k: v + 0.3 * torch.randn(v.shape, generator=g, dtype=dtype) for k, v in p.items()}


def test_reference_cell_is_the_lstm_equations_for_one_cell():
    # One cell by hand: u = [m→, m←, h], z = u W + β, the +5/−5 offsets on f and i.
    cfg = VSMLConfig(msg_size=3, state_size=2)
    p = _perturbed(cfg, 1, D64)
    g = torch.Generator().manual_seed(1)
    fwd, bwd = (
        torch.randn(1, 1, 1, 3, generator=g, dtype=D64),
        torch.randn(1, 1, 1, 3, generator=g, dtype=D64),
    )
    h, c = (
        torch.randn(1, 1, 1, 1, 2, generator=g, dtype=D64),
        torch.randn(1, 1, 1, 1, 2, generator=g, dtype=D64),
    )
    h1, c1 = reference_cell(p, fwd, bwd, h, c, cfg)
    u = torch.cat([fwd[0, 0, 0], bwd[0, 0, 0], h[0, 0, 0, 0]])
    w = torch.cat([p["w_f"][0], p["w_b"][0], p["w_h"][0]])
    z = u @ w + p["bias"][0]
    sig = lambda v: 1 / (1 + torch.exp(-v))  # noqa: E731
    c_want = sig(z[2:4] + 5) * c[0, 0, 0, 0] + sig(z[0:2] - 5) * torch.tanh(z[6:8])
    h_want = sig(z[4:6]) * torch.tanh(c_want)
    torch.testing.assert_close(c1[0, 0, 0, 0], c_want, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(h1[0, 0, 0, 0], h_want, rtol=1e-14, atol=1e-14)


CASES = [
    dict(),
    dict(layer_norm=True, feed_label=True),
    dict(micro_ticks=3, backward_pass=True, feed_label=True),
    dict(layer_norm=True, backward_pass=True, logit_scale=3.0, tanh_bound=0.0),
]


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (D64, 1e-12)])
@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("grad", [False, True])
def test_fast_episode_equals_reference_episode(case, dtype, tol, grad):
    cfg = VSMLConfig(**CASES[case])
    P, N, T, sizes = 3, 2, 6, (7, 5, 4, 3)
    p = _perturbed(cfg, P, dtype, seed=case)
    if grad:
        p = {k: v.requires_grad_(True) for k, v in p.items()}
    g = torch.Generator().manual_seed(10 + case)
    st = init_state(cfg, sizes, batch=N, population=P, generator=g, dtype=dtype)
    x = torch.randn(T, P, N, sizes[0], generator=g, dtype=dtype)
    y = torch.randint(0, sizes[-1], (T, P, N), generator=g)
    fast = episode(p, x, y, cfg, states=st)
    assert fast.logits.requires_grad == grad
    with torch.no_grad():
        logits, states, error = reference_episode(p, x, y, cfg, st)
    assert float(logits.std()) > 1e-3  # a non-degenerate run
    torch.testing.assert_close(fast.logits.detach(), logits, rtol=tol, atol=tol)
    torch.testing.assert_close(fast.error.detach(), error, rtol=tol, atol=tol)
    for s_fast, s_ref in zip(fast.states, states, strict=True):
        for a, b in zip(s_fast, s_ref, strict=True):
            torch.testing.assert_close(a.detach(), b, rtol=tol, atol=tol)


@pytest.mark.parametrize("block", [1, 7, 16, 40, 4096])
@pytest.mark.parametrize("grad", [False, True])
def test_blocked_paths_equal_reference(block, grad, monkeypatch):
    # Blocks of one row, several rows (ragged), one batch entry, several members, everything;
    # the in-place path (no autograd) and the out-of-place one (params require grad).
    import badgerlab.vsml.model as vm

    monkeypatch.setattr(vm, "_BLOCK_CELLS", block)
    monkeypatch.setattr(vm, "_BLOCK_CELLS_AUTOGRAD", block)
    cfg = VSMLConfig(feed_label=True)
    p = _perturbed(cfg, 3, D64, seed=3)
    if grad:
        p = {k: v.requires_grad_(True) for k, v in p.items()}
    g = torch.Generator().manual_seed(4)
    st = [
        LayerState(
            *(
                torch.randn(*s, generator=g, dtype=D64)
                for s in [(3, 2, 5, 3, 16), (3, 2, 5, 3, 16), (3, 2, 5, 8), (3, 2, 3, 8)]
            )
        )
    ]
    x = torch.randn(3, 3, 2, 5, generator=g, dtype=D64)
    y = torch.randint(0, 3, (3, 3, 2), generator=g)
    fast = episode(p, x, y, cfg, states=st)
    assert fast.logits.requires_grad == grad
    with torch.no_grad():
        logits, states, _ = reference_episode(p, x, y, cfg, st)
    torch.testing.assert_close(fast.logits.detach(), logits, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast.states[0].c.detach(), states[0].c, rtol=1e-12, atol=1e-12)


def test_in_place_path_leaves_the_callers_state_untouched():
    cfg = VSMLConfig()
    p = _perturbed(cfg, 2, torch.float32)
    st = init_state(cfg, (6, 4), batch=2, population=2, generator=torch.Generator().manual_seed(0))
    before = [t.clone() for t in st[0]]
    with torch.no_grad():
        episode(p, torch.randn(3, 2, 2, 6), torch.zeros(3, 2, 2, dtype=torch.long), cfg, states=st)
    assert all(torch.equal(a, b) for a, b in zip(st[0], before, strict=True))


def test_reused_state_buffers_change_nothing():
    # Without autograd and without a trace, an episode alternates two sets of state buffers;
    # with `record=True` (the trace keeps every state) it allocates fresh ones: same numbers.
    cfg = VSMLConfig(backward_pass=True, feed_label=True, inner_batch=2)
    p = _perturbed(cfg, 2, torch.float32, seed=5)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(5, 2, 4, 6, generator=g)
    y = torch.randint(0, 3, (5, 2, 4), generator=g)
    with torch.no_grad():
        a = episode(p, x, y, cfg, sizes=(6, 4, 3), generator=torch.Generator().manual_seed(1))
        b = episode(
            p, x, y, cfg, sizes=(6, 4, 3), generator=torch.Generator().manual_seed(1), record=True
        )
    assert torch.equal(a.logits, b.logits)
    for sa, sb in zip(a.states, b.states, strict=True):
        assert torch.equal(sa.h, sb.h) and torch.equal(sa.c, sb.c)
    # the trace holds distinct tensors per example (nothing was overwritten)
    assert not torch.equal(b.trace[1][0].c, b.trace[2][0].c)


def _fused_or_skip():
    # The fused C++ kernel is opt-in and compiled per machine (~1.5 min): tested where it is
    # built already or where BADGERLAB_VSML_FUSED=1 asks for it.
    import os

    import badgerlab.vsml.model as vm

    if not (vm.fused_is_built() or os.environ.get("BADGERLAB_VSML_FUSED") == "1"):
        pytest.skip("fused VSML kernel not built (BADGERLAB_VSML_FUSED=1 builds it)")
    vm.use_fused(True)
    return vm


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (D64, 1e-12)])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_fused_kernel_equals_reference_episode(case, dtype, tol):
    vm = _fused_or_skip()
    try:
        cfg = VSMLConfig(**CASES[case], inner_batch=2)
        P, N, T, sizes = 2, 4, 6, (7, 5, 3)
        p = _perturbed(cfg, P, dtype, seed=case)
        g = torch.Generator().manual_seed(20 + case)
        st = init_state(cfg, sizes, batch=N, population=P, generator=g, dtype=dtype)
        x = torch.randn(T, P, N, sizes[0], generator=g, dtype=dtype)
        y = torch.randint(0, sizes[-1], (T, P, N), generator=g)
        with torch.no_grad():
            assert vm._fused_applies(st[0].h)
            fast = episode(p, x, y, cfg, states=st)
            logits, states, _ = reference_episode(p, x, y, cfg, st)
        torch.testing.assert_close(fast.logits, logits, rtol=tol, atol=tol)
        for s_fast, s_ref in zip(fast.states, states, strict=True):
            torch.testing.assert_close(s_fast.c, s_ref.c, rtol=tol, atol=tol)
    finally:
        vm.use_fused(False)
