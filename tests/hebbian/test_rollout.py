"""Rollouts: one episode per member, finished members masked, batching equals running alone."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from badgerlab.hebbian.envs import (
    ANT_LEGS,
    BurnIn,
    EpisodeVectorEnv,
    NegativeRewardStop,
    ant_xml,
    cheetah_xml,
    make_ant,
    make_cheetah,
    make_env,
)
from badgerlab.hebbian.policy import HebbianPolicy, PolicySpec
from badgerlab.hebbian.rollout import l2_penalty, rollout
from badgerlab.hebbian.tasks import get_task


class Countdown(gym.Env):
    """Terminates after `n` steps; reward = 1 + the action's first entry; counts its calls."""

    def __init__(self, n: int, reward: float = 1.0) -> None:
        self.n, self.reward = n, reward
        self.observation_space = gym.spaces.Box(-1, 1, (3,), np.float64)
        self.action_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        self.resets = self.steps = self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.resets += 1
        self.t = 0
        return np.full(3, 0.5), {}

    def step(self, action):
        if self.t >= self.n:
            raise RuntimeError("stepped after the episode ended")
        self.steps += 1
        self.t += 1
        obs = np.array([np.sin(self.t), np.cos(self.t), 0.1 * self.t])
        return obs, self.reward + float(action[0]), self.t >= self.n, False, {}


@pytest.mark.parametrize("compact", [True, False])
def test_finished_members_are_masked_not_reset(compact):
    lengths = [3, 7, 1, 5]
    envs = EpisodeVectorEnv([lambda n=n: Countdown(n) for n in lengths])
    pol = HebbianPolicy(PolicySpec((3, 4, 2), rule="ABCD", normalise=True))
    theta = torch.randn(4, pol.num_params, generator=torch.Generator().manual_seed(0))
    seen: list[list[int]] = []
    out = rollout(
        pol,
        theta,
        envs,
        seed=0,
        weight_seeds=[1, 2, 3, 4],
        record=True,
        compact=compact,
        hook=lambda t, state, members: seen.append(members.tolist()),
    )
    assert out.lengths.tolist() == lengths
    assert [e.resets for e in envs.envs] == [1] * 4  # never auto-reset into a second episode
    assert [e.steps for e in envs.envs] == lengths  # never stepped after it ended
    assert out.rewards.shape == (4, max(lengths))
    for p, n in enumerate(lengths):
        assert (out.rewards[p, n:] == 0).all() and (out.rewards[p, :n] != 0).all()
    torch.testing.assert_close(out.returns, out.rewards.sum(1))
    assert envs.finished.all()
    if compact:  # finished rows leave the batch
        assert seen[0] == [0, 1, 2, 3] and seen[1] == [0, 1, 3] and seen[-1] == [1]
    else:
        assert all(m == [0, 1, 2, 3] for m in seen)
    other = rollout(
        pol, theta, envs, seed=0, weight_seeds=[1, 2, 3, 4], compact=not compact, record=True
    )
    torch.testing.assert_close(other.rewards, out.rewards)


def _cheetahs(n: int, steps: int) -> EpisodeVectorEnv:
    return EpisodeVectorEnv([lambda: make_env("HalfCheetah-v5", max_steps=steps)] * n)


@pytest.mark.parametrize("plastic", [True, False])
def test_population_batch_equals_each_member_alone(plastic):
    pol = HebbianPolicy(PolicySpec((17, 16, 8, 6), plastic=plastic, rule="ABCD_lr"))
    g = torch.Generator().manual_seed(0)
    theta = pol.initial_theta(generator=g).expand(4, -1) + 0.1 * torch.randn(
        4, pol.num_params, generator=g
    )
    seeds, wseeds, steps = [5, 6, 7, 8], [50, 60, 70, 80], 40
    batch = rollout(
        pol,
        theta,
        _cheetahs(4, steps),
        seed=seeds,
        weight_seeds=wseeds,
        record=True,
        dtype=torch.float64,
    )
    alone_env = _cheetahs(1, steps)
    for p in range(4):
        alone = rollout(
            pol,
            theta[p : p + 1],
            alone_env,
            seed=[seeds[p]],
            weight_seeds=[wseeds[p]],
            record=True,
            dtype=torch.float64,
        )
        torch.testing.assert_close(alone.rewards[0], batch.rewards[p], rtol=1e-9, atol=1e-9)
    assert batch.lengths.tolist() == [steps] * 4
    assert batch.returns.std() > 0  # the members really differ


