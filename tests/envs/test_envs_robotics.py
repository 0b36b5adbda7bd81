"""The robotics family: D4RL conventions for AntMaze, PointMaze, Adroit and Franka Kitchen."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

import envs
from envs import EnvConfig


def robotics(env_id: str, **fields) -> EnvConfig:
    return EnvConfig(name="test", id=env_id, family="robotics", score_name=None, **fields)


def teleport_ant(env, xy: np.ndarray) -> None:
    ant = env.unwrapped.ant_env
    ant.data.qpos[:2] = xy
    ant.data.qvel[:] = 0
    mujoco.mj_forward(ant.model, ant.data)


def test_antmaze_is_sparse_terminates_on_success_and_observes_d4rl_layout() -> None:
    env = envs.make(robotics("AntMaze_UMaze-v5"))
    obs, _ = env.reset(seed=0)
    core = env.unwrapped
    # D4RL's 29 numbers: qpos (torso x, y first) then qvel; the goal is not observed.
    assert obs.shape == (29,)
    np.testing.assert_allclose(obs, np.concatenate([core.ant_env.data.qpos, core.ant_env.data.qvel]))
    # The eval maze: start in the top-right cell, goal in the bottom-right one (cell size 4, noise 1).
    assert np.all(np.abs(obs[:2] - [4.0, 4.0]) <= 1.0) and np.all(np.abs(core.goal - [4.0, -4.0]) <= 1.0)
    assert env.spec.max_episode_steps == 700

    _, reward, terminated, truncated, info = env.step(np.zeros(8))
    assert (reward, terminated, truncated, info["success"]) == (0.0, False, False, False)
    teleport_ant(env, core.goal)
    _, reward, terminated, truncated, info = env.step(np.zeros(8))
    assert (reward, terminated, truncated, info["success"]) == (1.0, True, False, True)


def test_antmaze_can_be_made_continuing_again() -> None:
    env = envs.make(robotics("AntMaze_UMaze-v5", terminate_on_success=False))
    env.reset(seed=0)
    teleport_ant(env, env.unwrapped.goal)
    _, reward, terminated, _, _ = env.step(np.zeros(8))
    assert (reward, terminated) == (1.0, False)


def test_pointmaze_observes_its_goal_and_does_not_terminate() -> None:
    env = envs.make(robotics("PointMaze_UMaze-v3"))
    obs, _ = env.reset(seed=0)
    np.testing.assert_allclose(obs[4:], env.unwrapped.goal)
    assert obs.shape == (6,) and env.spec.max_episode_steps == 300


@pytest.mark.parametrize(
    ("env_id", "obs_dim", "limit"),
    [
        ("AdroitHandDoor-v1", 39, 200),
        ("AdroitHandHammer-v1", 46, 200),
        ("AdroitHandPen-v1", 45, 100),
        ("AdroitHandRelocate-v1", 39, 200),
    ],
)
def test_adroit_matches_d4rl_shapes_and_time_limits(env_id: str, obs_dim: int, limit: int) -> None:
    env = envs.make(robotics(env_id))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (obs_dim,) and env.spec.max_episode_steps == limit
    assert env.action_space.low.min() == -1.0 and env.action_space.high.max() == 1.0


def test_kitchen_reward_counts_solved_subtasks_and_score_counts_completions() -> None:
    from gymnasium_robotics.envs.franka_kitchen.kitchen_env import OBS_ELEMENT_GOALS, OBS_ELEMENT_INDICES

    env = envs.make(robotics("FrankaKitchen-v1"))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (59,)
    core = env.unwrapped

    def solve(task: str) -> None:
        core.data.qpos[OBS_ELEMENT_INDICES[task]] = OBS_ELEMENT_GOALS[task]
        mujoco.mj_forward(core.model, core.data)

    hold = np.zeros(9)
    _, reward, terminated, _, info = env.step(hold)
    assert (reward, info["score_reward"], terminated) == (0.0, 0.0, False)
    solve("microwave")
    rewards, scores = [], []
    for _ in range(3):  # the microwave stays open: dataset-style reward 1 every step, scored once
        _, reward, terminated, _, info = env.step(hold)
        rewards.append(reward)
        scores.append(info["score_reward"])
    assert rewards == [1.0, 1.0, 1.0] and scores == [1.0, 0.0, 0.0] and not terminated

    for task in ("kettle", "light switch", "slide cabinet"):
        solve(task)
    _, reward, terminated, _, info = env.step(hold)
    assert (reward, info["score_reward"], terminated, info["success"]) == (4.0, 3.0, True, True)


def test_robotics_rejects_bad_config() -> None:
    with pytest.raises(ValueError, match=r"env\.id"):
        envs.make(robotics("Hopper-v5"))
    with pytest.raises(ValueError, match=r"env\.id"):
        envs.make(robotics("AntMaze_Tiny-v5"))
    with pytest.raises(ValueError, match=r"env\.obs_keys: 'goal'"):
        envs.make(robotics("AntMaze_UMaze-v5", obs_keys=["goal"]))
    with pytest.raises(ValueError, match=r"env\.kwargs"):
        envs.make(robotics("AdroitHandDoor-v1", kwargs={"not_a_kwarg": 1}))


def test_envs_with_state_outside_the_physics_have_no_exact_snapshot() -> None:
    # A snapshot of qpos/qvel alone would resume these with the wrong goal or object placement.
    for env_id in ("AntMaze_UMaze-v5", "AdroitHandDoor-v1"):
        env = envs.make(robotics(env_id))
        env.reset(seed=0)
        assert envs.get_env_state(env) is None
    hopper = envs.make(EnvConfig())
    hopper.reset(seed=0)
    assert envs.get_env_state(hopper) is not None
