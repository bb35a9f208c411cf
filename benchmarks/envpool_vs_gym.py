"""EnvPool (C++ batched, threaded) against our `EpisodeVectorEnv` over gymnasium.

For HalfCheetah-v5, Ant-v5 (27-dim observation, no contact forces) and CarRacing-v3, at
num_envs 16 and 64, random actions (the same array for every backend), a fixed number of
steps per sub-environment:

- `steps_per_s`: env-steps per wall-clock second (our backend counts only the steps of
  sub-environments not yet finished; envpool autoresets and every step counts), and per
  process CPU second (all threads of this process together);
- `ratio`: envpool's wall-clock rate over ours at the same env and num_envs;
- `equality`: does envpool give the same episode as gymnasium? (a) the first observation
  for the same seed; (b) with reset noise 0 (so both start in the same state) and the
  same actions, the max |obs| and |reward| difference over the first 1, 10 and 50 steps,
  up to the first done; (c) the same for an Ant with an edited body (front-left lower leg
  halved), loaded into envpool through `base_path`/`xml_file`.

envpool's `xml_file` and `base_path` are settings of a whole pool: every sub-environment of
one pool has the same body, so per-member bodies need one pool per body.

One torch thread (torch is not used in the timed part). Skips envpool with a message when it
is not importable. Prints a table, then one JSON line.

Usage: python benchmarks/envpool_vs_gym.py [--steps 200] [--car-steps 50]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings

import numpy as np
import torch

from badgerlab.hebbian.envs import EpisodeVectorEnv, ant_xml, make_ant, make_env

try:
    import envpool
except ImportError as err:  # measured only where it is installed (not a dependency)
    envpool = None
    ENVPOOL_MISSING = f"envpool not importable ({err}); its rows are skipped"
else:
    ENVPOOL_MISSING = ""

# Our gymnasium kwargs and envpool's for the same task.
ENVS = {
    "HalfCheetah-v5": ({}, {}),
    "Ant-v5": ({"include_cfrc_ext_in_observation": False}, {"use_contact_force": False}),
    "CarRacing-v3": ({}, {}),
}
NUM_ENVS = (16, 64)
THREADS = (1, 2)


def _actions(space, n: int, steps: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    low, high = space.low, space.high
    return rng.uniform(low, high, (steps, n, *space.shape)).astype(np.float32)


def _ours(env_id: str, n: int, acts: np.ndarray) -> tuple[int, float, float]:
    kwargs = ENVS[env_id][0]
    envs = EpisodeVectorEnv(
        [lambda: make_env(env_id, max_steps=len(acts), **kwargs)] * n, infos=False
    )
    envs.reset(seed=0)
    steps = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for a in acts:
        steps += int((~envs.finished).sum())
        envs.step(a)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    envs.close()
    return steps, wall, cpu


def _pool(env_id: str, n: int, threads: int, **extra):
    kwargs = {**ENVS[env_id][1], **extra}
    return envpool.make_gymnasium(
        env_id, num_envs=n, batch_size=n, num_threads=threads, seed=0, **kwargs
    )


def _envpool(env_id: str, n: int, threads: int, acts: np.ndarray) -> tuple[int, float, float]:
    envs = _pool(env_id, n, threads)
    envs.reset()
    t0, c0 = time.perf_counter(), time.process_time()
    for a in acts:
        envs.step(a)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    envs.close()
    return n * len(acts), wall, cpu


def speed(env_id: str, n: int, steps: int) -> dict:
    probe = make_env(env_id, **ENVS[env_id][0])
    acts = _actions(probe.action_space, n, steps, seed=n)
    probe.close()
    rows = {}
    s, wall, cpu = _ours(env_id, n, acts)
    rows["ours"] = {"steps": s, "wall_s": wall, "per_s": s / wall, "per_cpu_s": s / cpu}
    if envpool is not None:
        for k in THREADS:
            s, wall, cpu = _envpool(env_id, n, k, acts)
            rows[f"envpool_t{k}"] = {
                "steps": s,
                "wall_s": wall,
                "per_s": s / wall,
                "per_cpu_s": s / cpu,
                "ratio": (s / wall) / rows["ours"]["per_s"],
            }
    return rows


def _rollout_diff(gym_env, pool, acts: np.ndarray, marks=(1, 10, 50)) -> dict:
    """Max |obs| and |reward| gaps over the first `marks` steps, up to the first done."""
    og, _ = gym_env.reset(seed=0)
    oe, _ = pool.reset()
    out = {"reset_obs": float(np.abs(og - oe[0]).max())}
    do, dr, done_at = [], [], None
    for t, a in enumerate(acts):
        og, rg, tg, ug, _ = gym_env.step(a)
        oe, re, te, ue, _ = pool.step(a[None])
        do.append(float(np.abs(og.astype(np.float64) - oe[0]).max()))
        dr.append(abs(float(rg) - float(re[0])))
        if tg or ug or te[0] or ue[0]:
            done_at = t + 1
            break
    for m in marks:
        if m <= len(do):
            out[f"obs_{m}"], out[f"reward_{m}"] = max(do[:m]), max(dr[:m])
    out["done_at"] = done_at
    return out


def equality(env_id: str, steps: int = 50) -> dict:
    gk, ek = ENVS[env_id]
    mujoco = env_id != "CarRacing-v3"
    g = make_env(env_id, **gk)
    acts = _actions(g.action_space, 1, steps, seed=7)[:, 0]
    out = {}
    # (a) the same seed, default reset noise: the first observation.
    e = envpool.make_gymnasium(env_id, num_envs=1, seed=0, env_seed=[0], **ek)
    out["same_seed"] = _rollout_diff(g, e, acts[:1], marks=(1,))
    if mujoco:  # (b) no reset noise: the same start, so only the dynamics can differ
        g0 = make_env(env_id, reset_noise_scale=0.0, **gk)
        e0 = envpool.make_gymnasium(env_id, num_envs=1, seed=0, reset_noise_scale=0.0, **ek)
        out["no_reset_noise"] = _rollout_diff(g0, e0, acts)
    return out


def body_edit(steps: int = 50) -> dict:
    """Ant with the front-left lower leg halved: gymnasium (make_ant) vs envpool (base_path)."""
    legs = {"front_left": 0.5}
    gk, ek = ENVS["Ant-v5"]
    with tempfile.TemporaryDirectory() as d:
        os.makedirs(os.path.join(d, "mujoco", "assets_gym"))
        with open(os.path.join(d, "mujoco", "assets_gym", "ant_edit.xml"), "w") as fh:
            fh.write(ant_xml(legs))
        e = envpool.make_gymnasium(
            "Ant-v5", num_envs=1, seed=0, base_path=d, xml_file="ant_edit.xml",
            reset_noise_scale=0.0, **ek,
        )  # fmt: skip
        g = make_ant(legs, reset_noise_scale=0.0, **gk)
        acts = _actions(g.action_space, 1, steps, seed=7)[:, 0]
        return _rollout_diff(g, e, acts)


def _table(result: dict) -> None:
    head = ("env", "n", "backend", "steps/s", "steps/cpu-s", "ratio")
    print("{:16s} {:>4s} {:12s} {:>10s} {:>12s} {:>6s}".format(*head))
    for env_id, by_n in result["speed"].items():
        for n, rows in by_n.items():
            for name, r in rows.items():
                ratio = f"{r['ratio']:6.2f}" if "ratio" in r else "     -"
                print(
                    f"{env_id:16s} {n:>4s} {name:12s} {r['per_s']:10.0f} "
                    f"{r['per_cpu_s']:12.0f} {ratio}"
                )
    for env_id, eq in result.get("equality", {}).items():
        print(f"equality {env_id}: {eq}")
    if "body_edit" in result:
        print(f"equality Ant-v5 edited body: {result['body_edit']}")


def main() -> None:
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", module="gymnasium")
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=200, help="steps per sub-env (MuJoCo)")
    p.add_argument("--car-steps", type=int, default=50, help="steps per sub-env (CarRacing)")
    args = p.parse_args()
    result: dict = {
        "steps": args.steps,
        "car_steps": args.car_steps,
        "envpool": getattr(envpool, "__version__", None),
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "speed": {},
    }
    if ENVPOOL_MISSING:
        print(ENVPOOL_MISSING)
        result["skipped"] = ENVPOOL_MISSING
    for env_id in ENVS:
        steps = args.car_steps if env_id == "CarRacing-v3" else args.steps
        result["speed"][env_id] = {str(n): speed(env_id, n, steps) for n in NUM_ENVS}
    if envpool is not None:
        result["equality"] = {env_id: equality(env_id) for env_id in ENVS}
        result["body_edit"] = body_edit()
    result["loadavg_end"] = os.getloadavg()
    _table(result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
