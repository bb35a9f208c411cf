"""The environments the Hebbian experiments use, as named tasks with their policy settings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from badgerlab.hebbian.envs import EpisodeVectorEnv, make_ant, make_cheetah, make_env
from badgerlab.hebbian.policy import CNN_FEATURES, PolicySpec

__all__ = ["TASKS", "Task", "box2d_available", "get_task", "vector_env"]


@dataclass(frozen=True)
class Task:
    """A gymnasium environment with the reference's treatment of it.

    `kwargs` go to `gym.make`; `negative_patience` stops an episode after that many
    consecutive negative rewards (CarRacing); `action` maps network outputs to actions;
    `return_scale` turns a return into the paper's unit (Ant: metres walked = Σ x-velocity · dt);
    `backend` is what `vector_env` steps it with by default.
    """

    env_id: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    action: str = "clip"
    pixels: bool = False
    negative_patience: int | None = None
    return_scale: float = 1.0
    unit: str = "return"
    backend: str = "gym"

    def make(self, *, max_steps: int | None = None, legs: Mapping[str, float] | None = None):
        """One environment; `legs` edits the body: Ant's legs (`envs.ant_xml`) or HalfCheetah's
        limb segments (`envs.cheetah_xml`)."""
        if self.env_id == "Ant-v5":
            return make_ant(legs, max_steps=max_steps, **self.kwargs)
        if self.env_id == "HalfCheetah-v5" and legs:
            return make_cheetah(legs, max_steps=max_steps, **self.kwargs)
        if legs:
            raise ValueError(f"body edits are for Ant-v5 and HalfCheetah-v5, not {self.env_id}")
        return make_env(
            self.env_id,
            max_steps=max_steps,
            negative_patience=self.negative_patience,
            **self.kwargs,
        )

    def dims(self) -> tuple[int, int]:
        """(network inputs, actions)."""
        env = self.make()
        try:
            obs = CNN_FEATURES if self.pixels else int(env.observation_space.shape[0])
            return obs, int(env.action_space.shape[0])
        finally:
            env.close()

    def spec(self, hidden: Sequence[int], *, plastic: bool, **options: Any) -> PolicySpec:
        """The policy for this task: inputs → hidden… → actions, bias-free, tanh hidden."""
        n_in, n_out = self.dims()
        return PolicySpec(
            (n_in, *hidden, n_out),
            plastic=plastic,
            action=self.action,
            pixels=self.pixels,
            **options,
        )


TASKS: dict[str, Task] = {
    "HalfCheetah-v5": Task("HalfCheetah-v5"),
    # Fitness = distance run (metres = Σ x-velocity · dt, dt = 0.05 s), no control cost: the
    # quick body family of hebbian-morphology.
    "HalfCheetah-v5/distance": Task(
        "HalfCheetah-v5",
        kwargs={"ctrl_cost_weight": 0.0},
        return_scale=0.05,
        unit="metres run",
    ),
    "LunarLanderContinuous-v3": Task("LunarLanderContinuous-v3"),
    # Fitness = distance walked, as the reference: no healthy bonus or costs; 27 inputs (no
    # contact forces), close to the paper's 28 for the Bullet ant.
    "Ant-v5": Task(
        "Ant-v5",
        kwargs={
            "include_cfrc_ext_in_observation": False,
            "healthy_reward": 0.0,
            "ctrl_cost_weight": 0.0,
            "contact_cost_weight": 0.0,
        },
        return_scale=0.05,
        unit="metres walked",
        # mujoco.batch: the same episodes as gymnasium, bit for bit, ~1.3x the steps per CPU s
        backend="batch",
    ),
    "CarRacing-v3": Task("CarRacing-v3", action="carracing", pixels=True, negative_patience=20),
}


def get_task(name: str) -> Task:
    """The task called `name` (a key of `TASKS`)."""
    if name not in TASKS:
        raise ValueError(f"task={name!r} is unknown; known tasks: {', '.join(TASKS)}")
    return TASKS[name]


def vector_env(
    task: Task,
    n: int,
    *,
    max_steps: int | None = None,
    bodies: Sequence[Mapping[str, float] | None] = (None,),
    backend: str | None = None,
    **options: Any,
) -> Any:
    """`len(bodies) · n` sub-environments, body major (n copies of each body in turn), without
    per-step info dicts (rollouts use none).

    `backend`: "gym" (an `EpisodeVectorEnv` over gymnasium), or for Ant-v5 "batch" / "warp"
    (`batched.BatchedAntEnv`, with `options` such as nthread= or device=); None: the task's.
    """
    backend = task.backend if backend is None else backend
    if backend != "gym":
        from badgerlab.hebbian.batched import ANT_KWARGS, BACKENDS, BatchedAntEnv

        if backend not in BACKENDS:
            raise ValueError(
                f"backend={backend!r} is unknown; expected 'gym' or one of {BACKENDS}"
            )
        if task.env_id != "Ant-v5" or dict(task.kwargs) != ANT_KWARGS:
            raise ValueError(f"backend={backend!r} reproduces only the task Ant-v5, not {task}")
        members = [b for b in bodies for _ in range(n)]
        return BatchedAntEnv(members, max_steps=max_steps, backend=backend, **options)
    if options:
        raise ValueError(f"options {sorted(options)} are for the batched backends, not 'gym'")
    fns = [lambda b=b: task.make(max_steps=max_steps, legs=b) for b in bodies for _ in range(n)]
    return EpisodeVectorEnv(fns, infos=False)


def box2d_available() -> str | None:
    """None if CarRacing can be made, else the reason it cannot."""
    try:
        env = gym.make("CarRacing-v3")
        env.close()
    except Exception as err:  # gymnasium raises DependencyNotInstalled, ImportError, ...
        return f"{type(err).__name__}: {err}"
    return None
