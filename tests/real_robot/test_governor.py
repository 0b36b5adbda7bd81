"""One test per safety limit, on the governor alone (no sockets needed to check arithmetic)."""

from __future__ import annotations

import numpy as np
import pytest

from real_robot.governor import (
    Governor,
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


def _governor(**limits) -> Governor:
    governor = Governor(SafetyLimits(**limits), control_period_s=0.1)
    governor.anchor(CENTRE)
    return governor


def _action(*components: float) -> np.ndarray:
    a = np.zeros(7, np.float32)
    a[: len(components)] = components
    return a


def test_small_action_passes_unclipped_and_applied_reproduces_the_target():
    d = _governor().apply(_action(0.5, -0.25, 0.1, 0.2, 0.0, -0.3, 0.7), CENTRE, PERIOD_NS)
    assert d.clipped == () and not d.rejected
    np.testing.assert_allclose(d.applied, _action(0.5, -0.25, 0.1, 0.2, 0.0, -0.3, 0.7), atol=1e-5)
    np.testing.assert_allclose(d.target.pos, CENTRE.pos + np.array([0.01, -0.005, 0.002]))
    assert d.gripper == pytest.approx(0.7)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_action_is_rejected(bad: float):
    d = _governor().apply(_action(0.1, bad), CENTRE, PERIOD_NS)
    assert d.target is None and d.rejected.startswith("non_finite")


def test_command_rate_limit():
    governor = _governor(max_cmd_hz=20.0)
    assert not governor.apply(_action(0.1), CENTRE, 1_000_000_000).rejected
    too_soon = governor.apply(_action(0.1), CENTRE, 1_000_000_000 + 40_000_000)
    assert too_soon.rejected.startswith("rate")
    assert not governor.apply(_action(0.1), CENTRE, 1_000_000_000 + 50_000_000).rejected


def test_action_range_clip():
    d = _governor().apply(_action(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0), CENTRE, PERIOD_NS)
    assert d.clipped == ("action_range",) and d.gripper == 1.0


def test_per_step_translation_cap():
    d = _governor(max_step_m=0.01).apply(_action(1.0, 1.0, 1.0), CENTRE, PERIOD_NS)
    assert "step_translation" in d.clipped
    assert np.linalg.norm(d.target.pos - CENTRE.pos) == pytest.approx(0.01)


def test_per_step_rotation_cap():
    d = _governor(max_step_rad=0.05).apply(_action(0, 0, 0, 1.0, 1.0, 0.0), CENTRE, PERIOD_NS)
    assert "step_rotation" in d.clipped
    assert np.linalg.norm(mat_to_rotvec(quat_to_mat(d.target.quat) @ quat_to_mat(DOWN).T)) == pytest.approx(
        0.05, abs=1e-6
    )


def test_translation_velocity_limit_uses_time_since_last_command():
    governor = _governor(max_speed_m_s=0.1, max_cmd_hz=100.0)
    first = governor.apply(_action(1.0), CENTRE, 0)  # first command: dt is one control period
    assert np.linalg.norm(first.target.pos - CENTRE.pos) == pytest.approx(0.01)
    second = governor.apply(_action(1.0), first.target, 20_000_000)  # 20 ms later: at most 2 mm
    assert "speed_translation" in second.clipped
    assert np.linalg.norm(second.target.pos - first.target.pos) == pytest.approx(0.002)


def test_rotation_velocity_limit():
    governor = _governor(max_speed_rad_s=0.5, max_cmd_hz=100.0)
    d = governor.apply(_action(0, 0, 0, 0, 0, 1.0), CENTRE, 0)
    assert "speed_rotation" in d.clipped
    assert np.linalg.norm(mat_to_rotvec(quat_to_mat(d.target.quat) @ quat_to_mat(DOWN).T)) == pytest.approx(
        0.05, abs=1e-6
    )


def test_workspace_box_on_xyz():
    edge = Pose(np.array([0.5, 0.249, 0.4]), DOWN)
    governor = _governor(workspace_high=(0.7, 0.25, 0.6))
    governor.anchor(edge)
    d = governor.apply(_action(0.0, 1.0), edge, PERIOD_NS)
    assert "workspace_xyz" in d.clipped and d.target.pos[1] == pytest.approx(0.25)
    # The applied action reports what happened: 1 mm of the 20 mm asked for.
    assert d.applied[1] == pytest.approx(0.001 / 0.02, rel=1e-3)


def test_workspace_box_on_angles_is_continuous_across_pi():
    """Roll 3.1 plus 0.1 is roll -3.08 after wrapping: inside a box centred on π, not clipped."""
    near_pi = Pose(CENTRE.pos, mat_to_quat(euler_to_mat(np.array([3.1, 0.0, 0.0]))))
    governor = _governor(rpy_halfwidth=(0.6, 0.6, 1.6))
    governor.anchor(near_pi)
    d = governor.apply(_action(0, 0, 0, 1.0), near_pi, PERIOD_NS)
    assert "workspace_rpy" not in d.clipped
    roll = mat_to_euler(quat_to_mat(d.target.quat))[0]
    assert roll == pytest.approx(3.2 - 2 * np.pi, abs=1e-6)


def test_workspace_box_on_angles_clips_to_the_near_side():
    tilted = Pose(CENTRE.pos, mat_to_quat(euler_to_mat(np.array([-(np.pi - 0.58), 0.0, 0.0]))))
    governor = _governor(rpy_halfwidth=(0.6, 0.6, 1.6))
    governor.anchor(tilted)
    d = governor.apply(_action(0, 0, 0, 1.0), tilted, PERIOD_NS)  # asks for 0.1 rad more tilt
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
    d = governor.apply(_action(0.0, 0.0, 0.5), lagging, PERIOD_NS)
    np.testing.assert_allclose(d.target.pos, lagging.pos + np.array([0.0, 0.0, 0.01]))
