"""Claim preconditions (`inconclusive`), smoke status, and status counts."""

from __future__ import annotations

import pytest

from badgerlab.runs import Claim, condition, count_statuses, evaluate_claims


def _status(claims, **kw):
    return {c.id: (c.status, c.note) for c in evaluate_claims(claims, **kw)}


def test_comparison_against_a_baseline_that_never_learned_is_inconclusive():
    claims = [
        Claim.measure("baseline-learned", "Meta-RNN learns", [0.326], op=">", threshold=0.533),
        Claim.measure(
            "beats-baseline", "VSML > Meta-RNN", [0.86], op=">", threshold=0.41,
            requires=["baseline-learned"],
        ),
    ]  # fmt: skip
    st = _status(claims)
    assert st["baseline-learned"][0] == "fail"
    status, note = st["beats-baseline"]
    assert status == "inconclusive"
    assert "baseline-learned" in note and "fail" in note and "0.326" in note


def test_inline_condition_names_the_number_and_the_negated_test():
    c = Claim.measure(
        "ood", "VSML > Meta-RNN OOD", [0.86], op=">", threshold=0.41,
        requires=[condition("Meta-RNN in-distribution last half", 0.326, ">", 0.533)],
    )  # fmt: skip
    status, note = _status([c])["ood"]
    assert status == "inconclusive"
    assert note == "precondition not met: Meta-RNN in-distribution last half 0.326 <= 0.533"


def test_met_preconditions_leave_the_judgement_alone_both_ways():
    ok = condition("baseline accuracy", 0.7, ">=", 0.5)
    claims = [
        Claim.measure("p", "passes", [1.0], op=">", threshold=0.5, requires=[ok]),
        Claim.measure("f", "fails", [0.1], op=">", threshold=0.5, requires=[ok, "p"]),
    ]
    st = _status(claims)
    assert st["p"][0] == "pass" and st["f"][0] == "fail"


def test_inconclusive_propagates_through_a_chain_of_requirements():
    claims = [
        Claim.measure("a", "a", [0.0], op=">", threshold=1.0),
        Claim.measure("b", "b", [2.0], op=">", threshold=1.0, requires=["a"]),
        Claim.measure("c", "c", [2.0], op=">", threshold=1.0, requires=["b"]),
    ]
    st = _status(claims)
    assert [st[k][0] for k in "abc"] == ["fail", "inconclusive", "inconclusive"]


def test_missing_requirement_cycle_and_missing_condition_value():
    claims = [
        Claim.measure("x", "x", [1.0], op=">", threshold=0.0, requires=["nosuch"]),
        Claim.measure("y", "y", [1.0], op=">", threshold=0.0, requires=["z"]),
        Claim.measure("z", "z", [1.0], op=">", threshold=0.0, requires=["y"]),
        Claim.measure(
            "w", "w", [1.0], op=">", threshold=0.0,
            requires=[condition("baseline", float("nan"), ">", 0.5)],
        ),
    ]  # fmt: skip
    st = _status(claims)
    assert st["x"][0] == "error" and "nosuch" in st["x"][1]
    assert st["y"][0] == "error" or st["z"][0] == "error"
    assert "cycle" in (st["y"][1] + st["z"][1])
    assert st["w"][0] == "inconclusive" and "missing" in st["w"][1]


def test_info_and_error_claims_are_not_made_inconclusive():
    bad = condition("baseline", 0.0, ">", 1.0)
    claims = [
        Claim.measure("i", "a number", [3.0], requires=[bad]),
        Claim.measure("e", "no data", None, op=">", threshold=0.0, requires=[bad]),
    ]
    st = _status(claims)
    assert st["i"][0] == "info" and st["e"][0] == "error"


def test_smoke_scale_records_but_does_not_judge():
    claims = [
        Claim.measure("p", "passes", [1.0], op=">", threshold=0.5),
        Claim.measure("f", "fails", [0.1], op=">", threshold=0.5),
        Claim.measure("n", "a number", [0.1]),
        Claim.measure("e", "missing", None, op=">", threshold=0.5),
    ]
    st = _status(claims, scale="smoke")
    assert {k: v[0] for k, v in st.items()} == {
        "p": "smoke",
        "f": "smoke",
        "n": "info",
        "e": "error",
    }
    assert "would be pass" in st["p"][1] and "would be fail" in st["f"][1]
    assert _status(claims, scale="quick")["p"][0] == "pass"


def test_count_statuses_lists_every_status():
    claims = evaluate_claims(
        [
            Claim.measure("a", "a", [0.0], op=">", threshold=1.0),
            Claim.measure("b", "b", [2.0], op=">", threshold=1.0, requires=["a"]),
            Claim.measure("c", "c", [2.0]),
        ]
    )
    counts = count_statuses(claims)
    assert counts == {
        "pass": 0, "fail": 1, "inconclusive": 1, "info": 1, "error": 0, "smoke": 0,
    }  # fmt: skip


def test_bad_requirements_and_conditions_are_refused():
    with pytest.raises(ValueError, match="requirement"):
        Claim.measure("x", "s", 1.0, op=">", threshold=0.0, requires=[3])
    with pytest.raises(ValueError, match="op"):
        condition("baseline", 1.0, "info", 0.0)
