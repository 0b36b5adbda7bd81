"""The safety governor: every action, from a policy or a human, passes here before the arm sees it.

Order of checks (each clip is named in ``Decision.clipped`` and ends up in the OBS status and log):

1. **NaN/inf guard**: a non-finite action is rejected, not repaired; the server counts a streak of
   them towards an e-stop.
2. **Command-rate limit**: a command closer than ``1 / max_cmd_hz`` to the previous accepted one is
   rejected ("rate"). Times come from the backend clock, which is virtual in lock-step, so
   lock-step runs never trip it however fast the client goes.
3. **Action range**: each component is clipped to [-1, 1].
4. **Per-step delta cap**: the translation delta (``action * action_scale_m``) is capped in norm at
   ``max_step_m``, and the rotation delta at ``max_step_rad``.
5. **Jerk, acceleration and velocity limits** on the target's path, separately for translation and
   rotation. The target moves once per command, so its velocity is the move over dt (the time
   since the previous accepted command, capped at one control period), its acceleration the change
   of that velocity over dt, and its jerk the change of acceleration over dt. The wanted
   acceleration is first moved at most ``max_jerk * dt`` from the previous one, then capped at
   ``max_accel``, and the resulting velocity at ``max_speed``. A policy that reverses at full
   speed therefore takes a few commands to turn around instead of one.
6. **Workspace box**: xyz within [low, high]; roll/pitch/yaw within ``rpy_center ± rpy_halfwidth``.
7. **Joint position limits** (when the backend reports its joint range and Jacobian): the joint
   motion of the step from the measured pose is predicted as ``pinv(J) @ (dx, drot)``, and the step
   is shortened so that no joint moving towards a limit ends inside ``joint_margin_rad`` of it;
   a joint already inside the margin may only move away. Shortening a step from the measured pose
   keeps the target inside the (convex) box, so the box still holds.

The **force guard** (``Governor.force_exceeded``) is not an action check: the server applies it to
every state it reads, holds the arm and latches the e-stop when the measured external force or
torque (``ArmState.wrench_ext``) passes ``max_force_n`` or ``max_torque_nm``.

Targets are ``measured pose + delta`` (as SERL does), not ``previous target + delta``, so a blocked
arm never winds up a far-away reference. Rotation deltas are rotation vectors (axis times angle)
in the base frame, composed as ``R_target = exp(delta) @ R_measured``; unlike roll/pitch/yaw
deltas, their norm is exactly the rotation angle, so the rotation cap means what it says.

Angle wrap: a gripper pointing down has roll near ±π, where naive box clipping of roll to
[low, high] flips the tool through 2π (the caveat in SERL's ``clip_safety_box``). The box is
therefore a centre and half-width per angle, and clipping works on the wrapped difference
``wrap(angle - centre)`` in (-π, π], which is continuous across ±π.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from real_robot.protocol import ACTION_DIM

if TYPE_CHECKING:  # the backends import Pose from here; the governor only reads their state
    from real_robot.backends.base import ArmState


@dataclass(frozen=True)
class SafetyLimits:
    workspace_low: tuple[float, float, float] = (0.25, -0.25, 0.15)
    workspace_high: tuple[float, float, float] = (0.70, 0.25, 0.60)
    rpy_center: tuple[float, float, float] = (np.pi, 0.0, 0.0)
    rpy_halfwidth: tuple[float, float, float] = (0.6, 0.6, 1.6)
    action_scale_m: float = 0.02
    """Metres of translation per unit of action."""
    action_scale_rad: float = 0.1
    """Radians of rotation per unit of action."""
    max_step_m: float = 0.025
    max_step_rad: float = 0.15
    max_speed_m_s: float = 0.25
    max_speed_rad_s: float = 1.5
    max_accel_m_s2: float = 2.5
    """At 10 Hz: from rest to full speed in one command, a full-speed reversal in two."""
    max_accel_rad_s2: float = 15.0
    max_jerk_m_s3: float = 25.0
    """At 10 Hz: the acceleration may change by ``max_accel`` per command, so a reversal of the
    acceleration (a bang-bang policy) takes two commands."""
    max_jerk_rad_s3: float = 150.0
    joint_margin_rad: float = 0.1
    """How close to a joint's limit a target may take it."""
    max_force_n: float = 20.0
    """Force guard: below franky's default collision threshold (30 N), so the guard acts first."""
    max_torque_nm: float = 4.0
    max_cmd_hz: float = 20.0
    nan_streak_to_estop: int = 3
    """Consecutive non-finite actions that latch the e-stop (a broken policy, not a glitch)."""
    reject_streak_to_estop: int = 10
    """Consecutive rejected commands of any kind from the lease holder that latch the e-stop."""


