"""KAGI (spec §2): dense waypoint-progress shaping on top of a sparse success model.

Once per episode, on its first row (``step == 0``), a keypoint proposer gives a sequence of 3D
waypoints ending at the target; every row of the episode is then rewarded

    r = success_reward                                if the success model says success
    r = shaping_scale * success_reward * progress     otherwise,

with ``progress`` the spec's §2.3 waypoint progress of the tracked point (``reward.tracked_key``,
the end effector by default) and ``shaping_scale`` (c) < 1, so shaping stays strictly below a success.

Progress (spec §2.3, 0-based): waypoints w_0..w_{N-1}; the tracked point p_t; k_t the number of
waypoints reached so far, monotone within an episode: waypoint k counts as reached on the first row
where ||p_t - w_k|| < reach_radius (several at once if they are that close). Then
    progress_t = (k_t + 1 - min(1, ||p_t - w_k|| / ||w_k - w_{k-1}||)) / N   for k_t < N,
    progress_t = 1                                                             for k_t = N,
where w_{-1} is the tracked point on the episode's first row (the spec leaves the first segment's
start open) and a segment shorter than reach_radius counts as reach_radius long (no division by 0).
For k_t < N the distance is at least reach_radius, so progress < 1 until every waypoint is reached.

Proposers:
- ``OracleProposer`` (sim, no VLM): from the object's pose on the first row (``cube_pos``), Lift's
  recipe: above the cube (+APPROACH_HEIGHT), the cube (the grasp keypoint), lifted (+LIFT_HEIGHT).
- ``VlmProposer``: the first camera's upright frame with a numbered grid drawn on it, the
  instruction, and ``prompts/kagi_keypoints_v1.txt``; the VLM answers JSON naming grid cells (and a
  height above the surface seen there) for the grasp keypoint, waypoints and target, asked through
  ``vlm_http.ChatClient``. Each cell's centre is lifted to 3D with the camera's depth and calibration
  (``set_calibration``, given by the loop from the env). A bad answer (not that JSON, a cell off the grid,
  no depth there) is logged in one line and the episode gets **no shaping** (only the sparse
  success): decided over falling back to the oracle, which would leak privileged sim state into a VLM
  experiment and does not exist on a real cell. A server that is down raises ``RewardModelError``.

Camera convention (``CameraCalibration``, as ``envs/robosuite_adapter.reward_calibration`` gives it):
extrinsics camera-to-world with OpenCV axes (x right, y down, z forward; robosuite's
``get_camera_extrinsic_matrix``, which corrects MuJoCo's OpenGL camera frame), intrinsics mapping
camera coordinates onto (column, row) of the frame *as stored*; frames stored bottom-up (robosuite's
OpenGL row order) have the row focal length negated, which is how the VLM proposer knows to flip the
image upright before drawing the grid. Depth is the camera-frame z in metres (``<camera>_depth``).

The sparse success: the model ``reward.base`` names, built by ``build_reward_model``; with
``base=env``, Lift's own success check on the named state (cube z above the table top + 4 cm, as
robosuite's ``Lift._check_success``), because KAGI needs a success signal per row.

State: proposals and reached-waypoint counts are kept per episode id (ids must be unique within a
run), saved and restored with ``state_dict``/``load_state_dict`` (the run's checkpoint). A row whose
episode has no proposal yet (its first row not labelled) or whose predecessor row is not labelled
raises ``RewardModelError``: it waits, never a guess.
``relabel_episode`` recomputes one whole episode in order (reusing or re-asking its waypoints).
"""

from __future__ import annotations

import abc
import copy
import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rl.rewards.base import (
    CameraCalibration,
    LabelInput,
    Labels,
    RewardModel,
    RewardModelConfigError,
    RewardModelError,
)
from rl.rewards.prompts import load_prompt
from rl.rewards.vlm_http import ChatClient, png_data_url

log = logging.getLogger(__name__)

