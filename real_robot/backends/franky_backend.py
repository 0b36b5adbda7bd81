"""Franka Panda / FR3 through franky (``pip install franky-control``). NOT YET RUN ON HARDWARE.

Written against franky's Python API: ``Robot(host)``, ``relative_dynamics_factor``,
``current_cartesian_state.pose.end_effector_pose`` (an ``Affine`` with ``translation`` and
``quaternion``), ``current_joint_state.position/velocity``, ``move(CartesianMotion(Affine(...),
ReferenceType.Absolute), asynchronous=True)``, ``has_errors``, ``recover_from_errors()``, ``stop()``,
and ``Gripper(host)`` with ``width`` and ``move_async(width, speed)``. The unit conversions are
tested against a fake of those objects only.

Conventions handled here:
- franky's quaternions are (x, y, z, w) (Eigen/scipy order); the bridge's are (w, x, y, z).
- the gripper's opening is metres of finger width; the bridge's is a closure fraction 0 (open)
  to 1 (closed) of ``max_gripper_width_m``.
- franky re-plans each asynchronous motion with Ruckig inside libfranka's 1 kHz loop, bounded by
  ``relative_dynamics_factor``; so ``command`` ignores ``duration_s`` and the governor's velocity
  limit bounds how far each target is, while libfranka's reflexes remain the second layer.
- a reset is a Cartesian move to the start pose; a joint-space "joint reset" is not implemented.
- the external wrench is libfranka's estimate ``robot.state.O_F_ext_hat_K`` (from the joint
  torques, on the stiffness frame, in the base frame), and the Jacobian for the governor's joint
  limits is ``robot.model.zero_jacobian(Frame.EndEffector, state)``; the joint range is the
  Panda's datasheet range (an FR3 has a slightly different one: pass ``joint_limits``).
"""

from __future__ import annotations

import time
from types import ModuleType

import numpy as np

from real_robot.backends.base import ArmState, Backend, BackendFault, import_optional
from real_robot.governor import JointLimits, Pose

RESET_SPEED_M_S = 0.05
PANDA_JOINT_LIMITS = JointLimits(
    lower=np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973]),
    upper=np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973]),
)
_GRIPPER_DEADBAND = 0.05  # closure fraction: do not resend a gripper move for smaller changes


class FrankyBackend(Backend):
    name = "franky"

    def __init__(
        self,
        host: str,
        relative_dynamics_factor: float = 0.1,
        max_gripper_width_m: float = 0.08,
        gripper_speed_m_s: float = 0.1,
        joint_limits: JointLimits = PANDA_JOINT_LIMITS,
        franky: ModuleType | None = None,
    ):
        if not 0.0 < relative_dynamics_factor <= 1.0:
            raise ValueError(
                f"franky: relative_dynamics_factor must be in (0, 1], got {relative_dynamics_factor}"
            )
        self._franky = franky or import_optional("franky", "franky-control")
        self.robot = self._franky.Robot(host)
        self.robot.relative_dynamics_factor = relative_dynamics_factor
        self.gripper = self._franky.Gripper(host)
        self.max_width = max_gripper_width_m
        self.gripper_speed = gripper_speed_m_s
        self._joint_limits = joint_limits
        self._gripper_cmd: float | None = None

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def read_state(self) -> ArmState:
        ee = self.robot.current_cartesian_state.pose.end_effector_pose
        joints = self.robot.current_joint_state
        x, y, z, w = np.asarray(ee.quaternion, dtype=np.float64)
        closure = 1.0 - float(self.gripper.width) / self.max_width
        state = self.robot.state
        jacobian = np.asarray(
            self.robot.model.zero_jacobian(self._franky.Frame.EndEffector, state), np.float64
        )
        return ArmState(
            t_ns=self.now_ns(),
            q=np.asarray(joints.position, dtype=np.float64),
            dq=np.asarray(joints.velocity, dtype=np.float64),
            ee=Pose(np.asarray(ee.translation, dtype=np.float64), np.array([w, x, y, z])),
            gripper=float(np.clip(closure, 0.0, 1.0)),
            wrench_ext=np.asarray(state.O_F_ext_hat_K, dtype=np.float64),
            fault="franka reported an error or reflex" if self.robot.has_errors else "",
            jacobian=jacobian,
        )

    def joint_limits(self) -> JointLimits:
        return self._joint_limits

    def _move_to(self, pose: Pose) -> None:
        w, x, y, z = pose.quat
        affine = self._franky.Affine(list(map(float, pose.pos)), [float(x), float(y), float(z), float(w)])
        motion = self._franky.CartesianMotion(affine, self._franky.ReferenceType.Absolute)
        self.robot.move(motion, asynchronous=True)  # preempts the running motion; Ruckig re-plans

    def command(self, target: Pose, gripper: float, duration_s: float) -> None:
        self._move_to(target)
        closure = (float(np.clip(gripper, -1.0, 1.0)) + 1.0) / 2.0
        if self._gripper_cmd is None or abs(closure - self._gripper_cmd) > _GRIPPER_DEADBAND:
            self.gripper.move_async((1.0 - closure) * self.max_width, self.gripper_speed)
            self._gripper_cmd = closure

    def hold(self) -> None:
        self._move_to(self.read_state().ee)

    def stop(self) -> None:
        self.robot.stop()

    def recover(self) -> None:
        self.robot.recover_from_errors()
        if self.robot.has_errors:
            raise BackendFault("franky: recover_from_errors() left the robot in an error state")

    def begin_reset(self, target: Pose) -> float:
        if self.robot.has_errors:
            raise BackendFault("franky: cannot reset while the robot reports errors")
        distance = float(np.linalg.norm(target.pos - self.read_state().ee.pos))
        self._move_to(target)
        return 1.0 + distance / RESET_SPEED_M_S
