"""Policies: normalisation, fresh random weights each episode, the update, the CNN front."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from badgerlab.hebbian.policy import (
    CNN_FEATURES,
    HebbianPolicy,
    PolicySpec,
    abs_max_normalise,
    abs_max_normalise_,
    cnn_features,
    preprocess_pixels,
)
from badgerlab.hebbian.rules import hebbian_update


def test_abs_max_normalise_per_member_and_layer():
    W = torch.tensor([[[1.0, -4.0], [2.0, 0.5]], [[0.1, 0.2], [-0.05, 0.0]], [[0.0] * 2] * 2])
    out = abs_max_normalise(W)
    torch.testing.assert_close(out[0], W[0] / 4.0)
    torch.testing.assert_close(out[1], W[1] / 0.2)
    assert torch.equal(out[2], torch.zeros(2, 2))  # a zeroed layer stays zero, no NaN
    assert torch.allclose(out[:2].abs().amax(dim=(1, 2)), torch.ones(2))
    inplace = abs_max_normalise_(W.clone(), torch.empty_like(W))
    torch.testing.assert_close(inplace, out)


@pytest.mark.parametrize("normalise", [True, False])
def test_update_is_the_rule_on_each_layer_from_that_steps_activations(normalise):
    spec = PolicySpec((5, 7, 3), rule="ABCD_lr", normalise=normalise)
    pol = HebbianPolicy(spec)
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(4, pol.num_params, generator=g, dtype=torch.float64)
    st = pol.init(theta, generator=g, dtype=torch.float64)
    obs = torch.randn(4, 5, generator=g, dtype=torch.float64)
    action, acts = pol.forward(st, obs)
    # Activations: input, tanh hidden, linear output (clipped only for the action).
    h = torch.tanh(torch.einsum("pji,pi->pj", st.weights[0], obs))
    o = torch.einsum("pji,pi->pj", st.weights[1], h)
    torch.testing.assert_close(acts[1], h)
    torch.testing.assert_close(acts[2], o)
    torch.testing.assert_close(action, o.clamp(-1, 1))
    new = pol.update(st, acts)
    coefs = pol.layout.coefficients(theta)
    for n in range(2):
        want = hebbian_update(st.weights[n], acts[n], acts[n + 1], **coefs[n])
        if normalise:
            want = want / want.abs().amax(dim=(1, 2), keepdim=True)
        torch.testing.assert_close(new.weights[n], want)
    inplace = pol.update(
        st._replace(weights=tuple(w.clone() for w in st.weights)), acts, inplace=True
    )
    for a, b in zip(inplace.weights, new.weights, strict=True):
        torch.testing.assert_close(a, b)


def test_weights_are_redrawn_uniformly_every_episode():
    pol = HebbianPolicy(PolicySpec((30, 40, 20), init_range=0.1))
    theta = torch.randn(2, pol.num_params)
    g = torch.Generator().manual_seed(0)
    first, second = pol.init(theta, generator=g), pol.init(theta, generator=g)
    for a, b in zip(first.weights, second.weights, strict=True):
        assert not torch.equal(a, b)
        assert a.abs().max() <= 0.1 and a.abs().max() > 0.09
        assert abs(a.mean().item()) < 0.01  # U(−0.1, 0.1): mean 0, sd 0.058
        assert a.std().item() == pytest.approx(0.2 / 12**0.5, rel=0.1)
    # Members of one batch get different weights too; per-member seeds make them batch-free.
    assert not torch.equal(first.weights[0][0], first.weights[0][1])
    alone = pol.init(theta[1:], seeds=[11])
    both = pol.init(theta, seeds=[10, 11])
    assert torch.equal(alone.weights[0][0], both.weights[0][1])


def test_static_policy_uses_theta_as_weights_and_never_changes():
    pol = HebbianPolicy(PolicySpec((3, 4, 2), plastic=False))
    theta = torch.randn(2, pol.num_params)
    assert pol.num_params == 3 * 4 + 4 * 2
    st = pol.init(theta)
    torch.testing.assert_close(st.weights[0].reshape(2, -1), theta[:, :12])
    torch.testing.assert_close(st.weights[1].reshape(2, -1), theta[:, 12:])
    _, acts = pol.forward(st, torch.randn(2, 3))
    assert pol.update(st, acts, inplace=True) is st
    torch.testing.assert_close(pol.init(theta).weights[0], st.weights[0])
    assert pol.coefficient_mask().all()  # static: every entry of θ is a weight


def test_action_maps():
    out = torch.tensor([[3.0, -2.0, 0.0]])
    clip = HebbianPolicy(PolicySpec((2, 3))).action(out)
    assert torch.equal(clip, torch.tensor([[1.0, -1.0, 0.0]]))
    car = HebbianPolicy(PolicySpec((2, 3), action="carracing")).action(out)
    torch.testing.assert_close(
        car,
        torch.tensor([[torch.tanh(torch.tensor(3.0)), torch.sigmoid(torch.tensor(-2.0)), 0.5]]),
    )
    with pytest.raises(ValueError, match="action='carracing' needs 3 outputs"):
        PolicySpec((2, 4), action="carracing")
    with pytest.raises(ValueError, match="sizes"):
        PolicySpec((2,))


def test_cnn_front_matches_per_member_convolutions():
    g = torch.Generator().manual_seed(0)
    P = 3
    frames = torch.randint(0, 256, (P, 96, 96, 3), generator=g, dtype=torch.uint8)
    x = preprocess_pixels(frames)
    assert x.shape == (P, 3, 84, 84) and 0 <= x.min() and x.max() <= 1
    c1, c2 = torch.randn(P, 6, 3, 3, 3, generator=g), torch.randn(P, 8, 6, 5, 5, generator=g)
    feats = cnn_features(x, c1, c2)
    assert feats.shape == (P, CNN_FEATURES)
    for p in range(P):
        h = F.max_pool2d(torch.tanh(F.conv2d(x[p : p + 1], c1[p])), 2)
        h = F.max_pool2d(torch.tanh(F.conv2d(h, c2[p], stride=2)), 2)
        torch.testing.assert_close(feats[p], h.flatten(), rtol=1e-5, atol=1e-5)


def test_pixel_policy_evolves_cnn_kernels_beside_the_rules():
    pol = HebbianPolicy(PolicySpec((CNN_FEATURES, 16, 3), pixels=True, action="carracing"))
    assert pol.num_cnn == 6 * 3 * 3 * 3 + 8 * 6 * 5 * 5 == 1362
    mask = pol.coefficient_mask()
    assert mask.sum() == pol.num_core and not mask[pol.num_core :].any()
    st = pol.init(torch.randn(2, pol.num_params), generator=torch.Generator().manual_seed(0))
    action, acts = pol.forward(st, torch.randint(0, 256, (2, 96, 96, 3), dtype=torch.uint8))
    assert action.shape == (2, 3) and acts[0].shape == (2, CNN_FEATURES)
    assert (action[:, 1:] >= 0).all() and (action[:, 1:] <= 1).all()


def test_episode_state_lives_on_thetas_device():
    """Random weights are drawn on the host (seeded) and placed beside θ, so a policy steps on
    the device of a batched simulator; the meta device stands in for a GPU here."""
    pol = HebbianPolicy(PolicySpec((3, 4, 2)))
    theta = torch.zeros(2, pol.num_params)
    host = pol.init(theta, seeds=[0, 1])
    meta = pol.init(theta.to("meta"), seeds=[0, 1])
    assert {w.device.type for w in meta.weights} == {"meta"}
    assert meta.rules[0].A.device.type == "meta"
    assert [w.shape for w in meta.weights] == [w.shape for w in host.weights]
