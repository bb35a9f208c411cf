"""Environments for Hebbian agents: a one-episode vector env, stop rules, and Ant bodies."""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import batch_space

__all__ = [
    "ANT_CONES",
    "ANT_LEGS",
    "BurnIn",
    "CHEETAH_LIMBS",
    "EpisodeVectorEnv",
    "NegativeRewardStop",
    "ant_xml",
    "cheetah_xml",
    "episode_seeds",
    "make_ant",
    "make_cheetah",
    "make_env",
]

# The lower-leg ("ankle") geom of each of Ant's legs in gymnasium's ant.xml.
ANT_LEGS = {
    "front_left": "left_ankle_geom",
    "front_right": "right_ankle_geom",
    "back_left": "third_ankle_geom",
    "back_right": "fourth_ankle_geom",
}

# HalfCheetah's limb segments (bodies of gymnasium's half_cheetah.xml, one capsule each).
CHEETAH_LIMBS = ("bthigh", "bshin", "bfoot", "fthigh", "fshin", "ffoot")


def episode_seeds(seed: int | Sequence[int | None] | None, n: int) -> list[int | None]:
    """One reset seed per sub-environment: an int gives seed, seed+1, …; None gives None each;
    a sequence must list exactly `n`."""
    if seed is None or isinstance(seed, (int, np.integer)):
        return [None if seed is None else int(seed) + k for k in range(n)]
    seeds = list(seed)
    if len(seeds) != n:
        raise ValueError(f"seed must list {n} seeds, got {len(seeds)}")
    return seeds


class EpisodeVectorEnv(gym.vector.VectorEnv):
    """N sub-environments stepped in one process, each for exactly one episode per `reset`.

    Unlike gymnasium's `SyncVectorEnv`, a sub-environment that terminates or is truncated is
    neither reset nor stepped again until the next `reset`: its reward is 0, its observation
    the last one and its done flag stays set (`finished`). An ES evaluation thus sees exactly
    one episode per member and spends no simulation time on members that are done.
    With `infos=False` the per-step info dicts are not merged (gymnasium's `_add_info` costs
    ~10 µs per sub-environment and step, a sixth of a HalfCheetah step); `step` returns {}.
    """

    metadata: dict[str, Any] = {"autoreset_mode": gym.vector.AutoresetMode.DISABLED}

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], *, infos: bool = True) -> None:
        if len(env_fns) < 1:
            raise ValueError("env_fns must hold at least one environment factory")
        self.envs = [fn() for fn in env_fns]
        self.infos = infos
        self.num_envs = len(self.envs)
        first = self.envs[0]
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        for n, env in enumerate(self.envs[1:], start=1):
            if env.observation_space.shape != first.observation_space.shape:
                raise ValueError(f"env_fns[{n}] has a different observation shape")
            if env.action_space.shape != first.action_space.shape:
                raise ValueError(f"env_fns[{n}] has a different action shape")
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.spec = first.spec
        self.finished = np.zeros(self.num_envs, dtype=bool)
        self._obs: list[Any] = [None] * self.num_envs
        self._terminated = np.zeros(self.num_envs, dtype=bool)
        self._truncated = np.zeros(self.num_envs, dtype=bool)

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start one new episode in every sub-environment; `seed` int gives seed, seed+1, …"""
        seeds = episode_seeds(seed, self.num_envs)
        infos: dict[str, Any] = {}
        for n, (env, s) in enumerate(zip(self.envs, seeds, strict=True)):
            self._obs[n], info = env.reset(seed=s, options=options)
            infos = self._add_info(infos, info, n)
        self.finished[:] = False
        self._terminated[:] = False
        self._truncated[:] = False
        return np.stack(self._obs), infos

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step the unfinished sub-environments; finished ones report reward 0 and stay done."""
        actions = np.asarray(actions)
        if actions.shape[0] != self.num_envs:
            raise ValueError(f"actions must have {self.num_envs} rows, got {actions.shape}")
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        infos: dict[str, Any] = {}
        for n in np.flatnonzero(~self.finished):
            obs, r, term, trunc, info = self.envs[n].step(actions[n])
            self._obs[n], rewards[n] = obs, r
            self._terminated[n], self._truncated[n] = term, trunc
            if self.infos:
                infos = self._add_info(infos, info, n)
        self.finished |= self._terminated | self._truncated
        return (
            np.stack(self._obs),
            rewards,
            self._terminated.copy(),
            self._truncated.copy(),
            infos,
        )

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()


