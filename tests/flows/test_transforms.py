"""Property tests over every registered transform: inverses, log-dets against autograd (float64),
right-inverses of surjections, shapes and reproducibility of the stochastic directions."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch.autograd.functional import jacobian

import badgerlab.flows as flows
from badgerlab.flows import TRANSFORMS, Transform

torch.set_num_threads(1)

NAMES = TRANSFORMS.names()
BIJECTIONS = [n for n in NAMES if TRANSFORMS.get(n).build().kind == "bijection"]
INFERENCE = [n for n in NAMES if TRANSFORMS.get(n).build().kind == "inference"]
GENERATIVE = [n for n in NAMES if TRANSFORMS.get(n).build().kind == "generative"]


def _make(name: str, n: int = 5, seed: int = 0) -> tuple[Transform, torch.Tensor]:
    """A float64 instance with every parameter moved off its (often identity) init, and inputs."""
    spec = TRANSFORMS.get(name)
    torch.manual_seed(seed)
    t = spec.build().double()
    g = torch.Generator().manual_seed(seed)
    x = spec.sample(n, g).double()
    t(x, generator=torch.Generator().manual_seed(1))  # data-dependent inits (ActNorm) run first
    with torch.no_grad():
        for p in t.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return t.eval(), x


def test_registry_holds_every_transform_class():
    exported = {
        obj
        for name in flows.__all__
        if inspect.isclass(obj := getattr(flows, name))
        and issubclass(obj, Transform)
        and obj is not Transform
    }
    registered = {type(TRANSFORMS.get(n).build()) for n in NAMES}
    assert exported - registered == set()
    assert {"bijection", "inference", "generative", "stochastic"} == {
        TRANSFORMS.get(n).build().kind for n in NAMES
    }


def test_registry_refuses_duplicates_and_unknown_names():
    with pytest.raises(ValueError, match="already registered"):
        TRANSFORMS.register("abs", TRANSFORMS.get("abs"))
    with pytest.raises(ValueError, match="unknown transform"):
        TRANSFORMS.get("nosuch")


@pytest.mark.parametrize("name", NAMES)
def test_ldj_is_finite_per_example(name):
    t, x = _make(name)
    z, ldj = t(x, generator=torch.Generator().manual_seed(2))
    assert ldj.shape == (x.shape[0],)
    assert ldj.dtype == torch.float64
    assert torch.isfinite(ldj).all() and torch.isfinite(z).all()
    back = t.inverse(z, generator=torch.Generator().manual_seed(3))
    assert back.shape == x.shape


@pytest.mark.parametrize("name", BIJECTIONS)
def test_bijection_inverse_of_forward_is_identity(name):
    t, x = _make(name)
    z, _ = t(x)
    torch.testing.assert_close(t.inverse(z), x, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", BIJECTIONS)
def test_bijection_ldj_equals_autograd_log_abs_det(name):
    t, x = _make(name, n=3)
    _, ldj = t(x)
    for i in range(x.shape[0]):

        def f(v, shape=x.shape[1:]):
            return t(v.reshape(1, *shape))[0].reshape(-1)

        J = jacobian(f, x[i].reshape(-1))
        assert J.shape[0] == J.shape[1], "a bijection keeps the dimension"
        torch.testing.assert_close(ldj[i], torch.linalg.slogdet(J).logabsdet, atol=1e-9, rtol=0)


@pytest.mark.parametrize("name", INFERENCE)
def test_inference_surjection_forward_of_inverse_is_identity(name):
    t, x = _make(name)
    z, _ = t(x)
    for seed in range(3):
        x2 = t.inverse(z, generator=torch.Generator().manual_seed(seed))
        z2, _ = t(x2)
        torch.testing.assert_close(z2, z, atol=1e-12, rtol=0)
    assert not torch.equal(t.inverse(z, generator=torch.Generator().manual_seed(0)), x)


@pytest.mark.parametrize("name", GENERATIVE)
def test_generative_surjection_inverse_of_forward_is_identity(name):
    t, x = _make(name)
    for seed in range(3):
        z, _ = t(x, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(t.inverse(z), x, atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", [n for n in NAMES if n not in BIJECTIONS])
def test_stochastic_directions_follow_the_generator(name):
    t, x = _make(name)
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    z1, l1 = t(x, generator=g(5))
    z2, l2 = t(x, generator=g(5))
    assert torch.equal(z1, z2) and torch.equal(l1, l2)
    assert torch.equal(t.inverse(z1, generator=g(6)), t.inverse(z1, generator=g(6)))
    if t.stochastic_forward:
        assert not torch.equal(t(x, generator=g(7))[0], z1)


@pytest.mark.parametrize("name", NAMES)
def test_transform_survives_a_state_dict_round_trip(name):
    t, x = _make(name)
    fresh = TRANSFORMS.get(name).build().double()
    fresh.load_state_dict(t.state_dict())
    fresh.eval()
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    torch.testing.assert_close(fresh(x, generator=g())[1], t(x, generator=g())[1])


def test_cast_is_the_identity_in_another_precision():
    x = torch.randn(4, 3, dtype=torch.float64)
    z, ldj = flows.Cast(torch.float32)(x)
    assert z.dtype == torch.float32 and ldj.dtype == torch.float32
    assert torch.equal(ldj, torch.zeros(4))
    back = flows.Cast(torch.float32).inverse(z)
    assert back.dtype == torch.float64
    torch.testing.assert_close(back, x, atol=1e-6, rtol=1e-6)


def test_point_coupling_leaves_its_conditioning_half_and_refuses_bad_masks():
    t, x = _make("point-coupling-parity")
    assert t.mask.shape == (5, 3)
    z, _ = t(x)
    torch.testing.assert_close(z[:, t.mask], x[:, t.mask])  # the conditioner half is unchanged
    with pytest.raises(ValueError, match="mask must be one of"):
        flows.PointCoupling(5, 2, "diagonal")
    with pytest.raises(ValueError, match="kernel must be odd"):
        flows.SetConvNet(2, 2, kernel=4)
