"""CLAPP's hand-written plasticity rule is exactly the gradient of its layer-local hinge loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from badgerlab.ssl.clapp import (
    ClappEncoder,
    ClappLayer,
    clapp_loss,
    clapp_masks,
    clapp_update,
    end_to_end_loss,
    infonce_loss,
    negative_index,
    patchify,
)

F64 = torch.float64
B, GH, GW, K = 4, 4, 3, 2


def _setup(kind: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    if kind == "conv":
        layer = ClappLayer(3, 5, kind="conv", stride=2, offsets=K, generator=g, dtype=F64)
        x = torch.rand(B, GH, GW, 3, 5, 5, generator=g, dtype=F64)
    else:
        layer = ClappLayer(12, 5, kind="linear", offsets=K, generator=g, dtype=F64)
        x = torch.rand(B, GH, GW, 12, generator=g, dtype=F64)
    return layer, x, negative_index(B, generator=g), g


def _masks(case: str, g: torch.Generator):
    if case == "clapp":
        return clapp_masks(K, B, GH, GW, variant="clapp", generator=g)
    both = clapp_masks(K, B, GH, GW, variant="clapp-s")
    if case == "both":
        return both
    zero = torch.zeros_like
    return [(p, zero(n)) if case == "positive" else (zero(p), n) for p, n in both]


def _autograd(layer, x, neg, masks):
    layer.zero_grad()
    loss, _ = clapp_loss(layer, x, neg=neg, masks=masks)
    loss.backward()
    return loss, {n: p.grad.clone() for n, p in layer.named_parameters()}


@pytest.mark.parametrize("kind", ["conv", "linear"])
@pytest.mark.parametrize("case", ["positive", "negative", "both", "clapp"])
def test_rule_equals_autograd_of_the_layer_loss(kind, case):
    layer, x, neg, g = _setup(kind)
    masks = _masks(case, g)
    loss, grads = _autograd(layer, x, neg, masks)
    delta, h, value = clapp_update(layer, x, neg=neg, masks=masks)
    for name, grad in grads.items():
        assert grad.abs().max() > 1e-4, f"{name}: the case must exercise the rule"
        torch.testing.assert_close(delta[name], -grad, rtol=0, atol=1e-10)
    assert value == pytest.approx(float(loss.detach()), abs=1e-12)
    torch.testing.assert_close(h, layer(x)[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["conv", "linear"])
@pytest.mark.parametrize("case", ["positive", "negative"])
def test_inactive_hinge_gives_an_exact_zero_update(kind, case):
    layer, x, neg, g = _setup(kind)
    # ReLU outputs are >= 0, so W_pred = ±α·𝟙𝟙ᵀ makes every u⁺ >> 1 (or every u⁻ << −1).
    sign = 1.0 if case == "positive" else -1.0
    with torch.no_grad():
        layer.w_pred.fill_(sign * 1e4)
    masks = _masks(case, g)
    loss, grads = _autograd(layer, x, neg, masks)
    delta, _, value = clapp_update(layer, x, neg=neg, masks=masks)
    assert float(loss.detach()) == 0.0 and value == 0.0
    for name, d in delta.items():
        assert torch.equal(d, torch.zeros_like(d)), name
        assert torch.equal(grads[name], torch.zeros_like(d)), name
    # The opposite term is active (u⁻ >> −1 or u⁺ << 1): the same weights do learn from it.
    other = _masks("negative" if case == "positive" else "positive", g)
    assert clapp_update(layer, x, neg=neg, masks=other)[0]["w_pred"].abs().max() > 0


def test_no_gradient_crosses_a_layer_boundary():
    g = torch.Generator().manual_seed(1)
    enc = ClappEncoder([4, 6, 5], in_channels=2, strides=[1, 2, 1], offsets=K, generator=g)
    enc = enc.to(F64)
    x = torch.rand(B, GH, GW, 2, 6, 6, generator=g, dtype=F64)
    neg = negative_index(B, generator=g)
    masks = _masks("both", g)
    h = x
    below = []
    for layer in enc.layers:
        loss, out = clapp_loss(layer, h, neg=neg, masks=masks)
        for p in below:
            grad = torch.autograd.grad(loss, p, retain_graph=True, allow_unused=True)[0]
            assert grad is None or torch.equal(grad, torch.zeros_like(grad))
        below += list(layer.parameters())
        h = layer(h)[0]  # not detached: only clapp_loss's own detach can stop the gradient
    # Control: the end-to-end loss on the same graph does reach the first layer.
    e2e = end_to_end_loss(list(enc.layers), x, neg=neg, masks=masks)
    grad = torch.autograd.grad(e2e, enc.layers[0].weight)[0]
    assert grad.abs().max() > 1e-6


@pytest.mark.parametrize("variant", ["clapp", "clapp-s"])
def test_training_with_the_rule_equals_training_with_autograd(variant):
    g = torch.Generator().manual_seed(2)
    enc = ClappEncoder([4, 5, 3], in_channels=1, strides=[1, 2, 1], offsets=K, generator=g)
    enc = enc.to(F64)
    twin = ClappEncoder([4, 5, 3], in_channels=1, strides=[1, 2, 1], offsets=K).to(F64)
    twin.load_state_dict(enc.state_dict())
    lr = 0.5
    for _ in range(4):
        x = torch.rand(B, GH, GW, 1, 6, 6, generator=g, dtype=F64)
        neg = negative_index(B, generator=g)
        masks = clapp_masks(K, B, GH, GW, variant=variant, generator=g)
        h = x
        with torch.no_grad():
            updates = []
            for layer in enc.layers:
                delta, h, _ = clapp_update(layer, h, neg=neg, masks=masks)
                updates.append(delta)
            for layer, delta in zip(enc.layers, updates, strict=True):
                for name, p in layer.named_parameters():
                    p += lr * delta[name]
        twin.zero_grad()
        h, total = x, 0
        for layer in twin.layers:
            loss, h = clapp_loss(layer, h, neg=neg, masks=masks)
            total = total + loss
        total.backward()
        with torch.no_grad():
            for p in twin.parameters():
                p -= lr * p.grad
    for (name, p), q in zip(enc.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-10, msg=name)
    moved = max(
        float((p - q).detach().abs().max())
        for p, q in zip(enc.parameters(), _fresh(), strict=True)
    )
    assert moved > 1e-3, "the encoder must actually have learned something"


def _fresh():
    g = torch.Generator().manual_seed(2)
    enc = ClappEncoder([4, 5, 3], in_channels=1, strides=[1, 2, 1], offsets=K, generator=g)
    return list(enc.to(F64).parameters())


def test_infonce_equals_a_loop_over_contexts():
    layer, x, _, _ = _setup("linear")
    loss, _ = infonce_loss(layer, x)
    _, z = layer(x)
    terms = []
    for k in range(1, K + 1):
        for i in range(GH - k):
            for j in range(GW):
                for b in range(B):
                    pred = layer.w_pred[k - 1] @ z[b, i, j]
                    scores = z[:, i + k, j] @ pred  # (B,)
                    terms.append(-F.log_softmax(scores, 0)[b])
    torch.testing.assert_close(loss, torch.stack(terms).mean(), rtol=0, atol=1e-12)


def test_patchify_negatives_and_masks():
    img = torch.arange(2 * 1 * 12 * 12, dtype=F64).reshape(2, 1, 12, 12)
    p = patchify(img, size=8, stride=2)
    assert p.shape == (2, 3, 3, 1, 8, 8)
    assert torch.equal(p[1, 2, 1, 0], img[1, 0, 4:12, 2:10])
    g = torch.Generator().manual_seed(3)
    for n in (2, 5, 32):
        neg = negative_index(n, generator=g)
        assert (neg != torch.arange(n)).all() and sorted(neg.tolist()) == list(range(n))
    for pos, neg_m in clapp_masks(3, 64, 5, 5, variant="clapp", generator=g):
        assert torch.equal(pos + neg_m, torch.ones_like(pos))
        assert 0.3 < float(pos.mean()) < 0.7


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="kind"):
        ClappLayer(1, 2, kind="rnn")
    with pytest.raises(ValueError, match="batch"):
        negative_index(1, generator=torch.Generator())
    with pytest.raises(ValueError, match="variant"):
        clapp_masks(1, 2, 3, 3, variant="cpc")
    with pytest.raises(ValueError, match="size"):
        patchify(torch.zeros(1, 1, 4, 4), size=8, stride=2)
    layer, x, neg, g = _setup("linear")
    with pytest.raises(ValueError, match="rows"):
        big = ClappLayer(12, 5, kind="linear", offsets=GH).to(F64)
        clapp_update(big, x, neg=neg, masks=clapp_masks(GH - 1, B, GH, GW, variant="clapp-s"))


def test_learning_with_the_rule_lowers_every_layers_loss_on_held_out_images():
    """40 CLAPP steps (Adam on the rule's update) on digits patches: the hinge loss of each
    layer on 64 held-out images, with fixed negatives and both terms, falls by >= 0.01 (from
    ~2: at the start every score u is near 0, so both hinge terms are near 1)."""
    from badgerlab.data import load

    x = F.interpolate(load("digits").x[:320], size=24, mode="bilinear", align_corners=False)
    P = patchify(x, size=8, stride=4)  # (320, 5, 5, 1, 8, 8)
    g = torch.Generator().manual_seed(0)
    enc = ClappEncoder([8, 8, 8], strides=[1, 2, 2], offsets=3, generator=g)
    held, neg = P[:64], negative_index(64, generator=g)
    both = clapp_masks(3, 64, 5, 5, variant="clapp-s")

    def losses():
        h, out = held, []
        for layer in enc.layers:
            loss, h = clapp_loss(layer, h, neg=neg, masks=both)
            out.append(float(loss.detach()))
        return out

    before = losses()
    opt = torch.optim.Adam(enc.parameters(), lr=1e-2)
    for _ in range(40):
        h = P[torch.randint(64, 320, (32,), generator=g)]
        masks = clapp_masks(3, 32, 5, 5, variant="clapp", generator=g)
        for layer in enc.layers:
            delta, h, _ = clapp_update(layer, h, neg=negative_index(32, generator=g), masks=masks)
            for name, p in layer.named_parameters():
                p.grad = -delta[name]
        opt.step()
    after = losses()
    for layer, (b, a) in enumerate(zip(before, after, strict=True), 1):
        assert a < b - 0.01, f"layer {layer}: held-out loss {b:.4f} -> {a:.4f}"


def test_clapp_patches_config_fills_the_image_size_and_names_bad_fields():
    from badgerlab.experiment import ConfigError
    from badgerlab.experiments.clapp_patches import EXPERIMENT

    assert EXPERIMENT.config("quick").image_size == 24  # digits 8x8, upscaled x3
    assert EXPERIMENT.config("quick", {"dataset": "mnist"}).image_size == 28
    assert EXPERIMENT.config("quick", {"dataset": "mnist", "image_size": 32}).image_size == 32
    with pytest.raises(ConfigError, match="conv_strides"):
        EXPERIMENT.config("quick", {"conv_strides": [1, 2]})
    with pytest.raises(ConfigError, match="rows"):
        EXPERIMENT.config("quick", {"image_size": 12})  # (12 - 8) // 4 + 1 = 2 rows <= 3
    with pytest.raises(ConfigError, match="patch"):
        EXPERIMENT.config("quick", {"image_size": 8, "patch": 12})
    with pytest.raises(ConfigError, match="lr_grid"):
        EXPERIMENT.config("quick", {"lr_grid": [0.0]})
