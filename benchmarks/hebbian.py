"""Hebbian ES generation: batched population vs a loop over members, and the env-only rate.

Prints one JSON object. For HalfCheetah-v5 and Ant-v5 with population 64 (28→128→64→8-style
networks, ABCD_lr per synapse, abs-max normalisation):

- `policy_speedup`: time of the policy-and-update part per step, a Python loop over members
  (one matmul per layer each, then the same in-place Hebbian update per member) divided by
  the batched population (goal >= 5);
- `generation_over_env`: time of one ES generation's rollouts per environment step, divided
  by the environment-only time per step (zero actions through gymnasium's `SyncVectorEnv`)
  (goal <= 1.5).

Times are process CPU seconds (the machine is shared; see `_clock`).

Usage: python benchmarks/hebbian.py [--steps 200] [--popsize 64]
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import numpy as np
import torch

from badgerlab.hebbian.envs import EpisodeVectorEnv, make_env
from badgerlab.hebbian.policy import HebbianPolicy, PolicySpec, abs_max_normalise_
from badgerlab.hebbian.rollout import rollout
from badgerlab.hebbian.rules import apply_folded_


def _clock() -> float:
    # Process CPU time: on a machine shared with other jobs, wall time measures the neighbours.
    # With one torch thread and the environments in this process, it is this job's cost.
    return time.process_time()


ENVS = {
    "HalfCheetah-v5": {},
    "Ant-v5": {"include_cfrc_ext_in_observation": False},
}


def _fns(env_id: str, n: int, steps: int) -> list:
    kwargs = ENVS[env_id]
    return [lambda: make_env(env_id, max_steps=steps, **kwargs)] * n


def env_only(env_id: str, n: int, steps: int, seed: int) -> tuple[int, float]:
    """Steps and seconds of gymnasium's own `SyncVectorEnv` for `steps` zero-action steps.

    The plain vector API is the baseline: it autoresets finished sub-environments and keeps
    stepping, so every step it times is a real simulation step.
    """
    envs = gym.vector.SyncVectorEnv(_fns(env_id, n, steps))
    envs.reset(seed=seed)
    zero = np.zeros(envs.action_space.shape, dtype=np.float32)
    t0 = _clock()
    for _ in range(steps):
        envs.step(zero)
    elapsed = _clock() - t0
    envs.close()
    return n * steps, elapsed


def generation(pol: HebbianPolicy, theta: torch.Tensor, envs: EpisodeVectorEnv, seed: int):
    t0 = _clock()
    out = rollout(pol, theta, envs, seed=seed, weight_seeds=list(range(theta.shape[0])))
    return int(out.lengths.sum()), _clock() - t0


def batched_policy(pol: HebbianPolicy, theta: torch.Tensor, obs: torch.Tensor) -> float:
    """Seconds per step of forward + Hebbian update for the whole population at once."""
    state = pol.init(theta, seeds=list(range(theta.shape[0])))
    t0 = _clock()
    for x in obs:
        _, acts = pol.forward(state, x)
        state = pol.update(state, acts, inplace=True)
    return (_clock() - t0) / len(obs)


def member_loop_policy(pol: HebbianPolicy, theta: torch.Tensor, obs: torch.Tensor) -> float:
    """The strongest simple alternative: each member alone, one matmul per layer, in place."""
    state = pol.init(theta, seeds=list(range(theta.shape[0])))
    P = theta.shape[0]
    weights = [[W[p].clone() for W in state.weights] for p in range(P)]
    rules = [[type(r)(*(t[p] for t in r)) for r in state.rules] for p in range(P)]
    scratch = [torch.empty_like(W) for W in weights[0]]
    last = len(weights[0]) - 1
    t0 = _clock()
    for x in obs:
        for p in range(P):
            h, acts = x[p], [x[p]]
            for n, W in enumerate(weights[p]):
                h = W @ h
                if n < last:
                    h = torch.tanh(h)
                acts.append(h)
            h.clamp(-1.0, 1.0)  # the action
            for n, W in enumerate(weights[p]):
                apply_folded_(W, acts[n], acts[n + 1], rules[p][n], scratch[n])
                abs_max_normalise_(W.unsqueeze(0), scratch[n].unsqueeze(0))
    return (_clock() - t0) / len(obs)


def bench(env_id: str, popsize: int, steps: int, policy_steps: int) -> dict[str, float]:
    probe = make_env(env_id, **ENVS[env_id])
    obs_dim, act_dim = probe.observation_space.shape[0], probe.action_space.shape[0]
    probe.close()
    pol = HebbianPolicy(PolicySpec((obs_dim, 128, 64, act_dim), rule="ABCD_lr"))
    theta = torch.randn(popsize, pol.num_params, generator=torch.Generator().manual_seed(0))
    envs = EpisodeVectorEnv(_fns(env_id, popsize, steps), infos=False)

    generation(pol, theta, envs, seed=0)  # warm-up: caches, allocator, MuJoCo
    n_env, t_env = env_only(env_id, popsize, steps, seed=1)
    n_gen, t_gen = generation(pol, theta, envs, seed=1)
    obs = torch.randn(policy_steps, popsize, obs_dim)
    t_batch = batched_policy(pol, theta, obs)
    t_loop = member_loop_policy(pol, theta, obs)
    return {
        "env_only_steps_per_s": n_env / t_env,
        "generation_steps_per_s": n_gen / t_gen,
        "generation_over_env": (t_gen / n_gen) / (t_env / n_env),
        "policy_batched_ms_per_step": 1e3 * t_batch,
        "policy_member_loop_ms_per_step": 1e3 * t_loop,
        "policy_speedup": t_loop / t_batch,
        "episode_steps_generation": n_gen,
        "episode_steps_env_only": n_env,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="episode cap per member")
    parser.add_argument("--popsize", type=int, default=64)
    parser.add_argument("--policy-steps", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out: dict[str, object] = {
        "popsize": args.popsize,
        "episode_cap": args.steps,
        "torch_threads": torch.get_num_threads(),
        "timer": "process CPU time",
    }
    for env_id in ENVS:
        out[env_id] = bench(env_id, args.popsize, args.steps, args.policy_steps)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
