"""One test per safety limit, on the governor alone (no sockets needed to check arithmetic)."""

from __future__ import annotations

import numpy as np
import pytest

from real_robot.backends.base import ArmState
from real_robot.governor import (
    Governor,
    JointLimits,
    Pose,
    SafetyLimits,
    clip_angles,
    euler_to_mat,
    mat_to_euler,
    mat_to_quat,
    mat_to_rotvec,
    quat_to_mat,
)

PERIOD_NS = 100_000_000
DOWN = mat_to_quat(euler_to_mat(np.array([np.pi, 0.0, 0.0])))
CENTRE = Pose(np.array([0.5, 0.0, 0.4]), DOWN)
X_AXIS = np.array([1.0, 0.0, 0.0])


def _governor(joint_limits: JointLimits | None = None, **limits) -> Governor:
    """A governor anchored at CENTRE. The acceleration and jerk limits are off unless a test sets
    them, so each test sees the one limit it is about."""
    limits = {
        "max_accel_m_s2": np.inf,
        "max_accel_rad_s2": np.inf,
        "max_jerk_m_s3": np.inf,
        "max_jerk_rad_s3": np.inf,
        **limits,
    }
    governor = Governor(SafetyLimits(**limits), control_period_s=0.1, joint_limits=joint_limits)
    governor.anchor(CENTRE)
    return governor


def _state(pose: Pose, q: np.ndarray | None = None, jacobian: np.ndarray | None = None) -> ArmState:
    q = np.zeros(7) if q is None else q
    return ArmState(0, q, np.zeros(7), pose, 0.0, np.zeros(6), jacobian=jacobian)


def _action(*components: float) -> np.ndarray:
    a = np.zeros(7, np.float32)
    a[: len(components)] = components
    return a


def test_small_action_passes_unclipped_and_applied_reproduces_the_target():
    d = _governor().apply(_action(0.5, -0.25, 0.1, 0.2, 0.0, -0.3, 0.7), _state(CENTRE), PERIOD_NS)
    assert d.clipped == () and not d.rejected
    np.testing.assert_allclose(d.applied, _action(0.5, -0.25, 0.1, 0.2, 0.0, -0.3, 0.7), atol=1e-5)
    np.testing.assert_allclose(d.target.pos, CENTRE.pos + np.array([0.01, -0.005, 0.002]))
    assert d.gripper == pytest.approx(0.7)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_action_is_rejected(bad: float):
    d = _governor().apply(_action(0.1, bad), _state(CENTRE), PERIOD_NS)
    assert d.target is None and d.rejected.startswith("non_finite")


def test_command_rate_limit():
    governor = _governor(max_cmd_hz=20.0)
    assert not governor.apply(_action(0.1), _state(CENTRE), 1_000_000_000).rejected
    too_soon = governor.apply(_action(0.1), _state(CENTRE), 1_000_000_000 + 40_000_000)
    assert too_soon.rejected.startswith("rate")
    assert not governor.apply(_action(0.1), _state(CENTRE), 1_000_000_000 + 50_000_000).rejected


def test_action_range_clip():
    d = _governor().apply(_action(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0), _state(CENTRE), PERIOD_NS)
    assert d.clipped == ("action_range",) and d.gripper == 1.0


def test_per_step_translation_cap():
    d = _governor(max_step_m=0.01).apply(_action(1.0, 1.0, 1.0), _state(CENTRE), PERIOD_NS)
    assert "step_translation" in d.clipped
    assert np.linalg.norm(d.target.pos - CENTRE.pos) == pytest.approx(0.01)


def test_per_step_rotation_cap():
    d = _governor(max_step_rad=0.05).apply(_action(0, 0, 0, 1.0, 1.0, 0.0), _state(CENTRE), PERIOD_NS)
    assert "step_rotation" in d.clipped
    assert np.linalg.norm(mat_to_rotvec(quat_to_mat(d.target.quat) @ quat_to_mat(DOWN).T)) == pytest.approx(
        0.05, abs=1e-6
    )