@dataclass(frozen=True)
class Pose:
    pos: np.ndarray
    """xyz in metres, robot base frame."""
    quat: np.ndarray
    """Orientation as a unit quaternion (w, x, y, z)."""


@dataclass(frozen=True)
class JointLimits:
    lower: np.ndarray
    upper: np.ndarray
    """Joint position range in radians (the length of ``ArmState.q``)."""


@dataclass(frozen=True)
class Decision:
    target: Pose | None
    """Where the arm should go; None when the command is rejected."""
    gripper: float = 0.0
    """Gripper command in [-1 (open), 1 (closed)]."""
    applied: np.ndarray = field(default_factory=lambda: np.zeros(ACTION_DIM, np.float32))
    """The action that, applied to the measured pose, gives ``target`` (what the learner should store)."""
    clipped: tuple[str, ...] = ()
    rejected: str = ""


class Governor:
    """Stateful only in the previous accepted target, its time, and the target's velocity and
    acceleration, which the rate, jerk, acceleration and velocity limits need."""

    def __init__(
        self, limits: SafetyLimits, control_period_s: float, joint_limits: JointLimits | None = None
    ):
        self.limits = limits
        self.period = control_period_s
        self.joint_limits = joint_limits
        self._translation = _PathLimiter(
            limits.max_speed_m_s, limits.max_accel_m_s2, limits.max_jerk_m_s3, "translation"
        )
        self._rotation = _PathLimiter(
            limits.max_speed_rad_s, limits.max_accel_rad_s2, limits.max_jerk_rad_s3, "rotation"
        )
        self._low, self._high = np.asarray(limits.workspace_low), np.asarray(limits.workspace_high)
        self._rpy_center, self._rpy_halfwidth = (
            np.asarray(limits.rpy_center),
            np.asarray(limits.rpy_halfwidth),
        )
        self._prev_target: Pose | None = None
        self._prev_rot = np.eye(3)
        self._prev_ns: int | None = None

    def anchor(self, pose: Pose, now_ns: int | None = None) -> None:
        """Re-anchor to the measured pose, at rest (after a reset, a hold or an e-stop clear), so nothing jumps."""
        self._prev_target, self._prev_rot = pose, quat_to_mat(pose.quat)
        self._prev_ns = now_ns
        self._translation.stop()
        self._rotation.stop()

    def force_exceeded(self, state: ArmState) -> str:
        """Why the measured external wrench is past the force guard's limits ('' when it is not)."""
        force = float(np.linalg.norm(state.wrench_ext[:3]))
        torque = float(np.linalg.norm(state.wrench_ext[3:]))
        if force > self.limits.max_force_n:
            return f"force guard: external force {force:.1f} N > {self.limits.max_force_n} N"
        if torque > self.limits.max_torque_nm:
            return f"force guard: external torque {torque:.2f} N·m > {self.limits.max_torque_nm} N·m"
        return ""

    def apply(self, action: np.ndarray, state: ArmState, now_ns: int) -> Decision:
        lim = self.limits
        measured = state.ee
        if not np.all(np.isfinite(action)):
            return Decision(None, rejected="non_finite: action contains NaN or inf")
        if self._prev_ns is not None and now_ns - self._prev_ns < 1e9 / lim.max_cmd_hz * 0.999:
            gap_ms = (now_ns - self._prev_ns) / 1e6
            return Decision(
                None, rejected=f"rate: {gap_ms:.1f} ms after the previous command, limit {lim.max_cmd_hz} Hz"
            )
        clipped: list[str] = []
        a = np.clip(action.astype(np.float64), -1.0, 1.0)
        if np.any(a != action):
            clipped.append("action_range")

        dpos = _cap_norm(a[:3] * lim.action_scale_m, lim.max_step_m, "step_translation", clipped)
        drot = _cap_norm(a[3:6] * lim.action_scale_rad, lim.max_step_rad, "step_rotation", clipped)
        r_measured = quat_to_mat(measured.quat)
        pos = measured.pos + dpos
        rot = rotvec_to_mat(drot) @ r_measured

        dt = self.period if self._prev_ns is None else min((now_ns - self._prev_ns) / 1e9, self.period)
        prev, prev_rot = self._prev_target, self._prev_rot
        if prev is not None:
            pos = prev.pos + self._translation.limit(pos - prev.pos, dt, clipped)
            rot = rotvec_to_mat(self._rotation.limit(mat_to_rotvec(rot @ prev_rot.T), dt, clipped)) @ prev_rot

        if np.any(pos < self._low) or np.any(pos > self._high):
            clipped.append("workspace_xyz")
            pos = np.clip(pos, self._low, self._high)
        rpy = mat_to_euler(rot)
        rpy_boxed = clip_angles(rpy, self._rpy_center, self._rpy_halfwidth)
        if np.abs(wrap_angle(rpy_boxed - rpy)).max() > 1e-9:  # roll π and -π are the same angle
            clipped.append("workspace_rpy")
            rot = euler_to_mat(rpy_boxed)

        turn = mat_to_rotvec(rot @ r_measured.T)  # the rotation from the measured pose
        if self.joint_limits is not None:
            fraction = self._joint_fraction(state, pos - measured.pos, turn)
            if fraction < 1.0:
                clipped.append("joint_limit")
                pos = measured.pos + fraction * (pos - measured.pos)
                turn = fraction * turn
                rot = rotvec_to_mat(turn) @ r_measured

        target = Pose(pos, mat_to_quat(rot))
        applied = np.empty(ACTION_DIM, np.float32)
        applied[:3] = (pos - measured.pos) / lim.action_scale_m
        applied[3:6] = turn / lim.action_scale_rad
        applied[6] = a[6]
        if prev is not None:
            self._translation.moved(pos - prev.pos, dt)
            self._rotation.moved(mat_to_rotvec(rot @ prev_rot.T), dt)
        self._prev_target, self._prev_rot, self._prev_ns = target, rot, now_ns
        return Decision(target, float(a[6]), applied, tuple(clipped))

    def _joint_fraction(self, state: ArmState, dpos: np.ndarray, drot: np.ndarray) -> float:
        """The largest fraction of the step from the measured pose that keeps every joint out of its margin."""
        if state.jacobian is None:
            return 0.0  # a backend that reports joint limits but no Jacobian: no step can be checked
        margin = self.limits.joint_margin_rad
        lower, upper = self.joint_limits.lower + margin, self.joint_limits.upper - margin
        # The minimum-norm joint motion for the twist, i.e. pinv(J) @ twist (singular directions cut at 1e-3).
        dq = np.linalg.lstsq(state.jacobian, np.concatenate([dpos, drot]), rcond=1e-3)[0]
        fraction = 1.0
        for q, step, low, high in zip(state.q, dq, lower, upper, strict=True):
            if step > 0 and q + step > high:
                fraction = min(fraction, max((high - q) / step, 0.0))
            elif step < 0 and q + step < low:
                fraction = min(fraction, max((low - q) / step, 0.0))
        return fraction


