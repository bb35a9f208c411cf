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

`backends`: env-steps per second of the Ant-v5 task (`get_task("Ant-v5")`, standard body, the
same uniform random actions for every backend) at populations 64 and 1024: "gym" (our
`EpisodeVectorEnv` over gymnasium), "batch" (`BatchedAntEnv`, mujoco.batch, 1 and 2 threads),
"warp-cpu" (mujoco_warp on warp's CPU device) and "warp-cuda" (only where a GPU exists, else
listed as skipped). Per wall-clock second (threads count) and per process CPU second, with
`ratio_to_gym` (wall) and `cpu_ratio_to_gym` against the gym row of the same population in
the same run; on a loaded machine the CPU ratio is the one to read (batch-2 gains wall time
only on free cores). Each row times `--backend-steps` steps after one warm-up step; slow rows
(gym at 1024, warp-cpu at both)
time fewer (`--slow-steps`), which is enough for a rate (steps do not get cheaper or dearer
along an episode's first few hundred steps), and say so in `steps_timed`.

Usage: python benchmarks/hebbian.py [--steps 200] [--popsize 64] [--backends-only]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import gymnasium as gym
import numpy as np
import torch

from badgerlab.hebbian.batched import BatchedAntEnv
from badgerlab.hebbian.envs import EpisodeVectorEnv, make_env
from badgerlab.hebbian.policy import HebbianPolicy, PolicySpec, abs_max_normalise_
from badgerlab.hebbian.rollout import rollout
from badgerlab.hebbian.rules import apply_folded_
from badgerlab.hebbian.tasks import get_task, vector_env


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


def _backend_env(name: str, n: int, cap: int):
    """The Ant-v5 vector env of backend row `name`, or the reason it is skipped."""
    if name == "gym":
        return vector_env(get_task("Ant-v5"), n, max_steps=cap, backend="gym")
    if name.startswith("batch"):
        return BatchedAntEnv([None] * n, max_steps=cap, nthread=int(name.split("-")[1]))
    device = name.split("-")[1]
    try:
        import warp as wp

        wp.config.quiet = True
        if device == "cuda" and not wp.get_cuda_device_count():
            return "no CUDA device"
    except ImportError as err:
        return f"mujoco_warp/warp not importable ({err})"
    return BatchedAntEnv([None] * n, max_steps=cap, backend="warp", device=device)


def backend_rate(name: str, n: int, steps: int) -> dict[str, object]:
    """Env-steps per wall and CPU second of `steps` random-action steps of one backend."""
    env = _backend_env(name, n, cap=steps + 1)
    if isinstance(env, str):
        return {"skipped": env}
    acts = np.random.default_rng(0).uniform(-1, 1, (steps + 1, n, 8)).astype(np.float32)
    env.reset(seed=0)
    env.step(acts[0])  # warm-up (warp: kernel load/compile)
    if name.startswith("warp"):
        import warp as wp

        wp.synchronize()
    done = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for a in acts[1:]:
        done += int((~env.finished).sum())
        env.step(a)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "steps_timed": steps,
        "env_steps": done,
        "steps_per_s": done / wall,
        "cpu_steps_per_s": done / cpu,
    }


BACKENDS = ("gym", "batch-1", "batch-2", "warp-cpu", "warp-cuda")
SLOW = {("gym", 1024), ("warp-cpu", 1024), ("warp-cpu", 64)}


def backends(steps: int, slow_steps: int, popsizes=(64, 1024)) -> dict[str, object]:
    """`backend_rate` of every backend at each population, with the ratio to gym's wall rate."""
    out: dict[str, object] = {"loadavg_before": os.getloadavg()}
    for n in popsizes:
        rows = {b: backend_rate(b, n, slow_steps if (b, n) in SLOW else steps) for b in BACKENDS}
        base, cpu_base = rows["gym"]["steps_per_s"], rows["gym"]["cpu_steps_per_s"]
        for row in rows.values():
            if "steps_per_s" in row:
                row["ratio_to_gym"] = row["steps_per_s"] / base
                row["cpu_ratio_to_gym"] = row["cpu_steps_per_s"] / cpu_base
        out[str(n)] = rows
    out["loadavg_after"] = os.getloadavg()
    return out


def _print_backends(table: dict[str, object]) -> None:
    print(f"load average before {table['loadavg_before']}, after {table['loadavg_after']}")
    head = f"{'pop':>5} {'backend':>10} {'steps':>6} {'steps/s':>10} {'x gym':>7}"
    print(f"{head} {'cpu steps/s':>12} {'x gym':>7}")
    for n, rows in table.items():
        if not n.isdigit():
            continue
        for b, r in rows.items():
            if "skipped" in r:
                print(f"{n:>5} {b:>10}  skipped: {r['skipped']}")
                continue
            print(
                f"{n:>5} {b:>10} {r['steps_timed']:>6} {r['steps_per_s']:>10.0f} "
                f"{r['ratio_to_gym']:>7.2f} {r['cpu_steps_per_s']:>12.0f} "
                f"{r['cpu_ratio_to_gym']:>7.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="episode cap per member")
    parser.add_argument("--popsize", type=int, default=64)
    parser.add_argument("--policy-steps", type=int, default=50)
    parser.add_argument("--backend-steps", type=int, default=50, help="steps timed per backend")
    parser.add_argument("--slow-steps", type=int, default=5, help="for gym/warp-cpu at 1024")
    parser.add_argument("--backends-only", action="store_true", help="only the backend table")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out: dict[str, object] = {
        "popsize": args.popsize,
        "episode_cap": args.steps,
        "torch_threads": torch.get_num_threads(),
        "timer": "process CPU time",
    }
    if not args.backends_only:
        for env_id in ENVS:
            out[env_id] = bench(env_id, args.popsize, args.steps, args.policy_steps)
    out["backends"] = backends(args.backend_steps, args.slow_steps)
    _print_backends(out["backends"])
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
