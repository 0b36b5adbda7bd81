"""KAGI: waypoint progress by hand, the monotone index, shaping strictly below success, one proposal
per episode, the VLM proposer's JSON validation and fallback, and lifting pixels to 3D."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from rl.rewards import RewardConfig
from rl.rewards.base import CameraCalibration, LabelInput, RewardModelConfigError, RewardModelError
from rl.rewards.kagi import (
    DRAWN_SIZE,
    KagiRewardModel,
    KeypointAnswerError,
    OracleProposer,
    advance,
    build_oracle,
    build_vlm,
    lift_pixels,
    parse_answer,
    project_points,
)
from tests.test_vlm import completion, server  # noqa: F401  (the chat server fixture)

CPU = torch.device("cpu")


def kagi_cfg(**changes) -> RewardConfig:
    return replace(
        RewardConfig(name="kagi_oracle", base="env", shaping_scale=0.5, reach_radius=0.03, timeout_s=2.0),
        **changes,
    )


def rows(eef, cube, episode: int = 0, steps=None, frames=None) -> LabelInput:
    eef, cube = torch.tensor(eef, dtype=torch.float32), torch.tensor(cube, dtype=torch.float32)
    n = len(eef)
    steps = torch.arange(n) if steps is None else torch.tensor(steps)
    return LabelInput(frames or {}, {"eef_pos": eef, "cube_pos": cube}, torch.full((n,), episode), steps)


def test_progress_along_a_small_path_by_hand():
    points, start = np.array([[0.0, 0, 1], [1, 0, 1]]), np.zeros(3)
    path = [[0, 0, 0], [0, 0, 0.5], [0, 0, 0.95], [0.5, 0, 1], [0, 0, 0], [0.95, 0, 1]]
    reached, seen = 0, []
    for point in path:
        reached, progress = advance(points, start, reached, np.array(point), radius=0.1)
        seen.append((reached, round(progress, 6)))
    # w0 reached at 0.95 (0.05 < 0.1); going back keeps the index; both reached: 1
    assert seen == [(0, 0.0), (0, 0.25), (1, 0.5), (1, 0.75), (1, 0.5), (2, 1.0)]


# Lift's oracle: cube at z 0.82 -> waypoints above (0.92), the cube (0.82), lifted (0.92); N = 3, c = 0.5.
EEF = [[0, 0, 1.02], [0, 0, 0.97], [0, 0, 0.92], [0, 0, 0.86], [0, 0, 0.82], [0, 0, 0.87], [0, 0, 0.90]]
CUBE = [[0, 0, 0.82]] * 5 + [[0, 0, 0.835], [0, 0, 0.86]]  # lifted past 0.84 (success) on the last row
PROGRESS = [0.0, 1 / 6, 1 / 3, (2 - 0.4) / 3, 2 / 3, (3 - 0.5) / 3, 1.0]
REWARD = [0.5 * p for p in PROGRESS[:-1]] + [1.0]


def test_the_oracle_reward_of_an_episode_by_hand_in_any_batching():
    model = build_oracle(kagi_cfg(), CPU)
    assert set(model.state_keys) == {"cube_pos", "eef_pos"} and model.cameras == ()
    whole = model.label(rows(EEF, CUBE))
    assert np.allclose(whole.info["progress"], PROGRESS, atol=1e-6) and np.allclose(
        whole.reward, REWARD, atol=1e-6
    )
    assert whole.success.tolist() == [False] * 6 + [True] and torch.equal(whole.done, whole.success)
    assert whole.info["waypoints_reached"].tolist() == [0, 0, 1, 1, 2, 2, 3]
    split = build_oracle(kagi_cfg(), CPU)
    order = [2, 0, 1]  # shuffled within a batch, then the rest in a second batch
    first = split.label(rows([EEF[i] for i in order], [CUBE[i] for i in order], steps=order))
    second = split.label(rows(EEF[3:], CUBE[3:], steps=range(3, 7)))
    assert np.allclose(torch.cat([first.reward[[1, 2, 0]], second.reward]), REWARD, atol=1e-6)


def test_shaping_stays_strictly_below_a_success():
    generator = np.random.default_rng(0)
    model = build_oracle(kagi_cfg(shaping_scale=0.9, success_reward=2.0), CPU)
    for episode in range(20):
        eef = 0.82 + generator.uniform(-0.1, 0.1, (30, 3))
        cube = np.tile([0.0, 0.0, 0.82], (30, 1))
        eef[-1] = [0, 0, 0.92]  # every waypoint reached on the way for some episodes: progress 1
        labels = model.label(rows(eef, cube, episode=episode))
        assert float(labels.reward.max()) <= 0.9 * 2.0 < 2.0 and not labels.success.any()
    with pytest.raises(RewardModelConfigError, match="shaping_scale"):
        build_oracle(kagi_cfg(shaping_scale=1.0), CPU)


class CountingOracle(OracleProposer):
    def __init__(self) -> None:
        self.calls = 0

    def propose(self, frames, state):
        self.calls += 1
        return super().propose(frames, state)


def test_one_proposal_per_episode_and_rows_without_one_wait():
    proposer = CountingOracle()
    model = KagiRewardModel(kagi_cfg(), proposer, base=None)
    for start in range(0, 7, 3):  # two episodes, labelled in three batches
        for episode in (5, 6):
            model.label(
                rows(
                    EEF[start : start + 3], CUBE[start : start + 3], episode, range(start, min(start + 3, 7))
                )
            )
    assert proposer.calls == 2
    with pytest.raises(RewardModelError, match="episode 7 has no waypoints"):
        model.label(rows(EEF[3:5], CUBE[3:5], episode=7, steps=[3, 4]))
    model.label(rows(EEF[:2], CUBE[:2], episode=8))
    with pytest.raises(RewardModelError, match="step 3 waits for step 2"):
        model.label(rows(EEF[3:4], CUBE[3:4], episode=8, steps=[3]))
    assert proposer.calls == 3
    again = model.relabel_episode(rows(EEF, CUBE, episode=5))
    assert proposer.calls == 3 and np.allclose(again.reward, REWARD, atol=1e-6)
    model.relabel_episode(rows(EEF, CUBE, episode=5), repropose=True)
    assert proposer.calls == 4
    with pytest.raises(ValueError, match="one episode's rows in step order"):
        model.relabel_episode(rows(EEF[1:], CUBE[1:], episode=5, steps=range(1, 7)))


def test_a_restored_model_continues_its_episodes_without_asking_again():
    first = KagiRewardModel(kagi_cfg(), CountingOracle(), base=None)
    head = first.label(rows(EEF[:4], CUBE[:4]))
    proposer = CountingOracle()
    resumed = KagiRewardModel(kagi_cfg(), proposer, base=None)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    tail = resumed.label(rows(EEF[4:], CUBE[4:], steps=range(4, 7)))
    assert proposer.calls == 0 and np.allclose(torch.cat([head.reward, tail.reward]), REWARD, atol=1e-6)


def test_the_sparse_part_from_a_vlm_base_model(server):  # noqa: F811
    server.answers = [(200, completion("no"), 0.0)] * 6 + [(200, completion("yes"), 0.0)]
    model = build_oracle(kagi_cfg(base="vlm_http", url=server.url), CPU)
    assert model.cameras == ("agentview",)
    frames = {"agentview": torch.zeros((7, 8, 8, 3), dtype=torch.uint8)}
    labels = model.label(
        rows(EEF, [[0, 0, 0.82]] * 7, frames=frames)
    )  # the cube never rises: the VLM decides
    assert np.allclose(labels.reward, REWARD, atol=1e-6) and labels.info["p_success"].tolist() == [
        0.0
    ] * 6 + [1.0]
    assert model.model_hash != build_oracle(kagi_cfg(), CPU).model_hash
    assert model.prompt_hash is not None and build_oracle(kagi_cfg(), CPU).prompt_hash is None
    model.bottom_up = True  # the loop says the frames are stored bottom-up: the VLM base flips them
    assert model.base.bottom_up and model.bottom_up


# --- the VLM proposer: a camera 1 m above the table looking down; 20x20 frames, 5x5 grid of 4 px cells ---

ANSWER = {
    "grasp": {"cell": 13, "height": 0.0},
    "waypoints": [{"cell": 1, "height": 0.1}],
    "target": {"cell": 13, "height": 0.2},
}
LIFTED = [
    [0.0, 0.0, 0.0],
    [-0.4, 0.4, 0.1],
    [0.0, 0.0, 0.2],
]  # cell 1's centre (2, 2) px: ((2-10)/20, -(2-10)/20)


def looking_down(bottom_up: bool) -> CameraCalibration:
    """Camera-to-world with OpenCV axes: x -> world x, y (image down) -> world -y, z (forward) -> world -z."""
    extrinsics = torch.tensor(
        [[1.0, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 1], [0, 0, 0, 1]], dtype=torch.float64
    )
    fy, cy = (-20.0, 20 - 10.0) if bottom_up else (20.0, 10.0)
    intrinsics = torch.tensor([[20.0, 0, 10], [0, fy, cy], [0, 0, 1]], dtype=torch.float64)
    return CameraCalibration(intrinsics, extrinsics, 20, 20)


def vlm_rows(upright: np.ndarray, bottom_up: bool, episode: int = 0) -> LabelInput:
    image = upright[::-1] if bottom_up else upright
    frames = {
        "agentview": torch.from_numpy(np.ascontiguousarray(np.stack([image] * 3))),
        "agentview_depth": torch.ones((3, 20, 20)),
    }
    eef = [[0, 0, 0.3], [0, 0, 0.2], [0, 0, 0.1]]
    return rows(eef, [[0, 0, 0.82]] * 3, episode=episode, frames=frames)


@pytest.mark.parametrize("bottom_up", [False, True])
def test_the_vlm_proposer_lifts_its_cells_to_3d_once_per_episode(server, bottom_up):  # noqa: F811
    server.answers = [(200, completion("```json\n" + json.dumps(ANSWER) + "\n```"), 0.0)]
    model = build_vlm(kagi_cfg(name="kagi_vlm", url=server.url), CPU)
    assert model.cameras == ("agentview", "agentview_depth")
    upright = np.zeros((20, 20, 3), np.uint8)
    upright[-4:] = [255, 0, 0]  # the bottom of the scene is red
    with pytest.raises(RewardModelError, match="not calibrated"):
        model.label(vlm_rows(upright, bottom_up))
    model.set_calibration({"agentview": looking_down(bottom_up)})
    labels = model.label(vlm_rows(upright, bottom_up))
    assert np.allclose(model.episodes[0].waypoints, LIFTED, atol=1e-9)
    # the start (0, 0, 0.3) -> w0 (0, 0, 0): progress (0 + 1 - 0.3 / 0.3) / 3, then 0.1 / 0.3 nearer ...
    assert np.allclose(labels.info["progress"], [0.0, (1 - 0.2 / 0.3) / 3, (1 - 0.1 / 0.3) / 3], atol=1e-6)
    model.label(vlm_rows(upright, bottom_up))  # the same episode again: no new question
    posts = server.posts()
    assert len(posts) == 1
    content = posts[0]["body"]["messages"][0]["content"]
    assert "lift the red cube off the table" in content[1]["text"] and "1 to 25" in content[1]["text"]
    sent = np.asarray(
        Image.open(io.BytesIO(base64.b64decode(content[0]["image_url"]["url"].split(",", 1)[1])))
    )
    assert sent.shape[0] >= DRAWN_SIZE and sent.shape[0] == sent.shape[1]
    assert sent[-3, sent.shape[1] // 2 + 5].tolist() == [255, 0, 0] and sent[3, -3].tolist() == [
        0,
        0,
        0,
    ]  # upright


@pytest.mark.parametrize(
    "answer",
    [
        "I think cell 13",
        json.dumps(ANSWER | {"target": {"cell": 26, "height": 0.2}}),
        json.dumps(ANSWER | {"grasp": 13}),
    ],
)
def test_a_bad_keypoint_answer_falls_back_to_no_shaping(server, answer):  # noqa: F811
    server.answers = [(200, completion(answer), 0.0)]
    model = build_vlm(kagi_cfg(name="kagi_vlm", url=server.url), CPU)
    model.set_calibration({"agentview": looking_down(False)})
    labels = model.label(vlm_rows(np.zeros((20, 20, 3), np.uint8), False))
    assert labels.reward.tolist() == [0.0] * 3 and labels.info["shaped"].tolist() == [False] * 3
    model.label(vlm_rows(np.zeros((20, 20, 3), np.uint8), False))
    assert len(server.posts()) == 1  # the fallback is remembered: asked once per episode


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ("not json", "not JSON"),
        (ANSWER | {"extra": 1}, "exactly grasp, waypoints, target"),
        (ANSWER | {"grasp": {"cell": 0, "height": 0.0}}, "not on the grid"),
        (ANSWER | {"grasp": {"cell": True, "height": 0.0}}, "not on the grid"),
        (ANSWER | {"grasp": {"cell": 3.0, "height": 0.0}}, "not on the grid"),
        (ANSWER | {"target": {"cell": 3, "height": 0.9}}, "height"),
        (ANSWER | {"target": {"cell": 3}}, "must be {cell, height}"),
        (ANSWER | {"waypoints": [ANSWER["grasp"]] * 5}, "at most 4"),
    ],
)
def test_keypoint_answers_are_validated_strictly(answer, message):
    text = answer if isinstance(answer, str) else json.dumps(answer)
    with pytest.raises(KeypointAnswerError, match=message):
        parse_answer(text, cells=25)


def test_a_good_keypoint_answer_parses_in_order():
    assert parse_answer(json.dumps(ANSWER), cells=25) == [(13, 0.0), (1, 0.1), (13, 0.2)]


def test_lifting_a_known_point_and_the_round_trip():
    camera = looking_down(False)
    assert np.allclose(lift_pixels(np.array([[15.0, 5.0]]), np.array([2.0]), camera), [[0.5, 0.5, -1.0]])
    pixels, depth = project_points(np.array([[0.5, 0.5, -1.0]]), camera)
    assert np.allclose(pixels, [[15.0, 5.0]]) and np.allclose(depth, [2.0])
    generator = np.random.default_rng(1)
    rotation, _ = np.linalg.qr(generator.normal(size=(3, 3)))
    rotation *= np.sign(np.linalg.det(rotation))
    extrinsics = np.eye(4)
    extrinsics[:3, :3], extrinsics[:3, 3] = rotation, [0.3, -0.2, 1.5]
    tilted = CameraCalibration(
        torch.tensor([[60.0, 0, 42], [0, -60, 42], [0, 0, 1]]), torch.from_numpy(extrinsics), 84, 84
    )
    pixels = generator.uniform(0, 84, (10, 2))
    metres = generator.uniform(0.5, 3.0, 10)
    back, depth = project_points(lift_pixels(pixels, metres, tilted), tilted)
    assert np.allclose(back, pixels) and np.allclose(depth, metres)
