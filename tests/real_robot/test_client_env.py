"""The Gymnasium env over a real server, and the log it leaves converted into a Dataset."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest

from real_robot import protocol
from real_robot.client import BridgeError
from real_robot.client_env import make_bridge_env
from real_robot.convert import log_to_dataset


def _env(server, keys_dir: Path, **kwargs) -> gym.Env:
    return make_bridge_env(address=server.address, keys_dir=str(keys_dir), **kwargs)


def _towards_goal(obs: np.ndarray) -> np.ndarray:
    # Flat layout from the spec: q(7) dq(7) ee_pos(3) ee_quat(4) gripper(1) goal(3).
    action = np.zeros(7, np.float32)
    action[:3] = np.clip((obs[22:25] - obs[14:17]) * 50, -1, 1)
    return action


def test_spaces_and_a_successful_episode(start_server, keys_dir):
    server = start_server()
    env = _env(server, keys_dir)
    try:
        assert env.action_space == gym.spaces.Box(-1.0, 1.0, (7,), np.float32)
        assert env.observation_space.shape == (25,) and env.observation_space.dtype == np.float32
        obs, info = env.reset(seed=0)
        assert env.observation_space.contains(obs) and info["episode"] == 0
        for _ in range(40):
            obs, reward, terminated, truncated, info = env.step(_towards_goal(obs))
            if terminated:
                break
        assert terminated and not truncated and reward > -0.03
        assert info["applied_action"].shape == (7,) and info["intervened"] is False
    finally:
        env.close()
    assert server.lease is None  # close() said BYE


def test_same_seed_same_episode_in_lockstep(start_server, keys_dir):
    server = start_server()
    env = _env(server, keys_dir)
    try:
        runs = []
        for _ in range(2):
            obs, _ = env.reset(seed=7)
            trajectory = [obs]
            for action in np.random.default_rng(0).uniform(-1, 1, (5, 7)).astype(np.float32):
                trajectory.append(env.step(action)[0])
            runs.append(np.stack(trajectory))
        np.testing.assert_allclose(runs[0], runs[1], atol=1e-5)
    finally:
        env.close()


def test_time_limit_and_refusals_truncate_but_an_estop_raises(start_server, keys_dir, connect):
    server = start_server(max_episode_steps=3, max_action_age_ms=30.0, hold_after_ms=500.0)
    env = _env(server, keys_dir)
    try:
        obs, _ = env.reset(seed=1)
        flags = [env.step(np.zeros(7, np.float32))[3] for _ in range(3)]
        assert flags == [False, False, True]

        obs, _ = env.reset(seed=1)
        time.sleep(0.06)  # the learner paused: the action would be stale
        obs2, _reward, terminated, truncated, info = env.step(np.zeros(7, np.float32))
        assert truncated and not terminated and info["bridge_error"] == "stale"
        np.testing.assert_array_equal(obs2, obs)

        env.reset(seed=2)
        connect(server, name="operator").request(protocol.ESTOP, {"reason": "test"})
        with pytest.raises(BridgeError, match="estop"):
            env.step(np.zeros(7, np.float32))
    finally:
        env.close()


def test_log_converts_to_a_dataset_matching_what_the_env_saw(start_server, keys_dir, tmp_path):
    server = start_server(max_episode_steps=6)
    env = _env(server, keys_dir)
    seen = []
    try:
        for seed in (0, 1):
            obs, _ = env.reset(seed=seed)
            done = False
            while not done:
                action = np.random.default_rng(seed).uniform(-1, 1, 7).astype(np.float32)
                next_obs, reward, terminated, truncated, info = env.step(action)
                seen.append((obs, info["applied_action"], reward, next_obs, terminated, truncated))
                obs, done = next_obs, terminated or truncated
    finally:
        env.close()
    dataset = log_to_dataset(server.recorder.path)
    assert len(dataset) == len(seen) == 12 and dataset.num_episodes == 2
    np.testing.assert_allclose(dataset.observations, np.stack([s[0] for s in seen]))
    np.testing.assert_allclose(dataset.actions, np.stack([s[1] for s in seen]))
    np.testing.assert_allclose(dataset.rewards, np.array([s[2] for s in seen], np.float32))
    np.testing.assert_allclose(dataset.next_observations, np.stack([s[3] for s in seen]))
    assert dataset.truncated.tolist() == [s[5] for s in seen]

    out = tmp_path / "run.hdf5"
    result = subprocess.run(
        [sys.executable, "-m", "real_robot.convert", str(server.recorder.path), str(out)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode == 0, result.stderr
    with h5py.File(out) as f:
        assert {"observations", "actions", "rewards", "terminals", "timeouts", "next_observations"} <= set(f)
        np.testing.assert_allclose(f["observations"][:], dataset.observations)
        assert f["timeouts"][:].tolist() == dataset.truncated.tolist()


def test_converter_rejects_a_log_without_transitions(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "real_robot.convert", str(tmp_path / "missing.o2olog"), "x.hdf5"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode == 2 and result.stderr.startswith("convert: ")
