"""The reward camera: robosuite renders it beside a state observation exactly as the pixel env renders
the same state, gives named state and a calibration that projects the cube onto its pixels, and
both vector envs carry the view of each transition's true next state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import envs
from envs import EnvConfig
from tests.envs.view_toy import make_view_toy

LIFT = dict(name="lift", id="Lift", family="robosuite", score_name=None, max_episode_steps=3)
SIZE = 64


def lift(**kwargs) -> EnvConfig:
    return EnvConfig(**{**LIFT, **kwargs})


@pytest.fixture(scope="module")
def state_env_with_camera():
    env = envs.make(lift(reward_cameras=["agentview"], reward_image_size=SIZE, reward_depth=True))
    yield env
    env.close()


def test_reward_frames_equal_the_pixel_envs_render_of_the_same_state(state_env_with_camera):
    pixels = envs.make(lift(obs_mode="pixels", cameras=["agentview"], image_size=SIZE))
    try:
        state_env_with_camera.reset(seed=3)
        pixels.reset(seed=3)
        rng = np.random.default_rng(0)
        for _ in range(2):
            action = rng.uniform(-1, 1, 7).astype(np.float32)
            obs, _, _, _, info = state_env_with_camera.step(action)
            pixel_obs, _, _, _, pixel_info = pixels.step(action)
            assert obs.shape == (53,)  # the policy's observation is unchanged: state only
            view = info["reward_view"]
            assert view["frames/agentview"].dtype == np.uint8
            np.testing.assert_array_equal(view["frames/agentview"], pixel_obs["agentview"])
            assert "reward_view" not in pixel_info
        assert set(view) == {
            "frames/agentview", "frames/agentview_depth", "state/eef_pos", "state/gripper_qpos",
            "state/cube_pos", "state/cube_quat",
        }  # fmt: skip
        suite = state_env_with_camera.unwrapped.suite
        np.testing.assert_allclose(
            view["state/cube_pos"], suite.sim.data.body_xpos[suite.cube_body_id], atol=1e-6
        )
        space = state_env_with_camera.unwrapped.reward_view_space
        assert space["frames/agentview"].shape == (SIZE, SIZE, 3) and space[
            "frames/agentview_depth"
        ].shape == (SIZE, SIZE)
    finally:
        pixels.close()


def test_calibration_projects_the_cube_onto_its_pixels_and_depth_agrees(state_env_with_camera):
    state_env_with_camera.reset(seed=0)
    _, _, _, _, info = state_env_with_camera.step(np.zeros(7, np.float32))
    view = info["reward_view"]
    calibration = state_env_with_camera.unwrapped.reward_calibration()["agentview"]
    intrinsics, extrinsics = calibration["intrinsics"], calibration["extrinsics"]
    cube = np.append(view["state/cube_pos"], 1.0)
    in_camera = np.linalg.inv(extrinsics) @ cube
    column, row = (intrinsics @ in_camera[:3])[:2] / in_camera[2]
    image = view["frames/agentview"].astype(int)
    red = (image[..., 0] > 120) & (image[..., 1] < 80) & (image[..., 2] < 80)
    rows, columns = np.nonzero(red)
    assert len(rows) > 5  # the red cube is in view
    assert abs(column - columns.mean()) < 3 and abs(row - rows.mean()) < 3  # in stored row order
    depth = view["frames/agentview_depth"][int(row), int(column)]
    assert in_camera[2] - 0.05 < depth < in_camera[2]  # the cube's near face, in front of its centre


def test_an_unknown_reward_camera_is_refused_by_name():
    with pytest.raises(ValueError, match=r"env\.reward_cameras: \['nope'\] not in this scene's cameras"):
        envs.make(lift(reward_cameras=["nope"]))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_both_vector_envs_carry_the_view_of_the_true_next_state(mode, monkeypatch):
    """The view toy (5-step episodes, x moves by 0.5 * action) in 2 copies: at the step that ends the
    episodes, the view shows the final state (x of next_obs), not the reset one (obs)."""
    monkeypatch.setitem(envs.FAMILIES, "view-toy", make_view_toy)  # workers unpickle it by reference
    cfg = EnvConfig(name="view-toy", id="ViewToy", family="view-toy", score_name=None)
    vec = envs.make_vec(cfg, 2, mode=mode, workers=2)
    try:
        assert set(vec.reward_view_space.spaces) == {"frames/camera", "state/x"}
        assert vec.reward_calibration["camera"]["height"] == 16
        vec.reset(seed=0)
        for _ in range(5):
            result = vec.step(np.array([[1.0], [0.5]], np.float32))
        assert len(result.episodes) == 2
        x = result.reward_view["state/x"][:, 0]
        assert torch.equal(x, result.next_obs[:, 0]) and torch.equal(x, torch.tensor([1.0, 0.75]))
        assert torch.equal(result.obs[:, 0], torch.tensor([-0.5, -0.5]))  # the reset state
        bright = result.reward_view["frames/camera"][:, 0, :, 0].float().argmax(1)
        assert bright.tolist() == [15, 13]
    finally:
        vec.close()


def test_a_robosuite_subprocess_worker_carries_frames_and_calibration():
    vec = envs.make_vec(lift(reward_cameras=["agentview"], reward_image_size=32), 1, mode="async", workers=1)
    try:
        vec.reset(seed=0)
        result = vec.step(np.zeros((1, 7), np.float32))
        assert result.reward_view["frames/agentview"].shape == (1, 32, 32, 3)
        assert result.reward_view["frames/agentview"].dtype == torch.uint8
        assert result.reward_view["frames/agentview"].float().std() > 10  # a picture, not zeros
        assert vec.reward_calibration["agentview"]["intrinsics"].shape == (3, 3)
    finally:
        vec.close()
