"""The step pipeline: an action goes governor -> backend -> recorder; an observation backend -> task -> recorder.

It holds what a step needs and nothing about who may send one (the session) or what state the server
is in (the server): the episode and step counters, the goal, the id and send time of the latest
observation, and the count of consecutive stale camera frames. Every record is written with one
``write`` before the reply that reports it goes out, so a killed server loses nothing it reported
as ``logged``.

Timing of a step: an ACT is governed and applied at once, and its OBS is the state sampled one
control period later (``t_applied_ns`` -> ``t_state_ns``), so the observation shows the effect of
the action. The server decides when that is (in real time it holds the reply; in lock-step it
advances physics by one period first).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from real_robot.backends.base import ArmState, Backend
from real_robot.governor import Decision, Governor, Pose
from real_robot.recorder import Recorder
from real_robot.tasks import ReachTask


@dataclass(frozen=True)
class Applied:
    """An action that reached the backend: what the OBS and the log report about it."""

    t_applied_ns: int
    """Backend clock, like the state's timestamp."""
    report: dict[str, Any]
    """``requested``, ``applied``, ``source`` and ``clipped``: the OBS's ``applied`` field."""


class StepPipeline:
    def __init__(
        self,
        backend: Backend,
        governor: Governor,
        recorder: Recorder,
        task: ReachTask,
        period_s: float,
        max_frame_age_ms: float,
    ):
        self.backend = backend
        self.governor = governor
        self.recorder = recorder
        self.task = task
        self.period_s = period_s
        self.max_frame_age_ns = max_frame_age_ms * 1e6
        self.episode, self.step = -1, 0
        self.goal = np.zeros(3, np.float32)
        self.obs_id, self.obs_sent_ns = 0, 0
        self.stale_frames = 0
        self.last_state: ArmState | None = None

    # --- episodes --------------------------------------------------------------------------------

    def start_reset(self, seed: int | None, home: Pose) -> tuple[Pose, float]:
        """Pick the episode's start pose and goal and start moving there; returns (start, seconds).
        Raises ``BackendFault`` when the arm cannot move."""
        start, self.goal = self.task.reset(np.random.default_rng(seed), home)
        return start, self.backend.begin_reset(start)

    def begin_episode(self, state: ArmState) -> None:
        """The reset arrived: anchor the governor where the arm is and count a new episode."""
        self.governor.anchor(state.ee)
        self.episode, self.step = self.episode + 1, 0
        self.stale_frames = 0

    def hold(self) -> None:
        """Hold the measured pose and re-anchor the governor there, so nothing jumps on the next action."""
        self.backend.hold()
        self.governor.anchor(self.backend.read_state().ee)

    # --- actions ---------------------------------------------------------------------------------

    def govern(self, action: np.ndarray, state: ArmState) -> Decision:
        """What the governor makes of ``action`` from the measured ``state`` (maybe a rejection)."""
        return self.governor.apply(action, state, self.backend.now_ns())

    def execute(self, decision: Decision, requested: np.ndarray, source: str, now_ns: int) -> Applied:
        """Send an accepted decision to the backend and record it."""
        self.backend.command(decision.target, decision.gripper, self.period_s)
        self.step += 1
        report = {
            "requested": np.asarray(requested, np.float32),
            "applied": decision.applied,
            "source": source,
            "clipped": list(decision.clipped),
        }
        self.recorder.write(
            "applied",
            t_ns=now_ns,
            episode=self.episode,
            step=self.step,
            obs_id=self.obs_id,
            target_pos=decision.target.pos,
            target_quat=decision.target.quat,
            **report,
        )
        return Applied(self.backend.now_ns(), report)

    # --- observations ----------------------------------------------------------------------------

    def capture(self, state: ArmState) -> dict[str, Any]:
        """The cameras' latest frames; counts consecutive observations with a stale frame."""
        frames = self.backend.frames()
        stale = any(state.t_ns - f.t_capture_ns > self.max_frame_age_ns for f in frames.values())
        self.stale_frames = self.stale_frames + 1 if stale else 0
        return {
            name: {"frame_id": f.frame_id, "t_capture_ns": f.t_capture_ns, "image": f.image}
            for name, f in frames.items()
        }

    def observe(
        self,
        state: ArmState,
        frames: dict[str, Any],
        t_applied_ns: int,
        applied: dict[str, Any],
        status: dict[str, Any],
    ) -> dict[str, Any]:
        """Score ``state``, record the observation and return the OBS body (with ``logged``)."""
        self.last_state = state
        reward, terminated = self.task.score(state, self.goal)
        self.obs_id += 1
        body = {
            "obs_id": self.obs_id,
            "episode": self.episode,
            "step": self.step,
            "t_applied_ns": t_applied_ns,
            "t_state_ns": state.t_ns,
            "state": {
                "q": state.q.astype(np.float32),
                "dq": state.dq.astype(np.float32),
                "ee_pos": state.ee.pos.astype(np.float32),
                "ee_quat": state.ee.quat.astype(np.float32),
                "gripper": np.array([state.gripper], np.float32),
                "goal": self.goal,
            },
            "reward": reward,
            "terminated": terminated,
            "applied": applied,
            "status": status,
            "frames": frames,
        }
        self.recorder.write("obs", t_ns=time.monotonic_ns(), **body)
        body["logged"] = self.recorder.written
        self.obs_sent_ns = time.monotonic_ns()
        return body
