"""Scripted experts for robosuite Lift and PickPlaceCan: the behaviour policy of the demo datasets.

The expert is a waypoint script over the sim's object poses (privileged: it reads the MuJoCo state,
not the observation) that drives the arm's OSC_POSE controller through the env's [-1, 1] actions:
- Lift: above the cube, down to it with the fingers turned to its faces, close, lift 25 cm.
- PickPlaceCan: above the can, down to it, close, lift to carrying height, carry over the goal
  quadrant of the second bin, lower, open, move up (robosuite counts the can as placed only once the
  gripper is more than ~4 cm away from it).

A proportional step toward the current waypoint: OSC_POSE reads an action of 1 as a 5 cm (0.5 rad)
move of its goal, so ``error / 0.05`` asks for exactly the remaining error. The script starts over
from the first waypoint when the object slips out of the hand while carrying, when a waypoint is not
reached within ``WAYPOINT_TIMEOUT`` steps (a cube knocked over, an arm blocked by a bin wall), and
after its last waypoint if the episode has not ended (a can that landed outside the bin).

The Can drop point is the near corner of the goal quadrant, not its centre: the centre (0.2, 0.4) is
0.86 m from the Panda's base, at the edge of its reach, where the arm sags ~3 cm below its goal with
the can in hand and never settles within tolerance.

Noise: ``noise_std`` adds Gaussian noise to every action dimension (gripper too), clipped to [-1, 1],
from a generator seeded by ``reset(seed)``.

Measured success of the noise-free expert (env defaults: 500-step limit, terminate on success), 100
seeded episodes each, ``success_rate(envs.make(cfg), 100, seed=0)`` with cfg = ``env=lift`` /
``env=can``: Lift 100/100 (37 steps on average, at most 41); PickPlaceCan 100/100 (110 steps on
average, at most 152). The floors the tests hold it to, on a few seeds, are ``SUCCESS_FLOOR``: 0.9
on both, a margin for machines on which seeded MuJoCo rollouts diverge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import mujoco
import numpy as np

OPEN, CLOSED = -1.0, 1.0
POS_GAIN = 1 / 0.05  # OSC_POSE output_max: 5 cm per unit action
ROT_GAIN = 1 / 0.5  # 0.5 rad per unit action
WAYPOINT_TIMEOUT = 100
SLIP_DISTANCE = 0.05  # object centre to grip site, beyond which a carried object is lost
# Gripper pointing straight down, fingers closing along world x: the Panda's start pose, levelled.
DOWN = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
SUCCESS_FLOOR = {"Lift": 0.9, "PickPlaceCan": 0.9}
"""Success rate the noise-free expert is held to (measured: 1.0 on both; module docstring)."""


@dataclass(frozen=True)
class Scene:
    """What the script sees at one step."""

    eef: np.ndarray
    """Grip site position (between the fingertips)."""
    eef_rot: np.ndarray
    obj: np.ndarray
    obj_rot: np.ndarray
    goal: np.ndarray
    """Task goal fixed at the episode's start: Lift, 25 cm above the cube; Can, the drop point on the
    goal bin's floor."""


@dataclass(frozen=True)
class Waypoint:
    name: str
    gripper: float
    target: Callable[[Scene], np.ndarray] | None = None
    """Grip site goal; None holds the position where the waypoint began."""
    tolerance: float = 0.01
    hold: int = 0
    """For ``target=None``: steps to wait (the gripper takes ~10 to close)."""
    carrying: bool = False
    """The object must stay in the hand; if it slips, the script starts over."""


@dataclass(frozen=True)
class Task:
    object_body: Callable[[object], int]
    goal: Callable[[object, np.ndarray], np.ndarray]
    """``(suite, object position at reset) -> Scene.goal``."""
    waypoints: tuple[Waypoint, ...]
    align_yaw: bool
    """Turn the fingers to the object's faces (a cube); a can is round."""


def _up(z: float) -> np.ndarray:
    return np.array([0.0, 0.0, z])


def _lift() -> Task:
    return Task(
        object_body=lambda suite: suite.cube_body_id,
        goal=lambda suite, start: start + _up(0.25),
        waypoints=(
            Waypoint("above", OPEN, lambda s: s.obj + _up(0.08)),
            Waypoint("descend", OPEN, lambda s: s.obj + _up(-0.005), tolerance=0.008),
            Waypoint("grasp", CLOSED, hold=12),
            Waypoint("lift", CLOSED, lambda s: s.goal, carrying=True),
        ),
        align_yaw=True,
    )


def _can() -> Task:
    carry_z = 0.2  # above the bin floor: the can's bottom clears the 10 cm walls by ~4 cm

    def lifted(s: Scene) -> np.ndarray:
        return np.r_[s.obj[:2], s.goal[2] + carry_z]

    return Task(
        object_body=lambda suite: suite.obj_body_id["Can"],
        # The goal quadrant spans x in [bin2 x, +0.2], y in [bin2 y, +0.25]; 7-8 cm in from its inner
        # corner keeps the can off both dividers (module docstring: why not the centre).
        goal=lambda suite, start: suite.bin2_pos + np.array([0.07, 0.08, 0.0]),
        waypoints=(
            Waypoint("above", OPEN, lambda s: s.obj + _up(0.08)),
            # The hand touches the can's top 3.5 cm above the grip site: grasp its upper half.
            Waypoint("descend", OPEN, lambda s: s.obj + _up(0.02)),
            Waypoint("grasp", CLOSED, hold=12),
            Waypoint("lift", CLOSED, lifted, tolerance=0.02, carrying=True),
            Waypoint("carry", CLOSED, lambda s: s.goal + _up(carry_z), tolerance=0.02, carrying=True),
            Waypoint("lower", CLOSED, lambda s: s.goal + _up(0.14), tolerance=0.02, carrying=True),
            Waypoint("release", OPEN, hold=10),
            Waypoint("retreat", OPEN, lambda s: s.goal + _up(0.25), tolerance=0.02),
        ),
        align_yaw=False,
    )