APPROACH_HEIGHT = 0.10
"""Oracle: the pre-grasp waypoint this far above the cube (metres)."""
LIFT_HEIGHT = 0.10
"""Oracle: the target this far above the cube's first position (Lift succeeds at about 2 cm)."""
LIFT_TABLE_Z = 0.8
"""robosuite Lift's table top height (``table_offset``); success when the cube is 4 cm above it."""
LIFT_SUCCESS_MARGIN = 0.04
KEYPOINT_PROMPT = "rl/rewards/prompts/kagi_keypoints_v1.txt"
"""The VLM proposer's question (a new version is a new file; its text is in the model hash)."""
GRID = 5
"""The VLM proposer's grid: GRID x GRID cells numbered 1..GRID**2 row by row from the top left."""
MAX_WAYPOINTS = 4
MAX_HEIGHT = 0.5
DRAWN_SIZE = 336
"""The proposer's image is enlarged (nearest pixel) to at least this many pixels a side before
the grid is drawn, so the numbers stay legible to the VLM on 84-pixel frames."""


# --- geometry ---------------------------------------------------------------------------------


def lift_pixels(pixels: np.ndarray, depth: np.ndarray, camera: CameraCalibration) -> np.ndarray:
    """(n, 2) (column, row) pixel coordinates of the stored frame and (n,) camera-frame depths in
    metres -> (n, 3) world points."""
    intrinsics = camera.intrinsics.double().numpy()
    extrinsics = camera.extrinsics.double().numpy()
    homogeneous = np.concatenate([pixels, np.ones((len(pixels), 1))], axis=1)
    in_camera = (np.linalg.inv(intrinsics) @ homogeneous.T).T * depth[:, None]
    return in_camera @ extrinsics[:3, :3].T + extrinsics[:3, 3]


def project_points(points: np.ndarray, camera: CameraCalibration) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3) world points -> (n, 2) (column, row) pixel coordinates and (n,) depths (the inverse
    of ``lift_pixels``)."""
    intrinsics = camera.intrinsics.double().numpy()
    extrinsics = camera.extrinsics.double().numpy()
    in_camera = (points - extrinsics[:3, 3]) @ extrinsics[:3, :3]
    depth = in_camera[:, 2]
    return (in_camera @ intrinsics.T)[:, :2] / depth[:, None], depth


# --- progress ---------------------------------------------------------------------------------


def advance(
    points: np.ndarray, start: np.ndarray, reached: int, tracked: np.ndarray, radius: float
) -> tuple[int, float]:
    """One row of the progress recursion (module docstring): the reached count after ``tracked``
    (given ``reached`` before it) and the row's progress in [0, 1]."""
    count = len(points)
    while reached < count and np.linalg.norm(tracked - points[reached]) < radius:
        reached += 1
    if reached == count:
        return reached, 1.0
    previous = points[reached - 1] if reached else start
    segment = max(float(np.linalg.norm(points[reached] - previous)), radius)
    distance = float(np.linalg.norm(tracked - points[reached]))
    return reached, (reached + 1 - min(1.0, distance / segment)) / count


# --- proposers --------------------------------------------------------------------------------


class KeypointAnswerError(ValueError):
    """A proposer's answer cannot be used (one line saying why); the episode falls back to no shaping."""


class KeypointProposer(abc.ABC):
    """Waypoints (N, 3) in the world frame, target last, from an episode's first row."""

    cameras: tuple[str, ...] = ()
    state_keys: tuple[str, ...] = ()

    @abc.abstractmethod
    def propose(self, frames: dict[str, np.ndarray], state: dict[str, np.ndarray]) -> np.ndarray:
        """The waypoints for the episode whose first row this is; ``KeypointAnswerError`` when the
        answer is unusable, ``RewardModelError`` when it cannot be had now."""

    @abc.abstractmethod
    def identity(self) -> dict[str, Any]:
        """What decides the waypoints."""


class OracleProposer(KeypointProposer):
    """Lift's waypoints from the cube's position (module docstring)."""

    state_keys = ("cube_pos",)

    def propose(self, frames: dict[str, np.ndarray], state: dict[str, np.ndarray]) -> np.ndarray:
        cube = state["cube_pos"].astype(np.float64)[:3]
        up = np.array([0.0, 0.0, 1.0])
        return np.stack([cube + APPROACH_HEIGHT * up, cube, cube + LIFT_HEIGHT * up])

    def identity(self) -> dict[str, Any]:
        return {"proposer": "oracle-lift", "approach": APPROACH_HEIGHT, "lift": LIFT_HEIGHT}


