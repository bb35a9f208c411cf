"""The VSML grid: parameter count, messages, invariances, populations and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from badgerlab.vsml.dense import DenseMetaRNN
from badgerlab.vsml.model import (
    VSML,
    LayerState,
    VSMLConfig,
    episode,
    init_params,
    init_state,
    layer_step,
    num_params,
    tick,
)

D64 = torch.float64


def _perturbed(cfg, seed=0, dtype=D64, population=None):
    # Random non-zero biases and LayerNorm affine parts, so that no term hides behind a zero.
    g = torch.Generator().manual_seed(seed)
    p = init_params(cfg, population=population, generator=g, dtype=dtype)
    return {k: v + 0.3 * torch.randn(v.shape, generator=g, dtype=dtype) for k, v in p.items()}


def test_meta_parameter_count_matches_reference():
    # LSTM: (2·8 + 16) inputs × 4·16 gates + 64 biases = 2112; two heads 2·(16·8 + 8) = 272.
    assert num_params(VSMLConfig()) == 2384
    # The reference's LayerNorm option adds a scale and an offset per head: 2·(8 + 8).
    assert num_params(VSMLConfig(layer_norm=True)) == 2384 + 32


def _cell_reference(p, cfg, fwd, bwd, h, c):
    """One cell by the equations, with the concatenated input [m→, m←] (no split)."""
    H = cfg.state_size
    w = torch.cat([p["w_f"], p["w_b"], p["w_h"]], 0)  # (2M+H, 4H)
    for _ in range(cfg.micro_ticks):
        z = torch.cat([fwd, bwd, h]) @ w + p["bias"]
        i, f, o, g = z.split(H)
        c = torch.sigmoid(f + cfg.forget_bias) * c + torch.sigmoid(
            i + cfg.input_bias
        ) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
    mf = h @ p["head_f.weight"] + p["head_f.bias"]
    mb = h @ p["head_b.weight"] + p["head_b.bias"]
    if cfg.layer_norm:
        mf = F.layer_norm(mf, mf.shape) * p["ln_f.scale"] + p["ln_f.offset"]
        mb = F.layer_norm(mb, mb.shape) * p["ln_b.scale"] + p["ln_b.offset"]
    return mf, mb, h, c


@pytest.mark.parametrize("layer_norm", [False, True])
def test_layer_messages_are_cell_outputs_averaged(layer_norm):
    cfg = VSMLConfig(layer_norm=layer_norm)
    p = _perturbed(cfg)
    A, B, N, M, H = 3, 4, 2, cfg.msg_size, cfg.state_size
    g = torch.Generator().manual_seed(1)
    st = LayerState(
        torch.randn(1, N, A, B, H, generator=g, dtype=D64),
        torch.randn(1, N, A, B, H, generator=g, dtype=D64),
        torch.randn(1, N, A, M, generator=g, dtype=D64),
        torch.randn(1, N, B, M, generator=g, dtype=D64),
    )
    fwd, bwd, h, c = layer_step({k: v[None] for k, v in p.items()}, st, cfg)
    assert fwd.shape == (1, N, B, M) and bwd.shape == (1, N, A, M)
    assert h.shape == c.shape == (1, N, A, B, H)
    for n in range(N):
        cells = [
            [
                _cell_reference(
                    p,
                    cfg,
                    st.fwd_in[0, n, a],
                    st.bwd_in[0, n, b],
                    st.h[0, n, a, b],
                    st.c[0, n, a, b],
                )
                for b in range(B)
            ]
            for a in range(A)
        ]
        for b in range(B):
            want = torch.stack([cells[a][b][0] for a in range(A)]).mean(0)
            torch.testing.assert_close(fwd[0, n, b], want)
        for a in range(A):
            want = torch.stack([cells[a][b][1] for b in range(B)]).mean(0)
            torch.testing.assert_close(bwd[0, n, a], want)
            for b in range(B):
                torch.testing.assert_close(h[0, n, a, b], cells[a][b][2])
                torch.testing.assert_close(c[0, n, a, b], cells[a][b][3])


def test_stack_shapes_and_initial_state():
    cfg = VSMLConfig()
    st = init_state(
        cfg, (64, 32, 10), batch=3, population=2, generator=torch.Generator().manual_seed(0)
    )
    assert [tuple(s.h.shape) for s in st] == [(2, 3, 64, 32, 16), (2, 3, 32, 10, 16)]
    assert [tuple(s.fwd_in.shape) for s in st] == [(2, 3, 64, 8), (2, 3, 32, 8)]
    assert [tuple(s.bwd_in.shape) for s in st] == [(2, 3, 32, 8), (2, 3, 10, 8)]
    c = st[0].c
    assert torch.all(st[0].h == 0) and torch.all(c[..., 8:] == 0)
    # First half N(0, 1/A), truncated at two standard deviations of the untruncated normal,
    # which is rescaled by 1/0.8796 so that the truncated one has std 1/√A (Haiku's rule).
    assert abs(float(c[..., :8].std()) - 64**-0.5) < 0.01
    assert float(c[..., :8].abs().max()) <= 2 * 64**-0.5 / 0.87962566 + 1e-6
    x = torch.randn(3, 2, 3, 64)
    y = torch.randint(0, 10, (3, 2, 3))
    r = episode(init_params(cfg, population=2), x, y, cfg, states=st)
    assert r.logits.shape == (3, 2, 3, 10) and r.loss.shape == (3, 2, 3)


def test_prediction_is_made_before_the_label_is_seen():
    cfg = VSMLConfig(feed_label=True)
    p = _perturbed(cfg)
    x = torch.randn(4, 2, 5, dtype=D64)
    y1 = torch.randint(0, 3, (4, 2))
    y2 = y1.clone()
    y2[2] = (y2[2] + 1) % 3
    kw = dict(sizes=(5, 3))
    r1 = episode(p, x, y1, cfg, generator=torch.Generator().manual_seed(0), **kw)
    r2 = episode(p, x, y2, cfg, generator=torch.Generator().manual_seed(0), **kw)
    torch.testing.assert_close(r1.logits[:3], r2.logits[:3])
    assert (r1.logits[3] - r2.logits[3]).abs().max() > 1e-6
    assert r1.logits.abs().max() <= cfg.tanh_bound


@pytest.mark.parametrize("layer_norm", [False, True])
def test_permuting_inputs_with_their_cells_permutes_nothing(layer_norm):
    cfg = VSMLConfig(layer_norm=layer_norm)
    p = _perturbed(cfg)
    sizes = (5, 4, 3)
    st = init_state(cfg, sizes, batch=2, generator=torch.Generator().manual_seed(3), dtype=D64)
    x = torch.randn(6, 2, 5, dtype=D64)
    y = torch.randint(0, 3, (6, 2))
    perm = torch.tensor([3, 0, 4, 1, 2])
    st_perm = list(st)
    s0 = st[0]
    st_perm[0] = LayerState(s0.h[:, :, perm], s0.c[:, :, perm], s0.fwd_in[:, :, perm], s0.bwd_in)
    r = episode(p, x, y, cfg, states=st)
    rp = episode(p, x[..., perm], y, cfg, states=st_perm)
    torch.testing.assert_close(r.logits, rp.logits)
    # Permuting the classes with the last layer's cells permutes the logits the same way.
    cperm = torch.tensor([2, 0, 1])
    inv = torch.argsort(cperm)
    s1 = st[1]
    st_c = [
        st[0],
        LayerState(s1.h[:, :, :, cperm], s1.c[:, :, :, cperm], s1.fwd_in, s1.bwd_in[:, :, cperm]),
    ]
    rc = episode(p, x, inv[y], cfg, states=st_c)
    torch.testing.assert_close(rc.logits, r.logits[..., cperm])


@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("backward_pass", [False, True])
def test_dense_meta_rnn_gives_the_grid_outputs(layer_norm, backward_pass):
    cfg = VSMLConfig(layer_norm=layer_norm, backward_pass=backward_pass, feed_label=True)
    p = _perturbed(cfg, seed=4)
    sizes = (3, 4, 2)
    st = init_state(cfg, sizes, batch=2, generator=torch.Generator().manual_seed(2), dtype=D64)
    dense = DenseMetaRNN(p, cfg, sizes)
    dense.load_states([s.h[0] for s in st], [s.c[0] for s in st], batch=2)
    assert dense.layers[0].w_hh.shape == (4 * 3 * 4 * 16, 3 * 4 * 16)
    g = torch.Generator().manual_seed(5)
    err = torch.zeros(1, 2, 2, 2, dtype=D64)
    for _ in range(5):
        x = torch.randn(1, 2, 3, generator=g, dtype=D64)
        yt = torch.randint(0, 2, (1, 2), generator=g)
        st, logits = tick(p, st, x, err, cfg)
        dl = dense.step(x[0], err[0])
        torch.testing.assert_close(logits[0], dl, rtol=1e-10, atol=1e-12)
        e = torch.softmax(logits, -1) - F.one_hot(yt, 2)
        err = torch.stack([e, F.one_hot(yt, 2).to(D64)], -1)
        if backward_pass:
            st, _ = tick(p, st, None, err, cfg, reverse=True)
            dense.step(None, err[0], reverse=True)
            err = torch.zeros_like(err)
    for s, h in zip(st, dense.h, strict=True):
        torch.testing.assert_close(s.h[0].reshape(2, -1), h, rtol=1e-10, atol=1e-12)


def test_population_axis_equals_separate_runs():
    cfg = VSMLConfig(layer_norm=True)
    pop = init_params(cfg, population=3, generator=torch.Generator().manual_seed(0))
    st = init_state(
        cfg, (6, 5, 4), batch=2, population=3, generator=torch.Generator().manual_seed(1)
    )
    x = torch.randn(4, 3, 2, 6)
    y = torch.randint(0, 4, (4, 3, 2))
    r = episode(pop, x, y, cfg, states=st)
    for k in range(3):
        pk = {n: v[k] for n, v in pop.items()}
        sk = [LayerState(*(t[k : k + 1] for t in s)) for s in st]
        rk = episode(pk, x[:, k], y[:, k], cfg, states=sk)
        torch.testing.assert_close(r.logits[:, k], rk.logits[:, 0], rtol=1e-5, atol=1e-6)


def test_same_parameters_run_on_any_grid_size():
    model = VSML(VSMLConfig())
    for a, b in [(4, 2), (13, 3), (64, 10)]:
        r = model(torch.randn(5, 2, a), torch.randint(0, b, (5, 2)), num_classes=b)
        assert r.logits.shape == (5, 1, 2, b)
        assert torch.isfinite(r.loss).all()


def test_bptt_gradient_matches_finite_differences_float64():
    # A tiny sub-LSTM (M=3, H=4: 206 meta-parameters) on a 2-layer 2→2→2 grid, 3 examples.
    cfg = VSMLConfig(msg_size=3, state_size=4, layer_norm=True, feed_label=True)
    p = _perturbed(cfg, seed=7)
    names = list(p)
    st = init_state(cfg, (2, 2, 2), batch=2, generator=torch.Generator().manual_seed(1), dtype=D64)
    x = torch.randn(3, 2, 2, dtype=D64)
    y = torch.tensor([[0, 1], [1, 1], [0, 0]])

    def loss(*tensors):
        return episode(dict(zip(names, tensors, strict=True)), x, y, cfg, states=st).loss.mean()

    leaves = tuple(v.clone().requires_grad_(True) for v in p.values())
    assert torch.autograd.gradcheck(loss, leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_default_size_directional_derivative_float64():
    cfg = VSMLConfig()
    p = _perturbed(cfg, seed=2)
    st = init_state(cfg, (4, 3), batch=2, generator=torch.Generator().manual_seed(0), dtype=D64)
    x = torch.randn(4, 2, 4, dtype=D64)
    y = torch.randint(0, 3, (4, 2))
    g = torch.Generator().manual_seed(9)
    d = {k: torch.randn(v.shape, generator=g, dtype=D64) for k, v in p.items()}
    leaves = {k: v.clone().requires_grad_(True) for k, v in p.items()}
    loss = episode(leaves, x, y, cfg, states=st).loss.mean()
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    analytic = sum(
        (gr * d[k]).sum() for k, gr in zip(leaves, grads, strict=True) if gr is not None
    )
    eps = 1e-6

    def f(sign):
        q = {k: v + sign * eps * d[k] for k, v in p.items()}
        return episode(q, x, y, cfg, states=st).loss.mean()

    numeric = (f(1) - f(-1)) / (2 * eps)
    torch.testing.assert_close(analytic, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("block", [1, 5, 12, 40])
def test_blocked_micro_ticks_equal_one_block(block, monkeypatch):
    import badgerlab.vsml.model as vm

    cfg = VSMLConfig(layer_norm=True)
    p = _perturbed(cfg, population=3)
    g = torch.Generator().manual_seed(0)
    P, N, A, B, H, M = 3, 2, 7, 3, cfg.state_size, cfg.msg_size
    st = LayerState(
        *(
            torch.randn(*s, generator=g, dtype=D64)
            for s in [(P, N, A, B, H), (P, N, A, B, H), (P, N, A, M), (P, N, B, M)]
        )
    )
    want = layer_step(p, st, cfg)
    monkeypatch.setattr(vm, "_BLOCK_CELLS", block)
    monkeypatch.setattr(vm, "_BLOCK_CELLS_AUTOGRAD", block)
    got = layer_step(p, st, cfg)
    for w, gt in zip(want, got, strict=True):
        torch.testing.assert_close(gt, w, rtol=1e-12, atol=1e-12)
