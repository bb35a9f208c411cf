"""Backprop cloning: train the shared LSTM so that a VSML layer *is* a learning network.

Kirsch & Schmidhuber 2021 (https://arxiv.org/abs/2012.14905, section 4.1) show that a VSML RNN
can implement backpropagation by supervising its states on a network's weights. Here one
A×B layer clones the network (state units 0 and 1 of cell (a, b) hold w_ab and b_b)

    ŷ_b = κ · ( 1/A Σ_a tanh(x_a) w_ab + b_b )                    (forward sweep)
    δ_b = ∂CE/∂ŷ_b = softmax(ŷ)_b − y_b
    w_ab ← w_ab − η tanh(x_a) δ_b ,   b_b ← b_b − η δ_b            (backward sweep)

The update is exactly gradient descent on CE with learning rates ηA/κ for w and η/κ for b
(∂CE/∂w_ab = κ tanh(x_a) δ_b / A): the cell-local form of backprop, the same at every grid
size. The forward sweep sends x with no error; the backward sweep (the reference's
`backward_pass`) sends the same x with δ. Training is supervised on the forward message
(ŷ/κ) and on the two state units after every sweep, along teacher trajectories of true SGD:
first teacher-forced (w, b reset to the teacher's before each example, errors relative to the
true update), then free-running. The other state units start as scratch units
(`clone_init_params`): forming the signed product tanh(x_a)·δ_b needs units that forget.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .model import LayerState, VSMLConfig, init_params, init_state, tick

__all__ = [
    "CloneTask",
    "clone_config",
    "clone_init_params",
    "clone_loss",
    "cloned_learner_states",
    "one_step_error",
    "read_weights",
    "sgd_reference",
    "vsml_online",
]


@dataclass(frozen=True)
class CloneTask:
    """The cloned network: output scale κ, learning rate η, and the teacher's sampling ranges."""

    kappa: float = 16.0
    eta: float = 0.125
    w_std: float = 0.5
    b_std: float = 0.3

    def __post_init__(self) -> None:
        for name in ("kappa", "eta", "w_std", "b_std"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


def clone_config(task: CloneTask, **overrides) -> VSMLConfig:
    """The VSML configuration of a clone: explicit backward sweep, logits = κ·message[1], and
    backward messages [δ_b, y_b].

    With the label, −η tanh(x_a) δ_b = −η tanh(x_a) p_b + η tanh(x_a) y_b is a sum of two
    products with a one-signed factor (p_b, y_b ≥ 0), each of which one input gate forms; from
    δ_b alone (signed) it takes a difference of gated scratch units, which training finds late
    or not at all for some seeds (`feed_label=False` to compare).
    """
    kw = dict(backward_pass=True, logit_scale=task.kappa, tanh_bound=0.0, feed_label=True)
    kw.update(overrides)
    return VSMLConfig(**kw)


def clone_init_params(
    cfg: VSMLConfig, *, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """Initial meta-parameters of a clone: `init_params`, with the gate offsets of the state
    units other than 0 and 1 (w, b) cancelled in β, so that these start as scratch units.

    The fixed offsets σ(z_f + 5), σ(z_i − 5) make every unit a memory that keeps its value and
    barely writes. w and b need that, but the update Δw_ab = −η tanh(x_a) δ_b multiplies two
    signed inputs, which an LSTM forms only as a difference of gated units that forget each
    tick (e.g. σ(kδ + c)·tanh(x) − σ(−kδ + c)·tanh(x)). From f = σ(5) the gradient to open
    them is ~σ'(5) ≈ 0.007 of a free unit's, and cloning stalls on a single gate, which gets
    one sign of δ right (measured: Δw ≈ ½Δw* where δ < 0; squared update error ~0.5 of
    |Δw*|²). Even so, some seeds sit for hundreds of steps with one sign of x wrong.
    """
    params = init_params(cfg, generator=generator)
    H = cfg.state_size
    bias = params["bias"].clone()  # (4H,) gate order i, f, o, g
    bias[2:H] -= cfg.input_bias
    bias[H + 2 : 2 * H] -= cfg.forget_bias
    params["bias"] = bias
    return params


def read_weights(state: LayerState) -> tuple[Tensor, Tensor]:
    """Introspection (view (c) of the paper): the weights and biases held in a layer's cell
    states. Returns w `(P, N, A, B)` = c[..., 0] and b `(P, N, B)` = mean over a of c[..., 1]."""
    return state.c[..., 0], state.c[..., 1].mean(2)


def _write_weights(state: LayerState, w: Tensor, b: Tensor) -> LayerState:
    c = state.c.clone()
    c[..., 0] = w
    c[..., 1] = b.unsqueeze(2).expand_as(w)
    return state._replace(c=c)


def _error_message(delta: Tensor, y: Tensor, cfg: VSMLConfig) -> Tensor:
    # [δ_b, y_b] (label slot 0 without feed_label): delta (..., B), y (...) -> (..., B, 2).
    lab = F.one_hot(y, delta.shape[-1]).to(delta.dtype)
    return torch.stack([delta, lab if cfg.feed_label else torch.zeros_like(delta)], -1)


def cloned_learner_states(
    cfg: VSMLConfig, w: Tensor, b: Tensor, *, population: int = 1
) -> list[LayerState]:
    """A fresh single-layer state holding the network (w `(N, A, B)`, b `(N, B)`); every other
    state unit and message is zero."""
    N, A, B = w.shape
    st = init_state(cfg, (A, B), batch=N, population=population, dtype=w.dtype, device=w.device)
    st = [s._replace(c=torch.zeros_like(s.c)) for s in st]
    return [_write_weights(st[0], w.expand(population, -1, -1, -1), b.expand(population, -1, -1))]


def sgd_reference(
    w: Tensor, b: Tensor, x: Tensor, y: Tensor, task: CloneTask
) -> tuple[Tensor, Tensor, Tensor]:
    """True online SGD on the cloned network. w `(N, A, B)`, b `(N, B)`, x `(T, N, A)`,
    y `(T, N)`. Returns logits `(T, N, B)` (before each update) and the trajectories of w
    `(T+1, N, A, B)` and b `(T+1, N, B)`."""
    A = w.shape[1]
    ws, bs, logits = [w], [b], []
    for t in range(x.shape[0]):
        tx = torch.tanh(x[t])  # (N, A)
        out = task.kappa * (torch.einsum("na,nab->nb", tx, w) / A + b)
        delta = torch.softmax(out, -1) - F.one_hot(y[t], w.shape[2]).to(w.dtype)
        w = w - task.eta * tx.unsqueeze(-1) * delta.unsqueeze(1)
        b = b - task.eta * delta
        logits.append(out)
        ws.append(w)
        bs.append(b)
    return torch.stack(logits), torch.stack(ws), torch.stack(bs)


def clone_loss(
    params: Mapping[str, Tensor],
    cfg: VSMLConfig,
    task: CloneTask,
    x: Tensor,
    y: Tensor,
    w0: Tensor,
    b0: Tensor,
    *,
    update_weight: float = 0.0,
    teacher_forcing: bool = False,
) -> tuple[Tensor, dict[str, float]]:
    """Supervised cloning loss over an episode x `(T, N, A)`, y `(T, N)` from (w0, b0).

    The VSML runs its forward and backward sweeps on the teacher's δ (teacher forcing), and is
    penalised by the squared error of its output message against ŷ/κ and of its state units
    against (w, b), after every sweep. With `update_weight` λ > 0 it is also penalised by
    λ·|Δw − Δw*|²/|Δw*|² for each backward sweep's change of the states (the same for b): the
    state error is dominated by keeping w, this term weighs the update itself.

    With `teacher_forcing` the w and b units are also reset to the teacher's (w_t, b_t) before
    every example (the other state units carry on), so each example supervises one SGD step
    from the true state (the reference's per-step targets, section 4.1), and the w (b) errors
    are divided by the episode's mean squared true update |Δw*|² (|Δb*|²): Δw is ~10× smaller
    than w, so on the absolute scale the loss is dominated by keeping w, and an update that is
    wrong by its own size costs little. Returns the loss and its parts (floats).
    """
    T, N, A = x.shape
    B = w0.shape[-1]
    t_logits, t_w, t_b = sgd_reference(w0, b0, x, y, task)
    states = cloned_learner_states(cfg, w0, b0)
    err_out = err_w = err_b = err_upd = x.new_zeros(())
    zero = x.new_zeros(1, N, B, 2)
    if teacher_forcing:
        sw = (t_w[1:] - t_w[:-1]).pow(2).mean() + 1e-8
        sb = (t_b[1:] - t_b[:-1]).pow(2).mean() + 1e-8
    else:
        sw = sb = x.new_ones(())
    for t in range(T):
        if teacher_forcing and t > 0:
            states = [_write_weights(states[0], t_w[t].unsqueeze(0), t_b[t].unsqueeze(0))]
        states, logits = tick(params, states, x[t].unsqueeze(0), zero, cfg)
        err_out = err_out + ((logits[0] - t_logits[t]) / task.kappa).pow(2).mean()
        w_fwd, b_fwd = read_weights(states[0])
        err_w = err_w + (w_fwd[0] - t_w[t]).pow(2).mean() / sw
        err_b = err_b + (b_fwd[0] - t_b[t]).pow(2).mean() / sb
        delta = torch.softmax(t_logits[t], -1) - F.one_hot(y[t], B).to(x.dtype)
        error = _error_message(delta, y[t], cfg).unsqueeze(0)  # (1, N, B, 2)
        states, _ = tick(params, states, None, error, cfg, reverse=True)
        w, b = read_weights(states[0])
        err_w = err_w + (w[0] - t_w[t + 1]).pow(2).mean() / sw
        err_b = err_b + (b[0] - t_b[t + 1]).pow(2).mean() / sb
        if update_weight > 0:
            dw, db = t_w[t + 1] - t_w[t], t_b[t + 1] - t_b[t]
            err_upd = err_upd + ((w - w_fwd)[0] - dw).pow(2).mean() / (dw.pow(2).mean() + 1e-6)
            err_upd = err_upd + ((b - b_fwd)[0] - db).pow(2).mean() / (db.pow(2).mean() + 1e-6)
    loss = (err_out + (err_w + err_b) / 2 + update_weight * err_upd / 2) / T
    return loss, {
        "out": float(err_out.detach()) / T,
        "w": float(err_w.detach()) / (2 * T),
        "b": float(err_b.detach()) / (2 * T),
        "update": float(err_upd.detach()) / (2 * T),
    }


@torch.no_grad()
def vsml_online(
    params: Mapping[str, Tensor],
    cfg: VSMLConfig,
    x: Tensor,
    y: Tensor,
    w0: Tensor,
    b0: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """Use a clone as a learner: online on x `(T, N, A)`, y `(T, N)` from (w0, b0), on its own
    predictions and errors. Returns logits `(T, N, B)` and the w `(T+1, N, A, B)` and b
    `(T+1, N, B)` read from its states after each example."""
    T, N, A = x.shape
    B = w0.shape[-1]
    states = cloned_learner_states(cfg, w0, b0)
    w, b = read_weights(states[0])
    ws, bs, logits_t = [w[0]], [b[0]], []
    zero = x.new_zeros(1, N, B, 2)
    for t in range(T):
        states, logits = tick(params, states, x[t].unsqueeze(0), zero, cfg)
        delta = torch.softmax(logits, -1) - F.one_hot(y[t], B).to(x.dtype).unsqueeze(0)
        error = _error_message(delta, y[t].unsqueeze(0), cfg)
        states, _ = tick(params, states, None, error, cfg, reverse=True)
        w, b = read_weights(states[0])
        ws.append(w[0])
        bs.append(b[0])
        logits_t.append(logits[0])
    return torch.stack(logits_t), torch.stack(ws), torch.stack(bs)


@torch.no_grad()
def one_step_error(
    params: Mapping[str, Tensor],
    cfg: VSMLConfig,
    task: CloneTask,
    x: Tensor,
    y: Tensor,
    w: Tensor,
    b: Tensor,
) -> dict[str, float]:
    """Fidelity of one cloned SGD step from the true network: states set to (w, b) `(N, A, B)`,
    `(N, B)`, one forward sweep on x `(N, A)`, one backward sweep with the true δ. Returns the
    errors relative to the true quantities: |ŷ − ŷ*|/|ŷ*| and |Δw − Δw*|/|Δw*| (same for b),
    means over all entries (1 would be the error of not updating at all), and the correlation
    of Δw with Δw* over all entries."""
    logits_true, ws, bs = sgd_reference(w, b, x.unsqueeze(0), y.unsqueeze(0), task)
    states = cloned_learner_states(cfg, w, b)
    N, B = y.shape[0], w.shape[-1]
    states, logits = tick(params, states, x.unsqueeze(0), x.new_zeros(1, N, B, 2), cfg)
    delta = torch.softmax(logits_true[0], -1) - F.one_hot(y, B).to(x.dtype)
    err = _error_message(delta, y, cfg).unsqueeze(0)
    states, _ = tick(params, states, None, err, cfg, reverse=True)
    vw, vb = read_weights(states[0])
    dw_true, db_true = ws[1] - w, bs[1] - b
    dw = vw[0] - w
    return {
        "out": float((logits[0] - logits_true[0]).abs().mean() / logits_true[0].abs().mean()),
        "dw": float((dw - dw_true).abs().mean() / dw_true.abs().mean()),
        "db": float((vb[0] - b - db_true).abs().mean() / db_true.abs().mean()),
        "dw_corr": float(torch.corrcoef(torch.stack([dw.flatten(), dw_true.flatten()]))[0, 1]),
    }