class _PathLimiter:
    """Jerk, acceleration and speed limits on one part (translation or rotation) of the target's path."""

    def __init__(self, max_speed: float, max_accel: float, max_jerk: float, name: str):
        self.max_speed, self.max_accel, self.max_jerk, self.name = max_speed, max_accel, max_jerk, name
        self.velocity = np.zeros(3)
        self.accel = np.zeros(3)

    def stop(self) -> None:
        self.velocity, self.accel = np.zeros(3), np.zeros(3)

    def limit(self, move: np.ndarray, dt: float, clipped: list[str]) -> np.ndarray:
        """The part of ``move`` (from the previous target) these limits allow within ``dt``."""
        wanted_accel = (move / dt - self.velocity) / dt
        accel = self.accel + _cap_norm(
            wanted_accel - self.accel, self.max_jerk * dt, f"jerk_{self.name}", clipped
        )
        accel = _cap_norm(accel, self.max_accel, f"accel_{self.name}", clipped)
        velocity = _cap_norm(self.velocity + accel * dt, self.max_speed, f"speed_{self.name}", clipped)
        return velocity * dt

    def moved(self, move: np.ndarray, dt: float) -> None:
        """Record the move the target finally made (after the box and joint limits shortened it)."""
        velocity = move / dt
        self.accel = (velocity - self.velocity) / dt
        self.velocity = velocity