def test_translation_velocity_limit_uses_time_since_last_command():
    governor = _governor(max_speed_m_s=0.1, max_cmd_hz=100.0)
    first = governor.apply(_action(1.0), _state(CENTRE), 0)  # first command: dt is one control period
    assert np.linalg.norm(first.target.pos - CENTRE.pos) == pytest.approx(0.01)
    second = governor.apply(_action(1.0), _state(first.target), 20_000_000)  # 20 ms later: at most 2 mm
    assert "speed_translation" in second.clipped
    assert np.linalg.norm(second.target.pos - first.target.pos) == pytest.approx(0.002)


def test_rotation_velocity_limit():
    governor = _governor(max_speed_rad_s=0.5, max_cmd_hz=100.0)
    d = governor.apply(_action(0, 0, 0, 0, 0, 1.0), _state(CENTRE), 0)
    assert "speed_rotation" in d.clipped
    assert np.linalg.norm(mat_to_rotvec(quat_to_mat(d.target.quat) @ quat_to_mat(DOWN).T)) == pytest.approx(
        0.05, abs=1e-6
    )


def test_acceleration_limit_ramps_up_and_brakes_a_reversal():
    governor = _governor(max_accel_m_s2=1.0, max_cmd_hz=100.0)
    # From rest, 2 cm asked in 0.1 s is 0.2 m/s, i.e. 2 m/s²: at 1 m/s² the target reaches 0.1 m/s.
    first = governor.apply(_action(1.0), _state(CENTRE), 0)
    assert "accel_translation" in first.clipped
    np.testing.assert_allclose(first.target.pos, CENTRE.pos + 0.01 * X_AXIS, atol=1e-12)
    # 0.1 -> 0.18 m/s is 0.8 m/s²: allowed in full.
    second = governor.apply(_action(0.9), _state(first.target), PERIOD_NS)
    assert second.clipped == ()
    np.testing.assert_allclose(second.target.pos, first.target.pos + 0.018 * X_AXIS, atol=1e-12)
    # Reversing (0.18 -> -0.2 m/s) may only slow to 0.08 m/s: the target still moves on by 8 mm.
    third = governor.apply(_action(-1.0), _state(second.target), 2 * PERIOD_NS)
    assert "accel_translation" in third.clipped
    np.testing.assert_allclose(third.target.pos, second.target.pos + 0.008 * X_AXIS, atol=1e-12)


def test_jerk_limit_ramps_the_acceleration():
    governor = _governor(max_jerk_m_s3=5.0, max_jerk_rad_s3=50.0, max_cmd_hz=100.0)
    # Acceleration may change by 5 m/s³ * 0.1 s = 0.5 m/s² per command: 0.05 m/s, 5 mm, at first.
    first = governor.apply(_action(1.0, 0, 0, 0, 0, 1.0), _state(CENTRE), 0)
    assert {"jerk_translation", "jerk_rotation"} <= set(first.clipped)
    np.testing.assert_allclose(first.target.pos, CENTRE.pos + 0.005 * X_AXIS, atol=1e-12)
    turned = mat_to_rotvec(quat_to_mat(first.target.quat) @ quat_to_mat(DOWN).T)
    np.testing.assert_allclose(turned, [0, 0, 0.05], atol=1e-9)  # 50 rad/s³: 0.5 rad/s, 0.05 rad
    # Then 1.0 m/s² (wanted 1.5): 0.05 + 0.1 = 0.15 m/s, 15 mm.
    second = governor.apply(_action(1.0), _state(first.target), PERIOD_NS)
    assert "jerk_translation" in second.clipped
    np.testing.assert_allclose(second.target.pos, first.target.pos + 0.015 * X_AXIS, atol=1e-12)


