"""HebbNet's thresholded sparse rule, the Krotov–Hopfield rule and the linear read-out."""

from __future__ import annotations

import math

import pytest
import torch

from badgerlab.plasticity import hebbnet as H

torch.set_num_threads(1)
D64 = torch.float64


def _hand():
    # unit rows; x̂ = (0.6, 0.8), y = relu(W x̂) = (0.6, 1.0), mean threshold t = 0.8
    W = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=D64)
    x = torch.tensor([[3.0, 4.0]], dtype=D64)
    return W, x


def test_hebbnet_update_hand_example():
    W, x = _hand()
    dW = H.hebbnet_update(W, x, eta=0.5, p=1.0)
    # only unit 1 (y = 1.0 > 0.8) learns: η·1.0·x̂
    torch.testing.assert_close(dW, torch.tensor([[0.0, 0.0], [0.3, 0.4]], dtype=D64))
    # top p = 1/4 of 4 entries: the largest, 0.4, alone
    sparse = H.hebbnet_update(W, x, eta=0.5, p=0.25)
    torch.testing.assert_close(sparse, torch.tensor([[0.0, 0.0], [0.0, 0.4]], dtype=D64))
    # the step renormalises each row: (0.6, 1.2)/|·|
    step = H.hebbnet_step(W, x, eta=0.5, p=0.25)
    torch.testing.assert_close(step[1], torch.tensor([0.6, 1.2], dtype=D64) / math.sqrt(1.8))
    torch.testing.assert_close(step[0], W[0])


def test_hebbnet_update_batch_is_the_mean_of_the_samples():
    W, x = _hand()
    x2 = torch.cat([x, torch.tensor([[1.0, 0.0]], dtype=D64)])  # 2nd: y = (1, 0.6), t = 0.8
    dW = H.hebbnet_update(W, x2, eta=1.0, p=1.0)
    expected = 0.5 * (torch.tensor([[0, 0], [0.6, 0.8]]) + torch.tensor([[1.0, 0], [0, 0]]))
    torch.testing.assert_close(dW, expected.to(D64))


def test_threshold_zero_is_plain_hebb():
    W, x = _hand()
    dW = H.hebbnet_update(W, x, eta=0.5, p=1.0, threshold=0.0)
    xh = torch.tensor([0.6, 0.8], dtype=D64)
    torch.testing.assert_close(dW, 0.5 * torch.outer(torch.tensor([0.6, 1.0], dtype=D64), xh))
    g = torch.Generator().manual_seed(3)
    W = torch.randn(7, 5, generator=g, dtype=D64)
    x = torch.randn(4, 5, generator=g, dtype=D64)
    y = torch.relu(H.unit_rows(x) @ W.T)
    plain = 0.1 / 4 * y.T @ H.unit_rows(x)
    torch.testing.assert_close(H.hebbnet_update(W, x, eta=0.1, p=1.0, threshold=0.0), plain)


@pytest.mark.parametrize("p", [0.01, 0.013, 0.1, 0.5])
def test_exactly_top_p_entries_change(p):
    g = torch.Generator().manual_seed(0)
    W = H.init_hidden(50, 30, g).double()
    x = torch.rand(8, 30, generator=g, dtype=D64)  # positive inputs: many non-zero updates
    k = math.ceil(p * W.numel())
    dW = H.hebbnet_update(W, x, eta=0.1, p=p)
    assert int((dW != 0).sum()) == k
    assert int(((W + dW) != W).sum()) == k
    dense = H.hebbnet_update(W, x, eta=0.1, p=1.0)
    kept = dense.abs()[dW != 0]
    assert kept.min() >= dense.abs()[dW == 0].max()  # the kept ones are the largest
    torch.testing.assert_close(dW[dW != 0], dense[dW != 0])


