"""RL^2: a GRU that learns inside its activations, meta-trained by advantage actor-critic.

The agent of Lange & Sprekeler (arXiv 2010.04466, after Wang et al. 2016 and Duan et al.
2016): at step t a GRU reads x_t = [one_hot(a_{t-1}), r_{t-1}, t / T_ref] and its hidden state
h_t carries everything learned within the lifetime; a policy head gives pi(a | h_t), a value
head V(h_t). The weights change only between lifetimes (meta-training); within a lifetime the
agent can only "learn" through h_t.

Many agents train at once, one per bandit condition: every weight has a leading condition axis
C, so a whole grid of (T, sigma_p) conditions is one batched computation. Conditions never
share parameters, and Adam is elementwise, so this equals training each agent on its own.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from badgerlab.learned.bandits import BanditFamily, step_rewards

__all__ = ["a2c_loss", "init_params", "normalise_advantages", "rollout"]

INPUTS = 4  # one-hot previous action (2), previous reward, time


def init_params(conditions: int, hidden: int, *, generator: torch.Generator) -> dict[str, Tensor]:
    """GRU and head weights for `conditions` independent agents, uniform(+-1/sqrt(H)) as torch."""
    if conditions < 1 or hidden < 1:
        raise ValueError(f"conditions and hidden must be >= 1, got {conditions}, {hidden}")
    k = 1.0 / math.sqrt(hidden)
    shapes = {
        "W_x": (conditions, INPUTS, 3 * hidden),
        "W_h": (conditions, hidden, 3 * hidden),
        "b_x": (conditions, 3 * hidden),
        "b_h": (conditions, 3 * hidden),
        "W_pi": (conditions, hidden, 2),
        "b_pi": (conditions, 2),
        "W_v": (conditions, hidden, 1),
        "b_v": (conditions, 1),
    }
    return {
        name: ((torch.rand(shape, generator=generator) * 2 - 1) * k).requires_grad_()
        for name, shape in shapes.items()
    }


def _gru(p: dict[str, Tensor], x: Tensor, h: Tensor) -> Tensor:
    """One GRU step for every condition: x (C, n, I), h (C, n, H) -> (C, n, H) (torch's gates)."""
    H = h.shape[-1]
    gx = torch.einsum("cni,cig->cng", x, p["W_x"]) + p["b_x"][:, None]  # (C, n, 3H)
    gh = torch.einsum("cnh,chg->cng", h, p["W_h"]) + p["b_h"][:, None]  # (C, n, 3H)
    r = torch.sigmoid(gx[..., :H] + gh[..., :H])
    z = torch.sigmoid(gx[..., H : 2 * H] + gh[..., H : 2 * H])
    n_ = torch.tanh(gx[..., 2 * H :] + r * gh[..., 2 * H :])
    return (1 - z) * n_ + z * h


def rollout(
    p: dict[str, Tensor],
    families: list[BanditFamily],
    mu: Tensor,
    noise: Tensor,
    *,
    generator: torch.Generator,
    t_ref: float,
    greedy: bool = False,
) -> dict[str, Tensor]:
    """Play one lifetime per task: agent c on family c, tasks `mu (C, n)`, `noise (C, n, T_max)`.

    Returns `actions`, `rewards`, `logp`, `entropy`, `values` (C, n, T_max) and `alive`
    (C, 1, T_max), where steps past a condition's lifetime are masked out. `values` are
    V = v_hat * (T - t): the head predicts the mean reward per remaining step, which keeps its
    targets of order one for every lifetime.
    """
    C, n = mu.shape
    t_max = noise.shape[-1]
    H = p["W_h"].shape[1]
    if len(families) != C or p["W_h"].shape[0] != C:
        raise ValueError(
            f"need one family and one agent per condition, got {len(families)}, C={C}"
        )
    lengths = torch.tensor([f.T for f in families])
    h = torch.zeros(C, n, H)
    prev_a = torch.zeros(C, n, 2)
    prev_r = torch.zeros(C, n, 1)
    out: dict[str, list[Tensor]] = {k: [] for k in ("actions", "rewards", "logp", "entropy")}
    out["values"] = []
    for t in range(t_max):
        time = torch.full((C, n, 1), t / t_ref)
        h = _gru(p, torch.cat([prev_a, prev_r, time], -1), h)
        logits = torch.einsum("cnh,cha->cna", h, p["W_pi"]) + p["b_pi"][:, None]  # (C, n, 2)
        logp_all = torch.log_softmax(logits, -1)
        if greedy:
            a = logp_all.argmax(-1)
        else:
            u = torch.rand(C, n, generator=generator)
            a = (u < logp_all[..., 1].exp()).long()
        left = (lengths - t).clamp(min=0).to(h.dtype)[:, None]  # (C, 1)
        v = (torch.einsum("cnh,cho->cno", h, p["W_v"]) + p["b_v"][:, None])[..., 0] * left
        r = step_rewards(families, a, mu, noise[..., t]).to(h.dtype)
        out["actions"].append(a)
        out["rewards"].append(r)
        out["logp"].append(logp_all.gather(-1, a[..., None])[..., 0])
        out["entropy"].append(-(logp_all.exp() * logp_all).sum(-1))
        out["values"].append(v)
        prev_a = torch.nn.functional.one_hot(a, 2).to(h.dtype)
        prev_r = r[..., None]
    res = {k: torch.stack(v, -1) for k, v in out.items()}
    res["alive"] = (torch.arange(t_max)[None, :] < lengths[:, None]).to(h.dtype)[:, None, :]
    return res


def normalise_advantages(adv: Tensor, alive: Tensor, *, eps: float = 1e-8) -> Tensor:
    """(A - mean) / (std + eps) per condition over its live steps: adv (C, n, T), alive (C, 1, T).

    Normalising across the batch of tasks is what keeps the learning regime from collapsing
    onto the risky arm: raw advantages scale with the lifetime and the prior's width.
    """
    w = alive.expand_as(adv)
    count = w.sum((1, 2), keepdim=True)
    mean = (adv * w).sum((1, 2), keepdim=True) / count
    var = (((adv - mean) * w) ** 2).sum((1, 2), keepdim=True) / count
    return (adv - mean) / (var.sqrt() + eps) * w


def a2c_loss(
    ro: dict[str, Tensor], lengths: Tensor, *, value_coef: float = 0.5, entropy_coef: float = 0.0
) -> tuple[Tensor, dict[str, Tensor]]:
    """Advantage actor-critic loss, summed over conditions (each agent's own loss).

    G_t = sum_{s >= t} r_s (undiscounted, within the lifetime), A_t = G_t - V_t with V_t
    detached, normalised per condition; the policy loss is -mean(log pi(a_t) * A_hat_t); the value
    loss is mean(((G_t - V_t) / T)^2); minus `entropy_coef` times the mean entropy.
    """
    alive = ro["alive"]
    r = ro["rewards"] * alive
    G = torch.flip(torch.cumsum(torch.flip(r, [-1]), -1), [-1])  # (C, n, T) return-to-go
    V = ro["values"]
    adv = normalise_advantages((G - V).detach(), alive)
    w = alive.expand_as(G)
    count = w.sum((1, 2))  # (C,)
    scale = lengths.to(G.dtype)[:, None, None]
    policy = -(ro["logp"] * adv * w).sum((1, 2)) / count
    value = ((((G - V) / scale) ** 2) * w).sum((1, 2)) / count
    entropy = (ro["entropy"] * w).sum((1, 2)) / count
    per_condition = policy + value_coef * value - entropy_coef * entropy
    return per_condition.sum(), {"policy": policy, "value": value, "entropy": entropy}
