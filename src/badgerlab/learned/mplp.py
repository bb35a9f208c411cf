"""MPLP: a message passing learning protocol (Randazzo, Niklasson & Mordvintsev,
https://arxiv.org/abs/2007.00970).

A dense network of L layers, ``net = [(W_1, b_1), …, (W_L, b_L)]`` with ``W_l (I_l, J_l)``,
``b_l (J_l,)``, computes on a batch ``x (B, I_1)``

    z_l = h_{l−1} W_l + b_l,   h_l = σ(z_l) (l < L),   ŷ = z_L,   h_0 = x.

It is trained without gradients: every node of the graph owns a small stateful learner that
reads local quantities and sends a message of M channels backwards.

* The loss node reads (ŷ_bo, y_bo, ŷ_bo − y_bo) (for cross-entropy the softmax p_bo and the
  one-hot target) and emits the first message ``m (B, O, M)``.
* An activation node reads (z_bj / rms(z), σ(z_bj), m_bj) and passes ``m' (B, J, M)`` on.
* A dense layer treats the bias as the weight of a constant input 1, W̃ = [W; b] ``(I+1, J)``,
  x̃ = [x, 1] ``(B, I+1)``. Every parameter W̃_ij, for every example b, is driven by one GRU
  (hidden H ≈ 15, parameters shared by all the layer's parameters, one set per layer) with input
  u_bij = [W̃_ij / s_l, x̃_bi / rms(x), m_bj] (s_l the layer's initial weight std) and carry
  c_bij ``(H,)``; a linear readout gives o_bij = (o⁰, o¹…ᴹ). Then

      ΔW̃_ij = κ_l · s_l · mean_b o⁰_bij        (residual update, averaged over the batch)
      m^{out}_bi = mean_j o¹…ᴹ_bij              (message to the previous layer, i ≤ I)

  All (b, i, j) cells of a layer are ONE batched GRU call on ``(B, I+1, J, 2+M)``.

The meta-parameters θ (the GRUs, readouts and scales κ_l) are trained by backpropagation through
the unrolled inner loop (`inner_loop`, optionally truncated) on a task distribution: few-shot
sinusoid regression (`sample_sine_tasks`) and small classification tasks
(`sample_class_tasks`). The inner loop never differentiates the loss w.r.t. the network.

Usage (few-shot sinusoids, the paper's first experiment)::

    theta = init_theta(3, hidden=15, message=4, generator=g)
    opt = torch.optim.Adam([t.requires_grad_() for t in theta_leaves(theta)], lr=1e-2)
    for _ in range(n):
        meta_train_step(theta, opt, sample_sine_tasks(8, generator=g), 5, hidden=(20, 20),
                        generator=g, target="final")
    init = torch.Generator().manual_seed(s)  # the test tasks' initial networks
    mse = evaluate(theta, test_tasks, 5, hidden=(20, 20), generator=init)
    lr, _ = tune_sgd_lr(tune_tasks, 5, hidden=(20, 20), generator=init2)  # the baseline

A hand-set learner (`learner="sgd"`, θ = {"lr"}) makes the protocol backprop: the loss node
sends δ = ∂ℓ_b/∂ŷ_b (2(ŷ−y)/O for MSE, p − y for cross-entropy), an activation node m·σ'(z), a
dense layer ΔW = −lr·mean_b x_b δ_bᵀ, Δb = −lr·mean_b δ_b and m^{out} = δ Wᵀ, so the inner loop
is plain SGD on L = mean_b ℓ_b — the exact special case the tests check.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.func import vmap

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "MPLP_BIBTEX",
    "MPLP_PAPER",
    "Learner",
    "Tasks",
    "accuracy",
    "evaluate",
    "evaluate_classification",
    "forward",
    "get_learner",
    "gru_cell",
    "gru_dense",
    "gru_dense_loop",
    "init_net",
    "init_nets",
    "init_theta",
    "inner_loop",
    "inner_step",
    "loss_value",
    "meta_loss",
    "meta_train_step",
    "run_tasks",
    "sample_class_tasks",
    "sample_sine_tasks",
    "sgd_theta",
    "theta_from_vector",
    "theta_leaves",
    "theta_to_vector",
    "tune_sgd_lr",
    "weight_std",
]

MPLP_PAPER = (
    "Randazzo, Niklasson & Mordvintsev, MPLP: Learning a Message Passing Learning Protocol, "
    "arXiv:2007.00970 (2020)"
)
MPLP_BIBTEX = """@article{randazzo2020mplp,
  title   = {{MPLP}: Learning a Message Passing Learning Protocol},
  author  = {Randazzo, Ettore and Niklasson, Eyvind and Mordvintsev, Alexander},
  journal = {arXiv preprint arXiv:2007.00970},
  year    = {2020}
}"""

EPS = 1e-8
_sig = torch.sigmoid
ACTIVATIONS: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    "tanh": (torch.tanh, lambda z: 1 - torch.tanh(z) ** 2),
    "relu": (torch.relu, lambda z: (z > 0).to(z.dtype)),
    "sigmoid": (_sig, lambda z: _sig(z) * (1 - _sig(z))),
}
LOSSES = ("mse", "ce")


class Tasks(NamedTuple):
    """A batch of T tasks: support ``x (T, K, D)``, ``y (T, K, O)`` and query
    ``x_query (T, Q, D)``, ``y_query (T, Q, O)`` (regression targets, or one-hot classes)."""

    x: Tensor
    y: Tensor
    x_query: Tensor
    y_query: Tensor


class Learner(NamedTuple):
    """The nodes' learners; θ = {"loss": …, "act": [per hidden layer], "dense": [per layer]}.

    * ``loss(θ_loss, ŷ (B,O), y (B,O), kind, state) -> (m (B,O,M), state)``
    * ``act(θ_act, z (B,J), m (B,J,M), activation, state) -> (m' (B,J,M), state)``
    * ``dense(θ_l, W (I,J), b (J,), s_l, x (B,I), m (B,J,M), state)``
      ``-> ((ΔW, Δb), m_out (B,I,M), state)``
    * ``init_state(θ, net, B) -> {"loss": …, "act": [...], "dense": [...]}``
    """

    loss: Callable[..., Any]
    act: Callable[..., Any]
    dense: Callable[..., Any]
    init_state: Callable[..., Any]


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


# --------------------------------------------------------------------------- the network


def weight_std(fan_in: int, activation: str) -> float:
    """Initial weight std s_l = √(1/fan_in) (LeCun; the same for every activation)."""
    _check_int("fan_in", fan_in, 1)
    _check_choice("activation", activation, tuple(ACTIVATIONS))
    return math.sqrt(1.0 / fan_in)


def init_net(
    sizes: Sequence[int],
    activation: str = "relu",
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> list[tuple[Tensor, Tensor]]:
    """Random network [(W_l (I_l, J_l) ~ N(0, s_l²), b_l = 0)] for ``sizes`` (I_1, …, J_L)."""
    if len(sizes) < 2:
        raise ValueError(f"sizes must list >= 2 layer widths, got {tuple(sizes)!r}")
    for k, n in enumerate(sizes):
        _check_int(f"sizes[{k}]", n, 1)
    net = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        s = weight_std(fan_in, activation)
        w = torch.randn(fan_in, fan_out, generator=generator, dtype=dtype) * s
        net.append((w, torch.zeros(fan_out, dtype=dtype)))
    return net


def forward(net: Sequence[tuple[Tensor, Tensor]], x: Tensor, activation: str = "relu"):
    """ŷ (B, J_L) and the cache [(h_{l−1} (B, I_l), z_l (B, J_l))] the learners read."""
    sigma = ACTIVATIONS[_check_choice("activation", activation, tuple(ACTIVATIONS))][0]
    cache, h = [], x
    for k, (w, b) in enumerate(net):
        z = h @ w + b
        cache.append((h, z))
        h = sigma(z) if k < len(net) - 1 else z
    return h, cache


def loss_value(pred: Tensor, y: Tensor, loss: str = "mse") -> Tensor:
    """L = mean_{b,o} (ŷ−y)² (``mse``) or mean_b −Σ_o y_bo log softmax(ŷ_b)_o (``ce``)."""
    _check_choice("loss", loss, LOSSES)
    if loss == "mse":
        return ((pred - y) ** 2).mean()
    return -(y * torch.log_softmax(pred, dim=-1)).sum(-1).mean()


def accuracy(pred: Tensor, y: Tensor) -> Tensor:
    """Share of rows where argmax ŷ = argmax y (one-hot targets), over the last two dims' rows."""
    return (pred.argmax(-1) == y.argmax(-1)).to(pred.dtype).mean(-1)


# --------------------------------------------------------------------------- the GRU learner


def gru_cell(p: dict[str, Tensor], u: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """One GRU step on any leading shape: ``u (..., n_in)``, ``c (..., H)`` → (c', o (..., n_out)).

    r = σ(u W_r + c U_r + b_r), z = σ(u W_z + c U_z + b_z), n = tanh(u W_n + r ⊙ (c U_n) + b_n),
    c' = (1 − z) ⊙ n + z ⊙ c, o = c' W_o + b_o.
    """
    hidden = c.shape[-1]
    gx = u @ p["wx"] + p["b"]  # (..., 3H)
    gh = c @ p["wh"]
    r = torch.sigmoid(gx[..., :hidden] + gh[..., :hidden])
    z = torch.sigmoid(gx[..., hidden : 2 * hidden] + gh[..., hidden : 2 * hidden])
    n = torch.tanh(gx[..., 2 * hidden :] + r * gh[..., 2 * hidden :])
    c_new = (1 - z) * n + z * c
    return c_new, c_new @ p["wo"] + p["bo"]


def _rms(t: Tensor) -> Tensor:
    return torch.sqrt((t * t).mean() + EPS)


def _dense_inputs(w: Tensor, b: Tensor, w_std: float, x: Tensor, m: Tensor) -> Tensor:
    """u (B, I+1, J, 2+M) = [W̃_ij/s, x̃_bi/rms(x), m_bj] for every example and parameter."""
    bsz, n_in = x.shape
    n_out, msg = m.shape[1], m.shape[2]
    wt = torch.cat([w, b[None]], 0) / w_std  # (I+1, J)
    xt = torch.cat([x / _rms(x), x.new_ones(bsz, 1)], 1)  # (B, I+1)
    return torch.cat(
        [
            wt.expand(bsz, n_in + 1, n_out)[..., None],
            xt[:, :, None, None].expand(bsz, n_in + 1, n_out, 1),
            m[:, None].expand(bsz, n_in + 1, n_out, msg),
        ],
        dim=-1,
    )


def gru_dense(p, w, b, w_std, x, m, c):
    """The dense layer's learner: every W̃_ij and example b in ONE batched GRU call.

    ``c (B, I+1, J, H)``; returns ((ΔW (I, J), Δb (J,)), m_out (B, I, M), c').
    """
    n_in = w.shape[0]
    c_new, o = gru_cell(p, _dense_inputs(w, b, w_std, x, m), c)  # o (B, I+1, J, 1+M)
    delta = p["scale"] * w_std * o[..., 0].mean(0)  # (I+1, J)
    return (delta[:n_in], delta[n_in]), o[:, :n_in, :, 1:].mean(2), c_new


def gru_dense_loop(p, w, b, w_std, x, m, c):
    """Reference for `gru_dense`: a Python loop over the parameters W̃_ij, one GRU call each."""
    n_in, n_out = w.shape
    u = _dense_inputs(w, b, w_std, x, m)
    deltas, cells, msgs = [], [], []
    for i in range(n_in + 1):
        row_c, row_o = [], []
        for j in range(n_out):
            c_ij, o_ij = gru_cell(p, u[:, i, j], c[:, i, j])  # (B, H), (B, 1+M)
            row_c.append(c_ij)
            row_o.append(o_ij)
        cells.append(torch.stack(row_c, 1))
        o_i = torch.stack(row_o, 1)  # (B, J, 1+M)
        deltas.append(p["scale"] * w_std * o_i[..., 0].mean(0))
        msgs.append(o_i[..., 1:].mean(1))
    delta = torch.stack(deltas, 0)
    return (delta[:n_in], delta[n_in]), torch.stack(msgs[:n_in], 1), torch.stack(cells, 1)


def _gru_act(p, z, m, activation, c):
    sigma = ACTIVATIONS[activation][0]
    u = torch.cat([(z / _rms(z))[..., None], sigma(z)[..., None], m], -1)  # (B, J, 2+M)
    c_new, o = gru_cell(p, u, c)
    return o, c_new


def _gru_loss(p, pred, y, kind, c):
    q = pred if kind == "mse" else torch.softmax(pred, -1)
    u = torch.stack([q, y, q - y], -1)  # (B, O, 3)
    c_new, o = gru_cell(p, u, c)
    return o, c_new


def _gru_state(theta, net, batch: int):
    hidden = theta["loss"]["wh"].shape[0]
    w0 = net[0][0]
    return {
        "loss": w0.new_zeros(batch, net[-1][0].shape[1], hidden),
        "act": [w0.new_zeros(batch, w.shape[1], hidden) for w, _ in net[:-1]],
        "dense": [w0.new_zeros(batch, w.shape[0] + 1, w.shape[1], hidden) for w, _ in net],
    }


def _gru_params(n_in, n_out, hidden, generator, dtype):
    kw = {"generator": generator, "dtype": dtype}
    return {
        "wx": torch.randn(n_in, 3 * hidden, **kw) / math.sqrt(n_in),
        "wh": torch.randn(hidden, 3 * hidden, **kw) / math.sqrt(hidden),
        "b": torch.zeros(3 * hidden, dtype=dtype),
        "wo": torch.randn(hidden, n_out, **kw) / math.sqrt(hidden),
        "bo": torch.zeros(n_out, dtype=dtype),
    }


def init_theta(
    n_layers: int,
    *,
    hidden: int = 15,
    message: int = 4,
    scale: float = 0.1,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """Random GRU learners for a network of ``n_layers`` dense layers (one set per node).

    Dense GRUs: inputs 2+M, readout 1+M, scale κ_l = ``scale``; activation GRUs: 2+M → M; the
    loss GRU: 3 → M. Every leaf is a tensor (hand them to a torch optimizer via `theta_leaves`).
    """
    _check_int("n_layers", n_layers, 1)
    _check_int("hidden", hidden, 1)
    _check_int("message", message, 1)
    if not (isinstance(scale, (int, float)) and math.isfinite(scale)):
        raise ValueError(f"scale must be a finite number, got {scale!r}")
    dense = []
    for _ in range(n_layers):
        p = _gru_params(2 + message, 1 + message, hidden, generator, dtype)
        p["scale"] = torch.tensor(float(scale), dtype=dtype)
        dense.append(p)
    return {
        "loss": _gru_params(3, message, hidden, generator, dtype),
        "act": [
            _gru_params(2 + message, message, hidden, generator, dtype)
            for _ in range(n_layers - 1)
        ],
        "dense": dense,
    }


# --------------------------------------------------------------------------- the SGD learner


def sgd_theta(lr: float, *, dtype: torch.dtype = torch.float64) -> dict[str, Tensor]:
    """θ of the hand-set backprop learner: the learning rate, a tensor (can be meta-learned)."""
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    return {"lr": torch.tensor(float(lr), dtype=dtype)}


def _sgd_loss(theta, pred, y, kind, state):
    if kind == "mse":
        return (2.0 / pred.shape[-1] * (pred - y))[..., None], state
    return (torch.softmax(pred, -1) - y)[..., None], state


def _sgd_act(theta, z, m, activation, state):
    return m * ACTIVATIONS[activation][1](z)[..., None], state


def _sgd_dense(theta, w, b, w_std, x, m, state):
    delta = m[..., 0]  # (B, J): ∂ℓ_b/∂z_b
    lr = theta["lr"]
    dw = -lr * (x.T @ delta) / x.shape[0]
    db = -lr * delta.mean(0)
    return (dw, db), (delta @ w.T)[..., None], state


def _sgd_state(theta, net, batch: int):
    return {"loss": None, "act": [None] * (len(net) - 1), "dense": [None] * len(net)}


def get_learner(name: str | Learner = "gru") -> Learner:
    """``"gru"`` (learned, batched), ``"gru_loop"`` (same, per-parameter loop) or ``"sgd"``."""
    if isinstance(name, Learner):
        return name
    _check_choice("learner", name, ("gru", "gru_loop", "sgd"))
    if name == "sgd":
        return Learner(_sgd_loss, _sgd_act, _sgd_dense, _sgd_state)
    dense = gru_dense if name == "gru" else gru_dense_loop
    return Learner(_gru_loss, _gru_act, dense, _gru_state)


# --------------------------------------------------------------------------- the inner loop


def _theta_for(theta, key: str, k: int | None = None):
    if "lr" in theta:  # the SGD learner shares its lr with every node
        return theta
    return theta[key] if k is None else theta[key][k]


def inner_step(theta, net, state, x, y, *, learner: Learner, activation: str, loss: str):
    """One MPLP step: forward, the loss node's message, then every layer backwards.

    Returns (net', state', L) with L the loss of ``net`` on (x, y) (reported, never differentiated
    w.r.t. the network).
    """
    pred, cache = forward(net, x, activation)
    m, s_loss = learner.loss(_theta_for(theta, "loss"), pred, y, loss, state["loss"])
    s_act, s_dense = list(state["act"]), list(state["dense"])
    new_net = list(net)
    for k in range(len(net) - 1, -1, -1):
        h, z = cache[k]
        if k < len(net) - 1:
            m, s_act[k] = learner.act(_theta_for(theta, "act", k), z, m, activation, s_act[k])
        w, b = net[k]
        s = weight_std(w.shape[0], activation)
        (dw, db), m, s_dense[k] = learner.dense(
            _theta_for(theta, "dense", k), w, b, s, h, m, s_dense[k]
        )
        new_net[k] = (w + dw, b + db)
    return new_net, {"loss": s_loss, "act": s_act, "dense": s_dense}, loss_value(pred, y, loss)


def _detach(tree):
    if tree is None:
        return None
    if isinstance(tree, Tensor):
        return tree.detach()
    if isinstance(tree, dict):
        return {k: _detach(v) for k, v in tree.items()}
    return type(tree)(_detach(v) for v in tree)


def inner_loop(
    theta,
    net_params: Sequence[tuple[Tensor, Tensor]],
    x: Tensor,
    y: Tensor,
    steps: int,
    *,
    learner: str | Learner = "gru",
    activation: str = "relu",
    loss: str = "mse",
    truncate: int | None = None,
    x_query: Tensor | None = None,
    y_query: Tensor | None = None,
):
    """``steps`` MPLP steps on the full batch (x (B, D), y (B, O)), differentiable w.r.t. θ.

    Returns (net_T, losses (steps,)) — the support loss before each step — and, when a query set
    is given, also query_losses (steps,): the query loss after each step. ``truncate=k`` detaches
    the network and learner states every k steps (truncated backprop through the unroll).
    """
    _check_int("steps", steps, 0)
    if truncate is not None:
        _check_int("truncate", truncate, 1)
    _check_choice("loss", loss, LOSSES)
    _check_choice("activation", activation, tuple(ACTIVATIONS))
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x (B, D) and y (B, O) must be 2-d with one batch, got {x.shape}, {y.shape}"
        )
    lrn = get_learner(learner)
    net = [tuple(p) for p in net_params]
    if "dense" in theta and len(theta["dense"]) != len(net):
        raise ValueError(
            f"theta has learners for {len(theta['dense'])} layers, the net {len(net)}"
        )
    state = lrn.init_state(theta, net, x.shape[0])
    losses, query = [], []
    for t in range(steps):
        if truncate is not None and t > 0 and t % truncate == 0:
            net, state = _detach(net), _detach(state)
        net, state, lval = inner_step(
            theta, net, state, x, y, learner=lrn, activation=activation, loss=loss
        )
        losses.append(lval)
        if x_query is not None:
            query.append(loss_value(forward(net, x_query, activation)[0], y_query, loss))
    stack = torch.stack(losses) if losses else x.new_zeros(0)
    if x_query is None:
        return net, stack
    return net, stack, (torch.stack(query) if query else x.new_zeros(0))


# ------------------------------------------------------------------ tasks and meta-training


def sample_sine_tasks(
    n_tasks: int,
    *,
    k_support: int = 10,
    k_query: int = 10,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tasks:
    """Few-shot sinusoids (MAML, arXiv 1703.03400): y = A sin(x − φ), A ~ U[0.1, 5], φ ~ U[0, π],
    x ~ U[−5, 5]; K = ``k_support`` support and ``k_query`` query points per task."""
    _check_int("n_tasks", n_tasks, 1)
    _check_int("k_support", k_support, 1)
    _check_int("k_query", k_query, 1)
    kw = {"generator": generator, "dtype": dtype}
    amp = 0.1 + 4.9 * torch.rand(n_tasks, 1, 1, **kw)
    phase = math.pi * torch.rand(n_tasks, 1, 1, **kw)
    x = -5 + 10 * torch.rand(n_tasks, k_support + k_query, 1, **kw)
    y = amp * torch.sin(x - phase)
    return Tasks(x[:, :k_support], y[:, :k_support], x[:, k_support:], y[:, k_support:])


def _one_class_task(x, y, classes, n_support, n_query, dim, generator):
    pool = torch.cat([torch.nonzero(y == c).flatten() for c in classes])
    if pool.numel() < n_support + n_query:
        raise ValueError(
            f"n_support + n_query = {n_support + n_query} exceeds the {pool.numel()} examples "
            f"of classes {classes.tolist()}"
        )
    idx = pool[torch.randperm(pool.numel(), generator=generator)[: n_support + n_query]]
    xs = x[idx]
    if dim is not None:
        proj = torch.randn(x.shape[1], dim, generator=generator, dtype=x.dtype)
        xs = xs @ proj / math.sqrt(x.shape[1])
    mu, sd = xs[:n_support].mean(0), xs[:n_support].std(0) + 1e-3
    xs = (xs - mu) / sd
    label = torch.full_like(y, -1)
    label[classes] = torch.arange(len(classes))
    onehot = torch.nn.functional.one_hot(label[y[idx]], len(classes)).to(x.dtype)
    return xs[:n_support], onehot[:n_support], xs[n_support:], onehot[n_support:]


def sample_class_tasks(
    x: Tensor,
    y: Tensor,
    n_tasks: int,
    *,
    n_support: int,
    n_query: int,
    n_classes: int | None = None,
    dim: int | None = None,
    generator: torch.Generator | None = None,
) -> Tasks:
    """Classification tasks from a labelled set ``x (N, ...)``, ``y (N,)`` (ints).

    Each task draws ``n_classes`` of the classes (all when None) in a random order, n_support +
    n_query of their examples, an optional random projection to ``dim`` features
    (R ~ N(0, 1/F)), and standardises the features by the support set's mean and std.
    Targets are one-hot ``(T, K, n_classes)``.
    """
    _check_int("n_tasks", n_tasks, 1)
    _check_int("n_support", n_support, 1)
    _check_int("n_query", n_query, 1)
    if dim is not None:
        _check_int("dim", dim, 1)
    x = x.reshape(x.shape[0], -1)
    labels = torch.unique(y)
    n_classes = len(labels) if n_classes is None else n_classes
    if not 2 <= _check_int("n_classes", n_classes, 2) <= len(labels):
        raise ValueError(f"n_classes must be in [2, {len(labels)}], got {n_classes}")
    parts = []
    for _ in range(n_tasks):
        classes = labels[torch.randperm(len(labels), generator=generator)[:n_classes]]
        parts.append(_one_class_task(x, y, classes, n_support, n_query, dim, generator))
    return Tasks(*(torch.stack(p) for p in zip(*parts, strict=True)))


def theta_leaves(theta) -> list[Tensor]:
    """Every tensor of θ, in a fixed order (for a torch optimizer or a flat vector)."""
    if isinstance(theta, Tensor):
        return [theta]
    if isinstance(theta, dict):
        return [t for k in sorted(theta) for t in theta_leaves(theta[k])]
    return [t for v in theta for t in theta_leaves(v)]


def theta_to_vector(theta) -> Tensor:
    """θ as one flat vector (the order of `theta_leaves`), e.g. for evolution strategies."""
    return torch.cat([t.reshape(-1) for t in theta_leaves(theta)])


def theta_from_vector(vec: Tensor, like):
    """Inverse of `theta_to_vector`: a θ shaped like ``like`` holding the entries of ``vec``."""
    n = sum(t.numel() for t in theta_leaves(like))
    if vec.ndim != 1 or vec.shape[0] != n:
        raise ValueError(f"vec must have shape ({n},) for this theta, got {tuple(vec.shape)}")
    pos = [0]

    def build(tree):
        if isinstance(tree, Tensor):
            out = vec[pos[0] : pos[0] + tree.numel()].reshape(tree.shape)
            pos[0] += tree.numel()
            return out
        if isinstance(tree, dict):
            return {k: build(tree[k]) for k in sorted(tree)}
        return [build(v) for v in tree]

    return build(like)


def init_nets(sizes, activation, n_tasks, generator=None, dtype=torch.float32):
    """``n_tasks`` networks of `init_net`, stacked: ``[(W (T, I, J), b (T, J))]``."""
    _check_int("n_tasks", n_tasks, 1)
    nets = [init_net(sizes, activation, generator=generator, dtype=dtype) for _ in range(n_tasks)]
    return [
        (torch.stack([n[k][0] for n in nets]), torch.stack([n[k][1] for n in nets]))
        for k in range(len(sizes) - 1)
    ]


def run_tasks(
    theta,
    tasks: Tasks,
    steps: int,
    *,
    hidden: Sequence[int] = (40, 40),
    nets=None,
    generator: torch.Generator | None = None,
    learner: str | Learner = "gru",
    activation: str = "relu",
    loss: str = "mse",
    truncate: int | None = None,
):
    """`inner_loop` on every task at once (``torch.func.vmap`` over the task axis).

    The network is (D, *hidden, O) with D, O read from the tasks; ``nets`` (stacked per task,
    ``[(W (T, I, J), b (T, J))]``) or fresh ones from ``generator``. Returns (nets_T, support
    losses (T, steps), query losses after each step (T, steps)).
    """
    n_tasks, _, d_in = tasks.x.shape
    sizes = (d_in, *hidden, tasks.y.shape[-1])
    if nets is None:
        nets = init_nets(sizes, activation, n_tasks, generator, tasks.x.dtype)
    if len(nets) != len(sizes) - 1:
        raise ValueError(
            f"nets has {len(nets)} layers, hidden={tuple(hidden)} needs {len(sizes) - 1}"
        )

    def one(net, x, y, xq, yq):
        return inner_loop(
            theta,
            net,
            x,
            y,
            steps,
            learner=learner,
            activation=activation,
            loss=loss,
            truncate=truncate,
            x_query=xq,
            y_query=yq,
        )

    return vmap(one)(nets, tasks.x, tasks.y, tasks.x_query, tasks.y_query)


def meta_loss(theta, tasks: Tasks, steps: int, *, target: str = "mean", **kw) -> Tensor:
    """Meta-objective: the query loss averaged over tasks, after the last step (``"final"``) or
    averaged over the steps 1…T (``"mean"``). ``kw`` go to `run_tasks`."""
    _check_choice("target", target, ("mean", "final"))
    _, _, query = run_tasks(theta, tasks, steps, **kw)
    return query[:, -1].mean() if target == "final" else query.mean()


def meta_train_step(
    theta, opt: torch.optim.Optimizer, tasks: Tasks, steps: int, *, clip: float | None = 1.0, **kw
) -> float:
    """One outer step: backprop through the unrolled inner loops, clip ‖∇θ‖, ``opt.step()``.

    ``opt`` holds `theta_leaves(theta)`; ``kw`` go to `meta_loss`. A non-finite meta-loss or
    gradient skips the update. Returns the meta-loss.
    """
    if clip is not None and not (isinstance(clip, (int, float)) and clip > 0):
        raise ValueError(f"clip must be a number > 0 or None, got {clip!r}")
    opt.zero_grad()
    value = meta_loss(theta, tasks, steps, **kw)
    if not torch.isfinite(value):
        return float(value.detach())
    value.backward()
    params = [p for group in opt.param_groups for p in group["params"]]
    norm = torch.nn.utils.clip_grad_norm_(params, clip if clip is not None else float("inf"))
    if torch.isfinite(norm):
        opt.step()
    return float(value.detach())


def evaluate(theta, tasks: Tasks, steps: int = 5, **kw) -> float:
    """Mean query MSE over tasks after ``steps`` inner steps on the support set."""
    activation = kw.get("activation", "relu")
    with torch.no_grad():
        nets, _, _ = run_tasks(theta, tasks, steps, loss="mse", **kw)
        pred = vmap(lambda n, x: forward(n, x, activation)[0])(nets, tasks.x_query)
    return float(((pred - tasks.y_query) ** 2).mean())


def evaluate_classification(theta, tasks: Tasks, steps: int, **kw) -> float:
    """Mean query accuracy over tasks after ``steps`` inner steps (softmax cross-entropy node)."""
    activation = kw.get("activation", "relu")
    with torch.no_grad():
        nets, _, _ = run_tasks(theta, tasks, steps, loss="ce", **kw)
        pred = vmap(lambda n, x: forward(n, x, activation)[0])(nets, tasks.x_query)
    return float(accuracy(pred, tasks.y_query).mean())


SGD_GRID = (1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1, 2e-1, 5e-1, 1.0)


def tune_sgd_lr(
    tasks: Tasks, steps: int, *, grid: Sequence[float] = SGD_GRID, loss: str = "mse", **kw
) -> tuple[float, dict[float, float]]:
    """The baseline's learning rate: plain SGD (the hand-set learner) with each lr of ``grid`` on
    ``tasks`` for ``steps`` steps; the lr with the lowest query MSE (``mse``; non-finite counts
    as +∞) or the highest query accuracy (``ce``). Returns (best lr, {lr: score})."""
    _check_choice("loss", loss, LOSSES)
    if len(grid) == 0:
        raise ValueError("grid must hold at least one learning rate, got an empty sequence")
    dtype, gen = tasks.x.dtype, kw.pop("generator", None)
    scores = {}
    for lr in grid:
        theta = sgd_theta(lr, dtype=dtype)
        if gen is not None:  # the same initial networks for every lr
            kw["generator"] = torch.Generator().set_state(gen.get_state())
        if loss == "mse":
            value = evaluate(theta, tasks, steps, learner="sgd", **kw)
            scores[lr] = value if math.isfinite(value) else math.inf
        else:
            scores[lr] = evaluate_classification(theta, tasks, steps, learner="sgd", **kw)
    pick = min if loss == "mse" else max
    return pick(scores, key=scores.get), scores
