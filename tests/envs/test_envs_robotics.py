"""The robotics family: D4RL conventions for AntMaze, PointMaze, Adroit and Franka Kitchen."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

import envs
from envs import EnvConfig
from envs.robotics import d4rl_door_reward


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


def d4rl_hammer_reward(data) -> float:
    """D4RL's ``hammer_v0.py`` reward, term by term, from the simulator's state after a step."""
    obj, palm = data.body("Object").xpos, data.site("S_grasp").xpos
    tool, nail, goal = data.site("tool").xpos, data.site("S_target").xpos, data.site("nail_goal").xpos
    reward = (
        -0.1 * np.linalg.norm(palm - obj) - np.linalg.norm(tool - nail) - 10 * np.linalg.norm(nail - goal)
    )
    reward -= 1e-2 * np.linalg.norm(data.qvel)
    reward += 2 * (obj[2] > 0.04 and tool[2] > 0.04)
    return reward + 25 * (np.linalg.norm(nail - goal) < 0.02) + 75 * (np.linalg.norm(nail - goal) < 0.01)


def d4rl_relocate_reward(data) -> float:
    """D4RL's ``relocate_v0.py`` reward, term by term."""
    obj, palm, target = data.body("Object").xpos, data.site("S_grasp").xpos, data.site("target").xpos
    reward = -0.1 * np.linalg.norm(palm - obj)
    if obj[2] > 0.04:
        reward += 1.0 - 0.5 * np.linalg.norm(palm - target) - 0.5 * np.linalg.norm(obj - target)
    distance = np.linalg.norm(obj - target)
    return reward + 10.0 * (distance < 0.1) + 20.0 * (distance < 0.05)


@pytest.mark.parametrize(
    ("env_id", "d4rl_reward", "reaches_for"),
    [
        ("AdroitHandHammer-v1", d4rl_hammer_reward, lambda data: data.body("Object").xpos),
        ("AdroitHandRelocate-v1", d4rl_relocate_reward, lambda data: data.body("Object").xpos),
        ("AdroitHandDoor-v1", None, lambda data: data.site("S_handle").xpos),
    ],
)
def test_adroit_pays_d4rls_reward_and_keeps_the_librarys_in_info(env_id, d4rl_reward, reaches_for) -> None:
    env = envs.make(robotics(env_id))
    env.reset(seed=3)
    data, rng = env.unwrapped.data, np.random.default_rng(0)
    for _ in range(25):
        obs, reward, _, _, info = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        expected = d4rl_door_reward(obs, data.qvel) if d4rl_reward is None else d4rl_reward(data)
        assert reward == pytest.approx(expected, abs=1e-9)
        # gymnasium-robotics 1.4.2 adds 0.1 |palm - object| where D4RL subtracts it
        distance = np.linalg.norm(data.site("S_grasp").xpos - reaches_for(data))
        assert info["env_reward"] - reward == pytest.approx(0.2 * distance, abs=1e-9)
    env.close()


def test_pen_episode_ends_when_the_pen_falls_as_d4rls() -> None:
    env = envs.make(robotics("AdroitHandPen-v1"))
    env.reset(seed=0)
    still = np.zeros(env.action_space.shape, dtype=np.float32)
    _, _, terminated, _, _ = env.step(still)
    assert not terminated  # the pen starts in the hand, at z = 0.25
    model, data = env.unwrapped.model, env.unwrapped.data
    # The pen's body frame is turned: find the slide joint that moves it along the world's z.
    slide = next(
        model.joint(n) for n in ("OBJTx", "OBJTy", "OBJTz") if abs(data.xaxis[model.joint(n).id][2]) > 0.9
    )
    data.qpos[slide.qposadr[0]] = -0.2 / data.xaxis[slide.id][2]  # to z = 0.05, below 0.075
    mujoco.mj_forward(model, data)
    assert data.body("Object").xpos[2] == pytest.approx(0.05, abs=1e-3)
    _, reward, terminated, truncated, _ = env.step(still)
    assert terminated and not truncated
    assert reward < -3  # D4RL's -5 for the drop, on top of distance (<= 0) and orientation (<= 1)
    env.close()


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