def test_hook_can_perturb_weights_mid_episode():
    pol = HebbianPolicy(PolicySpec((3, 4, 2), rule="A", normalise=False))
    envs = EpisodeVectorEnv([lambda: Countdown(6)] * 2)
    theta = torch.ones(2, pol.num_params)
    snapshots = []

    def hook(t, state, members):
        if t == 2:
            return state._replace(weights=(torch.zeros_like(state.weights[0]), state.weights[1]))
        snapshots.append(state.weights[0].clone())
        return None

    rollout(pol, theta, envs, seed=0, weight_seeds=[0, 1], hook=hook)
    # After zeroing, a pure-A rule with zero input->hidden weights keeps the hidden layer at 0
    # activity (tanh(0) = 0), so its weights stay zero: Δw = A o_i o_j = 0.
    assert all(torch.equal(s, torch.zeros_like(s)) for s in snapshots[2:])
    assert not torch.equal(snapshots[0], torch.zeros_like(snapshots[0]))


def test_negative_reward_stop_and_burn_in():
    env = NegativeRewardStop(Countdown(100, reward=-2.0), patience=20)
    env.reset(seed=0)
    n, trunc = 0, False
    while not trunc:
        _, _, _, trunc, _ = env.step(np.zeros(2, np.float32))
        n += 1
    assert n == 21  # the reference stops once more than 20 consecutive rewards are negative
    inner = Countdown(100)
    burned = BurnIn(inner, steps=40)
    burned.reset(seed=0)
    assert inner.steps == 40 and inner.t == 40


def test_ant_bodies_change_the_lower_leg_length():
    assert 'name="left_ankle_geom"' in ant_xml()
    normal = make_ant(include_cfrc_ext_in_observation=False).unwrapped.model
    damaged = make_ant({"front_left": 0.5}, include_cfrc_ext_in_observation=False).unwrapped.model
    long = make_ant({"back_right": 1.5}, include_cfrc_ext_in_observation=False).unwrapped.model
    import mujoco

    def half_length(model, leg):
        gid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, ANT_LEGS[leg])
        return float(model.geom_size[gid][1])

    base = 0.2 * 2**0.5  # the capsule from (0,0,0) to (0.4,0.4,0) has half-length 0.283
    assert half_length(normal, "front_left") == pytest.approx(base)
    assert half_length(damaged, "front_left") == pytest.approx(base / 2)
    assert half_length(damaged, "back_left") == pytest.approx(base)
    assert half_length(long, "back_right") == pytest.approx(base * 1.5)
    assert normal.nq == damaged.nq and normal.nu == damaged.nu == 8
    with pytest.raises(ValueError, match="leg 'tail'"):
        ant_xml({"tail": 0.5})


