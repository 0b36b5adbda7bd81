"""franky and ur_rtde backends against fakes of the library objects (no hardware, no driver installed).

These check the conversions and limits this code is responsible for; they cannot show that the real
libraries behave as their documentation says, which is why the docs say these backends have not run
on hardware.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

from real_robot.backends.base import BackendFault
from real_robot.backends.franky_backend import FrankyBackend
from real_robot.backends.ur_rtde_backend import URBackend, pose_to_ur_pose, ur_pose_to_pose
from real_robot.governor import Pose, euler_to_mat, mat_to_quat


class FakeFranky:
    """The subset of the franky module the backend uses, recording every call."""

    class ReferenceType:
        Absolute = "absolute"

    class Frame:
        EndEffector = "ee"

    def __init__(self):
        self.moves: list = []
        self.robot = self.gripper = None
        fake = self

        class Robot:
            def __init__(self, host):
                fake.robot = self
                self.host, self.relative_dynamics_factor, self.has_errors, self.stopped = (
                    host,
                    None,
                    False,
                    False,
                )
                pose = SimpleNamespace(
                    translation=[0.4, 0.1, 0.3], quaternion=[1.0, 0.0, 0.0, 0.0]
                )  # x, y, z, w
                self.current_cartesian_state = SimpleNamespace(pose=SimpleNamespace(end_effector_pose=pose))
                self.current_joint_state = SimpleNamespace(position=[0.1] * 7, velocity=[0.0] * 7)
                self.state = SimpleNamespace(O_F_ext_hat_K=[1.0, -2.0, 3.0, 0.1, 0.2, 0.3])
                self.model = SimpleNamespace(
                    zero_jacobian=lambda frame, state: np.full((6, 7), 0.5) if frame == "ee" else None
                )

            def move(self, motion, asynchronous):
                fake.moves.append((motion, asynchronous))

            def stop(self):
                self.stopped = True

            def recover_from_errors(self):
                self.has_errors = False

        class Gripper:
            def __init__(self, host):
                fake.gripper = self
                self.width, self.commands = 0.02, []

            def move_async(self, width, speed):
                self.commands.append((width, speed))

        self.Robot, self.Gripper = Robot, Gripper
        self.Affine = lambda translation, quaternion: SimpleNamespace(
            translation=translation, quaternion=quaternion
        )
        self.CartesianMotion = lambda affine, reference: SimpleNamespace(affine=affine, reference=reference)


def test_franky_state_conversions():
    fake = FakeFranky()
    backend = FrankyBackend("10.0.0.2", relative_dynamics_factor=0.2, franky=fake)
    assert fake.robot.relative_dynamics_factor == 0.2
    state = backend.read_state()
    np.testing.assert_allclose(state.ee.quat, [0.0, 1.0, 0.0, 0.0])  # (x,y,z,w)=(1,0,0,0) is w=0, x=1
    np.testing.assert_allclose(state.ee.pos, [0.4, 0.1, 0.3])
    assert state.gripper == pytest.approx(0.75)  # 2 cm open of 8 cm
    np.testing.assert_array_equal(state.wrench_ext, [1.0, -2.0, 3.0, 0.1, 0.2, 0.3])
    assert state.jacobian.shape == (6, 7) and backend.joint_limits().upper[3] == pytest.approx(-0.0698)
    fake.robot.has_errors = True
    assert backend.read_state().fault


def test_franky_commands_convert_back_and_debounce_the_gripper():
    fake = FakeFranky()
    backend = FrankyBackend("10.0.0.2", franky=fake)
    quat = mat_to_quat(euler_to_mat(np.array([np.pi, 0.0, 0.3])))
    backend.command(Pose(np.array([0.5, 0.0, 0.2]), quat), gripper=1.0, duration_s=0.1)
    motion, asynchronous = fake.moves[-1]
    assert asynchronous and motion.reference == "absolute"
    np.testing.assert_allclose(motion.affine.quaternion, [*quat[1:], quat[0]])
    assert fake.gripper.commands == [(0.0, 0.1)]  # fully closed
    backend.command(Pose(np.array([0.5, 0.0, 0.2]), quat), gripper=0.99, duration_s=0.1)
    assert len(fake.gripper.commands) == 1  # within the deadband: not resent
    backend.command(Pose(np.array([0.5, 0.0, 0.2]), quat), gripper=-1.0, duration_s=0.1)
    assert fake.gripper.commands[-1] == (pytest.approx(0.08), 0.1)


def test_franky_limits_and_recovery():
    with pytest.raises(ValueError, match="relative_dynamics_factor"):
        FrankyBackend("h", relative_dynamics_factor=1.5, franky=FakeFranky())
    fake = FakeFranky()
    backend = FrankyBackend("h", franky=fake)
    fake.robot.has_errors = True
    with pytest.raises(BackendFault):
        backend.begin_reset(backend.read_state().ee)
    backend.recover()
    assert backend.begin_reset(backend.read_state().ee) == pytest.approx(1.0)
    backend.stop()
    assert fake.robot.stopped


class FakeRTDE:
    def __init__(self):
        self.servo: list = []
        self.tcp = [0.4, -0.1, 0.3, 0.0, np.pi, 0.0]  # tool pointing down: rotation vector (0, π, 0)
        self.protective = self.emergency = False
        self.unlocked = 0
        outer = self

        class Control:
            def __init__(self, host, frequency):
                self.frequency = frequency

            def servoL(self, pose, speed, acceleration, t, lookahead, gain):
                outer.servo.append((pose, t, lookahead, gain))

            def servoStop(self):
                outer.servo.append("stop")

            def initPeriod(self):
                return time.monotonic()

            def waitPeriod(self, start):
                time.sleep(0.002)

        class Receive:
            def __init__(self, host, frequency):
                pass

            def getActualTCPPose(self):
                return list(outer.tcp)

            def getActualQ(self):
                return [0.0] * 6

            def getActualQd(self):
                return [0.0] * 6

            def getActualTCPForce(self):
                return [0.0, 0.0, -12.5, 0.0, 0.0, 0.0]

            def isProtectiveStopped(self):
                return outer.protective

            def isEmergencyStopped(self):
                return outer.emergency

        class Dashboard:
            def __init__(self, host):
                pass

            def connect(self):
                pass

            def unlockProtectiveStop(self):
                outer.unlocked += 1
                outer.protective = False

        self.modules = (
            SimpleNamespace(RTDEControlInterface=Control),
            SimpleNamespace(RTDEReceiveInterface=Receive),
            SimpleNamespace(DashboardClient=Dashboard),
        )


def test_ur_rotation_vector_conversions_round_trip():
    pose = ur_pose_to_pose([0.4, -0.1, 0.3, 0.0, np.pi, 0.0])
    np.testing.assert_allclose(np.abs(pose.quat), [0.0, 0.0, 1.0, 0.0], atol=1e-12)
    rng = np.random.default_rng(0)
    for _ in range(20):
        ur = [*rng.uniform(-1, 1, 3), *(rng.normal(size=3) * 0.8)]
        np.testing.assert_allclose(pose_to_ur_pose(ur_pose_to_pose(ur)), ur, atol=1e-9)


def test_ur_streams_servo_l_at_its_own_rate_and_reports_stops():
    fake = FakeRTDE()
    backend = URBackend("10.0.0.3", frequency=125.0, modules=fake.modules)
    try:
        assert backend.dof == 6 and not backend.read_state().fault
        np.testing.assert_array_equal(backend.read_state().wrench_ext, [0, 0, -12.5, 0, 0, 0])
        assert backend.read_state().jacobian is None and backend.joint_limits() is None
        start = backend.read_state().ee
        target = Pose(start.pos + np.array([0.0, 0.0, 0.05]), start.quat)
        backend.command(target, gripper=1.0, duration_s=0.0)
        backend.servo_once()
        pose, t, lookahead, gain = fake.servo[-1]
        assert t == pytest.approx(1 / 125) and (lookahead, gain) == (0.1, 300.0)
        np.testing.assert_allclose(pose[:3], [0.4, -0.1, 0.35])
        np.testing.assert_allclose(np.abs(pose[3:]), [0.0, np.pi, 0.0], atol=1e-9)
        fake.protective = True
        assert backend.read_state().fault == "UR protective stop"
        backend.recover()
        assert fake.unlocked == 1 and not backend.read_state().fault
        fake.emergency = True
        with pytest.raises(BackendFault, match="emergency stop"):
            backend.recover()
    finally:
        backend.close()
    assert fake.servo[-1] == "stop"


def test_ur_rejects_servo_parameters_outside_the_documented_range():
    with pytest.raises(ValueError, match="lookahead_time"):
        URBackend("h", lookahead_time=0.5, modules=FakeRTDE().modules)
