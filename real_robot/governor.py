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
5. **Velocity limit**: the new target may be at most ``max_speed * dt`` from the previous target,
   where dt is the time since the previous accepted command, capped at one control period.
6. **Workspace box** last, so it always holds: xyz within [low, high]; roll/pitch/yaw within
   ``rpy_center ± rpy_halfwidth``.

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

from dataclasses import dataclass, field

import numpy as np

from real_robot.protocol import ACTION_DIM


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
    """Stateless except for the previous accepted target and time, which the velocity and rate limits need."""

    def __init__(self, limits: SafetyLimits, control_period_s: float):
        self.limits = limits
        self.period = control_period_s
        self._prev_target: Pose | None = None
        self._prev_ns: int | None = None

    def anchor(self, pose: Pose, now_ns: int | None = None) -> None:
        """Re-anchor to the measured pose (after a reset, a hold or an e-stop clear) so nothing jumps."""
        self._prev_target = pose
        self._prev_ns = now_ns

    def apply(self, action: np.ndarray, measured: Pose, now_ns: int) -> Decision:
        lim = self.limits
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

        if self._prev_target is not None:
            dt = self.period if self._prev_ns is None else min((now_ns - self._prev_ns) / 1e9, self.period)
            prev_pos, prev_rot = self._prev_target.pos, quat_to_mat(self._prev_target.quat)
            pos = prev_pos + _cap_norm(pos - prev_pos, lim.max_speed_m_s * dt, "speed_translation", clipped)
            rot = _cap_rotation(rot, prev_rot, lim.max_speed_rad_s * dt, clipped)

        low, high = np.asarray(lim.workspace_low), np.asarray(lim.workspace_high)
        if np.any(pos < low) or np.any(pos > high):
            clipped.append("workspace_xyz")
            pos = np.clip(pos, low, high)
        rpy = mat_to_euler(rot)
        rpy_boxed = clip_angles(rpy, np.asarray(lim.rpy_center), np.asarray(lim.rpy_halfwidth))
        if not np.allclose(rpy_boxed, rpy):
            clipped.append("workspace_rpy")
            rot = euler_to_mat(rpy_boxed)

        target = Pose(pos, mat_to_quat(rot))
        applied = np.empty(ACTION_DIM, np.float32)
        applied[:3] = (pos - measured.pos) / lim.action_scale_m
        applied[3:6] = mat_to_rotvec(rot @ r_measured.T) / lim.action_scale_rad
        applied[6] = a[6]
        self._prev_target, self._prev_ns = target, now_ns
        return Decision(target, float(a[6]), applied, tuple(clipped))


def _cap_norm(v: np.ndarray, cap: float, name: str, clipped: list[str]) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    if norm > cap:
        clipped.append(name)
        return v * (cap / norm)
    return v


def _cap_rotation(rot: np.ndarray, prev: np.ndarray, cap: float, clipped: list[str]) -> np.ndarray:
    """Move from ``prev`` towards ``rot`` by at most ``cap`` radians along the geodesic."""
    rel = mat_to_rotvec(rot @ prev.T)
    angle = float(np.linalg.norm(rel))
    if angle <= cap:
        return rot
    clipped.append("speed_rotation")
    return rotvec_to_mat(rel * (cap / angle)) @ prev


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
