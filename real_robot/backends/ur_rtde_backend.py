"""Universal Robots (CB3 / e-Series) through ur_rtde (``pip install ur-rtde``). NOT YET RUN ON HARDWARE.

Written against ur_rtde's Python API: ``rtde_control.RTDEControlInterface(host, frequency)`` with
``servoL(pose, speed, acceleration, time, lookahead_time, gain)``, ``initPeriod()``/``waitPeriod()``,
``servoStop()``; ``rtde_receive.RTDEReceiveInterface(host, frequency)`` with ``getActualTCPPose()``,
``getActualQ()``, ``getActualQd()``, ``getActualTCPForce()``, ``isProtectiveStopped()``,
``isEmergencyStopped()``; and ``dashboard_client.DashboardClient(host)`` with ``connect()`` and
``unlockProtectiveStop()``. The unit conversions are tested against fakes of those objects only.

Conventions handled here:
- UR poses are [x, y, z, rx, ry, rz] with a rotation vector (axis times angle, radians); the
  bridge's are xyz plus a (w, x, y, z) quaternion.
- ``servoL`` blocks for its ``time`` argument and expects to be called at the RTDE rate, so this
  backend runs its own thread at ``frequency`` (125 Hz on CB3, 500 Hz on e-Series) that streams the
  interpolated reference; the server's calls never block on the robot.
- UR arms are position-controlled (no impedance), so contact tasks need a small ``max_step_m``;
  hil-serl's authors note the limits of position control for contact-rich RL.
- no gripper: ``gripper`` commands are ignored and the state reports 0.
- the external wrench is ``getActualTCPForce()`` (base frame, about the TCP). No Jacobian is
  reported, so the governor's joint limits are off for this backend; the controller's own joint
  limits raise a protective stop, which latches the e-stop.
"""

from __future__ import annotations

import threading
import time
from types import ModuleType

import numpy as np

from real_robot.backends.base import ArmState, Backend, BackendFault, Interpolator, import_optional
from real_robot.governor import Pose, mat_to_quat, mat_to_rotvec, quat_to_mat, rotvec_to_mat

RESET_SPEED_M_S = 0.05


def ur_pose_to_pose(ur: list[float]) -> Pose:
    ur = np.asarray(ur, dtype=np.float64)
    return Pose(ur[:3].copy(), mat_to_quat(rotvec_to_mat(ur[3:6])))


def pose_to_ur_pose(pose: Pose) -> list[float]:
    return [*map(float, pose.pos), *map(float, mat_to_rotvec(quat_to_mat(pose.quat)))]


class URBackend(Backend):
    name = "ur_rtde"
    dof = 6

    def __init__(
        self,
        host: str,
        frequency: float = 500.0,
        lookahead_time: float = 0.1,
        gain: float = 300.0,
        modules: tuple[ModuleType, ModuleType, ModuleType] | None = None,
    ):
        if not 0.03 <= lookahead_time <= 0.2 or not 100 <= gain <= 2000:
            raise ValueError(
                f"ur_rtde: servoL needs lookahead_time in [0.03, 0.2] and gain in [100, 2000], got {lookahead_time}, {gain}"
            )
        control, receive, dashboard = modules or (
            import_optional("rtde_control", "ur-rtde"),
            import_optional("rtde_receive", "ur-rtde"),
            import_optional("dashboard_client", "ur-rtde"),
        )
        self.control = control.RTDEControlInterface(host, frequency)
        self.receive = receive.RTDEReceiveInterface(host, frequency)
        self.dashboard = dashboard.DashboardClient(host)
        self.dashboard.connect()
        self.period = 1.0 / frequency
        self.lookahead_time, self.gain = lookahead_time, gain
        self._lock = threading.Lock()
        self._reference = Interpolator(ur_pose_to_pose(self.receive.getActualTCPPose()), time.monotonic())
        self._streaming = False
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._servo_loop, daemon=True, name="ur-servo")
        self._thread.start()

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def read_state(self) -> ArmState:
        fault = ""
        if self.receive.isEmergencyStopped():
            fault = "UR emergency stop"
        elif self.receive.isProtectiveStopped():
            fault = "UR protective stop"
        return ArmState(
            t_ns=self.now_ns(),
            q=np.asarray(self.receive.getActualQ(), dtype=np.float64),
            dq=np.asarray(self.receive.getActualQd(), dtype=np.float64),
            ee=ur_pose_to_pose(self.receive.getActualTCPPose()),
            gripper=0.0,
            wrench_ext=np.asarray(self.receive.getActualTCPForce(), dtype=np.float64),
            fault=fault,
        )

    def command(self, target: Pose, gripper: float, duration_s: float) -> None:
        with self._lock:
            self._reference.retarget(target, time.monotonic(), duration_s)
            self._streaming = True

    def hold(self) -> None:
        self.command(self.read_state().ee, 0.0, 0.0)

    def stop(self) -> None:
        with self._lock:
            self._streaming = False
            self.control.servoStop()

    def recover(self) -> None:
        if self.receive.isEmergencyStopped():
            raise BackendFault(
                "ur_rtde: the emergency stop button is pressed; release it on the pendant first"
            )
        if self.receive.isProtectiveStopped():
            self.dashboard.unlockProtectiveStop()
        if self.receive.isProtectiveStopped():
            raise BackendFault("ur_rtde: the protective stop did not unlock")
        with self._lock:
            self._reference = Interpolator(self.read_state().ee, time.monotonic())

    def begin_reset(self, target: Pose) -> float:
        state = self.read_state()
        if state.fault:
            raise BackendFault(f"ur_rtde: cannot reset during a {state.fault}")
        duration = 1.0 + float(np.linalg.norm(target.pos - state.ee.pos)) / RESET_SPEED_M_S
        self.command(target, 0.0, duration)
        return duration

    def servo_once(self) -> None:
        """One tick of the inner loop: stream the current reference with servoL."""
        with self._lock:
            if self._streaming:
                pose = pose_to_ur_pose(self._reference.at(time.monotonic()))
                # speed and acceleration are unused by servoL; time is one RTDE period.
                self.control.servoL(pose, 0.0, 0.0, self.period, self.lookahead_time, self.gain)

    def _servo_loop(self) -> None:
        while not self._closing.is_set():
            start = self.control.initPeriod()
            self.servo_once()
            self.control.waitPeriod(start)

    def close(self) -> None:
        self._closing.set()
        self._thread.join()
        self.stop()
