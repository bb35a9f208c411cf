"""Every ABCD rule against a hand-computed update, and the sharing maps."""

from __future__ import annotations

import pytest
import torch

from badgerlab.hebbian.rules import (
    SHARING,
    HebbianRule,
    PlasticityLayout,
    apply_folded,
    apply_folded_,
    fold,
    get_rule,
    hebbian_update,
    register_rule,
    rules,
)

RULE_NAMES = ["A", "AD", "AD_lr", "ABC", "ABC_lr", "ABCD", "ABCD_lr"]


def test_registry_holds_the_family_in_the_reference_order():
    assert list(rules()) == RULE_NAMES
    assert get_rule("ABCD_lr").coefficients == ("A", "B", "C", "eta", "D")
    assert get_rule("AD_lr").coefficients == ("A", "D", "eta")
    assert [get_rule(n).size for n in RULE_NAMES] == [1, 2, 3, 3, 4, 4, 5]
    with pytest.raises(ValueError, match="Hebbian rule 'XYZ'"):
        get_rule("XYZ")
    with pytest.raises(ValueError, match="already registered"):
        register_rule(HebbianRule("ABCD", ("A", "B", "C", "D")))
    with pytest.raises(ValueError, match="coefficients"):
        HebbianRule("bad", ("B",))


def _hand_update(name: str, c: list[float], w: float, o_i: float, o_j: float) -> float:
    """The rule written out for one synapse with scalars, coefficients in the rule's order."""
    if name == "A":
        (a,) = c
        return w + a * o_i * o_j
    if name == "AD":
        a, d = c
        return w + a * o_i * o_j + d
    if name == "AD_lr":
        a, d, eta = c
        return w + eta * (a * o_i * o_j + d)
    if name == "ABC":
        a, b, cc = c
        return w + a * o_i * o_j + b * o_i + cc * o_j
    if name == "ABC_lr":
        a, b, cc, eta = c
        return w + eta * (a * o_i * o_j + b * o_i + cc * o_j)
    if name == "ABCD":
        a, b, cc, d = c
        return w + a * o_i * o_j + b * o_i + cc * o_j + d
    a, b, cc, eta, d = c
    return w + eta * (a * o_i * o_j + b * o_i + cc * o_j + d)


