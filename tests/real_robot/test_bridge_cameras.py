"""Several cameras through the bridge: the pixel observation holds every chosen server camera under
the camera's name at that camera's size, and a logged run exports exactly the frames the env saw,
through the hdf5 file and back to the keys the env observes."""

from __future__ import annotations

import gymnasium as gym
import h5py
import numpy as np
import pytest

from real_robot.client_env import make_bridge_env
from real_robot.convert import log_to_dataset, write_d4rl_hdf5
from rl.data import check_dataset, load_dataset

# Generous deadlines wherever a test steps the arm: on a loaded machine a slow client must not have
# its action dropped as stale, nor the watchdog stop the arm, between two steps.
PATIENT = {"max_action_age_ms": 5000.0, "hold_after_ms": 5000.0, "stop_after_ms": 6000.0}
TWO = ("front", "wrist")
STATE = gym.spaces.Box(-np.inf, np.inf, (25,), np.float32)


def image(size: int) -> gym.spaces.Box:
    return gym.spaces.Box(0, 255, (size, size, 3), np.uint8)


def test_pixels_observe_every_server_camera_or_the_chosen_ones_and_unknown_ones_are_refused(
    start_server, keys_dir
):
    server = start_server(cameras=TWO, **PATIENT)
    env = make_bridge_env(address=server.address, keys_dir=str(keys_dir), pixels=True)
    try:
        assert env.observation_space == gym.spaces.Dict(
            {"state": STATE, "front": image(64), "wrist": image(64)}
        )
        env.reset(seed=0)
        obs = env.step(np.full(7, 0.5, np.float32))[0]
        assert env.observation_space.contains(obs)
        # Two views of one instant, not one camera under two names.
        assert not np.array_equal(obs["front"], obs["wrist"])
    finally:
        env.close()
    env = make_bridge_env(address=server.address, keys_dir=str(keys_dir), pixels=True, cameras=["wrist"])
    try:
        assert env.observation_space == gym.spaces.Dict({"state": STATE, "wrist": image(64)})
        obs, _ = env.reset(seed=0)
        assert set(obs) == {"state", "wrist"}
    finally:
        env.close()

    refused = {
        "unknown": (
            {"pixels": True, "cameras": ["wrist", "top"]},
            r"^bridge env: cameras \['top'\] are not the server's cameras \['front', 'wrist'\]$",
        ),
        "empty": ({"pixels": True, "cameras": []}, r"^bridge env: cameras is empty; .*\['front', 'wrist'\]$"),
        "no pixels": ({"cameras": ["front"]}, r"^bridge env: cameras=\['front'\] needs pixels=True$"),
    }
    for case, (kwargs, message) in refused.items():
        with pytest.raises(ValueError, match=message):
            make_bridge_env(address=server.address, keys_dir=str(keys_dir), **kwargs)
        assert server.lease is None, case  # the refused env let go of the lease


def test_a_two_camera_run_exports_the_frames_the_env_saw_and_loads_back_as_the_env_observes(
    start_server, keys_dir, tmp_path
):
    server = start_server(cameras=TWO, camera_size=(64, 48), max_episode_steps=3, **PATIENT)
    env = make_bridge_env(address=server.address, keys_dir=str(keys_dir), pixels=True)
    space = env.observation_space
    seen = []
    try:
        assert space["front"] == image(64) and space["wrist"] == image(48)  # each its own size
        for seed in (0, 1):
            obs, _ = env.reset(seed=seed)
            done = False
            while not done:
                next_obs, _, terminated, truncated, _ = env.step(np.full(7, 0.5, np.float32))
                seen.append((obs, next_obs))
                obs, done = next_obs, terminated or truncated
    finally:
        env.close()
    dataset = log_to_dataset(server.recorder.path)
    assert len(dataset) == len(seen) == 6 and dataset.info.extra["cameras"] == ["front", "wrist"]
    assert set(dataset.observations) == {"state", "front", "wrist"} == set(space.spaces)
    for key in space.spaces:
        np.testing.assert_array_equal(dataset.observations[key], np.stack([s[0][key] for s in seen]))
        np.testing.assert_array_equal(dataset.next_observations[key], np.stack([s[1][key] for s in seen]))
    assert dataset.observations["wrist"].dtype == np.uint8

    path = tmp_path / "run.hdf5"
    write_d4rl_hdf5(dataset, path)
    with h5py.File(path) as f:
        assert list(f.attrs["cameras"]) == ["front", "wrist"]
        assert f["observations/wrist"].compression == "gzip"
    loaded = check_dataset(load_dataset(f"d4rl:{path}"), space, env.action_space, clip_actions=True)
    for name in ("observations", "next_observations"):
        rows, stored = getattr(loaded, name), getattr(dataset, name)
        assert set(rows) == set(space.spaces)
        for key in space.spaces:
            np.testing.assert_array_equal(rows[key], stored[key])
    # An env observing the wrist at another size cannot train on it: one line naming both sides.
    other = gym.spaces.Dict({"state": STATE, "front": image(64), "wrist": image(64)})
    with pytest.raises(
        ValueError,
        match=r"cameras front 64x64x3, wrist 48x48x3 do not match the env's front 64x64x3, wrist 64x64x3$",
    ):
        check_dataset(load_dataset(f"d4rl:{path}"), other, env.action_space, clip_actions=True)
