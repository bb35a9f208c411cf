"""MAP-Elites on pyribs: QD-score offset for negative objectives, beating random sampling."""

from __future__ import annotations

import numpy as np
import pytest

from badgerlab.dynamics import games as G
from badgerlab.dynamics.qd import PayoffProfileDomain, map_elites, random_search


def _domain():
    A = G.blotto(10, 3)
    n = A.shape[0]
    refs = np.zeros((2, n))
    refs[0, 0] = 1.0
    refs[1, n // 2] = 1.0
    return PayoffProfileDomain(A, np.full(n, 1 / n), refs)


def test_domain_shapes_and_ranges():
    d = _domain()
    x = np.random.default_rng(0).standard_normal((5, d.dim))
    obj, meas = d.evaluate(x)
    assert obj.shape == (5,) and meas.shape == (5, 2)
    lo, hi = d.bounds
    assert (obj >= lo).all() and (obj <= hi).all()
    with pytest.raises(ValueError, match="references"):
        PayoffProfileDomain(d.A, d.population, np.zeros((3, d.dim)))


def test_qd_score_counts_from_the_offset(ribs):
    d = _domain()
    archive, hist = map_elites(d, iterations=20, batch_size=16, seed=0)
    data = archive.data()
    assert (data["objective"] < 0).any()  # negative objectives occur in this domain
    lo, _ = d.bounds
    assert hist.qd_score[-1] == pytest.approx(float((data["objective"] - lo).sum()))
    assert all(b >= a for a, b in zip(hist.qd_score, hist.qd_score[1:], strict=False))
    assert all(b >= a for a, b in zip(hist.coverage, hist.coverage[1:], strict=False))


def test_map_elites_covers_more_than_random_sampling(ribs):
    d = _domain()
    _, me = map_elites(d, iterations=60, batch_size=32, emitters=2, seed=0)
    _, rs = random_search(d, iterations=60, batch_size=64, seed=0)
    assert me.evaluations[-1] == rs.evaluations[-1]
    assert me.coverage[-1] > rs.coverage[-1] + 0.02
