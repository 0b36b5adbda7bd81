"""The simulated arm itself: MuJoCo physics, the impedance controller and the gripper.

``SimArm`` has no thread, lock or clock of its own; whoever owns it calls ``step``: the sim backend
once per action in lock-step, the inner loop (``sim_loop``) at ``inner_hz`` in real time. See
``sim`` for what the arm models and how it is driven.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

from real_robot.backends.base import ArmState, BackendFault, Interpolator
from real_robot.governor import JointLimits, Pose, mat_to_quat

# Franka's usual "ready" posture: the flange points down, ~0.5 m in front of the base.
HOME_Q = np.array([0.0, -np.pi / 4, 0.0, -3 * np.pi / 4, 0.0, np.pi / 2, np.pi / 4])
_GRIPPER_SPEED = 2.0  # closure fraction per second
_KP_POS, _KP_ROT, _KP_NULL = 600.0, 60.0, 10.0
_RESET_S = 1.0
CAMERAS = {"front": "front", "wrist": "eye_in_hand"}
"""The sim's cameras, by the MuJoCo camera each renders: ``front`` a fixed view of the workspace
(added by ``build_model``), ``wrist`` the Panda model's own camera on the hand (robosuite's
``robot0_eye_in_hand``), which moves with the arm and sees the tool and what is below it."""


@dataclass(frozen=True)
class SimSettings:
    """What builds a ``SimArm`` (picklable: the inner-loop process builds its own from it)."""

    inner_hz: float = 500.0
    cameras: tuple[str, ...] = ()
    """Names from ``CAMERAS``; any camera keeps the visual meshes in the model."""
    obstacle: tuple[float, ...] | None = None
    fault_after_commands: int | None = None


def panda_model_path() -> Path:
    """robosuite's Panda MJCF, found without importing robosuite (its import is slow and noisy)."""
    spec = importlib.util.find_spec("robosuite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("sim backend: needs robosuite's Panda model; install o2o[robosuite]")
    return Path(next(iter(spec.submodule_search_locations))) / "models/assets/robots/panda/robot.xml"


@functools.lru_cache(maxsize=4)
def build_model(inner_hz: float, visual: bool, obstacle: tuple[float, ...] | None = None) -> mujoco.MjModel:
    """Compile the scene once per process (0.7 s of mesh loading); arms share the read-only model."""
    spec = mujoco.MjSpec.from_file(str(panda_model_path()))
    spec.option.timestep = 1.0 / inner_hz
    if not visual:  # visual meshes only matter for images; dropping them halves load time
        for geom in list(spec.geoms):
            if geom.group == 1:
                spec.delete(geom)
    hand = spec.body("right_hand")
    hand.add_site(name="ee", pos=[0, 0, 0.1], size=[0.01, 0.01, 0.01])
    # The hand's explicit inertial keeps its mass; the tool geom only adds contact.
    hand.add_geom(
        name="tool", type=mujoco.mjtGeom.mjGEOM_CAPSULE, fromto=[0, 0, 0.02, 0, 0, 0.1], size=[0.02, 0, 0]
    )
    for name, kind in (
        ("ft_force", mujoco.mjtSensor.mjSENS_FORCE),
        ("ft_torque", mujoco.mjtSensor.mjSENS_TORQUE),
    ):
        spec.add_sensor(name=name, type=kind, objtype=mujoco.mjtObj.mjOBJ_SITE, objname="ee")
    world = spec.worldbody
    world.add_geom(type=mujoco.mjtGeom.mjGEOM_PLANE, size=[2, 2, 0.1], rgba=[0.8, 0.8, 0.8, 1])
    if obstacle is not None:
        if len(obstacle) != 6:
            raise ValueError(
                f"sim: obstacle needs 6 numbers (centre xyz, half-sizes xyz), got {len(obstacle)}"
            )
        world.add_geom(
            name="obstacle",
            type=mujoco.mjtGeom.mjGEOM_BOX,
            pos=obstacle[:3],
            size=obstacle[3:],
            rgba=[0.8, 0.3, 0.3, 1],
        )
    world.add_light(pos=[0, 0, 3], dir=[0, 0, -1])
    world.add_camera(name="front", pos=[1.6, 0, 1.0], xyaxes=[0, 1, 0, -0.5, 0, 1])
    return spec.compile()


class SimArm:
    """The simulated arm: physics, the impedance controller and the gripper, with no thread, lock or
    clock of its own. Whoever owns it calls ``step``: the backend once per action in lock-step, the
    inner loop at ``inner_hz`` in real time."""

    def __init__(self, settings: SimSettings):
        self.settings = settings
        self.model = build_model(settings.inner_hz, bool(settings.cameras), settings.obstacle)
        self.data = mujoco.MjData(self.model)
        self.home_q = HOME_Q.copy()
        self.steps = 0
        self._site = self.model.site("ee").id
        self._hand = self.model.body("right_hand").id
        self._force_adr = self.model.sensor("ft_force").adr[0]
        self._torque_adr = self.model.sensor("ft_torque").adr[0]
        self._fault_after = settings.fault_after_commands
        self._commands = 0
        self._fault = ""
        self._gripper, self._gripper_cmd = 0.0, 0.0
        self._jac = np.zeros((6, self.model.nv))
        self._renderers: dict[int, mujoco.Renderer] = {}  # by image size: a renderer has one
        self._reference = Interpolator(Pose(np.zeros(3), np.array([1.0, 0, 0, 0])), 0.0)
        self._teleport(self.home_q)

    # --- what the backend asks of it -------------------------------------------------------------

    def state(self, t_ns: int) -> ArmState:
        jacobian = np.zeros((6, self.model.nv))
        mujoco.mj_jacSite(self.model, self.data, jacobian[:3], jacobian[3:], self._site)
        return ArmState(
            t_ns=t_ns,
            q=self.data.qpos.copy(),
            dq=self.data.qvel.copy(),
            ee=self._ee_pose(),
            gripper=self._gripper,
            wrench_ext=self._wrench_ext(),
            fault=self._fault,
            jacobian=jacobian,
        )

    def command(self, target: Pose, gripper: float, duration_s: float) -> None:
        self._commands += 1
        if self._fault_after is not None and self._commands > self._fault_after and not self._fault:
            self._fault = f"injected reflex after {self._fault_after} commands since the last recovery"
        if self._fault:
            return  # a faulted arm ignores commands, as libfranka does until recovery
        self._start_segment(target, duration_s)
        self._gripper_cmd = (float(np.clip(gripper, -1, 1)) + 1) / 2

    def hold(self) -> None:
        self._start_segment(self._ee_pose(), 0.0)

    def stop(self) -> None:
        # A simulated arm can stop dead: hold the measured pose with the joint velocities zeroed.
        self.data.qvel[:] = 0.0
        self._start_segment(self._ee_pose(), 0.0)

    def recover(self) -> None:
        self._fault = ""
        self._commands = 0  # an injected reflex comes again after as many commands
        self._start_segment(self._ee_pose(), 0.0)

    def begin_reset(self, target: Pose) -> float:
        """Teleport to the home posture and start moving to ``target``; returns the seconds it takes."""
        if self._fault:
            raise BackendFault(f"sim: cannot reset while faulted ({self._fault})")
        self._teleport(self.home_q)
        self._start_segment(target, _RESET_S)
        self._gripper_cmd = 0.0
        return _RESET_S

    def render(self, sizes: dict[str, int]) -> dict[str, np.ndarray]:
        """Each camera's image (name -> square size; names from ``CAMERAS``), all of one instant.

        One call for every camera, so the real-time loop answers one pipe message per observation.
        Renderers are made on the first calling thread (GL contexts are per thread)."""
        images = {}
        for camera, size in sizes.items():
            if size not in self._renderers:
                self._renderers[size] = mujoco.Renderer(self.model, size, size)
            renderer = self._renderers[size]
            renderer.update_scene(self.data, camera=CAMERAS[camera])
            images[camera] = renderer.render().copy()
        return images

    def joint_limits(self) -> JointLimits:
        return JointLimits(self.model.jnt_range[:, 0].copy(), self.model.jnt_range[:, 1].copy())

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers = {}

    # --- physics ---------------------------------------------------------------------------------

    def step(self) -> None:
        m, d = self.model, self.data
        ref = self._reference.at(d.time)
        mujoco.mj_jacSite(m, d, self._jac[:3], self._jac[3:], self._site)
        jac = self._jac
        quat = mat_to_quat(d.site_xmat[self._site].reshape(3, 3))
        err_rot = np.zeros(3)
        diff = np.zeros(4)
        mujoco.mju_mulQuat(diff, ref.quat, np.array([quat[0], -quat[1], -quat[2], -quat[3]]))
        mujoco.mju_quat2Vel(err_rot, diff, 1.0)
        vel = jac @ d.qvel
        # Operational-space control: Lambda = (J M^-1 J^T)^-1, with M^-1 J^T from a sparse solve.
        minv_jt = np.zeros((6, m.nv))
        mujoco.mj_solveM(m, d, minv_jt, jac)
        lam = np.linalg.pinv(jac @ minv_jt.T, rcond=1e-3)
        kp = np.array([_KP_POS] * 3 + [_KP_ROT] * 3)
        wrench = lam @ (
            kp * np.concatenate([ref.pos - d.site_xpos[self._site], err_rot]) - 2 * np.sqrt(kp) * vel
        )
        posture = _KP_NULL * (self.home_q - d.qpos) - 2 * np.sqrt(_KP_NULL) * d.qvel
        null = posture - jac.T @ (lam @ (minv_jt @ posture))
        torque = jac.T @ wrench + null + d.qfrc_bias
        d.ctrl[:] = np.clip(torque, m.actuator_ctrlrange[:, 0], m.actuator_ctrlrange[:, 1])
        mujoco.mj_step(m, d)
        step = _GRIPPER_SPEED / self.settings.inner_hz
        self._gripper += float(np.clip(self._gripper_cmd - self._gripper, -step, step))
        self.steps += 1

    def _teleport(self, q: np.ndarray) -> None:
        self.data.qpos[:] = q
        self.data.qvel[:] = 0.0
        mujoco.mj_forward(self.model, self.data)
        # Gravity-compensated from the first instant, so the force sensor reads the arm at rest.
        self.data.ctrl[:] = self.data.qfrc_bias
        mujoco.mj_forward(self.model, self.data)
        self._reference = Interpolator(self._ee_pose(), self.data.time)

    def _ee_pose(self) -> Pose:
        return Pose(
            self.data.site_xpos[self._site].copy(), mat_to_quat(self.data.site_xmat[self._site].reshape(3, 3))
        )

    def _wrench_ext(self) -> np.ndarray:
        """The wrench the environment applies on the hand, in the base frame, about the end effector.

        The sensor reads what the arm applies on the hand subtree (in the site frame); in statics
        that balances the hand's weight plus the external wrench, so the weight is subtracted."""
        m, d = self.model, self.data
        rot = d.site_xmat[self._site].reshape(3, 3)
        force = rot @ d.sensordata[self._force_adr : self._force_adr + 3]
        torque = rot @ d.sensordata[self._torque_adr : self._torque_adr + 3]
        weight = m.body_subtreemass[self._hand] * m.opt.gravity
        lever = d.subtree_com[self._hand] - d.site_xpos[self._site]
        return np.concatenate([-force - weight, -torque - np.cross(lever, weight)])

    def _start_segment(self, target: Pose, duration_s: float) -> None:
        self._reference.retarget(target, self.data.time, duration_s)
