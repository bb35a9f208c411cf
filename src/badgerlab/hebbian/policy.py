"""Bias-free tanh policies for a whole population: Hebbian (random weights + rule) or static."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from badgerlab.hebbian.rules import (
    SHARING,
    FoldedRule,
    PlasticityLayout,
    apply_folded,
    apply_folded_,
)

__all__ = [
    "ACTIONS",
    "CNN_FEATURES",
    "HebbianPolicy",
    "PolicySpec",
    "PolicyState",
    "abs_max_normalise",
    "abs_max_normalise_",
    "cnn_features",
    "preprocess_pixels",
]

ACTIONS = ("clip", "tanh", "carracing")
CNN_SHAPES = ((6, 3, 3, 3), (8, 6, 5, 5))
CNN_FEATURES = 648  # 8 channels × 9 × 9 after the reference's two conv + pool stages on 84×84


@dataclass(frozen=True)
class PolicySpec:
    """A policy network: layer sizes, plasticity, normalisation and how outputs become actions.

    `sizes` = (inputs, hidden..., outputs) of the plastic part; with `pixels` the inputs are the
    648 features of the static CNN front (Najarro & Risi 2020, Sec. 4,
    https://arxiv.org/abs/2007.02686). `plastic=False` is the static-weight baseline: θ holds the
    weights themselves. `action`: `clip` the linear outputs to the action bounds, `tanh` them,
    or `carracing` (steer tanh, gas and brake sigmoid, as the reference).
    """

    sizes: tuple[int, ...]
    plastic: bool = True
    rule: str = "ABCD_lr"
    sharing: str = "synapse"
    k: int = 8
    assignment_seed: int = 0
    normalise: bool = True
    init_range: float = 0.1
    action: Literal["clip", "tanh", "carracing"] = "clip"
    action_low: float = -1.0
    action_high: float = 1.0
    pixels: bool = False

    def __post_init__(self) -> None:
        if len(self.sizes) < 2 or any(int(s) < 1 for s in self.sizes):
            raise ValueError(f"sizes must list >= 2 layer widths >= 1, got {self.sizes!r}")
        object.__setattr__(self, "sizes", tuple(int(s) for s in self.sizes))
        if self.pixels and self.sizes[0] != CNN_FEATURES:
            raise ValueError(f"sizes[0] must be {CNN_FEATURES} with pixels=True, got {self.sizes}")
        if self.action not in ACTIONS:
            raise ValueError(f"action={self.action!r} is unknown; expected one of {ACTIONS}")
        if self.action == "carracing" and self.sizes[-1] != 3:
            raise ValueError(f"action='carracing' needs 3 outputs, got sizes={self.sizes}")
        if self.sharing not in SHARING:
            raise ValueError(f"sharing={self.sharing!r} is unknown; expected one of {SHARING}")
        if not self.init_range > 0:
            raise ValueError(f"init_range must be > 0, got {self.init_range}")

    @property
    def shapes(self) -> tuple[tuple[int, int], ...]:
        """(out, in) of each layer."""
        return tuple(zip(self.sizes[1:], self.sizes[:-1], strict=True))


class PolicyState(NamedTuple):
    """The per-episode state of P networks.

    `weights[l]` (P, J, I); `rules[l]` the folded coefficients of layer l (empty when static);
    `cnn` the two conv kernels (P, 6, 3, 3, 3), (P, 8, 6, 5, 5) or empty.
    """

    weights: tuple[Tensor, ...]
    rules: tuple[FoldedRule, ...]
    cnn: tuple[Tensor, ...]


def abs_max_normalise(W: Tensor) -> Tensor:
    """W / max|W| over each member's layer, (P, J, I) -> (P, J, I); an all-zero layer stays 0.

    The reference divides every plastic layer by its largest absolute weight after each update,
    which keeps Hebbian growth bounded.
    """
    # abs().amax is ~20x faster than linalg.vector_norm(ord=inf) on CPU here.
    m = W.abs().amax(dim=(-2, -1), keepdim=True)
    # A zeroed layer (the perturbation experiment) would divide 0 by 0.
    return W / torch.where(m > 0, m, torch.ones_like(m))


def abs_max_normalise_(W: Tensor, scratch: Tensor | None = None) -> Tensor:
    """`abs_max_normalise` in place, W (P, J, I) contiguous; allocates only (P,)-sized tensors.

    max|w| = max(max w, −min w) reads W twice without writing, and multiplying by the
    reciprocal beats dividing: together 2-3x faster than abs().amax() then div_ here.
    """
    flat = W.view(W.shape[0], -1)  # (P, J·I)
    m = torch.maximum(flat.amax(dim=1), flat.amin(dim=1).neg())  # (P,)
    inv = torch.where(m > 0, m, torch.ones_like(m)).reciprocal_()
    return W.mul_(inv.view(-1, *([1] * (W.dim() - 1))))


def preprocess_pixels(obs: Tensor, *, size: int = 84) -> Tensor:
    """(P, H, W, 3) uint8 frames -> (P, 3, size, size) floats in [0, 1], as the reference."""
    if obs.dim() != 4 or obs.shape[-1] != 3:
        raise ValueError(f"obs must have shape (P, H, W, 3), got {tuple(obs.shape)}")
    x = obs.permute(0, 3, 1, 2).float() / 255.0  # (P, 3, H, W)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    return x.clamp_(0.0, 1.0)


def cnn_features(x: Tensor, conv1: Tensor, conv2: Tensor) -> Tensor:
    """The reference's static front with one kernel set per member, as grouped convolutions.

    x (P, 3, 84, 84); conv1 (P, 6, 3, 3, 3); conv2 (P, 8, 6, 5, 5) -> features (P, 648):
    pool(tanh(conv1 x)), then pool(tanh(conv2 ·, stride 2)), flattened. No biases.
    """
    P = x.shape[0]
    h = x.reshape(1, P * 3, *x.shape[-2:])  # (1, P·3, 84, 84): members become groups
    h = F.max_pool2d(torch.tanh(F.conv2d(h, conv1.reshape(P * 6, 3, 3, 3), groups=P)), 2)
    h = F.conv2d(h, conv2.reshape(P * 8, 6, 5, 5), stride=2, groups=P)  # (1, P·8, 19, 19)
    h = F.max_pool2d(torch.tanh(h), 2)  # (1, P·8, 9, 9)
    return h.reshape(P, -1)  # (P, 648)


class HebbianPolicy:
    """P networks evaluated as one batched operation; θ (P, D) gives each member's parameters.

    Hebbian (`plastic=True`): θ = rule coefficients (+ CNN kernels). Each episode starts from
    fresh weights w ~ U(−r, r); after every step each plastic layer gets
    Δw_ji = η(A o_i o_j + B o_i + C o_j + D) from that step's activations (o_i the layer's input,
    o_j its output: tanh for hidden layers, the linear output for the last), then optionally
    w ← w / max|w| per layer. Static (`plastic=False`): θ = the weights (+ CNN kernels).

    >>> pol = HebbianPolicy(PolicySpec((4, 8, 2), rule="ABCD"))
    >>> theta = torch.randn(3, pol.num_params)
    >>> st = pol.init(theta, generator=torch.Generator().manual_seed(0))
    >>> action, acts = pol.forward(st, torch.randn(3, 4))
    >>> action.shape, [a.shape[1] for a in acts], pol.update(st, acts).weights[0].shape
    (torch.Size([3, 2]), [4, 8, 2], torch.Size([3, 8, 4]))
    """

    def __init__(self, spec: PolicySpec) -> None:
        if not isinstance(spec, PolicySpec):
            raise TypeError(f"spec must be a PolicySpec, got {type(spec).__name__}")
        self.spec = spec
        self.layout = (
            PlasticityLayout(
                spec.shapes,
                spec.rule,
                sharing=spec.sharing,
                k=spec.k,
                assignment_seed=spec.assignment_seed,
            )
            if spec.plastic
            else None
        )
        self.num_core = (
            self.layout.num_params if self.layout else sum(o * i for o, i in spec.shapes)
        )
        self.num_cnn = sum(_numel(s) for s in CNN_SHAPES) if spec.pixels else 0
        self._buffer: Tensor | None = None

    @property
    def num_params(self) -> int:
        """Length of θ: rule coefficients or weights, then the CNN kernels if any."""
        return self.num_core + self.num_cnn

    def initial_theta(self, *, generator: torch.Generator | None = None) -> Tensor:
        """A starting point for ES, (D,): coefficients and kernels N(0, 1) as the reference;
        static weights U(−r, r), the distribution a Hebbian network starts each episode from."""
        theta = torch.randn(self.num_params, generator=generator)
        if not self.spec.plastic:
            r = self.spec.init_range
            theta[: self.num_core] = (torch.rand(self.num_core, generator=generator) * 2 - 1) * r
        return theta

    def coefficient_mask(self) -> Tensor:
        """(D,) bool: which entries of θ are rule coefficients (the L2 penalty's targets)."""
        mask = torch.zeros(self.num_params, dtype=torch.bool)
        mask[: self.num_core] = True
        return mask

    def init(
        self,
        theta: Tensor,
        *,
        generator: torch.Generator | None = None,
        seeds: Sequence[int] | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> PolicyState:
        """The state at the start of an episode; Hebbian weights are re-drawn U(−r, r) here.

        With `seeds` (one per member), member p's weights come from its own generator seeded
        `seeds[p]`, so they do not depend on the batch it is in; else from `generator`. The
        state lives on θ's device.
        """
        if theta.dim() != 2 or theta.shape[1] != self.num_params:
            raise ValueError(
                f"theta must have shape (P, {self.num_params}), got {tuple(theta.shape)}"
            )
        P, spec = theta.shape[0], self.spec
        if seeds is not None and len(seeds) != P:
            raise ValueError(f"seeds must list {P} seeds, got {len(seeds)}")
        theta = theta.to(dtype)
        core, rest = theta[:, : self.num_core], theta[:, self.num_core :]
        if self.layout is not None:
            # Drawn on the host (seeded generators), then placed beside θ (e.g. on the GPU).
            weights = tuple(
                w.to(theta.device) for w in self._random_weights(P, generator, seeds, dtype)
            )
            rules = tuple(self.layout.folded(core))
        else:
            weights, offset = [], 0
            for o, i in spec.shapes:
                weights.append(core[:, offset : offset + o * i].reshape(P, o, i).clone())
                offset += o * i
            weights, rules = tuple(weights), ()
        cnn: tuple[Tensor, ...] = ()
        if spec.pixels:
            n1 = _numel(CNN_SHAPES[0])
            cnn = (
                rest[:, :n1].reshape(P, *CNN_SHAPES[0]).contiguous(),
                rest[:, n1:].reshape(P, *CNN_SHAPES[1]).contiguous(),
            )
        return PolicyState(weights, rules, cnn)

    def _random_weights(
        self,
        P: int,
        generator: torch.Generator | None,
        seeds: Sequence[int] | None,
        dtype: torch.dtype,
    ) -> tuple[Tensor, ...]:
        r, shapes = self.spec.init_range, self.spec.shapes
        if seeds is None:
            return tuple(
                (torch.rand(P, o, i, generator=generator, dtype=dtype) * 2 - 1) * r
                for o, i in shapes
            )
        per_member = []
        for s in seeds:
            g = torch.Generator().manual_seed(int(s))
            per_member.append([torch.rand(o, i, generator=g, dtype=dtype) for o, i in shapes])
        return tuple(
            (torch.stack([m[n] for m in per_member]) * 2 - 1) * r  # (P, J, I)
            for n in range(len(shapes))
        )

    def features(self, state: PolicyState, obs: Tensor) -> Tensor:
        """The plastic network's input: the observation, or CNN features of the frame."""
        if self.spec.pixels:
            return cnn_features(preprocess_pixels(obs), *state.cnn)
        return obs.to(state.weights[0].dtype)

    def forward(self, state: PolicyState, obs: Tensor) -> tuple[Tensor, list[Tensor]]:
        """(action (P, A), activations [o⁰ (P, I), o¹, …, o^L (P, A)]); o^L is linear."""
        h = self.features(state, obs)
        acts = [h]
        last = len(state.weights) - 1
        for n, W in enumerate(state.weights):
            # A row-vector matmul against Wᵀ is 3-6x faster than bmm(W, h[..., None]) on CPU.
            h = torch.matmul(h.unsqueeze(1), W.transpose(1, 2)).squeeze(1)  # (P, J)
            if n < last:
                h = torch.tanh(h)
            acts.append(h)
        return self.action(h), acts

    def action(self, out: Tensor) -> Tensor:
        """Map the linear outputs (P, A) to actions (P, A)."""
        spec = self.spec
        if spec.action == "clip":
            return out.clamp(spec.action_low, spec.action_high)
        if spec.action == "tanh":
            return torch.tanh(out)
        return torch.cat([torch.tanh(out[:, :1]), torch.sigmoid(out[:, 1:])], dim=1)

    def update(
        self, state: PolicyState, acts: Sequence[Tensor], *, inplace: bool = False
    ) -> PolicyState:
        """The Hebbian step from one step's activations (a static policy is returned as is).

        With `inplace`, `state.weights` are overwritten (the rollout owns them) and one cached
        scratch buffer serves every layer, so a step allocates nothing of the weights' size.
        """
        if not state.rules:
            return state
        if inplace:
            for n, (W, rule) in enumerate(zip(state.weights, state.rules, strict=True)):
                scratch = self._scratch(W)
                apply_folded_(W, acts[n], acts[n + 1], rule, scratch)
                if self.spec.normalise:
                    abs_max_normalise_(W)
            return state
        weights = []
        for n, (W, rule) in enumerate(zip(state.weights, state.rules, strict=True)):
            W = apply_folded(W, acts[n], acts[n + 1], rule)
            weights.append(abs_max_normalise(W) if self.spec.normalise else W)
        return state._replace(weights=tuple(weights))

    def _scratch(self, W: Tensor) -> Tensor:
        buf = self._buffer
        if buf is None or buf.numel() < W.numel() or buf.dtype != W.dtype:
            buf = torch.empty(W.numel(), dtype=W.dtype)
            self._buffer = buf
        return buf[: W.numel()].view(W.shape)

    def select(self, state: PolicyState, index: Tensor) -> PolicyState:
        """The members `index` (K,) of a state, e.g. to drop finished ones from the batch."""

        def pick(t: Tensor | None) -> Tensor | None:
            # index_select wants the index beside the state (e.g. on the GPU); a no-op on CPU
            return None if t is None else t.index_select(0, index.to(t.device))

        return PolicyState(
            tuple(pick(W) for W in state.weights),
            tuple(FoldedRule(*(pick(t) for t in r)) for r in state.rules),
            tuple(pick(c) for c in state.cnn),
        )


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
