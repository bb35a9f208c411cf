"""BYOL: the τ schedule in closed form, the EMA over parameters and buffers, the stop-gradient,
the 2 − 2cos loss and NT-Xent by hand, the collapse monitor, kornia views, and a short run on toy
data where removing the predictor collapses the projections."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from badgerlab.ssl.byol import (
    BYOL,
    SMALL_CNN,
    Augment,
    SimCLR,
    byol_loss,
    collapse_monitor,
    ema_update,
    encoder,
    nt_xent,
    regression_loss,
    tau_schedule,
)

F64 = torch.float64


# --- τ schedule ----------------------------------------------------------------------------


@pytest.mark.parametrize(("tau_base", "total"), [(0.996, 1000), (0.99, 7), (0.0, 10), (1.0, 3)])
def test_tau_schedule_closed_form_ends_and_monotone(tau_base, total):
    assert tau_schedule(0, total, tau_base=tau_base) == pytest.approx(tau_base, abs=1e-15)
    assert tau_schedule(total, total, tau_base=tau_base) == 1.0
    if total % 2 == 0:  # cos(π/2) = 0: halfway between τ_base and 1
        mid = tau_schedule(total // 2, total, tau_base=tau_base)
        assert mid == pytest.approx(1 - (1 - tau_base) / 2, abs=1e-12)
    taus = [tau_schedule(k, total, tau_base=tau_base) for k in range(total + 1)]
    assert all(b >= a for a, b in zip(taus, taus[1:], strict=False))


def test_tau_schedule_quarter_point_by_hand():
    # k/K = 1/3: (cos(π/3) + 1)/2 = 3/4, so τ = 1 − 0.004·0.75 = 0.997
    assert tau_schedule(1, 3, tau_base=0.996) == pytest.approx(0.997, abs=1e-12)


# --- EMA ------------------------------------------------------------------------------------


def _bn_net(seed: int) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


def test_ema_moves_parameters_and_batchnorm_buffers():
    online = _bn_net(0)
    target = copy.deepcopy(online)
    g = torch.Generator().manual_seed(1)
    online.train()
    for _ in range(3):  # the online running statistics move away from the target's
        online(torch.randn(16, 3, generator=g) * 3 + 2)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn(p.shape, generator=g))
    before = {k: v.clone() for k, v in target.state_dict().items()}
    on = online.state_dict()
    assert not torch.allclose(before["1.running_mean"], on["1.running_mean"])
    ema_update(target, online, 0.7)
    after = target.state_dict()
    for key, old in before.items():
        if key.endswith("num_batches_tracked"):
            assert int(after[key]) == int(on[key]) == 3
        else:
            torch.testing.assert_close(after[key], 0.7 * old + 0.3 * on[key])
    # τ = 0 is an exact copy, τ = 1 leaves the target alone
    ema_update(target, online, 1.0)
    torch.testing.assert_close(target.state_dict()["1.running_var"], after["1.running_var"])
    ema_update(target, online, 0.0)
    for key, value in online.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_byol_update_target_reaches_encoder_and_projector_buffers():
    enc, feat = encoder(SMALL_CNN, 1, width=4)
    model = BYOL(enc, feat, hidden=8, out=4)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 8, 8, generator=g)
    model.loss(x, x.flip(-1))  # train-mode forward: the online (and target) BN stats move
    model.update_target(0.0)
    online = {**model.encoder.state_dict(), **model.projector.state_dict()}
    target = {**model.target_encoder.state_dict(), **model.target_projector.state_dict()}
    assert any("running_mean" in k for k in online)
    for key, value in online.items():
        assert torch.equal(target[key], value), key


# --- stop-gradient --------------------------------------------------------------------------


def test_target_receives_no_gradient_even_when_it_asks_for_one():
    enc, feat = encoder(SMALL_CNN, 1, width=4)
    model = BYOL(enc, feat, hidden=8, out=4)
    tparams = [*model.target_encoder.parameters(), *model.target_projector.parameters()]
    assert all(not p.requires_grad for p in tparams)
    for p in tparams:  # the stop-gradient must not rest on the flag alone
        p.requires_grad_(True)
    g = torch.Generator().manual_seed(0)
    v1, v2 = torch.rand(2, 6, 1, 8, 8, generator=g)
    loss, z1 = model.loss(v1, v2)
    loss.backward()
    assert z1.shape == (6, 4)
    assert all(p.grad is None for p in tparams)
    online = model.online_parameters()
    assert not {id(p) for p in online} & {id(p) for p in tparams}
    assert all(p.grad is not None for p in online)
    assert sum(float(p.grad.abs().sum()) for p in model.predictor.parameters()) > 0


def test_byol_loss_detaches_the_targets():
    g = torch.Generator().manual_seed(0)
    p1, p2, z1t, z2t = (
        torch.randn(5, 3, generator=g, dtype=F64, requires_grad=True) for _ in "1234"
    )
    grads = torch.autograd.grad(byol_loss(p1, p2, z1t, z2t), [p1, p2, z1t, z2t], allow_unused=True)
    assert grads[2] is None and grads[3] is None
    assert float(grads[0].abs().sum()) > 0 and float(grads[1].abs().sum()) > 0


# --- losses by hand -------------------------------------------------------------------------


def test_regression_loss_is_two_minus_two_cos_by_hand():
    p = torch.tensor([[3.0, 4.0], [1.0, 0.0], [2.0, 0.0]], dtype=F64)
    z = torch.tensor([[4.0, 3.0], [0.0, 5.0], [-1.0, 0.0]], dtype=F64)
    # cos = 24/25, 0, −1
    want = torch.tensor([2 - 48 / 25, 2.0, 4.0], dtype=F64)
    torch.testing.assert_close(regression_loss(p, z), want)
    unit = (p / p.norm(dim=1, keepdim=True) - z / z.norm(dim=1, keepdim=True)).pow(2).sum(1)
    torch.testing.assert_close(regression_loss(p, z), unit)


def test_byol_loss_is_the_symmetrised_mean_and_symmetric_in_the_views():
    g = torch.Generator().manual_seed(3)
    p1, p2, z1t, z2t = (torch.randn(7, 5, generator=g, dtype=F64) for _ in "1234")
    loss = byol_loss(p1, p2, z1t, z2t)
    cos = torch.nn.functional.cosine_similarity
    by_hand = sum(
        (2 - 2 * cos(p1[i], z2t[i], dim=0)) + (2 - 2 * cos(p2[i], z1t[i], dim=0)) for i in range(7)
    )
    torch.testing.assert_close(loss, by_hand / 7)
    torch.testing.assert_close(byol_loss(p2, p1, z2t, z1t), loss)  # views swapped
    # each target is compared with the prediction of the *other* view
    assert not torch.allclose(byol_loss(p1, p2, z2t, z1t), loss)


def _nt_xent_loop(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    u = [r / math.sqrt(float(r @ r)) for r in torch.cat([z1, z2])]
    n, b = len(u), len(z1)
    total = torch.zeros((), dtype=F64)
    for i in range(n):
        j = i + b if i < b else i - b
        den = sum(torch.exp(u[i] @ u[k] / t) for k in range(n) if k != i)
        total = total - torch.log(torch.exp(u[i] @ u[j] / t) / den)
    return total / n


@pytest.mark.parametrize("t", [0.1, 0.5, 2.0])
def test_nt_xent_matches_a_hand_written_loop_in_float64(t):
    g = torch.Generator().manual_seed(4)
    z1, z2 = torch.randn(2, 6, 4, generator=g, dtype=F64)
    torch.testing.assert_close(nt_xent(z1, z2, temperature=t), _nt_xent_loop(z1, z2, t))
    torch.testing.assert_close(nt_xent(z2, z1, temperature=t), nt_xent(z1, z2, temperature=t))
    torch.testing.assert_close(nt_xent(3 * z1, z2, temperature=t), nt_xent(z1, z2, temperature=t))


def test_simclr_loss_is_nt_xent_of_its_projections():
    enc, feat = encoder(SMALL_CNN, 1, width=4)
    model = SimCLR(enc, feat, hidden=8, out=4, temperature=0.3)
    g = torch.Generator().manual_seed(0)
    v1, v2 = torch.rand(2, 5, 1, 8, 8, generator=g)
    loss, z1 = model.loss(v1, v2)
    z = model.projector(model.encoder(torch.cat([v1, v2])))
    torch.testing.assert_close(z1, z[:5])
    torch.testing.assert_close(loss, nt_xent(z[:5], z[5:], temperature=0.3))


# --- collapse monitor -----------------------------------------------------------------------


def test_collapse_monitor_on_spread_collapsed_and_line_batches():
    g = torch.Generator().manual_seed(0)
    d = 16
    spread = collapse_monitor(torch.randn(4096, d, generator=g))
    assert spread["z_std_sqrt_d"] == pytest.approx(1.0, abs=0.02)  # ≈ 1/√d per dimension
    assert spread["z_std"] == pytest.approx(spread["z_std_sqrt_d"] / math.sqrt(d))
    assert spread["eff_rank"] > 0.95 * d
    point = torch.randn(1, d, generator=g, dtype=F64)
    scaled = collapse_monitor(point * (0.5 + torch.rand(64, 1, generator=g, dtype=F64)))
    assert scaled["z_std_sqrt_d"] < 1e-6  # one direction, any norms: collapsed
    assert collapse_monitor(point.repeat(64, 1)) == {
        "z_std": 0.0,
        "z_std_sqrt_d": 0.0,
        "eff_rank": 0.0,
    }
    signs = torch.where(torch.rand(64, 1, generator=g) < 0.5, -1.0, 1.0)
    line = collapse_monitor(signs * point)  # ±u: a batch on one line
    assert line["eff_rank"] == pytest.approx(1.0, abs=1e-9)
    assert line["z_std_sqrt_d"] > 0.5


# --- augmentations and encoders ---------------------------------------------------------------


@pytest.mark.parametrize(("channels", "size"), [(1, (8, 8)), (3, (12, 10))])
def test_augment_shape_device_range_and_two_different_views(channels, size):
    x = torch.rand(16, channels, *size, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(0)
    aug = Augment(size, channels)
    state = torch.get_rng_state()
    v1, v2 = aug(x, g)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's global RNG is untouched
    for v in (v1, v2):
        assert v.shape == x.shape and v.dtype == x.dtype and v.device == x.device
        assert float(v.min()) >= 0.0 and float(v.max()) <= 1.0
    assert (v1 - v2).abs().flatten(1).amax(1).gt(1e-3).all()  # every image: two views differ
    again = aug(x, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], v1) and torch.equal(again[1], v2)


def test_encoders_feature_sizes():
    net, feat = encoder(SMALL_CNN, 1, width=4)
    assert feat == 16 and net(torch.rand(3, 1, 8, 8)).shape == (3, 16)
    net, feat = encoder("resnet18", 3)
    assert feat == 512 and net(torch.rand(2, 3, 32, 32)).shape == (2, 512)


# --- bad inputs -----------------------------------------------------------------------------


def test_bad_inputs_raise_value_errors_naming_the_argument():
    cases = [
        (lambda: tau_schedule(-1, 10), "k"),
        (lambda: tau_schedule(11, 10), "k"),
        (lambda: tau_schedule(0, 0), "total"),
        (lambda: tau_schedule(0, 10, tau_base=1.5), "tau_base"),
        (lambda: ema_update(_bn_net(0), _bn_net(1), float("nan")), "tau"),
        (lambda: ema_update(nn.Linear(2, 2), nn.Linear(2, 3), 0.5), "differ in shape"),
        (lambda: ema_update(nn.Linear(2, 2), nn.BatchNorm1d(2), 0.5), "different parameters"),
        (lambda: regression_loss(torch.ones(3, 2), torch.ones(3, 4)), "p, z"),
        (lambda: byol_loss(*torch.ones(3, 2, 2), torch.full((2, 2), math.nan)), "z2t"),
        (lambda: nt_xent(torch.ones(3, 2), torch.ones(3, 2), temperature=0.0), "temperature"),
        (lambda: nt_xent(torch.ones(1, 2), torch.ones(1, 2)), "z1, z2"),
        (lambda: collapse_monitor(torch.ones(5)), "z must be"),
        (lambda: collapse_monitor(torch.full((3, 2), math.inf)), "z has"),
        (lambda: encoder("vgg", 1), "kind"),
        (lambda: encoder(SMALL_CNN, 0), "channels"),
        (lambda: SimCLR(nn.Identity(), 4, temperature=-1.0), "temperature"),
        (lambda: Augment((8, 8), 2), "channels"),
        (lambda: Augment((8, 8), 1, crop_scale=(0.0, 1.0)), "crop_scale"),
        (lambda: Augment((8, 8), 1, blur_p=2.0), "blur_p"),
        (lambda: Augment((8, 8), 1)(torch.rand(4, 3, 8, 8), torch.Generator()), "x must be"),
        (lambda: Augment((8, 8), 1)(torch.rand(4, 1, 8, 8), None), "generator"),
    ]
    for make, name in cases:
        with pytest.raises(ValueError, match=name):
            make()


# --- a short run where the predictor prevents collapse --------------------------------------

# Fixed before measuring (the thresholds): without the predictor the per-dimension std
# of the normalised projection falls below 0.25/√d, with it it stays above 0.5/√d.
COLLAPSED, HEALTHY = 0.25, 0.5


def _toy_run(predictor: bool, seed: int = 0, steps: int = 150) -> float:
    """BYOL on 8 Gaussian clusters in R¹⁶ with heavy additive-noise views (std 4, twice the
    cluster spacing scale), where no-predictor collapse sets in within a hundred steps."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(8, 16, generator=g) * 2
    x = centres[torch.randint(0, 8, (512,), generator=g)] + 0.5 * torch.randn(512, 16, generator=g)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        enc = nn.Sequential(nn.Linear(16, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 32))
        model = BYOL(enc, 32, hidden=64, out=16, predictor=predictor)
    opt = torch.optim.Adam(model.online_parameters(), lr=3e-3)
    stds = []
    for k in range(steps):
        xb = x[torch.randint(0, 512, (128,), generator=g)]
        v1, v2 = (xb + 4.0 * torch.randn(xb.shape, generator=g) for _ in range(2))
        loss, z = model.loss(v1, v2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.update_target(tau_schedule(k, steps, tau_base=0.99))
        stds.append(collapse_monitor(z)["z_std_sqrt_d"])
    return sum(stds[-10:]) / 10


def test_without_the_predictor_the_projections_collapse_with_it_they_do_not():
    assert _toy_run(predictor=False) < COLLAPSED
    assert _toy_run(predictor=True) > HEALTHY


def test_byol_digits_config_rejects_cross_field_errors():
    from badgerlab.experiment import ConfigError
    from badgerlab.experiments.byol_digits import EXPERIMENT

    for overrides, name in [
        ({"temperatures": [0.5, 0.1]}, "temperatures"),
        ({"probe_cs": []}, "probe_cs"),
        ({"train_size": 100, "batch_size": 64}, "batch_size"),
        ({"temperatures": [0.0, 0.5]}, "temperatures"),
    ]:
        with pytest.raises(ConfigError, match=name):
            EXPERIMENT.config("smoke", overrides)
