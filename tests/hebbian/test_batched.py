"""Batched Ant-v5 simulators against gymnasium's Ant-v5 (the task `get_task("Ant-v5")`)."""

from __future__ import annotations

import importlib.util

import mujoco
import numpy as np
import pytest
import torch

from badgerlab.hebbian.batched import BatchedAntEnv, compile_bodies, model_diff
from badgerlab.hebbian.envs import EpisodeVectorEnv, ant_xml, make_env
from badgerlab.hebbian.policy import HebbianPolicy, PolicySpec
from badgerlab.hebbian.rollout import rollout
from badgerlab.hebbian.tasks import get_task, vector_env

TASK = get_task("Ant-v5")
HALF = {"front_left": 0.5}
BODIES = [None, HALF]
WARP_MISSING = importlib.util.find_spec("mujoco_warp") is None


def _linear_tanh(obs: np.ndarray) -> np.ndarray:
    W = np.random.default_rng(0).normal(size=(8, 27)) * 0.5
    return np.tanh(np.asarray(obs, dtype=np.float64) @ W.T).astype(np.float32)


def _episodes(env, steps: int, seeds: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observations (T+1, N, 27), rewards (T, N) and final done flags of the linear controller."""
    obs, _ = env.reset(seed=seeds)
    observations, rewards = [np.asarray(obs, dtype=np.float64).copy()], []
    for _ in range(steps):
        obs, r, term, trunc, _ = env.step(_linear_tanh(obs))
        observations.append(np.asarray(obs, dtype=np.float64).copy())
        rewards.append(np.asarray(r).copy())
    return np.stack(observations), np.stack(rewards), np.asarray(term) | np.asarray(trunc)


def test_reset_state_is_gymnasiums_for_the_same_seed():
    env = BatchedAntEnv([None, HALF, None], max_steps=10)
    obs, _ = env.reset(seed=[0, 7, 12345])
    for n, (legs, seed) in enumerate(zip([None, HALF, None], [0, 7, 12345], strict=True)):
        ref = TASK.make(legs=legs)
        want, _ = ref.reset(seed=seed)
        np.testing.assert_allclose(obs[n], want, rtol=0, atol=1e-12)
        ref.close()


def test_batch_backend_is_bit_identical_to_gymnasium_with_a_hebbian_policy():
    # The same mj_step in float64 on each member's own compiled model: equality, not closeness,
    # through a seeded Hebbian policy, two bodies and early termination included.
    policy = HebbianPolicy(PolicySpec((27, 16, 8), rule="ABCD_lr"))
    theta = torch.randn(4, policy.num_params, generator=torch.Generator().manual_seed(1))
    kwargs = {"seed": 5, "weight_seeds": [0, 1, 2, 3], "record": True}
    gym_envs = vector_env(TASK, 2, max_steps=60, bodies=BODIES, backend="gym")
    batch_envs = vector_env(TASK, 2, max_steps=60, bodies=BODIES, backend="batch", nthread=2)
    assert isinstance(gym_envs, EpisodeVectorEnv)  # the reference is gymnasium itself
    want = rollout(policy, theta, gym_envs, **kwargs)
    got = rollout(policy, theta, batch_envs, **kwargs)
    assert torch.equal(got.rewards, want.rewards)
    assert torch.equal(got.lengths, want.lengths)
    assert want.returns.abs().min() > 0.1  # the members moved


def test_batch_backend_observations_and_flags_equal_gymnasiums():
    gym_envs = vector_env(
        TASK, 1, max_steps=40, bodies=[None, HALF, {"back_right": 1.5}], backend="gym"
    )
    batch_envs = BatchedAntEnv([None, HALF, {"back_right": 1.5}], max_steps=40)
    obs_g, rew_g, done_g = _episodes(gym_envs, 40, [3, 4, 5])
    obs_b, rew_b, done_b = _episodes(batch_envs, 40, [3, 4, 5])
    assert np.array_equal(obs_b, obs_g) and np.array_equal(rew_b, rew_g)
    assert np.array_equal(done_b, done_g) and done_b.all()  # truncated at 40 or terminated
    assert np.array_equal(batch_envs.finished, gym_envs.finished)


def test_finished_member_is_not_stepped_and_gets_zero_reward():
    env = BatchedAntEnv([None, None], max_steps=3)
    obs, _ = env.reset(seed=0)
    for _ in range(3):
        obs, r, term, trunc, _ = env.step(np.zeros((2, 8), dtype=np.float32))
    assert trunc.all() and env.finished.all()
    obs2, r2, term2, trunc2, _ = env.step(np.ones((2, 8), dtype=np.float32))
    assert np.array_equal(obs2, obs) and not r2.any() and trunc2.all()


def test_batched_model_of_each_member_is_its_compiled_body():
    bodies = [None, HALF, None, {"back_left": 1.5, "front_right": 0.7}]
    env = BatchedAntEnv(bodies, max_steps=5)
    for n, legs in enumerate(bodies):
        want = mujoco.MjModel.from_xml_string(ant_xml(legs))
        assert model_diff(env.sim.batch.get_model(n), want) == {}


def test_leg_edit_changes_exactly_the_ankle_and_what_is_derived_from_it():
    (base, half), _ = compile_bodies([None, HALF])
    geom = base.geom("left_ankle_geom").id
    body = base.geom_bodyid[geom]
    ancestors = {0}
    b = body
    while b:
        ancestors.add(int(b))
        b = base.body_parentid[b]
    diff = model_diff(base, half)
    # The MJCF edit: the capsule's half-length (size) and centre (pos) of that geom alone.
    assert diff["geom_size"].tolist() == [geom] and diff["geom_pos"].tolist() == [geom]
    assert np.array_equal(base.geom_size[geom, 0], half.geom_size[geom, 0])  # radius kept
    # Derived by the compiler from it: that body's mass, inertia and centre of mass, the
    # subtree masses of its ancestors, bounding volumes, and the scale-dependent quantities.
    for name in ("body_mass", "body_inertia", "body_ipos", "geom_rbound", "geom_aabb"):
        assert diff[name].tolist() == [body if name.startswith("body") else geom], name
    assert set(diff["body_subtreemass"].tolist()) == ancestors
    derived = {"body_invweight0", "dof_invweight0", "dof_M0", "dof_length", "actuator_acc0"}
    derived |= {"bvh_aabb", "cam_poscom0", "light_poscom0"}
    edited = {"geom_size", "geom_pos", "body_mass", "body_inertia", "body_ipos"}
    assert set(diff) == edited | {"geom_rbound", "geom_aabb", "body_subtreemass"} | derived


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backend": "jax"}, "backend='jax'"),
        ({"nthread": 0}, "nthread"),
        ({"max_steps": 0}, "max_steps"),
        ({"device": "cuda"}, "device='cuda'"),
        ({"backend": "warp", "nthread": 2}, "nthread=2"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BatchedAntEnv([None], **kwargs)


def test_bad_actions_and_seeds_raise_value_error():
    env = BatchedAntEnv([None, None], max_steps=5)
    with pytest.raises(ValueError, match="seed must list 2"):
        env.reset(seed=[1])
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"actions must have shape \(2, 8\)"):
        env.step(np.zeros((2, 7), dtype=np.float32))


def test_vector_env_backend_checks():
    with pytest.raises(ValueError, match="backend='envpool'"):
        vector_env(TASK, 2, backend="envpool")
    with pytest.raises(ValueError, match="only the task Ant-v5"):
        vector_env(get_task("HalfCheetah-v5"), 2, backend="batch")
    with pytest.raises(ValueError, match="nthread"):
        vector_env(TASK, 2, backend="gym", nthread=2)
    # Ant-v5 steps on mujoco.batch by default (bit-identical episodes), others on gymnasium
    assert type(vector_env(TASK, 2)).__name__ == "BatchedAntEnv"
    assert type(vector_env(TASK, 2, backend="gym")).__name__ == "EpisodeVectorEnv"
    assert type(vector_env(get_task("HalfCheetah-v5"), 2)).__name__ == "EpisodeVectorEnv"
    envs = vector_env(TASK, 3, bodies=[None, HALF], backend="batch", max_steps=7)
    assert envs.num_envs == 6 and envs.index.tolist() == [0, 0, 0, 1, 1, 1]


@pytest.fixture(scope="module")
def warp_env():
    if WARP_MISSING:
        pytest.skip("mujoco_warp is not importable (pip install mujoco-warp==4.0.0)")
    # Kernels compile on the first step (~20 s, cached in ~/.cache/warp): once per module.
    env = BatchedAntEnv(BODIES, max_steps=30, backend="warp", device="cpu")
    env.reset(seed=0)
    env.step(np.zeros((2, 8), dtype=np.float32))
    return env


def test_warp_model_holds_each_bodys_fields_per_world(warp_env):
    import mujoco_warp as mjw
    import warp as wp

    sim = warp_env.sim
    assert {"geom_size", "geom_pos", "body_mass", "body_inertia"} <= set(sim.fields)
    with wp.ScopedDevice("cpu"):
        singles = [mjw.put_model(m) for m in warp_env.models]
    for f in sim.fields:
        per_world = getattr(sim.model, f).numpy()
        assert per_world.shape[0] == 2, f
        for n, k in enumerate(warp_env.index):
            assert np.array_equal(per_world[n], getattr(singles[k], f).numpy()[0]), f


def test_warp_matches_gymnasium_until_the_first_ground_contact(warp_env):
    # Measured (CPU, float32): before any foot touches the floor (the first 3 steps from these
    # seeds) the observations agree to ~5e-6 (float32 rounding of a float64 trajectory); we
    # allow 1e-4. At the first contact they part by O(1) (qacc differs by ~30 of ~65 in the
    # first contact substep): mujoco_warp 4.0's plane_capsule replaces the tangent frame
    # aligned with the capsule by a fixed one when the axis's projection on the plane is
    # < 0.5 long (a leg steeper than 60°, as Ant's lower legs land: 0.31 here), where MuJoCo
    # keeps it aligned, and Ant-v5's pyramidal friction cone is not invariant to rotating the
    # frame (with an elliptic cone both agree to ~1e-4 in qacc). So with Ant-v5's cone warp
    # simulates another Ant; returns are compared with cone="elliptic" on both (below).
    gym_envs = vector_env(TASK, 1, max_steps=30, bodies=BODIES, backend="gym")
    obs_g, rew_g, _ = _episodes(gym_envs, 3, [3, 4])
    obs_w, rew_w, _ = _episodes(warp_env, 3, [3, 4])
    assert isinstance(warp_env.reset(seed=[3, 4])[0], torch.Tensor)
    np.testing.assert_allclose(obs_w, obs_g, rtol=0, atol=1e-4)
    np.testing.assert_allclose(rew_w, rew_g, rtol=0, atol=1e-3)


def test_warp_backend_runs_a_hebbian_rollout(warp_env):
    policy = HebbianPolicy(PolicySpec((27, 8), rule="ABCD_lr"))
    theta = torch.randn(2, policy.num_params, generator=torch.Generator().manual_seed(0))
    kwargs = {"seed": 1, "weight_seeds": [0, 1], "record": True, "max_steps": 8}
    out = rollout(policy, theta, warp_env, **kwargs)
    again = rollout(policy, theta, warp_env, **kwargs)
    assert torch.equal(out.returns, again.returns)  # deterministic on CPU
    assert ((out.lengths >= 1) & (out.lengths <= 8)).all() and out.rewards.shape[1] <= 8
    assert torch.isfinite(out.rewards).all()


def test_warp_names_a_differing_field_it_cannot_batch(warp_env):
    import mujoco_warp as mjw
    import warp as wp

    from badgerlab.hebbian.batched import warp_batched_fields

    with wp.ScopedDevice("cpu"):
        singles = [mjw.put_model(m) for m in warp_env.models]
    # dof_length (per dof, no world dimension) differs between the bodies; only sleeping reads
    # it, so with sleep enabled it would have to be batched, and cannot.
    assert "dof_length" not in warp_batched_fields(singles, 0)
    with pytest.raises(ValueError, match="'dof_length'"):
        warp_batched_fields(singles, int(mujoco.mjtEnableBit.mjENBL_SLEEP))


@pytest.mark.skipif(WARP_MISSING, reason="mujoco_warp is not importable")
def test_warp_unknown_device_raises_value_error():
    with pytest.raises(ValueError, match="device='tpu' is not available"):
        BatchedAntEnv([None], backend="warp", device="tpu")


def test_default_cone_is_ant_v5s_pyramidal_and_elliptic_is_opt_in():
    pyramidal = int(mujoco.mjtCone.mjCONE_PYRAMIDAL)
    ref = TASK.make()
    assert ref.unwrapped.model.opt.cone == pyramidal
    ref.close()
    assert [m.opt.cone for m in BatchedAntEnv(BODIES, max_steps=5).models] == [pyramidal] * 2
    elliptic = BatchedAntEnv(BODIES, max_steps=5, cone="elliptic")
    assert [m.opt.cone for m in elliptic.models] == [int(mujoco.mjtCone.mjCONE_ELLIPTIC)] * 2
    # Only the cone differs from the default body's model.
    assert set(model_diff(elliptic.models[0], compile_bodies([None])[0][0])) == {"opt.cone"}
    with pytest.raises(ValueError, match="cone='round'"):
        BatchedAntEnv([None], cone="round")


ELLIPTIC_BODIES = [None, HALF] * 4


@pytest.fixture(scope="module")
def warp_elliptic_env():
    if WARP_MISSING:
        pytest.skip("mujoco_warp is not importable (pip install mujoco-warp==4.0.0)")
    return BatchedAntEnv(ELLIPTIC_BODIES, max_steps=20, backend="warp", cone="elliptic")


def _gym_elliptic(tmp_path, steps: int) -> EpisodeVectorEnv:
    paths = []
    for k, legs in enumerate(ELLIPTIC_BODIES[:2]):
        paths.append(tmp_path / f"ant-elliptic-{k}.xml")
        paths[-1].write_text(ant_xml(legs, cone="elliptic"))
    fns = [
        lambda p=paths[n % 2]: make_env("Ant-v5", xml_file=str(p), max_steps=steps, **TASK.kwargs)
        for n in range(len(ELLIPTIC_BODIES))
    ]
    return EpisodeVectorEnv(fns)


def test_warp_episode_returns_match_gymnasium_with_an_elliptic_cone(warp_elliptic_env, tmp_path):
    # Measured (CPU, float32 warp vs float64 gymnasium, both elliptic): this policy, 8 members
    # (standard and half front-left leg), 20 steps, reset seeds 0-5 and 11 (56 episodes):
    # |Δreturn| max 0.22, mean 0.014, with mean |return| 8.0; episode lengths equal. Seed 5
    # here: max 0.11, mean 0.016. (The pyramidal cone, same episodes: max 17, mean 4.8.)
    # Contact chaos amplifies float32 rounding with the episode's length, so the bounds (max < 1,
    # mean < 0.1) are ~4.5x the worst measured and ~6x this seed's mean, for 20 steps only.
    policy = HebbianPolicy(PolicySpec((27, 16, 8), rule="ABCD_lr"))
    theta = torch.randn(8, policy.num_params, generator=torch.Generator().manual_seed(1))
    kwargs = {"seed": 5, "weight_seeds": list(range(8)), "record": True}
    want = rollout(policy, theta, _gym_elliptic(tmp_path, 20), **kwargs)
    got = rollout(policy, theta, warp_elliptic_env, **kwargs)
    diff = (got.returns.double() - want.returns.double()).abs()
    assert torch.equal(got.lengths, want.lengths)
    assert diff.max() < 1.0 and diff.mean() < 0.1, diff
    assert want.returns.abs().mean() > 3.0  # the members moved, feet on the floor