TASKS: dict[str, Callable[[], Task]] = {"Lift": _lift, "PickPlaceCan": _can}


def _yaw(rot: np.ndarray) -> float:
    return float(np.arctan2(rot[1, 0], rot[0, 0]))


def _rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Axis-angle (world frame) of the rotation taking ``current`` to ``target``."""
    quat, error = np.zeros(4), np.zeros(3)
    mujoco.mju_mat2Quat(quat, (target @ current.T).reshape(-1))
    mujoco.mju_quat2Vel(error, quat, 1.0)
    return error


class ScriptedExpert:
    """``act() -> action`` for the robosuite task inside ``env`` (Lift or PickPlaceCan).

    Call ``reset(seed)`` after every ``env.reset``: it reads the new object placement and reseeds
    the action noise.
    """

    def __init__(self, env: gym.Env, noise_std: float = 0.0) -> None:
        self.suite = env.unwrapped.suite
        name = type(self.suite).__name__
        if name not in TASKS:
            raise ValueError(
                f"scripted expert: no script for robosuite task {name!r}; scripted: {sorted(TASKS)}"
            )
        if noise_std < 0:
            raise ValueError(f"scripted expert: noise_std={noise_std} must be >= 0")
        self.task = TASKS[name]()
        self.noise_std = noise_std
        self.action_dim = int(env.action_space.shape[0])
        self._site = self.suite.robots[0].eef_site_id["right"]
        self._body = self.task.object_body(self.suite)
        self.reset(0)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.goal = self.task.goal(self.suite, self.suite.sim.data.body_xpos[self._body].copy())
        self._start_waypoint(0)

    @property
    def waypoint(self) -> Waypoint:
        return self.task.waypoints[self.index]

    def _start_waypoint(self, index: int) -> None:
        self.index, self.steps_in_waypoint, self.held_at = index, 0, None

    def scene(self) -> Scene:
        data = self.suite.sim.data
        return Scene(
            eef=data.site_xpos[self._site].copy(),
            eef_rot=data.site_xmat[self._site].reshape(3, 3).copy(),
            obj=data.body_xpos[self._body].copy(),
            obj_rot=data.body_xmat[self._body].reshape(3, 3).copy(),
            goal=self.goal,
        )

    def act(self) -> np.ndarray:
        scene = self.scene()
        self._advance(scene)
        waypoint = self.waypoint
        if waypoint.target is None:
            if self.held_at is None:
                self.held_at = scene.eef
            target = self.held_at
        else:
            target = waypoint.target(scene)
        yaw = _yaw(DOWN)
        if self.task.align_yaw:  # the cube looks the same every quarter turn: take the nearest face
            yaw += (_yaw(scene.obj_rot) - _yaw(DOWN) + np.pi / 4) % (np.pi / 2) - np.pi / 4
        action = np.zeros(self.action_dim)
        action[:3] = (target - scene.eef) * POS_GAIN
        action[3:6] = _rotation_error(_rot_z(yaw - _yaw(DOWN)) @ DOWN, scene.eef_rot) * ROT_GAIN
        action[6] = waypoint.gripper
        if self.noise_std > 0:
            action += self.rng.normal(0.0, self.noise_std, self.action_dim)
        self.steps_in_waypoint += 1
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def _advance(self, scene: Scene) -> None:
        """Move to the next waypoint when this one is done, or start over when the attempt failed."""
        waypoint = self.waypoint
        if waypoint.carrying and np.linalg.norm(scene.obj - scene.eef) > SLIP_DISTANCE:
            self._start_waypoint(0)
            return
        if waypoint.target is None:
            done = self.steps_in_waypoint >= waypoint.hold
        else:
            done = np.linalg.norm(waypoint.target(scene) - scene.eef) < waypoint.tolerance
            if not done and self.steps_in_waypoint >= WAYPOINT_TIMEOUT:
                self._start_waypoint(0)
                return
        if done:
            self._start_waypoint((self.index + 1) % len(self.task.waypoints))


def rollout(env: gym.Env, expert: ScriptedExpert, seed: int) -> tuple[bool, int]:
    """One seeded episode of the expert: ``(success at its end, steps)``."""
    env.reset(seed=seed)
    expert.reset(seed)
    steps, done, success = 0, False, False
    while not done:
        _, _, terminated, truncated, info = env.step(expert.act())
        steps += 1
        done, success = terminated or truncated, bool(info["success"])
    return success, steps


def success_rate(env: gym.Env, episodes: int, seed: int = 0, noise_std: float = 0.0) -> float:
    """Share of ``episodes`` seeded episodes (seeds ``seed``, ``seed + 1``, ...) the expert solves."""
    expert = ScriptedExpert(env, noise_std)
    return float(np.mean([rollout(env, expert, seed + i)[0] for i in range(episodes)]))
