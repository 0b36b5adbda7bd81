"""Tasks the server scores, so that the reward is in the log and a run converts to a dataset as is.

A task picks the start pose and goal at each RESET (seeded), adds its own entries to the
observation state, and computes the reward and termination from the measured state. It runs on the
server because the server's log is the ground truth a dataset is built from; a client that wants
another reward (a success classifier, a VLM) relabels on its side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from real_robot.backends.base import ArmState
from real_robot.governor import Pose


@dataclass(frozen=True)
class ReachTask:
    """Move the end effector to a goal point sampled in a box; reward is minus the distance."""

    goal_low: tuple[float, float, float] = (0.40, -0.15, 0.25)
    goal_high: tuple[float, float, float] = (0.60, 0.15, 0.45)
    start_offset_m: float = 0.03
    """Start at home plus a uniform offset of up to this much per axis."""
    success_radius_m: float = 0.03
    name: str = "reach"

    def reset(self, rng: np.random.Generator, home: Pose) -> tuple[Pose, np.ndarray]:
        start = Pose(home.pos + rng.uniform(-self.start_offset_m, self.start_offset_m, 3), home.quat)
        return start, rng.uniform(self.goal_low, self.goal_high).astype(np.float32)

    def state_keys(self) -> dict[str, int]:
        return {"goal": 3}

    def score(self, state: ArmState, goal: np.ndarray) -> tuple[float, bool]:
        distance = float(np.linalg.norm(state.ee.pos - goal))
        return -distance, distance < self.success_radius_m


TASKS = {"reach": ReachTask}