class NegativeRewardStop(gym.Wrapper):
    """Truncate an episode after more than `patience` consecutive negative rewards.

    The reference stops CarRacing when the car has left the track (reward < 0 for > 20 steps).
    """

    def __init__(self, env: gym.Env, patience: int = 20) -> None:
        super().__init__(env)
        if patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience}")
        self.patience = patience
        self._count = 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self._count = 0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, r, term, trunc, info = self.env.step(action)
        self._count = self._count + 1 if r < 0 else 0
        return obs, r, term, trunc or self._count > self.patience, info


class BurnIn(gym.Wrapper):
    """After each reset, take `steps` zero actions whose rewards are not returned.

    The reference lets its quadruped settle on the floor for 40 steps before the policy acts.
    """

    def __init__(self, env: gym.Env, steps: int = 40) -> None:
        super().__init__(env)
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        self.steps = steps

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        zero = np.zeros(self.action_space.shape, dtype=self.action_space.dtype)
        for _ in range(self.steps):
            obs, _, term, trunc, info = self.env.step(zero)
            if term or trunc:
                obs, info = self.env.reset()
        return obs, info


@contextlib.contextmanager
def _mujoco_warnings_to_python() -> Iterator[None]:
    # MuJoCo's C compiler prints warnings to stdout (gymnasium's half_cheetah.xml uses the
    # deprecated `settotalmass`); library code must not print, so route them to `warnings`.
    try:
        import mujoco
    except ImportError:
        yield
        return

    def forward(msg: str) -> None:
        if "settotalmass" not in msg:  # gymnasium's own asset, nothing the user can act on
            warnings.warn(f"MuJoCo: {msg}", RuntimeWarning, stacklevel=2)

    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(forward)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


def make_env(
    env_id: str,
    *,
    max_steps: int | None = None,
    negative_patience: int | None = None,
    burn_in: int = 0,
    **kwargs: Any,
) -> gym.Env:
    """`gym.make(env_id, max_episode_steps=max_steps, **kwargs)` with the optional stop rules."""
    with _mujoco_warnings_to_python():
        env = gym.make(env_id, max_episode_steps=max_steps, **kwargs)
    if burn_in:
        env = BurnIn(env, burn_in)
    if negative_patience is not None:
        env = NegativeRewardStop(env, negative_patience)
    return env


ANT_CONES = ("pyramidal", "elliptic")


def ant_xml(legs: Mapping[str, float] | None = None, *, cone: str | None = None) -> str:
    """Gymnasium's ant.xml with the lower leg of some legs scaled in length.

    `legs` maps a leg of `ANT_LEGS` to a length factor: 0.5 is a damaged (halved) lower leg,
    1.5 a lengthened one. The capsule keeps its radius; only its end point moves. `cone` sets
    the friction cone (`<option cone=.../>`, one of `ANT_CONES`); None keeps ant.xml's, which
    is MuJoCo's default, pyramidal (Ant-v5's).

    >>> xml = ant_xml({"front_left": 0.5})
    >>> 'fromto="0.0 0.0 0.0 0.2 0.2 0.0" name="left_ankle_geom"' in xml
    True
    >>> '<option integrator="RK4" timestep="0.01" cone="elliptic" />' in ant_xml(cone="elliptic")
    True
    >>> "cone=" in ant_xml()
    False
    """
    if cone is not None and cone not in ANT_CONES:
        raise ValueError(f"cone={cone!r} is unknown; expected one of {ANT_CONES}")
    tree = ET.parse(_asset("ant.xml"))
    if cone is not None:
        option = tree.getroot().find("option")
        assert option is not None, "gymnasium's ant.xml changed"
        option.set("cone", cone)
    for leg, factor in (legs or {}).items():
        if leg not in ANT_LEGS:
            raise ValueError(f"leg {leg!r} is unknown; expected one of {sorted(ANT_LEGS)}")
        _check_factor(leg, factor)
        geom = tree.getroot().find(f".//geom[@name='{ANT_LEGS[leg]}']")
        assert geom is not None, "gymnasium's ant.xml changed"
        x0, y0, z0, x1, y1, z1 = (float(v) for v in geom.get("fromto", "").split())
        end = [x0 + factor * (x1 - x0), y0 + factor * (y1 - y0), z0 + factor * (z1 - z0)]
        geom.set("fromto", " ".join(_fmt(v) for v in (x0, y0, z0, *end)))
    return ET.tostring(tree.getroot(), encoding="unicode")