def test_joint_position_limit_with_margin():
    # A Jacobian under which joint i moves the end effector along twist axis i at 1 m (or rad) per rad.
    jacobian = np.eye(6, 7)
    limits = JointLimits(np.full(7, -2.0), np.full(7, 2.0))
    governor = _governor(joint_limits=limits, joint_margin_rad=0.1)
    near = np.array([1.895, 0, 0, 0, 0, 0, 0])  # 5 mm short of the margin (upper 2.0 - 0.1)
    d = governor.apply(_action(1.0), _state(CENTRE, near, jacobian), PERIOD_NS)
    assert d.clipped == ("joint_limit",)  # 2 cm asked, 5 mm allowed
    np.testing.assert_allclose(d.target.pos, CENTRE.pos + 0.005 * X_AXIS, atol=1e-12)
    assert d.applied[0] == pytest.approx(0.25)
    # Inside the margin, a joint may move away from its limit in full, and not at all towards it.
    inside = np.array([1.95, 0, 0, 0, 0, 0, 0])
    away = _governor(joint_limits=limits).apply(_action(-1.0), _state(CENTRE, inside, jacobian), PERIOD_NS)
    assert away.clipped == () and away.target.pos[0] == pytest.approx(CENTRE.pos[0] - 0.02)
    towards = _governor(joint_limits=limits).apply(_action(1.0), _state(CENTRE, inside, jacobian), PERIOD_NS)
    assert towards.clipped == ("joint_limit",)
    np.testing.assert_allclose(towards.target.pos, CENTRE.pos, atol=1e-12)


def test_workspace_box_on_xyz():
    edge = Pose(np.array([0.5, 0.249, 0.4]), DOWN)
    governor = _governor(workspace_high=(0.7, 0.25, 0.6))
    governor.anchor(edge)
    d = governor.apply(_action(0.0, 1.0), _state(edge), PERIOD_NS)
    assert "workspace_xyz" in d.clipped and d.target.pos[1] == pytest.approx(0.25)
    # The applied action reports what happened: 1 mm of the 20 mm asked for.
    assert d.applied[1] == pytest.approx(0.001 / 0.02, rel=1e-3)


def test_workspace_box_on_angles_is_continuous_across_pi():
    """Roll 3.1 plus 0.1 is roll -3.08 after wrapping: inside a box centred on π, not clipped."""
    near_pi = Pose(CENTRE.pos, mat_to_quat(euler_to_mat(np.array([3.1, 0.0, 0.0]))))
    governor = _governor(rpy_halfwidth=(0.6, 0.6, 1.6))
    governor.anchor(near_pi)
    d = governor.apply(_action(0, 0, 0, 1.0), _state(near_pi), PERIOD_NS)
    assert "workspace_rpy" not in d.clipped
    roll = mat_to_euler(quat_to_mat(d.target.quat))[0]
    assert roll == pytest.approx(3.2 - 2 * np.pi, abs=1e-6)


def test_workspace_box_on_angles_clips_to_the_near_side():
    tilted = Pose(CENTRE.pos, mat_to_quat(euler_to_mat(np.array([-(np.pi - 0.58), 0.0, 0.0]))))
    governor = _governor(rpy_halfwidth=(0.6, 0.6, 1.6))
    governor.anchor(tilted)
    d = governor.apply(_action(0, 0, 0, 1.0), _state(tilted), PERIOD_NS)  # asks for 0.1 rad more tilt
    assert "workspace_rpy" in d.clipped
    roll = mat_to_euler(quat_to_mat(d.target.quat))[0]
    assert roll == pytest.approx(-(np.pi - 0.6), abs=1e-6)  # the box edge on the same side, not +π-0.6


def test_clip_angles_helper():
    centre, half = np.array([np.pi]), np.array([0.5])
    np.testing.assert_allclose(clip_angles(np.array([-3.0]), centre, half), [-3.0])
    np.testing.assert_allclose(clip_angles(np.array([2.0]), centre, half), [np.pi - 0.5])
    np.testing.assert_allclose(clip_angles(np.array([-2.0]), centre, half), [-(np.pi - 0.5)])


def test_target_is_relative_to_the_measured_pose_not_the_previous_target():
    governor = _governor()
    lagging = Pose(CENTRE.pos - np.array([0.0, 0.0, 0.01]), DOWN)
    d = governor.apply(_action(0.0, 0.0, 0.5), _state(lagging), PERIOD_NS)
    np.testing.assert_allclose(d.target.pos, lagging.pos + np.array([0.0, 0.0, 0.01]))