def test_krotov_update_hand_example():
    W = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]], dtype=D64)
    x = torch.tensor([[3.0, 4.0]], dtype=D64)  # v = (0.6, 0.8); Q = (0.6, 0.8, 0.96)
    dW = H.krotov_update(W, x, eta=0.1, k=2, delta=0.5)
    # winner unit 2: v − 0.96 w₂ = (−0.168, 0.224); 2nd unit 1: −0.5 (v − 0.8 w₁) = (−0.3, 0)
    ds = torch.tensor([[0.0, 0.0], [-0.3, 0.0], [-0.168, 0.224]], dtype=D64)
    torch.testing.assert_close(dW, 0.1 * ds / 0.3)


def test_krotov_no_nan_on_unnormalised_or_zero_input():
    g = torch.Generator().manual_seed(1)
    W = torch.randn(6, 4, generator=g)
    x = torch.cat([1e6 * torch.rand(3, 4, generator=g), torch.zeros(1, 4)])
    W2 = H.krotov_step(W, x, eta=0.05)
    assert torch.isfinite(W2).all()
    assert torch.isfinite(H.hebbnet_step(W, x, eta=0.05)).all()
    assert torch.isfinite(H.features(W2, x)).all()
    # the input scale is irrelevant once inputs are unit vectors
    torch.testing.assert_close(
        H.krotov_update(W, x, eta=0.05), H.krotov_update(W, x * 1e-3, eta=0.05)
    )


def test_krotov_drives_winner_norm_to_one():
    g = torch.Generator().manual_seed(2)
    W = 3.0 * H.init_hidden(3, 10, g).double()
    W[0] = torch.rand(10, generator=g, dtype=D64) * 2  # positive: it wins every positive input
    for t in range(400):
        x = torch.rand(16, 10, generator=g, dtype=D64)
        W = H.krotov_step(W, x, eta=0.05 * (1 - t / 400), k=1, delta=0.0)
    assert abs(float(W[0].norm()) - 1) < 0.02


def test_linear_classifier_learns_digits_far_above_chance():
    from badgerlab.data import load

    tr, te = load("digits", "train"), load("digits", "test")
    W = H.init_hidden(64, 64, torch.Generator().manual_seed(0))
    w, b, m, s = H.linear_classifier(H.features(W, tr.x.flatten(1)), tr.y, 10, lr=0.03, steps=150)
    acc = ((H.features(W, te.x.flatten(1)) - m) / s @ w.T + b).argmax(1).eq(te.y).float().mean()
    assert float(acc) > 0.85  # chance 0.1; margin fixed before running


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda W, x: H.hebbnet_update(W, x[:, :3], eta=0.1), "same D"),
        (lambda W, x: H.hebbnet_update(W, x, eta=0.0), "eta"),
        (lambda W, x: H.hebbnet_update(W, x, eta=float("nan")), "eta"),
        (lambda W, x: H.hebbnet_update(W, x, eta=0.1, p=0.0), "p must"),
        (lambda W, x: H.hebbnet_update(W, x, eta=0.1, p=1.5), "p must"),
        (lambda W, x: H.hebbnet_update(W, x, eta=0.1, threshold="median"), "threshold"),
        (lambda W, x: H.hebbnet_update(W, x * float("nan"), eta=0.1), "finite"),
        (lambda W, x: H.krotov_update(W, x, eta=0.1, k=0), "k must"),
        (lambda W, x: H.krotov_update(W, x, eta=0.1, k=9), "k must"),
        (lambda W, x: H.krotov_update(W, x, eta=0.1, delta=-1.0), "delta"),
        (
            lambda W, x: H.linear_classifier(
                x, torch.zeros(2, dtype=torch.long), 3, lr=0.1, steps=5
            ),
            "y",
        ),  # fmt: skip
        (lambda W, x: H.init_hidden(0, 4, torch.Generator()), "hidden"),
    ],
)
def test_bad_inputs(call, match):
    W = H.init_hidden(5, 4, torch.Generator().manual_seed(0))
    x = torch.rand(3, 4, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match=match):
        call(W, x)
