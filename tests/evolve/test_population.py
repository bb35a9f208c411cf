"""Population evaluation: vmap equals a loop, flatten/unflatten round trips, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from badgerlab.evolve import (
    evaluate_population,
    flatten_params,
    load_flat_params,
    num_params,
    population_call,
    unflatten_params,
)


def make_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3))


def xent(forward, a, b):
    return nn.functional.cross_entropy(forward(a), b)


def test_flatten_unflatten_round_trip():
    net = make_net()
    flat = flatten_params(net)
    assert flat.shape == (num_params(net),) == (5 * 16 + 16 + 16 * 3 + 3,)
    parts = unflatten_params(net, flat)
    for name, p in net.named_parameters():
        assert torch.equal(parts[name], p.detach())
    pop = torch.stack([flat, 2 * flat])  # (2, D)
    parts = unflatten_params(net, pop)
    assert parts["0.weight"].shape == (2, 16, 5)
    assert torch.equal(parts["2.bias"][1], 2 * net[2].bias.detach())
    other = make_net()
    load_flat_params(other, 3 * flat)
    assert torch.equal(flatten_params(other), 3 * flat)


@pytest.mark.parametrize("batched", [False, True])
def test_vectorized_evaluation_equals_looped(batched):
    net = make_net()
    g = torch.Generator().manual_seed(1)
    P = 9
    x = flatten_params(net) + 0.3 * torch.randn(P, num_params(net), generator=g)
    if batched:  # each member its own data
        a = torch.randn(P, 20, 5, generator=g)
        b = torch.randint(0, 3, (P, 20), generator=g)
    else:
        a = torch.randn(20, 5, generator=g)
        b = torch.randint(0, 3, (20,), generator=g)
    vec = evaluate_population(net, xent, x, a, b, batched=batched)
    loop = evaluate_population(net, xent, x, a, b, batched=batched, vectorize=False)
    torch.testing.assert_close(vec, loop, rtol=1e-6, atol=1e-7)
    # and both equal the module itself with each member's parameters loaded
    clone = make_net()
    for i in range(P):
        load_flat_params(clone, x[i])
        ai, bi = (a[i], b[i]) if batched else (a, b)
        torch.testing.assert_close(vec[i], xent(clone, ai, bi), rtol=1e-6, atol=1e-7)
    chunked = evaluate_population(net, xent, x, a, b, batched=batched, chunk_size=4)
    torch.testing.assert_close(chunked, vec, rtol=1e-6, atol=1e-7)


def test_population_call_mixed_batched_inputs():
    net = make_net()
    x = flatten_params(net) + torch.randn(4, num_params(net))
    a = torch.randn(4, 7, 5)
    out = population_call(net, x, a, batched=[True])
    assert out.shape == (4, 7, 3)
    clone = make_net()
    load_flat_params(clone, x[2])
    torch.testing.assert_close(out[2], clone(a[2]), rtol=1e-6, atol=1e-6)


def test_gradients_flow_through_population():
    net = make_net()
    x = (flatten_params(net) + torch.randn(3, num_params(net))).requires_grad_()
    a, b = torch.randn(6, 5), torch.randint(0, 3, (6,))
    evaluate_population(net, xent, x, a, b).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_errors_name_the_argument():
    net = make_net()
    with pytest.raises(ValueError, match="x must have shape"):
        unflatten_params(net, torch.zeros(3, num_params(net) + 1))
    with pytest.raises(TypeError, match="module"):
        flatten_params(lambda z: z)
    with pytest.raises(ValueError, match="scalar tensor per member"):
        evaluate_population(
            net, lambda fwd, a: fwd(a), torch.zeros(2, num_params(net)), torch.zeros(4, 5)
        )
    with pytest.raises(ValueError, match="batched"):
        population_call(net, torch.zeros(2, num_params(net)), torch.zeros(2, 5), batched=[1, 0])