def test_cheetah_bodies_scale_one_segment_and_keep_the_limb_connected():
    import mujoco

    normal = make_cheetah().unwrapped.model
    short = make_cheetah({"bthigh": 0.5}).unwrapped.model

    def geom(model, name):
        gid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, name)
        return model.geom_size[gid][1], model.geom_pos[gid]

    def body_pos(model, name):
        return model.body_pos[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)]

    (half0, pos0), (half1, pos1) = geom(normal, "bthigh"), geom(short, "bthigh")
    assert half1 == pytest.approx(half0 / 2) and np.allclose(pos1, pos0 / 2)
    assert np.allclose(body_pos(short, "bshin"), body_pos(normal, "bshin") / 2)
    for other in ("bshin", "bfoot", "fthigh", "fshin", "ffoot"):
        assert geom(short, other)[0] == pytest.approx(geom(normal, other)[0])
    assert np.allclose(body_pos(short, "fshin"), body_pos(normal, "fshin"))
    # settotalmass: the shortened body is rescaled to the standard body's 14 kg
    assert short.body_mass.sum() == pytest.approx(normal.body_mass.sum()) == pytest.approx(14)
    with pytest.raises(ValueError, match="limb 'tail'"):
        cheetah_xml({"tail": 0.5})
    with pytest.raises(ValueError, match="length factor of 'fshin'"):
        cheetah_xml({"fshin": 0.0})


def test_cheetah_distance_task_returns_metres_run():
    """Return × dt of HalfCheetah-v5/distance is exactly the root's x displacement."""
    task = get_task("HalfCheetah-v5/distance")
    env = task.make(max_steps=40, legs={"fthigh": 0.5})
    env.reset(seed=3)
    x0 = float(env.unwrapped.data.qpos[0])
    rng = np.random.default_rng(0)
    total = 0.0
    for _ in range(40):
        _, r, term, trunc, _ = env.step(rng.uniform(-1, 1, 6).astype(np.float32))
        total += r
    assert trunc and not term
    metres = float(env.unwrapped.data.qpos[0]) - x0
    assert total * task.return_scale == pytest.approx(metres, rel=1e-9, abs=1e-12)
    assert abs(metres) > 1e-3  # random torques move it
    with pytest.raises(ValueError, match="not LunarLanderContinuous-v3"):
        get_task("LunarLanderContinuous-v3").make(legs={"bthigh": 0.5})


def test_vector_env_rejects_mismatched_actions_and_seeds():
    envs = EpisodeVectorEnv([lambda: Countdown(3)] * 2)
    with pytest.raises(ValueError, match="seed must list 2 seeds"):
        envs.reset(seed=[1, 2, 3])
    envs.reset(seed=0)
    with pytest.raises(ValueError, match="actions must have 2 rows"):
        envs.step(np.zeros((3, 2), np.float32))
    pol = HebbianPolicy(PolicySpec((3, 2)))
    with pytest.raises(ValueError, match="envs has 2 sub-environments"):
        rollout(pol, torch.zeros(3, pol.num_params), envs)


def test_l2_penalty_uses_masked_coefficients_only():
    theta = torch.tensor([[1.0, 2.0, 10.0], [0.0, 0.0, 10.0]])
    mask = torch.tensor([True, True, False])
    torch.testing.assert_close(l2_penalty(theta, mask), torch.tensor([0.025, 0.0]))


@pytest.mark.parametrize("plastic", [True, False])
def test_each_rollout_starts_from_freshly_drawn_weights(plastic):
    pol = HebbianPolicy(PolicySpec((3, 6, 2), plastic=plastic, normalise=False))
    envs = EpisodeVectorEnv([lambda: Countdown(2)] * 2)
    theta = pol.initial_theta(generator=torch.Generator().manual_seed(0)).expand(2, -1)
    g = torch.Generator().manual_seed(1)
    starts = []
    for _ in range(2):
        first: list[torch.Tensor] = []
        # Weights after the first step's update: different episodes differ only through the
        # weights drawn at their start (same θ, same environment seed).
        rollout(
            pol,
            theta.contiguous(),
            envs,
            seed=0,
            generator=g,
            hook=lambda t, s, m, first=first: (
                first.append(s.weights[0].clone()) if t == 0 else None
            ),
        )
        starts.append(first[0])
    if plastic:
        assert not torch.equal(starts[0], starts[1])  # re-drawn every episode
    else:
        assert torch.equal(starts[0], starts[1])  # the static weights are θ itself