DIGITS = {
    "0": ["111", "101", "101", "101", "111"],
    "1": ["010", "110", "010", "010", "111"],
    "2": ["111", "001", "111", "100", "111"],
    "3": ["111", "001", "111", "001", "111"],
    "4": ["101", "101", "111", "001", "001"],
    "5": ["111", "100", "111", "001", "111"],
    "6": ["111", "100", "111", "101", "111"],
    "7": ["111", "001", "010", "010", "010"],
    "8": ["111", "101", "111", "101", "111"],
    "9": ["111", "101", "111", "001", "111"],
}
"""A 3x5 pixel font, enough to number grid cells without a font file."""


def draw_grid(image: np.ndarray, grid: int) -> np.ndarray:
    """An upright (H, W, 3) uint8 image enlarged to at least ``DRAWN_SIZE`` a side, with white grid
    lines and each cell's number (1.., row by row from the top left) in black on white at its corner."""
    scale = max(1, math.ceil(DRAWN_SIZE / min(image.shape[:2])))
    drawn = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1).copy()
    height, width = drawn.shape[:2]
    rows = np.linspace(0, height, grid + 1).astype(int)
    cols = np.linspace(0, width, grid + 1).astype(int)
    for r in rows[1:-1]:
        drawn[r - 1 : r + 1] = 255
    for c in cols[1:-1]:
        drawn[:, c - 1 : c + 1] = 255
    pixel = max(1, (height // grid) // 20)
    for cell in range(grid * grid):
        top, left = rows[cell // grid] + 2, cols[cell % grid] + 2
        text = str(cell + 1)
        box_w, box_h = (4 * len(text) + 1) * pixel, 7 * pixel
        drawn[top : top + box_h, left : left + box_w] = 255
        for i, digit in enumerate(text):
            glyph = np.array([[bit == "1" for bit in row] for row in DIGITS[digit]])
            glyph = np.repeat(np.repeat(glyph, pixel, axis=0), pixel, axis=1)
            y, x = top + pixel, left + (1 + 4 * i) * pixel
            drawn[y : y + glyph.shape[0], x : x + glyph.shape[1]][glyph] = 0
    return drawn


def parse_answer(text: str, cells: int) -> list[tuple[int, float]]:
    """The VLM's JSON answer -> [(cell, height)] for grasp, waypoints..., target, validated strictly
    (one optional ``` fence around the JSON is allowed, as chat models add it)."""
    body = text.strip()
    if body.startswith("```"):
        body = body.removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        answer = json.loads(body)
    except ValueError:
        raise KeypointAnswerError(f"keypoint answer is not JSON: {text[:80]!r}") from None
    if not isinstance(answer, dict) or set(answer) != {"grasp", "waypoints", "target"}:
        raise KeypointAnswerError(f"keypoint answer needs exactly grasp, waypoints, target: {text[:80]!r}")
    if not isinstance(answer["waypoints"], list) or len(answer["waypoints"]) > MAX_WAYPOINTS:
        raise KeypointAnswerError(f"keypoint answer: waypoints must be a list of at most {MAX_WAYPOINTS}")
    points = []
    for point in [answer["grasp"], *answer["waypoints"], answer["target"]]:
        if not isinstance(point, dict) or set(point) != {"cell", "height"}:
            raise KeypointAnswerError(f"keypoint answer: a point must be {{cell, height}}, got {point!r}")
        cell, height = point["cell"], point["height"]
        if isinstance(cell, bool) or not isinstance(cell, int) or not 1 <= cell <= cells:
            raise KeypointAnswerError(f"keypoint answer: cell {cell!r} is not on the grid 1..{cells}")
        if isinstance(height, bool) or not isinstance(height, int | float) or not 0 <= height <= MAX_HEIGHT:
            raise KeypointAnswerError(f"keypoint answer: height {height!r} is not in [0, {MAX_HEIGHT}] m")
        points.append((cell, float(height)))
    return points


class VlmProposer(KeypointProposer):
    """Grid-marked image + instruction -> JSON cells -> 3D waypoints (module docstring)."""

    def __init__(self, client: ChatClient, camera: str, instruction: str) -> None:
        self.client, self.camera = client, camera
        self.cameras = (camera, f"{camera}_depth")
        self.question = load_prompt(
            KEYPOINT_PROMPT, instruction=instruction, cells=str(GRID * GRID), max_waypoints=str(MAX_WAYPOINTS)
        )
        self.calibration: CameraCalibration | None = None

    def set_calibration(self, calibrations: dict[str, CameraCalibration]) -> None:
        if self.camera not in calibrations:
            raise RewardModelConfigError(f"kagi_vlm: no calibration for camera {self.camera!r}")
        self.calibration = calibrations[self.camera]

    def propose(self, frames: dict[str, np.ndarray], state: dict[str, np.ndarray]) -> np.ndarray:
        if self.calibration is None:
            raise RewardModelError(f"kagi_vlm: camera {self.camera!r} is not calibrated yet")
        image, depth = frames[self.camera], frames[f"{self.camera}_depth"]
        bottom_up = float(self.calibration.intrinsics[1, 1]) < 0
        content = [
            {
                "type": "image_url",
                "image_url": {"url": png_data_url(draw_grid(image[::-1] if bottom_up else image, GRID))},
            },
            {"type": "text", "text": self.question},
        ]
        choice = self.client.complete(content, max_tokens=300, logprobs=False)
        return self.lift_cells(parse_answer(choice["message"]["content"], GRID * GRID), depth, bottom_up)

    def lift_cells(self, points: list[tuple[int, float]], depth: np.ndarray, bottom_up: bool) -> np.ndarray:
        """Each cell's centre (upright image) -> the stored frame's pixel -> 3D, raised by its height."""
        height, width = depth.shape
        cells = np.array([cell - 1 for cell, _ in points])
        u = (cells % GRID + 0.5) * width / GRID
        v = (cells // GRID + 0.5) * height / GRID
        v = height - v if bottom_up else v
        metres = depth[np.minimum(v.astype(int), height - 1), np.minimum(u.astype(int), width - 1)].astype(
            np.float64
        )
        bad = [cell + 1 for cell, d in zip(cells, metres, strict=True) if not (np.isfinite(d) and d > 0)]
        if bad:
            raise KeypointAnswerError(f"keypoint answer: no valid depth in cells {bad}")
        assert self.calibration is not None
        world = lift_pixels(np.stack([u, v], axis=1), metres, self.calibration)
        world[:, 2] += [h for _, h in points]
        return world

    def identity(self) -> dict[str, Any]:
        return {
            "proposer": "vlm",
            "question": self.question,
            "model": self.client.model,
            "grid": GRID,
            "drawn_size": DRAWN_SIZE,
        }


# --- the reward model -------------------------------------------------------------------------


@dataclass
class EpisodeTrack:
    """One episode's waypoints (None: no shaping, the proposer's answer was unusable), the tracked
    point on its first row, and the reached count after each labelled row."""

    waypoints: np.ndarray | None
    start: np.ndarray
    reached: list[int] = field(default_factory=list)


def lift_success(state: dict[str, torch.Tensor]) -> torch.Tensor:
    """robosuite Lift's success check on the named state (``base=env``)."""
    return state["cube_pos"][:, 2] > LIFT_TABLE_Z + LIFT_SUCCESS_MARGIN


class KagiRewardModel(RewardModel):
    """Sparse success from ``base`` (or Lift's state check), dense waypoint progress below it."""

    def __init__(self, cfg: Any, proposer: KeypointProposer, base: RewardModel | None) -> None:
        if not 0.0 <= cfg.shaping_scale < 1.0:
            raise RewardModelConfigError(f"reward.shaping_scale must be in [0, 1), got {cfg.shaping_scale}")
        if cfg.reach_radius <= 0 or cfg.success_reward <= 0:
            raise RewardModelConfigError("reward.reach_radius and reward.success_reward must be > 0")
        self.proposer, self.base = proposer, base
        self.scale, self.radius = float(cfg.shaping_scale), float(cfg.reach_radius)
        self.success_reward, self.tracked_key = float(cfg.success_reward), cfg.tracked_key
        base_cameras = base.cameras if base is not None else ()
        base_state = base.state_keys if base is not None else ("cube_pos",)
        self.cameras = tuple(dict.fromkeys((*base_cameras, *proposer.cameras)))
        self.state_keys = tuple(dict.fromkeys((*base_state, cfg.tracked_key, *proposer.state_keys)))
        self.episodes: dict[int, EpisodeTrack] = {}

    def set_calibration(self, calibrations: dict[str, CameraCalibration]) -> None:
        """The reward cameras' calibration, from the env once it is built (the VLM proposer needs it)."""
        if isinstance(self.proposer, VlmProposer):
            self.proposer.set_calibration(calibrations)

    @property
    def bottom_up(self) -> bool:
        """Whether stored frames are bottom-up, for a VLM base model (``YesNoRewardModel.bottom_up``);
        the VLM proposer reads it from its camera's calibration instead."""
        return bool(getattr(self.base, "bottom_up", False))

    @bottom_up.setter
    def bottom_up(self, value: bool) -> None:
        if hasattr(self.base, "bottom_up"):
            self.base.bottom_up = value

    @property
    def prompt_hash(self) -> str | None:
        """16 hex digits of the questions asked (the VLM base's and the VLM proposer's), recorded
        with relabelled rows (``relabel.prompt_hash``); None when no VLM is asked."""
        asked = [getattr(part, "question", None) for part in (self.base, self.proposer)]
        questions = [q for q in asked if isinstance(q, str)]
        return hashlib.sha256("\0".join(questions).encode()).hexdigest()[:16] if questions else None

    def label(self, batch: LabelInput) -> Labels:
        missing = [key for key in self.state_keys if key not in batch.state] + [
            camera for camera in self.proposer.cameras if camera not in batch.frames
        ]
        if missing:
            raise RewardModelConfigError(
                f"kagi: the batch lacks {missing} (it has {sorted(batch.state)}, {sorted(batch.frames)})"
            )
        if self.base is not None:
            sparse = self.base.label(batch)
            success, info = sparse.success.cpu(), dict(sparse.info)
        else:
            success, info = lift_success(batch.state).cpu(), {}
        progress, reached, shaped = self._progress(batch)
        dense = self.scale * self.success_reward * progress
        reward = torch.where(success, torch.full_like(dense, self.success_reward), dense)
        info |= {"progress": progress, "waypoints_reached": reached, "shaped": shaped}
        return Labels(reward=reward, success=success, done=success.clone(), info=info)

    def _progress(self, batch: LabelInput) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        episodes, steps = batch.episode.cpu().numpy(), batch.step.cpu().numpy()
        tracked = batch.state[self.tracked_key].cpu().double().numpy()
        progress, reached, shaped = (
            np.zeros(len(batch)),
            np.zeros(len(batch), np.int64),
            np.zeros(len(batch), bool),
        )
        for row in np.lexsort((steps, episodes)):
            episode, step = int(episodes[row]), int(steps[row])
            if step == 0 and episode not in self.episodes:
                self.episodes[episode] = self._propose(batch, row, tracked[row].copy())
            track = self.episodes.get(episode)
            if track is None:
                raise RewardModelError(
                    f"kagi: episode {episode} has no waypoints yet (its first row is not labelled)"
                )
            if step > len(track.reached):
                raise RewardModelError(
                    f"kagi: episode {episode} step {step} waits for step {len(track.reached)}"
                )
            if track.waypoints is None:
                track.reached[step:] = [0]
                continue
            before = track.reached[step - 1] if step else 0
            count, progress[row] = advance(track.waypoints, track.start, before, tracked[row], self.radius)
            track.reached[step:] = [count]
            reached[row], shaped[row] = count, True
        return (
            torch.tensor(progress, dtype=torch.float32),
            torch.from_numpy(reached),
            torch.from_numpy(shaped),
        )

    def _propose(self, batch: LabelInput, row: int, start: np.ndarray) -> EpisodeTrack:
        frames = {camera: batch.frames[camera][row].cpu().numpy() for camera in self.proposer.cameras}
        state = {key: batch.state[key][row].cpu().numpy() for key in self.proposer.state_keys}
        try:
            waypoints = self.proposer.propose(frames, state)
        except KeypointAnswerError as exc:
            log.warning("kagi: episode %d gets no shaping: %s", int(batch.episode[row]), exc)
            return EpisodeTrack(None, start)
        return EpisodeTrack(waypoints, start)

    def relabel_episode(self, batch: LabelInput, repropose: bool = False) -> Labels:
        """Labels for one whole episode, its rows in step order from 0: its progress recomputed from
        the start, its waypoints reused (or asked again with ``repropose``)."""
        episodes = batch.episode.unique()
        if len(episodes) != 1 or not torch.equal(batch.step.cpu(), torch.arange(len(batch))):
            raise ValueError(
                "kagi.relabel_episode: the batch must be one episode's rows in step order from 0"
            )
        episode = int(episodes[0])
        track = self.episodes.pop(episode, None)
        if track is not None and not repropose:
            self.episodes[episode] = EpisodeTrack(track.waypoints, track.start)
        return self.label(batch)

    def state_dict(self) -> dict[int, dict[str, torch.Tensor | None]]:
        """Every episode's waypoints, start and reached counts as tensors (loadable with
        ``weights_only=True``), for the run's checkpoint: a resumed run continues its episodes without
        asking the proposer again."""
        return {
            episode: {
                "waypoints": None if t.waypoints is None else torch.from_numpy(t.waypoints),
                "start": torch.from_numpy(t.start),
                "reached": torch.tensor(t.reached, dtype=torch.int8),
            }
            for episode, t in self.episodes.items()
        }

    def load_state_dict(self, state: dict[int, dict[str, torch.Tensor | None]]) -> None:
        self.episodes = {
            int(episode): EpisodeTrack(
                None if t["waypoints"] is None else t["waypoints"].double().numpy(),
                t["start"].double().numpy(),
                t["reached"].tolist(),
            )
            for episode, t in state.items()
        }

    def identity(self) -> bytes:
        base = (
            self.base.model_hash
            if self.base is not None
            else f"lift-cube-z>{LIFT_TABLE_Z + LIFT_SUCCESS_MARGIN}"
        )
        decided_by = {
            "kind": "kagi",
            "shaping_scale": self.scale,
            "reach_radius": self.radius,
            "success_reward": self.success_reward,
            "tracked_key": self.tracked_key,
            "base": base,
        } | self.proposer.identity()
        return json.dumps(decided_by, sort_keys=True).encode()

    def close(self) -> None:
        if self.base is not None:
            self.base.close()


def build_base(cfg: Any, device: torch.device) -> RewardModel | None:
    """The sparse success model ``reward.base`` names (None: Lift's state check)."""
    from rl.rewards import build_reward_model

    if cfg.base not in ("env", "classifier", "vlm_http", "vlm_local"):
        raise RewardModelConfigError(
            f"reward.base={cfg.base!r}: not one of env, classifier, vlm_http, vlm_local"
        )
    base_cfg = copy.deepcopy(cfg)
    base_cfg.name = cfg.base
    return build_reward_model(base_cfg, device)


def build_oracle(cfg: Any, device: torch.device) -> KagiRewardModel:
    """``reward=kagi_oracle``: waypoints from the sim's object poses."""
    return KagiRewardModel(cfg, OracleProposer(), build_base(cfg, device))


def build_vlm(cfg: Any, device: torch.device) -> KagiRewardModel:
    """``reward=kagi_vlm``: waypoints from a VLM over HTTP, on ``reward.cameras[0]`` (probed now);
    the loop must call ``set_calibration`` before the first episode's rows can be labelled."""
    if not cfg.cameras:
        raise RewardModelConfigError("reward.cameras: kagi_vlm needs a camera to show the VLM")
    client = ChatClient(cfg.url, cfg.model, cfg.api_key_env, cfg.timeout_s, cfg.retries, cfg.backoff_s)
    proposer = VlmProposer(client, cfg.cameras[0], cfg.instruction)
    client.probe()
    return KagiRewardModel(cfg, proposer, build_base(cfg, device))