def _fmt(v: float) -> str:
    return repr(round(v, 6))


def _asset(name: str) -> Path:
    import gymnasium.envs.mujoco as mj

    return Path(mj.__file__).parent / "assets" / name


def _check_factor(part: str, factor: float) -> None:
    if not 0 < factor <= 5:
        raise ValueError(f"length factor of {part!r} must be in (0, 5], got {factor}")


def cheetah_xml(limbs: Mapping[str, float] | None = None) -> str:
    """Gymnasium's half_cheetah.xml with some limb segments scaled in length.

    `limbs` maps a segment of `CHEETAH_LIMBS` to a length factor (0.5: halved). The segment's
    capsule starts at its joint, so its centre offset and half-length scale by the factor, and
    so does the offset of the segment below it: the limb stays connected, the radius is kept.
    The compiler rescales the total mass to 14 kg (`settotalmass`), as for the standard body.

    >>> xml = cheetah_xml({"bshin": 0.5})
    >>> 'name="bshin" pos="-0.07 0.0 -0.035" rgba="0.9 0.6 0.6 1" size="0.046 0.075"' in xml
    True
    """
    tree = ET.parse(_asset("half_cheetah.xml"))
    root = tree.getroot()
    for limb, factor in (limbs or {}).items():
        if limb not in CHEETAH_LIMBS:
            raise ValueError(f"limb {limb!r} is unknown; expected one of {list(CHEETAH_LIMBS)}")
        _check_factor(limb, factor)
        body = root.find(f".//body[@name='{limb}']")
        geom = root.find(f".//geom[@name='{limb}']")
        assert body is not None and geom is not None, "gymnasium's half_cheetah.xml changed"
        radius, half = (float(v) for v in geom.get("size", "").split())
        geom.set("pos", " ".join(_fmt(factor * float(v)) for v in geom.get("pos", "").split()))
        geom.set("size", f"{_fmt(radius)} {_fmt(factor * half)}")
        for child in body.findall("body"):
            pos = " ".join(_fmt(factor * float(v)) for v in child.get("pos", "").split())
            child.set("pos", pos)
    return ET.tostring(root, encoding="unicode")


def _make_edited(env_id: str, xml: str, **kwargs: Any) -> gym.Env:
    # MuJoCo compiles the model when the environment is made, so the file is removed right after.
    fd, path = tempfile.mkstemp(suffix=".xml", prefix="badgerlab-body-")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(xml)
        return make_env(env_id, xml_file=path, **kwargs)
    finally:
        os.unlink(path)


def make_cheetah(
    limbs: Mapping[str, float] | None = None,
    *,
    max_steps: int | None = None,
    **kwargs: Any,
) -> gym.Env:
    """HalfCheetah-v5 with an edited body (see `cheetah_xml`)."""
    return _make_edited("HalfCheetah-v5", cheetah_xml(limbs), max_steps=max_steps, **kwargs)


def make_ant(
    legs: Mapping[str, float] | None = None,
    *,
    max_steps: int | None = None,
    burn_in: int = 0,
    **kwargs: Any,
) -> gym.Env:
    """Ant-v5 with an edited body (see `ant_xml`), built from a temporary MJCF file."""
    return _make_edited("Ant-v5", ant_xml(legs), max_steps=max_steps, burn_in=burn_in, **kwargs)