@pytest.mark.parametrize("name", RULE_NAMES)
def test_each_rule_matches_the_hand_computed_update(name):
    g = torch.Generator().manual_seed(1)
    n_out, n_in = 3, 4
    lay = PlasticityLayout([(n_out, n_in)], name)
    theta = torch.randn(1, lay.num_params, generator=g, dtype=torch.float64)
    W = torch.randn(1, n_out, n_in, generator=g, dtype=torch.float64)
    pre = torch.randn(1, n_in, generator=g, dtype=torch.float64)
    post = torch.randn(1, n_out, generator=g, dtype=torch.float64)
    coefs = lay.coefficients(theta)[0]
    got = hebbian_update(W, pre, post, **coefs)
    folded = apply_folded(W, pre, post, fold(**coefs))
    inplace = apply_folded_(W.clone(), pre, post, lay.folded(theta)[0], torch.empty_like(W))
    block = theta.view(lay.rule.size, n_out, n_in)  # per-synapse layout: coefficient-major
    for j in range(n_out):
        for i in range(n_in):
            c = [float(block[n, j, i]) for n in range(lay.rule.size)]
            want = _hand_update(name, c, float(W[0, j, i]), float(pre[0, i]), float(post[0, j]))
            assert got[0, j, i].item() == pytest.approx(want, rel=1e-12, abs=1e-12)
    torch.testing.assert_close(folded, got, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(inplace, got, rtol=1e-12, atol=1e-12)


def test_plain_numbers_of_the_abcd_lr_rule():
    # η=0.5, A=2, B=3, C=-1, D=0.25, o_i=0.5, o_j=-2, w=1:
    # Δw = 0.5·(2·0.5·(−2) + 3·0.5 + (−1)(−2) + 0.25) = 0.5·1.75 = 0.875
    W = torch.ones(1, 1, 1, dtype=torch.float64)
    t = lambda v: torch.tensor([[[v]]], dtype=torch.float64)  # noqa: E731
    out = hebbian_update(
        W,
        torch.tensor([[0.5]], dtype=torch.float64),
        torch.tensor([[-2.0]], dtype=torch.float64),
        A=t(2.0),
        B=t(3.0),
        C=t(-1.0),
        D=t(0.25),
        eta=t(0.5),
    )
    assert out.item() == pytest.approx(1.875)


def test_sharing_maps():
    shapes = [(3, 4), (2, 3)]
    lay = {s: PlasticityLayout(shapes, "ABCD", sharing=s, k=5) for s in SHARING}
    assert lay["synapse"].rules_per_layer == (12, 6)
    assert lay["layer"].rules_per_layer == (1, 1)
    assert lay["post"].rules_per_layer == (3, 2)
    assert lay["pre"].rules_per_layer == (4, 3)
    assert lay["random_k"].num_rules == 5
    assert lay["random_k"].num_params == 5 * 4
    assert lay["synapse"].num_params == 18 * 4 and lay["layer"].num_params == 2 * 4

    # Per post-synaptic neuron: every synapse into neuron j shares j's rule; per pre: from i.
    post, pre = lay["post"].rule_index(0), lay["pre"].rule_index(0)
    assert torch.equal(post, torch.tensor([[0] * 4, [1] * 4, [2] * 4]))
    assert torch.equal(pre, torch.tensor([[0, 1, 2, 3]] * 3))
    assert torch.equal(lay["layer"].rule_index(1), torch.zeros(2, 3, dtype=torch.long))
    assert torch.equal(lay["synapse"].rule_index(1), torch.arange(6).view(2, 3))


@pytest.mark.parametrize("sharing", SHARING)
def test_expanded_coefficients_follow_the_rule_index(sharing):
    """Each synapse's coefficients are the entries of θ its rule index points to."""
    shapes = [(3, 4), (2, 3)]
    lay = PlasticityLayout(shapes, "ABCD_lr", sharing=sharing, k=4, assignment_seed=3)
    P, n_coef = 2, lay.rule.size
    theta = torch.randn(P, lay.num_params)
    coefs = lay.coefficients(theta)
    offset = 0
    for layer, ((o, i), n_rules) in enumerate(zip(shapes, lay.rules_per_layer, strict=True)):
        if sharing == "random_k":
            block = theta.view(P, n_coef, lay.k)
        else:
            block = theta[:, offset : offset + n_coef * n_rules].view(P, n_coef, n_rules)
            offset += n_coef * n_rules
        idx = lay.rule_index(layer)
        for n, name in enumerate(lay.rule.coefficients):
            full = coefs[layer][name].expand(P, o, i)
            torch.testing.assert_close(full, block[:, n, idx])


@pytest.mark.parametrize("rule", RULE_NAMES)
@pytest.mark.parametrize("sharing", SHARING)
def test_in_place_update_equals_the_pure_rule_under_every_sharing(rule, sharing):
    lay = PlasticityLayout([(5, 7)], rule, sharing=sharing, k=3)
    g = torch.Generator().manual_seed(2)
    theta = torch.randn(2, lay.num_params, generator=g, dtype=torch.float64)
    W = torch.randn(2, 5, 7, generator=g, dtype=torch.float64)
    pre = torch.randn(2, 7, generator=g, dtype=torch.float64)
    post = torch.randn(2, 5, generator=g, dtype=torch.float64)
    want = hebbian_update(W, pre, post, **lay.coefficients(theta)[0])
    scratch = torch.empty_like(W)
    got = apply_folded_(W.clone(), pre, post, lay.folded(theta)[0], scratch)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert scratch.shape == W.shape


def test_random_assignment_is_fixed_by_its_seed_and_uses_k_rules():
    a = PlasticityLayout([(16, 16)], "A", sharing="random_k", k=4, assignment_seed=0)
    b = PlasticityLayout([(16, 16)], "A", sharing="random_k", k=4, assignment_seed=0)
    c = PlasticityLayout([(16, 16)], "A", sharing="random_k", k=4, assignment_seed=1)
    assert torch.equal(a.rule_index(0), b.rule_index(0))
    assert not torch.equal(a.rule_index(0), c.rule_index(0))
    assert set(a.rule_index(0).unique().tolist()) == {0, 1, 2, 3}


def test_layout_rejects_bad_arguments():
    with pytest.raises(ValueError, match="sharing='neuron'"):
        PlasticityLayout([(2, 2)], "A", sharing="neuron")
    with pytest.raises(ValueError, match="shapes"):
        PlasticityLayout([(0, 2)], "A")
    lay = PlasticityLayout([(2, 2)], "AD")
    with pytest.raises(ValueError, match=r"theta must have shape \(P, 8\)"):
        lay.coefficients(torch.zeros(3, 7))
