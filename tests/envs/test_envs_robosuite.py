"""The robosuite family: state and pixel observations, success termination, seeding, render settings."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
import torch

import envs
from envs import EnvConfig

pytest.importorskip("robosuite")


def lift(**fields) -> EnvConfig:
    return EnvConfig(name="lift", id="Lift", family="robosuite", score_name=None, **fields)


@pytest.fixture(scope="module")
def state_envs():
    first, second = envs.make(lift()), envs.make(lift())
    yield first, second
    first.close()
    second.close()


def test_state_observation_actions_and_success_termination(state_envs) -> None:
    env, _ = state_envs
    obs, _ = env.reset(seed=0)
    assert obs.shape == (53,) == env.observation_space.shape  # object-state 10 + proprio 43
    assert env.action_space.shape == (7,)
    assert env.spec is None and envs.time_limit(env) == 500  # unregistered: TimeLimit's default limit
    _, reward, terminated, truncated, info = env.step(np.zeros(7))
    assert (reward, terminated, truncated, info["success"]) == (0.0, False, False, False)

    suite = env.unwrapped.suite
    cube_joint = suite.cube.joints[0]
    pose = suite.sim.data.get_joint_qpos(cube_joint).copy()
    pose[2] += 0.2  # lifted well above the table
    suite.sim.data.set_joint_qpos(cube_joint, pose)
    suite.sim.forward()
    _, reward, terminated, truncated, info = env.step(np.zeros(7))
    assert (reward, terminated, truncated, info["success"]) == (1.0, True, False, True)


def test_each_env_owns_its_random_stream(state_envs) -> None:
    first, second = state_envs
    a0, _ = first.reset(seed=3)
    b0, _ = second.reset(seed=3)
    np.testing.assert_array_equal(a0, b0)
    np.random.seed(999)  # robosuite draws placements from the global generator; ours is swapped in
    a1, _ = first.reset()
    np.random.uniform(size=10)
    b1, _ = second.reset()
    np.testing.assert_array_equal(a1, b1)
    assert not np.array_equal(a0[:3], a1[:3])  # a new episode places the cube elsewhere


def test_pixels_through_subprocess_workers() -> None:
    cfg = lift(obs_mode="pixels", image_size=32, max_episode_steps=2)
    with envs.make_vec(cfg, 2, device="cpu") as vec:
        assert isinstance(vec, envs.SubprocVecEnv)  # auto mode: robosuite steps are expensive
        assert vec.max_episode_steps == 2
        obs = vec.reset(seed=0)
        assert set(obs) == {"agentview", "robot0_eye_in_hand", "state"}
        assert obs["agentview"].shape == (2, 32, 32, 3) and obs["agentview"].dtype == torch.uint8
        assert obs["state"].shape == (2, 43) and obs["state"].dtype == torch.float32
        assert obs["agentview"].float().std() > 0  # a rendered scene, not a blank buffer
        vec.step(torch.zeros(2, 7))
        step = vec.step(torch.zeros(2, 7))
    assert step.truncated.tolist() == [True, True]
    assert not torch.equal(step.next_obs["state"], step.obs["state"])  # final vs reset observation
    assert [e.length for e in step.episodes] == [2, 2]


@pytest.mark.parametrize("fast", [True, False])
def test_fast_render_turns_off_multisampling_and_effects(fast: bool) -> None:
    env = envs.make(lift(obs_mode="pixels", image_size=32, fast_render=fast))
    suite = env.unwrapped.suite
    flags = suite.sim._render_context_offscreen.scn.flags
    assert (suite.sim.model._model.vis.quality.offsamples == 0) == fast
    assert bool(flags[mujoco.mjtRndFlag.mjRND_SHADOW]) != fast
    obs, _ = env.reset(seed=0)
    assert obs["agentview"].std() > 0
    env.close()


def test_robosuite_rejects_bad_config() -> None:
    with pytest.raises(ValueError, match=r"env\.controller"):
        envs.make(lift(controller="OSC_TELEPATHY"))
    with pytest.raises(ValueError, match=r"env\.obs_mode"):
        envs.make(lift(obs_mode="depth"))
    with pytest.raises(ValueError, match=r"env\.id"):
        envs.make(EnvConfig(id="Juggle", family="robosuite"))
    with pytest.raises(ValueError, match=r"env\.kwargs"):
        envs.make(lift(kwargs={"not_a_kwarg": 1}))


def test_camera_envs_in_one_process_render_their_own_scenes() -> None:
    lift_env = envs.make(lift(obs_mode="pixels", image_size=32))
    before, _ = lift_env.reset(seed=0)
    door_env = envs.make(EnvConfig(id="Door", family="robosuite", obs_mode="pixels", image_size=32))
    after, _ = lift_env.reset(seed=0)  # the Door env's GL context is the one built last
    # Drawn with the Door context, the Lift image is garbage (mean difference ~76 of 255).
    difference = np.abs(before["agentview"].astype(int) - after["agentview"].astype(int)).mean()
    assert difference < 2.0
    lift_env.close()
    door_env.close()
