"""The ABCD family of Hebbian rules, their registry, and how synapses share coefficients."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from badgerlab.registry import Registry

__all__ = [
    "RULES",
    "COEFFICIENTS",
    "SHARING",
    "FoldedRule",
    "HebbianRule",
    "PlasticityLayout",
    "apply_folded",
    "apply_folded_",
    "fold",
    "get_rule",
    "hebbian_update",
    "register_rule",
    "rules",
]

COEFFICIENTS = ("A", "B", "C", "D", "eta")
SHARING = ("synapse", "layer", "post", "pre", "random_k")


@dataclass(frozen=True)
class HebbianRule:
    """A member of the ABCD family: which coefficients it evolves, in the reference's order.

    The general rule (Najarro & Risi 2020, eq. 1, https://arxiv.org/abs/2007.02686) is

        Δw_ij = η_w (A_w o_i o_j + B_w o_i + C_w o_j + D_w),

    with o_i the pre-synaptic and o_j the post-synaptic activation of synapse w = w_ij. A rule
    without `eta` fixes η_w = 1; a rule without B, C or D fixes those to 0.
    """

    name: str
    coefficients: tuple[str, ...]

    def __post_init__(self) -> None:
        unknown = set(self.coefficients) - set(COEFFICIENTS)
        if unknown or "A" not in self.coefficients:
            raise ValueError(
                f"rule {self.name!r}: coefficients must include 'A' and come from "
                f"{COEFFICIENTS}, got {self.coefficients}"
            )
        if len(set(self.coefficients)) != len(self.coefficients):
            raise ValueError(f"rule {self.name!r}: repeated coefficients {self.coefficients}")

    @property
    def size(self) -> int:
        """Coefficients per rule."""
        return len(self.coefficients)


#: The Hebbian rules by name; a config field `rule: RULES.field_type()` accepts a registered one.
RULES: Registry[HebbianRule] = Registry("Hebbian rule")
_ORDER: list[str] = []  # registration order, the reference's listing


def register_rule(rule: HebbianRule) -> HebbianRule:
    """Add `rule` to `RULES` under `rule.name`; a name is registered once."""
    if not isinstance(rule, HebbianRule):
        raise TypeError(f"rule must be a HebbianRule, got {type(rule).__name__}")
    RULES.register(rule.name, rule)
    _ORDER.append(rule.name)
    return rule


def get_rule(name: str) -> HebbianRule:
    """The registered rule `name`: `A`, `AD`, `AD_lr`, `ABC`, `ABC_lr`, `ABCD` or `ABCD_lr`."""
    return RULES.get(name)


def rules() -> dict[str, HebbianRule]:
    """Every registered rule by name, in registration order."""
    return {name: RULES.get(name) for name in _ORDER if name in RULES}


# The reference's coefficient orders (enajx/HebbianMetaLearning): `_lr` puts η fourth, and in
# ABCD_lr ("D in") D sits inside η's bracket, as in the paper's equation.
for _name, _coefs in (
    ("A", ("A",)),
    ("AD", ("A", "D")),
    ("AD_lr", ("A", "D", "eta")),
    ("ABC", ("A", "B", "C")),
    ("ABC_lr", ("A", "B", "C", "eta")),
    ("ABCD", ("A", "B", "C", "D")),
    ("ABCD_lr", ("A", "B", "C", "eta", "D")),
):
    register_rule(HebbianRule(_name, _coefs))


def hebbian_update(
    W: Tensor,
    pre: Tensor,
    post: Tensor,
    *,
    A: Tensor,
    B: Tensor | None = None,
    C: Tensor | None = None,
    D: Tensor | None = None,
    eta: Tensor | None = None,
) -> Tensor:
    """One plasticity step, W + ΔW with ΔW_ji = η (A o_i o_j + B o_i + C o_j + D).

    W is stored like `torch.nn.Linear.weight`: row j is post-synaptic neuron j, column i is
    pre-synaptic neuron i. Shapes: `W` (..., J, I), `pre` = o (..., I), `post` = o (..., J);
    each coefficient broadcasts to (..., J, I) (per synapse (..., J, I), per post-synaptic
    neuron (..., J, 1), per pre-synaptic neuron (..., 1, I), per layer (..., 1, 1)). A missing
    coefficient is 0, a missing η is 1. Pure: nothing is modified in place.

    >>> W = torch.zeros(1, 2)
    >>> hebbian_update(W, torch.tensor([2.0, 3.0]), torch.tensor([0.5]), A=torch.ones(1, 2))
    tensor([[1.0000, 1.5000]])
    """
    o_i = pre.unsqueeze(-2)  # (..., 1, I)
    o_j = post.unsqueeze(-1)  # (..., J, 1)
    dW = A * o_j * o_i
    if B is not None:
        dW = dW + B * o_i
    if C is not None:
        dW = dW + C * o_j
    if D is not None:
        dW = dW + D
    if eta is not None:
        dW = eta * dW
    return W + dW


class FoldedRule(NamedTuple):
    """A rule's coefficients with η multiplied in: (ηA, ηB, ηC, ηD), None where absent."""

    A: Tensor
    B: Tensor | None
    C: Tensor | None
    D: Tensor | None


def fold(
    *,
    A: Tensor,
    B: Tensor | None = None,
    C: Tensor | None = None,
    D: Tensor | None = None,
    eta: Tensor | None = None,
) -> FoldedRule:
    """Multiply η into the other coefficients once per episode, so each step saves a pass."""
    if eta is None:
        return FoldedRule(A, B, C, D)
    return FoldedRule(
        eta * A,
        None if B is None else eta * B,
        None if C is None else eta * C,
        None if D is None else eta * D,
    )


def apply_folded(W: Tensor, pre: Tensor, post: Tensor, rule: FoldedRule) -> Tensor:
    """`hebbian_update` with folded coefficients, in four fused passes over W.

    ΔW = (ηA o_j + ηB) o_i + (ηC o_j + ηD): two `addcmul`s build the bracketed terms, so the
    (..., J, I) outer product is never formed on its own. Same shapes as `hebbian_update`.
    """
    o_i = pre.unsqueeze(-2)  # (..., 1, I)
    o_j = post.unsqueeze(-1)  # (..., J, 1)
    A, B, C, D = rule
    gain = A * o_j if B is None else torch.addcmul(B, A, o_j)  # broadcasts to (..., J, I)
    out = torch.addcmul(W, gain, o_i)
    if C is not None:
        out = out + (C * o_j if D is None else torch.addcmul(D, C, o_j))
    elif D is not None:
        out = out + D
    return out


def apply_folded_(
    W: Tensor, pre: Tensor, post: Tensor, rule: FoldedRule, scratch: Tensor
) -> Tensor:
    """`apply_folded` in place on W, with `scratch` (W's shape) as the only temporary.

    Full-size temporaries each cost page faults on CPU when the allocator returns them to the
    OS; reusing one buffer made a population step 2-3x faster here.
    """
    o_i = pre.unsqueeze(-2)  # (..., 1, I)
    o_j = post.unsqueeze(-1)  # (..., J, 1)
    A, B, C, D = rule
    # Shared coefficients make (ηA o_j + ηB) only (..., J, 1) or smaller: such a term is built
    # out of place (it is small); only a term of W's full shape goes into `scratch`.
    gain = _mul_add(A, o_j, B, scratch)
    W.addcmul_(gain, o_i)
    if C is not None:
        W.add_(_mul_add(C, o_j, D, scratch))
    elif D is not None:
        W.add_(D)
    return W


def _mul_add(X: Tensor, y: Tensor, Z: Tensor | None, scratch: Tensor) -> Tensor:
    """X·y + Z, written into `scratch` when the result has its shape."""
    shapes = (X.shape, y.shape) if Z is None else (X.shape, y.shape, Z.shape)
    full = torch.broadcast_shapes(*shapes) == scratch.shape
    if Z is None:
        return torch.mul(X, y, out=scratch) if full else X * y
    return torch.addcmul(Z, X, y, out=scratch) if full else torch.addcmul(Z, X, y)


class PlasticityLayout:
    """Where each layer's rule coefficients live in a flat parameter vector θ, given a sharing.

    `shapes` lists the plastic layers as (out, in) = (J, I). Sharing schemes:
    `synapse` (one rule per w_ji, the paper's default), `layer` (one rule per layer),
    `post` (one per post-synaptic neuron j), `pre` (one per pre-synaptic neuron i), and
    `random_k` (k rules for the whole network, each synapse assigned one by a fixed random draw
    from `assignment_seed`). θ holds, layer by layer, a block (n_coef, n_rules) so that each
    coefficient is one contiguous run; `random_k` has a single (n_coef, k) block.

    >>> lay = PlasticityLayout([(3, 4), (2, 3)], "ABCD_lr", sharing="post")
    >>> lay.rules_per_layer, lay.num_params
    ((3, 2), 25)
    """

    def __init__(
        self,
        shapes: Sequence[tuple[int, int]],
        rule: str | HebbianRule,
        *,
        sharing: str = "synapse",
        k: int = 8,
        assignment_seed: int = 0,
    ) -> None:
        self.shapes = tuple((int(o), int(i)) for o, i in shapes)
        if not self.shapes or any(o < 1 or i < 1 for o, i in self.shapes):
            raise ValueError(f"shapes must be non-empty (out, in) pairs >= 1, got {shapes!r}")
        self.rule = rule if isinstance(rule, HebbianRule) else get_rule(rule)
        if sharing not in SHARING:
            raise ValueError(f"sharing={sharing!r} is unknown; expected one of {SHARING}")
        if sharing == "random_k" and k < 1:
            raise ValueError(f"k must be >= 1 for sharing='random_k', got {k}")
        self.sharing = sharing
        self.k = int(k)
        self.assignment: tuple[Tensor, ...] = ()
        if sharing == "random_k":
            g = torch.Generator().manual_seed(int(assignment_seed))
            self.assignment = tuple(
                torch.randint(self.k, (o, i), generator=g) for o, i in self.shapes
            )

    @property
    def rules_per_layer(self) -> tuple[int, ...]:
        """Distinct rules per layer (for `random_k`, the network-wide k for every layer)."""
        per = {
            "synapse": lambda o, i: o * i,
            "layer": lambda o, i: 1,
            "post": lambda o, i: o,
            "pre": lambda o, i: i,
            "random_k": lambda o, i: self.k,
        }[self.sharing]
        return tuple(per(o, i) for o, i in self.shapes)

    @property
    def num_rules(self) -> int:
        """Distinct rules in the network."""
        return self.k if self.sharing == "random_k" else sum(self.rules_per_layer)

    @property
    def num_params(self) -> int:
        """Length of θ."""
        return self.num_rules * self.rule.size

    def rule_index(self, layer: int) -> Tensor:
        """The rule each synapse of `layer` uses, (J, I) int64, numbered within its block."""
        o, i = self.shapes[layer]
        if self.sharing == "synapse":
            return torch.arange(o * i).view(o, i)
        if self.sharing == "layer":
            return torch.zeros(o, i, dtype=torch.long)
        if self.sharing == "post":
            return torch.arange(o).view(o, 1).expand(o, i).clone()
        if self.sharing == "pre":
            return torch.arange(i).view(1, i).expand(o, i).clone()
        return self.assignment[layer].clone()

    def coefficients(self, theta: Tensor) -> list[dict[str, Tensor]]:
        """Per layer, each coefficient of θ (P, D) as a tensor broadcastable to (P, J, I).

        Broadcast shapes follow the sharing ((P, J, I), (P, 1, 1), (P, J, 1), (P, 1, I)), so a
        shared rule costs no memory per synapse; `random_k` gathers to (P, J, I).
        """
        if theta.dim() != 2 or theta.shape[1] != self.num_params:
            raise ValueError(
                f"theta must have shape (P, {self.num_params}), got {tuple(theta.shape)}"
            )
        P, n_coef = theta.shape[0], self.rule.size
        out: list[dict[str, Tensor]] = []
        if self.sharing == "random_k":
            block = theta.view(P, n_coef, self.k)
            for (o, i), idx in zip(self.shapes, self.assignment, strict=True):
                full = block[:, :, idx.reshape(-1)].reshape(P, n_coef, o, i)  # (P, n_coef, J, I)
                out.append({c: full[:, n] for n, c in enumerate(self.rule.coefficients)})
            return out
        offset = 0
        for (o, i), n_rules in zip(self.shapes, self.rules_per_layer, strict=True):
            block = theta[:, offset : offset + n_coef * n_rules].reshape(P, n_coef, n_rules)
            offset += n_coef * n_rules
            view = {
                "synapse": (o, i),
                "layer": (1, 1),
                "post": (o, 1),
                "pre": (1, i),
            }[self.sharing]
            block = block.reshape(P, n_coef, *view)  # (P, n_coef, J|1, I|1)
            out.append({c: block[:, n] for n, c in enumerate(self.rule.coefficients)})
        return out

    def folded(self, theta: Tensor) -> list[FoldedRule]:
        """`coefficients` with η multiplied in, contiguous, ready for `apply_folded`."""
        folded = []
        for coefs in self.coefficients(theta):
            f = fold(**coefs)
            folded.append(FoldedRule(*(None if t is None else t.contiguous() for t in f)))
        return folded

    def __repr__(self) -> str:
        return (
            f"PlasticityLayout(shapes={self.shapes}, rule={self.rule.name!r}, "
            f"sharing={self.sharing!r}, k={self.k}, num_params={self.num_params})"
        )