def _cap_norm(v: np.ndarray, cap: float, name: str, clipped: list[str]) -> np.ndarray:
    norm = math.sqrt(float(v @ v))
    if norm > cap:
        clipped.append(name)
        return v * (cap / norm)
    return v


# --- rotation helpers (numpy only: the governor must not depend on a simulator) -----------------


def wrap_angle(x: np.ndarray) -> np.ndarray:
    """Wrap to (-π, π]."""
    return np.pi - np.mod(np.pi - x, 2 * np.pi)


def clip_angles(angles: np.ndarray, center: np.ndarray, halfwidth: np.ndarray) -> np.ndarray:
    """Clip angles to ``center ± halfwidth`` on the circle (continuous across ±π)."""
    diff = np.clip(wrap_angle(angles - center), -halfwidth, halfwidth)
    return wrap_angle(center + diff)


def euler_to_mat(rpy: np.ndarray) -> np.ndarray:
    """Roll, pitch, yaw about the fixed x, y, z axes: R = Rz(yaw) Ry(pitch) Rx(roll)."""
    cr, cp, cy = np.cos(rpy)
    sr, sp, sy = np.sin(rpy)
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def mat_to_euler(r: np.ndarray) -> np.ndarray:
    pitch = -np.arcsin(np.clip(r[2, 0], -1.0, 1.0))
    return np.array([np.arctan2(r[2, 1], r[2, 2]), pitch, np.arctan2(r[1, 0], r[0, 0])])


def quat_to_mat(q: np.ndarray) -> np.ndarray:
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def mat_to_quat(r: np.ndarray) -> np.ndarray:
    """Rotation matrix to a unit quaternion (w, x, y, z) with w >= 0 (Shepperd's method)."""
    t = np.trace(r)
    if t > 0:
        s = 2.0 * np.sqrt(1.0 + t)
        q = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(r)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + r[i, i] - r[j, j] - r[k, k])
        q = [0.0] * 4
        q[0] = (r[k, j] - r[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (r[j, i] + r[i, j]) / s
        q[1 + k] = (r[k, i] + r[i, k]) / s
    q = np.asarray(q)
    return q if q[0] >= 0 else -q


def rotvec_to_mat(v: np.ndarray) -> np.ndarray:
    """Rodrigues' formula: rotation by ``|v|`` radians about ``v / |v|``."""
    angle = float(np.linalg.norm(v))
    if angle < 1e-12:
        return np.eye(3)
    x, y, z = v / angle
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def mat_to_rotvec(r: np.ndarray) -> np.ndarray:
    """Inverse of ``rotvec_to_mat`` via the quaternion, which stays accurate near 0 and π."""
    w, x, y, z = mat_to_quat(r)
    sin_half = float(np.linalg.norm([x, y, z]))
    if sin_half < 1e-12:
        return np.zeros(3)
    return np.array([x, y, z]) * (2 * np.arctan2(sin_half, w) / sin_half)
