"""Batched simulators for the Hebbian Ant-v5 task: many bodies stepped at once.

`BatchedAntEnv` reproduces `get_task("Ant-v5")` (gymnasium's Ant-v5 with no contact forces in
the observation and no healthy bonus, control or contact cost) for N members, one episode each
per `reset`, with the semantics of `EpisodeVectorEnv`: a finished member is not stepped again,
its reward is 0, its observation the last one. Per member n with state (q, q̇) ∈ R¹⁵ × R¹⁴:

- observation o = (q[2:], q̇) ∈ R²⁷;
- reward r = (x_after − x_before) / dt, x the torso's `xpos` x-coordinate that gymnasium
  differences (`data.body(1).xpos`, computed in the last substep, so one substep behind the
  state, as after `mj_step`), dt = 5 · 0.01 s (frame_skip 5);
- terminated when not healthy: (q, q̇) not all finite or q[2] ∉ [0.2, 1.0];
- truncated after `max_steps` steps (gymnasium's TimeLimit; default the registered 1000);
- reset: q = qpos0 + U(−0.1, 0.1)ⁿᵠ, q̇ = 0.1 · N(0, 1)ⁿᵛ from gymnasium's `np_random(seed)`,
  so seed s gives the initial state of gymnasium's `env.reset(seed=s)`.

Backends:

- "batch": `mujoco.batch.Batch`, the same `mj_step` in float64 on a thread pool; every
  distinct body is compiled by MuJoCo from its MJCF (`envs.ant_xml`) and each simulation runs on
  its own body's model (`Batch.set_models`). Bit-identical to gymnasium.
- "warp": `mujoco_warp` (float32) on a warp device ("cpu", or "cuda" on a GPU). Model fields
  that differ between the bodies become per-world arrays (leading dimension nworld, the
  fields mujoco_warp declares batchable); observations are torch tensors on the device
  (`wp.to_torch`, no host copy), actions may be torch tensors on it; rewards and done flags
  (N values a step) come back to the host. Not gymnasium's Ant beyond the first ground
  contact: mujoco_warp 4.0 gives a steep capsule (axis projected on the floor < 0.5 long)
  a fixed contact tangent frame where MuJoCo aligns it with the capsule, and Ant-v5's
  pyramidal friction cone turns with the frame, so contact forces and episodes differ by O(1)
  (float32 alone agrees to ~1e-5 before contact). Train and evaluate on one backend, or
  give both the elliptic cone (`cone="elliptic"`), which is invariant to the frame.

Najarro & Risi 2020, https://arxiv.org/abs/2007.02686 (the Ant morphology experiments).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.spaces import Box
from gymnasium.utils.seeding import np_random
from gymnasium.vector.utils import batch_space

from badgerlab.hebbian.envs import ant_xml, episode_seeds

__all__ = ["ANT_KWARGS", "BACKENDS", "BatchedAntEnv", "compile_bodies", "model_diff"]

BACKENDS = ("batch", "warp")

#: The gymnasium kwargs of the task this env reproduces (`tasks.TASKS["Ant-v5"]`).
ANT_KWARGS = {
    "include_cfrc_ext_in_observation": False,
    "healthy_reward": 0.0,
    "ctrl_cost_weight": 0.0,
    "contact_cost_weight": 0.0,
}

FRAME_SKIP = 5
TORSO = 1  # gymnasium's main_body
HEALTHY_Z = (0.2, 1.0)
RESET_NOISE = 0.1

# mujoco_warp model fields that may differ between bodies without being batchable, because
# only a feature the Ant does not enable reads them: field -> that feature's enable bit.
_WARP_UNREAD = {"dof_length": mujoco.mjtEnableBit.mjENBL_SLEEP}


def compile_bodies(
    bodies: Sequence[Mapping[str, float] | None],
    cone: str | None = None,
) -> tuple[list[mujoco.MjModel], np.ndarray]:
    """MuJoCo models of the distinct bodies (in first-seen order) and each member's index into
    them, (N,) int64: `models[index[n]]` is `MjModel.from_xml_string(ant_xml(bodies[n],
    cone=cone))`."""
    keys: dict[tuple, int] = {}
    models: list[mujoco.MjModel] = []
    index = np.empty(len(bodies), dtype=np.int64)
    for n, legs in enumerate(bodies):
        key = tuple(sorted((legs or {}).items()))
        if key not in keys:
            keys[key] = len(models)
            models.append(mujoco.MjModel.from_xml_string(ant_xml(legs, cone=cone)))
        index[n] = keys[key]
    return models, index


def _model_arrays(m: mujoco.MjModel) -> dict[str, np.ndarray]:
    out = {}
    for name in dir(m):
        if name.startswith("_") or name == "opt":
            continue
        value = getattr(m, name, None)
        if isinstance(value, np.ndarray):
            out[name] = value
    for name in dir(m.opt):
        if not name.startswith("_"):
            value = getattr(m.opt, name)
            if isinstance(value, (np.ndarray, int, float)):
                out[f"opt.{name}"] = np.asarray(value)
    return out


def model_diff(a: mujoco.MjModel, b: mujoco.MjModel) -> dict[str, np.ndarray]:
    """The MjModel array fields (and `opt.*` values) in which two models differ, each with the
    sorted indices along its first axis (the object ids) where they differ."""
    fa, fb = _model_arrays(a), _model_arrays(b)
    out = {}
    for name in sorted(fa.keys() | fb.keys()):
        x, y = fa.get(name), fb.get(name)
        if x is None or y is None or x.shape != y.shape:
            out[name] = np.arange(0)
            continue
        differs = (x != y) & ~(_isnan(x) & _isnan(y))
        if differs.any():
            rows = differs.reshape(differs.shape[0], -1).any(1) if differs.ndim else differs
            out[name] = np.flatnonzero(rows)
    return out


def _isnan(x: np.ndarray) -> np.ndarray:
    return np.isnan(x) if x.dtype.kind in "fc" else np.zeros(x.shape, dtype=bool)


class _BatchSim:
    """All members in one `mujoco.batch.Batch`, float64, each on its own body's model."""

    def __init__(self, models: list[mujoco.MjModel], index: np.ndarray, nthread: int) -> None:
        import mujoco.batch

        n = len(index)
        self.batch = mujoco.batch.Batch(models[0], nsim=n, nthread=nthread)
        if len(models) > 1:
            self.batch.set_models([models[k] for k in index])
        self.qpos, self.qvel = self.batch.bind("qpos"), self.batch.bind("qvel")
        self.ctrl, self.xpos = self.batch.bind("ctrl"), self.batch.bind("xpos")
        self.dt = models[0].opt.timestep * FRAME_SKIP
        self._x = np.zeros(n)

    def reset(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        # As gymnasium: mj_resetData, then qpos and qvel, then mj_forward.
        self.batch.reset(stage=mujoco.mjtStage.mjSTAGE_NONE)
        self.qpos[:], self.qvel[:] = qpos, qvel
        self.batch.forward()
        self._x = self.xpos[:, TORSO, 0].copy()
        return self.observe()

    def observe(self) -> np.ndarray:
        return np.concatenate([self.qpos[:, 2:], self.qvel], axis=1)

    def step(self, actions: Any, live: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids = np.flatnonzero(live)
        self.ctrl[ids] = np.asarray(actions)[ids]
        self.batch.step(ids, nstep=FRAME_SKIP)
        x = self.xpos[ids, TORSO, 0].copy()
        rewards = np.zeros(len(live))
        rewards[ids] = (x - self._x[ids]) / self.dt
        self._x[ids] = x
        state = np.concatenate([self.qpos, self.qvel], axis=1)
        z = self.qpos[:, 2]
        healthy = np.isfinite(state).all(1) & (HEALTHY_Z[0] <= z) & (z <= HEALTHY_Z[1])
        return self.observe(), rewards, healthy


def _warp_equal(a: Any, b: Any) -> bool:
    import warp as wp

    if isinstance(a, wp.array) or isinstance(b, wp.array):
        if not (isinstance(a, wp.array) and isinstance(b, wp.array)) or a.shape != b.shape:
            return False
        x, y = a.numpy(), b.numpy()
        return bool(((x == y) | (_isnan(x) & _isnan(y))).all())
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_warp_equal(x, y) for x, y in zip(a, b, strict=True))
    if dataclasses.is_dataclass(a):
        return all(
            _warp_equal(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
        )
    try:
        return bool(np.all(a == b))
    except (TypeError, ValueError):
        return a is b


def warp_batched_fields(wmodels: list[Any], enableflags: int) -> list[str]:
    """The mujoco_warp Model fields that differ between the bodies' device models; ValueError
    naming a field that differs but that mujoco_warp cannot hold per world."""
    from mujoco_warp._src import types

    out = []
    for f in dataclasses.fields(types.Model):
        first = getattr(wmodels[0], f.name)
        if all(_warp_equal(first, getattr(w, f.name)) for w in wmodels[1:]):
            continue
        if f.name in _WARP_UNREAD and not enableflags & _WARP_UNREAD[f.name]:
            continue  # read only by a feature this model does not enable
        if getattr(f.type, "shape", ("",))[0] != "*":
            raise ValueError(
                f"model field {f.name!r} differs between the bodies but mujoco_warp cannot "
                "batch it (its arrays have no per-world dimension); use backend='batch'"
            )
        out.append(f.name)
    return out


class _WarpSim:
    """All members as the worlds of one mujoco_warp Data, float32, on a warp device."""

    def __init__(self, models: list[mujoco.MjModel], index: np.ndarray, device: str) -> None:
        import mujoco_warp as mjw
        import torch
        import warp as wp

        self.mjw, self.wp, self.torch, self.device = mjw, wp, torch, device
        n = len(index)
        with wp.ScopedDevice(device):
            wmodels = [mjw.put_model(m) for m in models]
            fields = warp_batched_fields(wmodels, models[0].opt.enableflags)
            self.fields = fields
            self.model = mjw.put_model(models[0], batch_sizes={f: n for f in fields})
            for f in fields:
                per_body = [getattr(w, f).numpy()[0] for w in wmodels]
                getattr(self.model, f).assign(np.stack([per_body[k] for k in index]))
            ncon = 2 * models[0].ngeom  # capsule-plane pairs give up to 2 contacts each
            self.data = mjw.put_data(
                models[0], mujoco.MjData(models[0]), nworld=n, nconmax=ncon,
                njmax=4 * ncon + 2 * models[0].njnt,
            )  # fmt: skip
        d = self.data
        self.qpos, self.qvel = wp.to_torch(d.qpos), wp.to_torch(d.qvel)
        self.ctrl, self.xpos = wp.to_torch(d.ctrl), wp.to_torch(d.xpos)
        self.dt = models[0].opt.timestep * FRAME_SKIP
        self._x = self.xpos[:, TORSO, 0].clone()

    def reset(self, qpos: np.ndarray, qvel: np.ndarray) -> Any:
        torch = self.torch
        with self.wp.ScopedDevice(self.device):
            self.mjw.reset_data(self.model, self.data)
            self.qpos.copy_(torch.from_numpy(qpos))
            self.qvel.copy_(torch.from_numpy(qvel))
            self.mjw.forward(self.model, self.data)
        self._x = self.xpos[:, TORSO, 0].clone()
        return self.observe()

    def observe(self) -> Any:
        return self.torch.cat([self.qpos[:, 2:], self.qvel], dim=1)

    def step(self, actions: Any, live: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
        torch = self.torch
        mask = torch.from_numpy(live).to(self.qpos.device)
        # Finished worlds step too (one kernel launch serves all) but keep their state.
        frozen = (self.qpos.clone(), self.qvel.clone())
        self.ctrl.copy_(actions)
        with self.wp.ScopedDevice(self.device):
            for _ in range(FRAME_SKIP):
                self.mjw.step(self.model, self.data)
        self.qpos.copy_(torch.where(mask[:, None], self.qpos, frozen[0]))
        self.qvel.copy_(torch.where(mask[:, None], self.qvel, frozen[1]))
        x = self.xpos[:, TORSO, 0]
        rewards = torch.where(mask, (x - self._x) / self.dt, 0.0)
        self._x = torch.where(mask, x, self._x)
        z = self.qpos[:, 2]
        finite = torch.isfinite(self.qpos).all(1) & torch.isfinite(self.qvel).all(1)
        healthy = finite & (z >= HEALTHY_Z[0]) & (z <= HEALTHY_Z[1])
        out = torch.stack([rewards.double(), healthy.double()]).cpu().numpy()
        return self.observe(), out[0], out[1].astype(bool)


def _check_device(device: str) -> None:
    import warp as wp

    try:
        wp.get_device(device)
    except Exception as err:  # warp raises RuntimeError or ValueError by version
        names = [str(d) for d in wp.get_devices()]
        raise ValueError(f"device={device!r} is not available; warp has {names}") from err


class BatchedAntEnv(gym.vector.VectorEnv):
    """N Ant-v5 members, member n with body `bodies[n]` (legs for `envs.ant_xml`, None: the
    standard body), one episode each per `reset`; see the module docstring for the dynamics
    and the backends. `finished` (N,) bool says which members are done.

    `cone` ("pyramidal" or "elliptic", `envs.ANT_CONES`) sets every body's friction cone; None
    keeps ant.xml's pyramidal cone, the one `get_task("Ant-v5")` simulates. With the pyramidal
    cone backend "warp" is not gymnasium's Ant after the first ground contact (mujoco_warp's
    fixed tangent frame for a steep capsule turns the pyramid; module docstring), so train
    and evaluate on one backend. With cone="elliptic" on both (gymnasium from
    `ant_xml(legs, cone="elliptic")` as `xml_file`) warp (float32, CPU) gives gymnasium's
    20-step episode returns to within 0.22 (mean 0.014, returns ~8; pyramidal: max 17, mean
    4.8), measured with a Hebbian policy over 56 episodes (tests/hebbian/test_batched.py)."""

    metadata: dict[str, Any] = {"autoreset_mode": gym.vector.AutoresetMode.DISABLED}

    def __init__(
        self,
        bodies: Sequence[Mapping[str, float] | None],
        *,
        max_steps: int | None = None,
        backend: str = "batch",
        nthread: int = 1,
        device: str = "cpu",
        cone: str | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} is unknown; expected one of {BACKENDS}")
        if isinstance(nthread, bool) or not isinstance(nthread, int) or nthread < 1:
            raise ValueError(f"nthread must be an int >= 1, got {nthread!r}")
        if len(bodies) < 1:
            raise ValueError("bodies must list at least one member's body")
        if max_steps is None:
            max_steps = gym.spec("Ant-v5").max_episode_steps
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        if backend == "warp" and nthread != 1:
            raise ValueError(f"nthread={nthread} is for backend 'batch'; warp sets its own")
        if backend == "batch" and device != "cpu":
            raise ValueError(f"device={device!r}: backend 'batch' runs on the CPU only")
        self.backend, self.max_steps, self.device = backend, int(max_steps), device
        self.models, self.index = compile_bodies(bodies, cone)
        if backend == "batch":
            self.sim: Any = _BatchSim(self.models, self.index, nthread)
        else:
            _check_device(device)
            self.sim = _WarpSim(self.models, self.index, device)
        self.num_envs = len(bodies)
        m = self.models[0]
        self.single_observation_space = Box(-np.inf, np.inf, (m.nq - 2 + m.nv,), np.float64)
        low, high = m.actuator_ctrlrange.T.astype(np.float32)
        self.single_action_space = Box(low, high, dtype=np.float32)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._rngs = [np_random()[0] for _ in range(self.num_envs)]
        self.finished = np.zeros(self.num_envs, dtype=bool)
        self._terminated = np.zeros(self.num_envs, dtype=bool)
        self._truncated = np.zeros(self.num_envs, dtype=bool)
        self._t = np.zeros(self.num_envs, dtype=np.int64)

    def initial_state(self, seeds: Sequence[int | None]) -> tuple[np.ndarray, np.ndarray]:
        """(qpos (N, nq), qvel (N, nv)) as gymnasium's Ant-v5 `reset(seed=s)` draws them; a
        None seed continues the member's generator, as gymnasium does."""
        nq, nv = self.models[0].nq, self.models[0].nv
        qpos, qvel = np.empty((self.num_envs, nq)), np.empty((self.num_envs, nv))
        for n, s in enumerate(seeds):
            if s is not None:
                self._rngs[n] = np_random(int(s))[0]
            rng, qpos0 = self._rngs[n], self.models[self.index[n]].qpos0
            qpos[n] = qpos0 + rng.uniform(low=-RESET_NOISE, high=RESET_NOISE, size=nq)
            qvel[n] = np.zeros(nv) + RESET_NOISE * rng.standard_normal(nv)
        return qpos, qvel

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        """Start one new episode per member; `seed` int gives seed, seed+1, … (as
        `EpisodeVectorEnv`). Observations (N, 27): numpy float64 ("batch") or torch float32 on
        the device ("warp")."""
        seeds = episode_seeds(seed, self.num_envs)
        obs = self.sim.reset(*self.initial_state(seeds))
        self.finished[:] = False
        self._terminated[:] = False
        self._truncated[:] = False
        self._t[:] = 0
        return obs, {}

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Step the unfinished members by one action (N, 8); finished ones get reward 0."""
        shape = tuple(getattr(actions, "shape", np.shape(actions)))
        if shape != self.action_space.shape:
            raise ValueError(f"actions must have shape {self.action_space.shape}, got {shape}")
        if self.backend == "batch" and not isinstance(actions, np.ndarray):
            actions = np.asarray(actions.cpu() if hasattr(actions, "cpu") else actions)
        elif self.backend == "warp":
            import torch

            actions = torch.as_tensor(actions, dtype=torch.float32, device=self.sim.qpos.device)
        live = ~self.finished
        obs, rewards, healthy = self.sim.step(actions, live)
        self._t[live] += 1
        self._terminated |= live & ~healthy
        self._truncated |= live & (self._t >= self.max_steps)
        self.finished |= self._terminated | self._truncated
        return obs, rewards, self._terminated.copy(), self._truncated.copy(), {}
