"""A simulated Franka Panda behind the backend interface: the bridge's test bench and demo arm.

The arm is robosuite's Panda MJCF (torque-actuated, collision meshes only unless a camera is on),
driven by an operational-space Cartesian impedance controller at ``inner_hz`` (500 Hz by default,
MuJoCo timestep = 1 / inner_hz) with gravity compensation and a null-space pull towards the home
posture, the way a Franka Cartesian impedance controller behaves. The reference moves linearly
(position) and by slerp (orientation) from the previous target to each new one over the control
period, like deoxys's trajectory interpolator.

Two clocks:
- real time (default): a thread steps physics at ``inner_hz`` paced by ``time.monotonic``;
- lock-step: physics only advances in ``advance(seconds)``, which the server calls once per action,
  so a test run is deterministic and as fast as the CPU allows.

The gripper is a scalar that tracks its command at a fixed rate (no finger bodies); a capsule
from the hand to the end-effector point stands in for the tool, so the arm can touch things. A
MuJoCo force/torque sensor at the end-effector point measures what the tool transmits; minus the
hand's weight, that is the external wrench the force guard reads (the hand's inertial force, about
0.5 kg times its acceleration, is left in, as a real sensor tared at rest would). ``obstacle``
adds a fixed box to the scene (centre xyz and half-sizes), to test the force guard by driving into
it. The camera (optional) renders a fixed front view with ``mujoco.Renderer`` (set MUJOCO_GL=egl or
osmesa when there is no display).

Fault injection (``SimFaults``): added latency on every state read, a camera that freezes after N
frames (its frame id stops advancing), and a backend fault (a "reflex") after N commands.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

from real_robot.backends.base import ArmState, Backend, BackendFault, Frame, Interpolator
from real_robot.governor import JointLimits, Pose, mat_to_quat

# Franka's usual "ready" posture: the flange points down, ~0.5 m in front of the base.
HOME_Q = np.array([0.0, -np.pi / 4, 0.0, -3 * np.pi / 4, 0.0, np.pi / 2, np.pi / 4])
_GRIPPER_SPEED = 2.0  # closure fraction per second
_KP_POS, _KP_ROT, _KP_NULL = 600.0, 60.0, 10.0


@dataclass(frozen=True)
class SimFaults:
    latency_ms: float = 0.0
    """Added to every ``read_state`` (a slow driver or network)."""
    freeze_camera_after: int | None = None
    """After this many frames the camera keeps returning its last frame (id and timestamp frozen)."""
    fault_after_commands: int | None = None
    """After this many commands the arm reports a reflex until ``recover``."""


def panda_model_path() -> Path:
    """robosuite's Panda MJCF, found without importing robosuite (its import is slow and noisy)."""
    spec = importlib.util.find_spec("robosuite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("sim backend: needs robosuite's Panda model; install o2o[robosuite]")
    return Path(next(iter(spec.submodule_search_locations))) / "models/assets/robots/panda/robot.xml"


@functools.lru_cache(maxsize=4)
def build_model(inner_hz: float, camera: bool, obstacle: tuple[float, ...] | None = None) -> mujoco.MjModel:
    """Compile the scene once per process (0.7 s of mesh loading); backends share the read-only model."""
    spec = mujoco.MjSpec.from_file(str(panda_model_path()))
    spec.option.timestep = 1.0 / inner_hz
    if not camera:  # visual meshes only matter for images; dropping them halves load time
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


class SimBackend(Backend):
    name = "sim"

    def __init__(
        self,
        lockstep: bool = False,
        inner_hz: float = 500.0,
        camera: bool = False,
        camera_size: int = 64,
        faults: SimFaults | None = None,
        obstacle: tuple[float, ...] | None = None,
    ):
        self.lockstep = lockstep
        self.inner_hz = inner_hz
        self.faults = faults or SimFaults()
        self.home_q = HOME_Q.copy()
        self.model = build_model(inner_hz, camera, obstacle)
        self.data = mujoco.MjData(self.model)
        self._site = self.model.site("ee").id
        self._hand = self.model.body("right_hand").id
        self._force_adr = self.model.sensor("ft_force").adr[0]
        self._torque_adr = self.model.sensor("ft_torque").adr[0]
        self._camera_size = camera_size if camera else 0
        self._renderer: mujoco.Renderer | None = None
        self._frame: Frame | None = None
        self._frames_made = 0
        self._commands = 0
        self._fault = ""
        self._gripper, self._gripper_cmd = 0.0, 0.0
        self._jac = np.zeros((6, self.model.nv))
        self._lock = threading.Lock()
        self._reference = Interpolator(Pose(np.zeros(3), np.array([1.0, 0, 0, 0])), 0.0)
        self._teleport(self.home_q)
        self._steps = 0
        self._t0 = time.monotonic_ns()
        self._closing = threading.Event()
        self._thread = None
        if not lockstep:
            self._thread = threading.Thread(target=self._realtime_loop, daemon=True, name="sim-inner-loop")
            self._thread.start()

    # --- the backend interface -------------------------------------------------------------------

    def now_ns(self) -> int:
        if self.lockstep:
            return round(self.data.time * 1e9)
        return time.monotonic_ns()

    def read_state(self) -> ArmState:
        if self.faults.latency_ms:
            time.sleep(self.faults.latency_ms / 1e3)
        with self._lock:
            jacobian = np.zeros((6, self.model.nv))
            mujoco.mj_jacSite(self.model, self.data, jacobian[:3], jacobian[3:], self._site)
            return ArmState(
                t_ns=self.now_ns(),
                q=self.data.qpos.copy(),
                dq=self.data.qvel.copy(),
                ee=self._ee_pose(),
                gripper=self._gripper,
                wrench_ext=self._wrench_ext(),
                fault=self._fault,
                jacobian=jacobian,
            )

    def joint_limits(self) -> JointLimits:
        return JointLimits(self.model.jnt_range[:, 0].copy(), self.model.jnt_range[:, 1].copy())

    def command(self, target: Pose, gripper: float, duration_s: float) -> None:
        with self._lock:
            self._commands += 1
            limit = self.faults.fault_after_commands
            if limit is not None and self._commands > limit and not self._fault:
                self._fault = f"injected reflex after {limit} commands"
            if self._fault:
                return  # a faulted arm ignores commands, as libfranka does until recovery
            self._start_segment(target, duration_s)
            self._gripper_cmd = (float(np.clip(gripper, -1, 1)) + 1) / 2

    def hold(self) -> None:
        with self._lock:
            self._start_segment(self._ee_pose(), 0.0)

    def stop(self) -> None:
        # A simulated arm can stop dead: hold the measured pose with the joint velocities zeroed.
        with self._lock:
            self.data.qvel[:] = 0.0
            self._start_segment(self._ee_pose(), 0.0)

    def recover(self) -> None:
        with self._lock:
            self._fault = ""
            self.faults = SimFaults(self.faults.latency_ms, self.faults.freeze_camera_after, None)
            self._start_segment(self._ee_pose(), 0.0)

    def begin_reset(self, target: Pose) -> float:
        with self._lock:
            if self._fault:
                raise BackendFault(f"sim: cannot reset while faulted ({self._fault})")
            self._teleport(self.home_q)
            duration = 1.0
            self._start_segment(target, duration)
            self._gripper_cmd = 0.0
        return duration

    def advance(self, seconds: float) -> None:
        if not self.lockstep:
            raise NotImplementedError("sim: advance() is for lock-step mode")
        with self._lock:
            for _ in range(round(seconds * self.inner_hz)):
                self._step()

    def camera_shapes(self) -> dict[str, tuple[int, int, int]]:
        return {"front": (self._camera_size, self._camera_size, 3)} if self._camera_size else {}

    def frames(self) -> dict[str, Frame]:
        if not self._camera_size:
            return {}
        freeze = self.faults.freeze_camera_after
        if self._frame is not None and freeze is not None and self._frames_made >= freeze:
            return {"front": self._frame}
        if self._renderer is None:  # created on the calling thread: GL contexts are per thread
            self._renderer = mujoco.Renderer(self.model, self._camera_size, self._camera_size)
        with self._lock:
            self._renderer.update_scene(self.data, camera="front")
            t_capture = self.now_ns()
        self._frames_made += 1
        self._frame = Frame(self._frames_made, t_capture, self._renderer.render().copy())
        return {"front": self._frame}

    def close(self) -> None:
        self._closing.set()
        if self._thread is not None:
            self._thread.join()
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def inner_rate_hz(self) -> float:
        """Physics steps per second of wall time since start (real-time mode)."""
        return self._steps / max((time.monotonic_ns() - self._t0) / 1e9, 1e-9)

    # --- physics ---------------------------------------------------------------------------------

    def _realtime_loop(self) -> None:
        period = 1.0 / self.inner_hz
        next_tick = time.monotonic()
        while not self._closing.is_set():
            with self._lock:
                self._step()
            next_tick += period
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.05:  # fell far behind (machine busy): do not try to catch up in a burst
                next_tick = time.monotonic()

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

    def _step(self) -> None:
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
        step = _GRIPPER_SPEED / self.inner_hz
        self._gripper += float(np.clip(self._gripper_cmd - self._gripper, -step, step))
        self._steps += 1
