"""``env=real`` with a reward model: the bridge env's reward view (camera frames and the server's
observation ids beside a state observation), and the label log a labelled run writes, joined by
``real_robot.convert --labels`` to exactly the labels the learner stored."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import rl.train
from real_robot.client_env import make_bridge_env
from real_robot.convert import join_labels, log_to_dataset
from real_robot.recorder import read_log
from rl.checkpoint import load_checkpoint
from rl.config import compose_config
from rl.data.label_log import read_label_log
from rl.loops import build
from rl.rewards import Labels, RewardModel

# Generous deadlines wherever a test steps the arm: on a loaded machine a slow client must not have
# its action dropped as stale, nor the watchdog stop the arm, between two steps (those have their
# own tests in test_server.py and test_safety.py).
PATIENT = {"max_action_age_ms": 5000.0, "hold_after_ms": 5000.0, "stop_after_ms": 6000.0}


def test_the_reward_view_carries_the_logged_frames_and_ids_beside_a_state_observation(start_server, keys_dir):
    server = start_server(cameras=("front",), **PATIENT)
    env = make_bridge_env(address=server.address, keys_dir=str(keys_dir))
    try:
        assert env.observation_space == gym.spaces.Box(
            -np.inf, np.inf, (25,), np.float32
        )  # the policy: state
        space = env.unwrapped.reward_view_space
        assert space["frames/front"] == gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
        assert {"state/eef_pos", "state/goal", "ids/episode", "ids/step", "ids/obs_id"} <= set(space.spaces)
        env.reset(seed=3)
        views = []
        for _ in range(3):
            _, _, _, _, info = env.step(np.full(7, 0.5, np.float32))
            assert space.contains(info["reward_view"])
            views.append(info["reward_view"])
    finally:
        env.close()
    logged = {r["obs_id"]: r for r in read_log(server.recorder.path) if r["kind"] == "obs"}
    assert [int(v["ids/step"]) for v in views] == [1, 2, 3]
    for view in views:
        record = logged[int(view["ids/obs_id"])]
        assert (int(view["ids/episode"]), int(view["ids/step"])) == (record["episode"], record["step"])
        np.testing.assert_array_equal(view["frames/front"], record["frames"]["front"]["image"])
        np.testing.assert_array_equal(view["state/eef_pos"], record["state"]["ee_pos"])
    assert not np.array_equal(views[0]["frames/front"], views[-1]["frames/front"])  # the arm moved


def test_no_camera_no_reward_view_and_an_unknown_reward_camera_is_refused(start_server, keys_dir):
    server = start_server()
    env = make_bridge_env(address=server.address, keys_dir=str(keys_dir))
    try:
        assert env.unwrapped.reward_view_space is None
        env.reset(seed=0)
        assert "reward_view" not in env.step(np.zeros(7, np.float32))[4]
    finally:
        env.close()
    server = start_server(cameras=("front",))
    with pytest.raises(
        ValueError, match=r"reward_cameras \['wrist'\] are not the server's cameras \['front'\]"
    ):
        make_bridge_env(address=server.address, keys_dir=str(keys_dir), reward_cameras=["wrist"])


class Brightness(RewardModel):
    """Labels from the front camera alone: reward = p = the frame's mean brightness in [0, 1],
    success = done = p above ``threshold``."""

    cameras = ("front",)

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def label(self, batch):
        p = batch.frames["front"].float().mean((1, 2, 3)) / 255
        success = p > self.threshold
        return Labels(reward=p, success=success, done=success, info={"p_success": p})

    def identity(self) -> bytes:
        return f"brightness {self.threshold}".encode()


def test_a_labelled_bridge_run_logs_labels_that_convert_joins_to_the_stored_rewards(
    start_server, keys_dir, tmp_path, monkeypatch
):
    """SAC through the bridge with a state policy and a camera reward, labelled inline: every row's
    label is in ``<run_dir>/labels.jsonl``, and the server's log joined with it has, transition by
    transition, the rewards, successes and terminals the learner's buffer holds."""
    probe = start_server(
        cameras=("front",), **PATIENT
    )  # its own server, so the run's log holds the run's episodes only
    env = make_bridge_env(address=probe.address, keys_dir=str(keys_dir))
    try:  # the scene's resting brightness: a step that brightens it is a success, one that darkens not
        env.reset(seed=0)
        resting = env.step(np.zeros(7, np.float32))[4]["reward_view"]["frames/front"]
    finally:
        env.close()
    model = Brightness(float(resting.mean() / 255))
    server = start_server(cameras=("front",), max_episode_steps=8, **PATIENT)
    monkeypatch.setattr(build, "build_reward_model", lambda cfg, device: model)
    overrides = [
        "env=real", f"env.kwargs.address={server.address}", f"env.kwargs.keys_dir={keys_dir}",
        "reward=classifier", "reward.cameras=[front]", "reward.image_size=64",
        "agent=sac", "agent.critic_hidden=[16,16]", "agent.actor_hidden=[16,16]", "agent.batch_size=8",
        "buffer_capacity=100", "threads=1", "steps.online=24", "steps.warmup=4", "steps.eval_episodes=0",
        "progress=false",
    ]  # fmt: skip
    cfg = compose_config(overrides)
    run_dir = tmp_path / "run"
    rl.train.train(cfg, run_dir)

    records = read_label_log(run_dir / "labels.jsonl")
    assert len(records) == 24 and {r.model for r in records} == {model.model_hash}
    saved = load_checkpoint(run_dir / "checkpoints/last.pt")["online_buffer"]
    stored_reward, stored_success = saved["reward"][:24], saved["labels"]["success"][:24]
    dataset = join_labels(log_to_dataset(server.recorder.path), run_dir / "labels.jsonl")
    assert len(dataset) == 24  # three episodes of 8 steps, every one labelled
    np.testing.assert_allclose(dataset.rewards, stored_reward.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(dataset.info.extra["success"], stored_success.numpy())
    np.testing.assert_allclose(dataset.info.extra["p_success"], dataset.rewards, atol=1e-6)
    assert 0 < dataset.info.extra["success"].sum() < 24
    # Each label is the model's own answer on the frame the server logged for that observation.
    frames = torch.from_numpy(np.asarray(dataset.next_observations["front"]))
    np.testing.assert_allclose(dataset.rewards, (frames.float().mean((1, 2, 3)) / 255).numpy(), atol=1e-6)


def test_a_calibration_file_gives_the_reward_camera_its_geometry_and_bad_files_are_refused_in_one_line(
    start_server, keys_dir, tmp_path
):
    import json

    server = start_server(cameras=("front",))
    intrinsics = [[50.0, 0.0, 32.0], [0.0, 50.0, 32.0], [0.0, 0.0, 1.0]]
    extrinsics = [[1.0, 0.0, 0.0, 0.5], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 1.5], [0.0, 0.0, 0.0, 1.0]]
    good = {"front": {"intrinsics": intrinsics, "extrinsics": extrinsics, "height": 64, "width": 64}}
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(good))
    env = make_bridge_env(address=server.address, keys_dir=str(keys_dir), calibration=str(path))
    try:
        calibration = env.unwrapped.reward_calibration()
        np.testing.assert_array_equal(calibration["front"]["intrinsics"], intrinsics)
        np.testing.assert_array_equal(calibration["front"]["extrinsics"], extrinsics)
        assert (calibration["front"]["height"], calibration["front"]["width"]) == (64, 64)
    finally:
        env.close()
    env = make_bridge_env(address=server.address, keys_dir=str(keys_dir))  # no file: no geometry
    try:
        assert env.unwrapped.reward_calibration() is None
    finally:
        env.close()

    front = good["front"]
    cases = {
        "absent": (None, r"calibration file .*absent.json: no such file$"),
        "not json": ("{front", r"calibration file .*: not JSON"),
        "camera": ({"wrist": front}, r"camera 'wrist' is not one of the server's cameras \['front'\]$"),
        "no field": (
            {"front": {k: v for k, v in front.items() if k != "intrinsics"}},
            r"'front': no intrinsics$",
        ),
        "not numbers": (
            {"front": {**front, "intrinsics": "eye"}},
            r"'front': intrinsics is not a matrix of numbers$",
        ),
        "shape": ({"front": {**front, "extrinsics": intrinsics}}, r"extrinsics must be a finite 4x4 matrix$"),
        "size": (
            {"front": {**front, "height": 84, "width": 84}},
            r"84, 84, but the server sends 64x64 frames$",
        ),
    }
    for name, (content, message) in cases.items():
        bad = tmp_path / ("absent.json" if content is None else f"{name}.json")
        if content is not None:
            bad.write_text(content if isinstance(content, str) else json.dumps(content))
        with pytest.raises(ValueError, match=message) as caught:
            make_bridge_env(address=server.address, keys_dir=str(keys_dir), calibration=str(bad))
        assert "\n" not in str(caught.value), name
