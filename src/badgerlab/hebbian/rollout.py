"""Population rollouts: P networks step as one batched op over P environments, one episode each."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from badgerlab.hebbian.envs import EpisodeVectorEnv
from badgerlab.hebbian.policy import HebbianPolicy, PolicyState

__all__ = ["Rollout", "StepHook", "l2_penalty", "rollout"]

#: Called after every step's Hebbian update as `hook(t, state, members)`, where `members` (K,)
#: says which population member each row of `state` is; it may return a replaced state (e.g. a
#: layer zeroed) or None to keep it.
StepHook = Callable[[int, PolicyState, Tensor], "PolicyState | None"]


class Rollout(NamedTuple):
    """What one episode per member gave: returns (P,) float64, lengths (P,) int64, and with
    `record=True` the rewards (P, T) float64 (0 after a member finished)."""

    returns: Tensor
    lengths: Tensor
    rewards: Tensor | None


def rollout(
    policy: HebbianPolicy,
    theta: Tensor,
    envs: EpisodeVectorEnv,
    *,
    seed: int | Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    weight_seeds: Sequence[int] | None = None,
    max_steps: int | None = None,
    record: bool = False,
    hook: StepHook | None = None,
    dtype: torch.dtype = torch.float32,
    compact: bool = True,
) -> Rollout:
    """Run each of the P members of θ (P, D) for exactly one episode in its own sub-environment.

    Each step: the live members' observations (K, …) go through the policy as one batch, the
    actions step the vector env, then the Hebbian rule updates every live member's weights from
    that step's activations. A member whose episode ended is masked out: its environment is not
    reset and, with `compact`, its row leaves the batch so no compute is spent on it.
    The per-episode random weights come from `weight_seeds` (one per member, so a member's
    episode does not depend on its batch) or else `generator`; `seed` seeds the resets.
    """
    P = theta.shape[0]
    if envs.num_envs != P:
        raise ValueError(f"envs has {envs.num_envs} sub-environments but theta has {P} rows")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    obs, _ = envs.reset(seed=seed)
    # A batched simulator on a device (batched.BatchedAntEnv, "warp") gives torch observations
    # and takes torch actions there; rewards and done flags are numpy (N values a step).
    on_device = isinstance(obs, Tensor)
    if on_device:
        theta = theta.to(obs.device)  # the policy steps on the simulator's device
    state = policy.init(theta, generator=generator, seeds=weight_seeds, dtype=dtype)
    members = torch.arange(P)  # which member each row of `state` is
    rows = np.arange(P)
    if on_device:
        rows_dev = torch.from_numpy(rows).to(obs.device)  # `rows` on the device, kept in step
        actions: np.ndarray | Tensor = torch.zeros(
            envs.action_space.shape, dtype=torch.float32, device=obs.device
        )
    else:
        actions = np.zeros(envs.action_space.shape, dtype=np.float32)
    returns = np.zeros(P, dtype=np.float64)
    lengths = np.zeros(P, dtype=np.int64)
    trace: list[np.ndarray] = []
    t = 0
    with torch.no_grad():
        while not envs.finished.all() and (max_steps is None or t < max_steps):
            if on_device:
                x = obs[rows_dev]
            else:
                x = torch.from_numpy(np.ascontiguousarray(obs[rows]))
            action, acts = policy.forward(state, x)
            # Rows of finished members (only without compaction) act, but the env ignores them.
            if on_device:
                actions[rows_dev] = action.to(actions)
            else:
                actions[rows] = action.numpy()
            lengths += ~envs.finished
            obs, rewards, _, _, _ = envs.step(actions)
            returns += rewards
            if record:
                trace.append(rewards)
            state = policy.update(state, acts, inplace=True)
            if hook is not None:
                state = hook(t, state, members) or state
            t += 1
            if compact:
                keep = np.flatnonzero(~envs.finished[rows])
                if keep.size < rows.size:
                    index = torch.from_numpy(keep)
                    state, members, rows = policy.select(state, index), members[index], rows[keep]
                    if on_device:
                        rows_dev = torch.from_numpy(rows).to(obs.device)
    rewards_pt = torch.from_numpy(np.stack(trace, axis=1)) if record and trace else None
    if record and rewards_pt is None:
        rewards_pt = torch.zeros(P, 0, dtype=torch.float64)
    return Rollout(torch.from_numpy(returns), torch.from_numpy(lengths), rewards_pt)


def l2_penalty(theta: Tensor, mask: Tensor, *, weight: float = 0.01) -> Tensor:
    """The reference's fitness decay, weight · mean(coef²) over masked entries: (P, D) -> (P,)."""
    if not mask.any():
        return torch.zeros(theta.shape[0], dtype=theta.dtype)
    return weight * theta[:, mask].pow(2).mean(dim=1)
