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
def test_fast_episode_equals_reference_episode(case, dtype, tol):
    cfg = VSMLConfig(**CASES[case])
    P, N, T, sizes = 3, 2, 6, (7, 5, 4, 3)
    p = _perturbed(cfg, P, dtype, seed=case)
    g = torch.Generator().manual_seed(10 + case)
    st = init_state(cfg, sizes, batch=N, population=P, generator=g, dtype=dtype)
    x = torch.randn(T, P, N, sizes[0], generator=g, dtype=dtype)
    y = torch.randint(0, sizes[-1], (T, P, N), generator=g)
    fast = episode(p, x, y, cfg, states=st)
    logits, states, error = reference_episode(p, x, y, cfg, st)
    assert float(logits.std()) > 1e-3  # a non-degenerate run
    torch.testing.assert_close(fast.logits, logits, rtol=tol, atol=tol)
    torch.testing.assert_close(fast.error, error, rtol=tol, atol=tol)
    for s_fast, s_ref in zip(fast.states, states, strict=True):
        for a, b in zip(s_fast, s_ref, strict=True):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_fast_layer_equals_reference_on_a_blocked_grid(monkeypatch):
    # A grid large enough for several blocks of cells (and a ragged last block).
    import badgerlab.vsml.model as vm

    monkeypatch.setattr(vm, "_BLOCK_CELLS", 7)
    cfg = VSMLConfig()
    p = _perturbed(cfg, 2, D64, seed=3)
    g = torch.Generator().manual_seed(4)
    st = [
        LayerState(
            *(
                torch.randn(*s, generator=g, dtype=D64)
                for s in [(2, 2, 5, 3, 16), (2, 2, 5, 3, 16), (2, 2, 5, 8), (2, 2, 3, 8)]
            )
        )
    ]
    x = torch.randn(3, 2, 2, 5, generator=g, dtype=D64)
    y = torch.randint(0, 3, (3, 2, 2), generator=g)
    fast = episode(p, x, y, cfg, states=st)
    logits, _, _ = reference_episode(p, x, y, cfg, st)
    torch.testing.assert_close(fast.logits, logits, rtol=1e-12, atol=1e-12)
