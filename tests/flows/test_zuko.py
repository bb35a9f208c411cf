"""Cross-checks against zuko's elementwise transforms (skipped when zuko is not installed)."""

from __future__ import annotations

import pytest
import torch

from badgerlab.flows import InverseSoftplus, Logit, Sigmoid

T = pytest.importorskip("zuko.transforms")

torch.set_num_threads(1)


@pytest.mark.parametrize(
    ("ours", "theirs", "domain"),
    [
        (Sigmoid(), lambda: T.SigmoidTransform(), "real"),
        (Logit(), lambda: T.SigmoidTransform().inv, "unit"),
        (InverseSoftplus(), lambda: T.SoftplusTransform().inv, "positive"),
    ],
)
def test_elementwise_ldj_matches_zuko(ours, theirs, domain):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64)
    if domain == "unit":
        x = torch.sigmoid(x)
    elif domain == "positive":
        x = x.exp()
    z, ldj = ours(x)
    t = theirs()
    torch.testing.assert_close(z, t(x))
    torch.testing.assert_close(ldj, t.log_abs_det_jacobian(x, z).sum(1))
