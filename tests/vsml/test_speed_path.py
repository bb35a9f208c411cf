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
@pytest.mark.parametrize("grad,fused", [(False, True), (False, False), (True, True)])
def test_fast_episode_equals_reference_episode(case, dtype, tol, grad, fused, monkeypatch):
    # fused=False: the torch ops even where the fused kernel (float32, no autograd) applies.
    import badgerlab.vsml.model as vm

    if not fused:
        monkeypatch.setitem(vm._fused_state, "enabled", False)
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
    # The fused kernel is the default float32 path where a C++ compiler builds it (~1-2 s,
    # then cached); where none does, the torch ops run and these tests have nothing to test.
    import badgerlab.vsml.model as vm

    vm.use_fused(True)
    if vm._fused_library() is None:
        pytest.skip(f"fused VSML kernel unavailable: {vm._fused_state.get('error')}")
    return vm


FUSED_CASES = [*CASES, dict(state_size=32, msg_size=5), dict(micro_ticks=1, inner_batch=2)]


@pytest.mark.parametrize("case", range(len(FUSED_CASES)))
def test_fused_kernel_equals_reference_episode(case, monkeypatch):
    # Grids of 7x5 and 5x3 cells: both a whole number of cell groups and a remainder.
    vm = _fused_or_skip()
    cfg = VSMLConfig(**FUSED_CASES[case])
    P, N, T, sizes = 2, 4, 6, (7, 5, 3)
    p = _perturbed(cfg, P, torch.float32, seed=case)
    g = torch.Generator().manual_seed(20 + case)
    st = init_state(cfg, sizes, batch=N, population=P, generator=g)
    x = torch.randn(T, P, N, sizes[0], generator=g)
    y = torch.randint(0, sizes[-1], (T, P, N), generator=g)
    calls = []
    lib = vm._fused_state["lib"]
    monkeypatch.setitem(vm._fused_state, "lib", lambda *a: calls.append(1) or lib(*a))
    with torch.no_grad():
        fast = episode(p, x, y, cfg, states=st)
        logits, states, _ = reference_episode(p, x, y, cfg, st)
    assert len(calls) == T * (len(sizes) - 1) * (1 + cfg.backward_pass)  # every layer step
    assert float(logits.std()) > 1e-3
    torch.testing.assert_close(fast.logits, logits, rtol=1e-6, atol=1e-6)
    for s_fast, s_ref in zip(fast.states, states, strict=True):
        for a, b in zip(s_fast, s_ref, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_fused_kernel_saturated_gates_stay_finite():
    # Pre-activations of +-1e4 (exp over- and underflow): sigmoid 0 or 1, as torch's.
    vm = _fused_or_skip()
    cfg = VSMLConfig()
    p = {k: 300 * v for k, v in _perturbed(cfg, 1, torch.float32, seed=7).items()}
    st = init_state(cfg, (6, 4), batch=1, population=1, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        fwd, bwd, h, c = vm.layer_step(p, st[0]._replace(fwd_in=st[0].fwd_in + 30), cfg)
        ref = (st[0].h, st[0].c)
        for _ in range(cfg.micro_ticks):
            ref = reference_cell(p, st[0].fwd_in + 30, st[0].bwd_in, *ref, cfg)
    assert torch.isfinite(h).all() and torch.isfinite(c).all()
    torch.testing.assert_close(h, ref[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(c, ref[1], rtol=1e-6, atol=1e-6)


def test_fused_only_where_it_applies(monkeypatch):
    # float64, autograd and use_fused(False) / BADGERLAB_VSML_FUSED=0 take the torch ops.
    vm = _fused_or_skip()
    h = torch.zeros(1, 1, 2, 2, 16)
    assert vm._fused_applies(h) and not vm._fused_applies(h.double())
    assert not vm._fused_applies(torch.zeros(1, 1, 2, 2, 12))
    try:
        assert vm.use_fused(False) is None and not vm._fused_applies(h)
    finally:
        vm.use_fused(True)
    monkeypatch.setenv("BADGERLAB_VSML_FUSED", "0")
    assert not vm._fused_wanted()
    monkeypatch.setenv("BADGERLAB_VSML_FUSED", "1")
    assert vm._fused_wanted()


def test_without_a_compiler_the_torch_ops_run_and_say_why(monkeypatch, tmp_path, caplog):
    import logging

    import badgerlab.vsml.model as vm

    monkeypatch.setattr(vm, "_fused_state", {"enabled": True})
    monkeypatch.setenv("BADGERLAB_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    cfg = VSMLConfig()
    p = _perturbed(cfg, 2, torch.float32)
    st = init_state(cfg, (5, 3), batch=1, population=2, generator=torch.Generator().manual_seed(0))
    x, y = torch.randn(3, 2, 1, 5), torch.zeros(3, 2, 1, dtype=torch.long)
    with caplog.at_level(logging.INFO, logger="badgerlab.vsml"), torch.no_grad():
        fast = episode(p, x, y, cfg, states=st)
        logits, _, _ = reference_episode(p, x, y, cfg, st)
    assert "fused VSML kernel unavailable" in caplog.text
    assert not vm._fused_applies(st[0].h) and "error" in vm._fused_state
    torch.testing.assert_close(fast.logits, logits, rtol=1e-6, atol=1e-6)
