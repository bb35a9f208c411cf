"""Meta-learners to compare VSML against: the Meta-RNN of Hochreiter et al. (2001), and the
VSML learner wrapper with the same interface.

Both learners expose `init_params(*, population, generator)` and `run(params, x, y, num_classes,
*, generator)`, returning an `EpisodeOutput`, so `metatrain` trains either with ES or BPTT.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .model import (
    LayerState,
    VSMLConfig,
    cross_entropy_error,
    episode,
    init_params,
    init_state,
    param_shapes,
    population_size,
)

__all__ = ["EpisodeOutput", "Learner", "MetaRNN", "VSMLLearner"]


@dataclass
class EpisodeOutput:
    """`logits` `(T, P, N, C)`, `loss` `(T, P, N)`, `correct` `(T, P, N)` of one online episode."""

    logits: Tensor
    loss: Tensor
    correct: Tensor


class Learner:
    """Interface of a meta-learner: shared meta-parameters, one online episode per sequence."""

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def init_params(
        self, *, population: int | None = None, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        raise NotImplementedError

    def run(
        self,
        params: Mapping[str, Tensor],
        x: Tensor,
        y: Tensor,
        num_classes: int,
        *,
        generator: torch.Generator | None = None,
        tied: int = 1,
    ) -> EpisodeOutput:
        raise NotImplementedError


class VSMLLearner(Learner):
    """VSML on a stack (A, *hidden, num_classes) sized from each episode's data."""

    def __init__(self, cfg: VSMLConfig | None = None, *, hidden: Sequence[int] = ()) -> None:
        self.cfg = cfg or VSMLConfig()
        self.hidden = tuple(int(h) for h in hidden)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return param_shapes(self.cfg)

    def init_params(
        self, *, population: int | None = None, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        return init_params(self.cfg, population=population, generator=generator)

    def run(
        self,
        params: Mapping[str, Tensor],
        x: Tensor,
        y: Tensor,
        num_classes: int,
        *,
        generator: torch.Generator | None = None,
        tied: int = 1,
    ) -> EpisodeOutput:
        """`tied` > 1: consecutive groups of that many members share their random initial
        states (antithetic ES pairs are then compared on the same start)."""
        sizes = (x.shape[-1], *self.hidden, num_classes)
        states = None
        if tied > 1:
            pop = population_size(params, self.cfg) or 1
            if pop % tied:
                raise ValueError(f"tied={tied} must divide the population {pop}")
            base = init_state(
                self.cfg,
                sizes,
                batch=x.shape[-2],
                population=pop // tied,
                generator=generator,
                dtype=x.dtype,
                device=x.device,
            )
            states = [LayerState(*(t.repeat_interleave(tied, dim=0) for t in s)) for s in base]
        r = episode(params, x, y, self.cfg, sizes=sizes, states=states, generator=generator)
        return EpisodeOutput(r.logits, r.loss, r.correct)


class MetaRNN(Learner):
    """One LSTM fed [x_t, e_{t−1}, y_{t−1}] (Hochreiter, Younger & Conwell 2001, "Learning to
    learn using gradient descent", ICANN; the VSML reference's `MetaRNN` baseline).

    Per example, `micro_ticks` LSTM steps on the same input, then ŷ_t = 100·tanh(V h / 100);
    e_t = softmax(ŷ_t) − onehot(y_t). Its input and output sizes are fixed, so inputs are
    zero-padded to `max_inputs` and logits of classes beyond `num_classes` are dropped (the
    reference pads to 784 inputs and 62 classes). Every tensor may carry a population axis P.
    """

    def __init__(
        self,
        max_inputs: int,
        max_classes: int,
        *,
        hidden: int = 128,
        micro_ticks: int = 2,
        tanh_bound: float = 100.0,
    ) -> None:
        if max_inputs < 1 or max_classes < 2 or hidden < 1 or micro_ticks < 1:
            raise ValueError(
                f"need max_inputs >= 1, max_classes >= 2, hidden >= 1, micro_ticks >= 1; got "
                f"{max_inputs}, {max_classes}, {hidden}, {micro_ticks}"
            )
        self.max_inputs, self.max_classes = max_inputs, max_classes
        self.hidden, self.micro_ticks, self.tanh_bound = hidden, micro_ticks, tanh_bound

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        d = self.max_inputs + 2 * self.max_classes
        H = self.hidden
        return {
            "w_x": (d, 4 * H),
            "w_h": (H, 4 * H),
            "bias": (4 * H,),
            "out.weight": (H, self.max_classes),
            "out.bias": (self.max_classes,),
        }

    def init_params(
        self, *, population: int | None = None, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        lead = () if population is None else (population,)
        shapes = self.param_shapes()
        fan = shapes["w_x"][0] + self.hidden
        out = {}
        for k, s in shapes.items():
            if k in ("w_x", "w_h"):
                out[k] = torch.randn(*lead, *s, generator=generator) * fan**-0.5
            elif k == "out.weight":
                out[k] = torch.randn(*lead, *s, generator=generator) * self.hidden**-0.5
            else:
                out[k] = torch.zeros(*lead, *s)
        return out

    def run(
        self,
        params: Mapping[str, Tensor],
        x: Tensor,
        y: Tensor,
        num_classes: int,
        *,
        generator: torch.Generator | None = None,
        tied: int = 1,
    ) -> EpisodeOutput:
        p = dict(params)
        if p["w_h"].ndim == 2:
            p = {k: v.unsqueeze(0) for k, v in p.items()}
        P = p["w_h"].shape[0]
        if x.ndim == 3:
            x = x.unsqueeze(1).expand(-1, P, -1, -1)
            y = y.unsqueeze(1).expand(-1, P, -1)
        T, _, N, A = x.shape
        if A > self.max_inputs or num_classes > self.max_classes:
            raise ValueError(
                f"episode has {A} inputs and {num_classes} classes; this MetaRNN takes at most "
                f"{self.max_inputs} and {self.max_classes}"
            )
        H, C = self.hidden, self.max_classes
        x = F.pad(x, (0, self.max_inputs - A))  # (T, P, N, A_max)
        # One input projection for all time steps: the x part does not depend on the state.
        zx = torch.bmm(
            x.permute(1, 0, 2, 3).reshape(P, T * N, -1), p["w_x"][:, : self.max_inputs]
        ).view(P, T, N, 4 * H)
        w_fb = p["w_x"][:, self.max_inputs :]  # (P, 2C, 4H)
        h = x.new_zeros(P, N, H)
        c = x.new_zeros(P, N, H)
        fb = x.new_zeros(P, N, 2 * C)
        gate_off = torch.zeros(4 * H, dtype=x.dtype)
        gate_off[H : 2 * H] = 1.0  # the usual forget-gate bias of 1
        bias = (p["bias"] + gate_off).unsqueeze(1)  # (P, 1, 4H)
        logits_t, loss_t = [], []
        for t in range(T):
            drive = zx[:, t] + torch.bmm(fb, w_fb) + bias  # (P, N, 4H)
            for _ in range(self.micro_ticks):
                z = drive + torch.bmm(h, p["w_h"])
                i, f, o, g = z.split(H, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
            logits = torch.baddbmm(p["out.bias"].unsqueeze(1), h, p["out.weight"])  # (P, N, C)
            if self.tanh_bound:
                logits = torch.tanh(logits / self.tanh_bound) * self.tanh_bound
            logits = logits[..., :num_classes]
            loss_t.append(
                F.cross_entropy(
                    logits.reshape(P * N, -1), y[t].reshape(-1), reduction="none"
                ).view(P, N)
            )
            logits_t.append(logits)
            err = F.pad(cross_entropy_error(logits, y[t]), (0, C - num_classes))
            lab = F.one_hot(y[t], C).to(x.dtype)
            fb = torch.cat([err, lab], dim=-1)  # (P, N, 2C)
        logits_all = torch.stack(logits_t)  # (T, P, N, num_classes)
        return EpisodeOutput(logits_all, torch.stack(loss_t), logits_all.argmax(-1) == y)
