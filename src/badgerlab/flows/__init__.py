"""SurVAE flows: bijections, surjections and stochastic layers with exact likelihood bookkeeping.

Nielsen, Jaini, Hoogeboom, Winther & Welling, "SurVAE Flows: Surjections to Bridge the Gap
between VAEs and Flows", NeurIPS 2020, https://arxiv.org/abs/2007.02731. Every layer is a
`Transform` (`forward(x) -> (z, V)`, `inverse(z) -> x`); `Flow(base, transforms)` sums the
likelihood contributions; `TRANSFORMS` is the registry of every transform family (a small
example of each, for the property tests).
"""

from __future__ import annotations

from .bijections import (
    ActNorm,
    AffineCoupling,
    Cast,
    Conv1x1,
    ConvAffineCoupling,
    Increments,
    InverseSoftplus,
    Logit,
    Permute,
    PointCoupling,
    Reshape,
    Reverse,
    ScalarAffine,
    Sigmoid,
    Squeeze,
)
from .distributions import (
    ConditionalNormal,
    DiagonalNormal,
    StandardHalfNormal,
    StandardNormal,
    StandardUniform,
)
from .flow import Flow, elbo_bpd, iwbo, iwbo_bpd, loglik_bpd, nats_to_bpd
from .nets import MLP, ConvNet, SetConvNet
from .surjections import (
    VAE,
    Abs,
    Augment,
    MaxPool2d,
    Slice,
    Sort,
    UniformDequantization,
    VariationalDequantization,
)
from .transforms import TRANSFORMS, Transform, TransformSpec, sum_event

PAPER = (
    "Nielsen, Jaini, Hoogeboom, Winther & Welling, SurVAE Flows: Surjections to Bridge the Gap "
    "between VAEs and Flows, NeurIPS 2020"
)
BIBTEX = """@inproceedings{nielsen2020survae,
  title={SurVAE Flows: Surjections to Bridge the Gap between VAEs and Flows},
  author={Nielsen, Didrik and Jaini, Priyank and Hoogeboom, Emiel and Winther, Ole and
          Welling, Max},
  booktitle={Advances in Neural Information Processing Systems},
  volume={33},
  year={2020}
}"""

__all__ = [
    "BIBTEX",
    "MLP",
    "PAPER",
    "TRANSFORMS",
    "VAE",
    "Abs",
    "ActNorm",
    "AffineCoupling",
    "Cast",
    "Augment",
    "ConditionalNormal",
    "Conv1x1",
    "ConvAffineCoupling",
    "ConvNet",
    "DiagonalNormal",
    "Flow",
    "Increments",
    "InverseSoftplus",
    "Logit",
    "MaxPool2d",
    "Permute",
    "PointCoupling",
    "Reshape",
    "Reverse",
    "ScalarAffine",
    "SetConvNet",
    "Sigmoid",
    "Slice",
    "Sort",
    "Squeeze",
    "StandardHalfNormal",
    "StandardNormal",
    "StandardUniform",
    "Transform",
    "TransformSpec",
    "UniformDequantization",
    "VariationalDequantization",
    "elbo_bpd",
    "iwbo",
    "iwbo_bpd",
    "loglik_bpd",
    "nats_to_bpd",
    "sum_event",
]
