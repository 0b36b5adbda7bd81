"""A simulated Franka Panda behind the backend interface: the bridge's test bench and demo arm.

The arm (``SimArm``) is robosuite's Panda MJCF (torque-actuated, collision meshes only unless a
camera is on), driven by an operational-space Cartesian impedance controller at ``inner_hz`` (500 Hz
by default, MuJoCo timestep = 1 / inner_hz) with gravity compensation and a null-space pull towards
the home posture, the way a Franka Cartesian impedance controller behaves. The reference moves
linearly (position) and by slerp (orientation) from the previous target to each new one over the
control period, like deoxys's trajectory interpolator.

Two clocks:
- real time (default): an inner loop steps physics at ``inner_hz`` paced by ``time.monotonic``, in
  its own process (``inner_loop="process"``), so its Python never competes with the server's for
  the interpreter lock, as a real arm's controller runs on its own box. ``inner_loop="thread"``
  runs the same loop as a thread of the server's process, which is what the benchmark compares
  against (see ``sim_loop``);
- lock-step: physics only advances in ``advance(seconds)``, which the server calls once per action,
  so a test run is deterministic and as fast as the CPU allows. The arm lives in the server's
  process and nothing runs between calls.

The gripper is a scalar that tracks its command at a fixed rate (no finger bodies); a capsule
from the hand to the end-effector point stands in for the tool, so the arm can touch things. A
MuJoCo force/torque sensor at the end-effector point measures what the tool transmits; minus the
hand's weight, that is the external wrench the force guard reads (the hand's inertial force, about
0.5 kg times its acceleration, is left in, as a real sensor tared at rest would). ``obstacle``
adds a fixed box to the scene (centre xyz and half-sizes), to test the force guard by driving into
it. Cameras (optional, ``cameras=("front", "wrist")``, a real cell's usual pair) render with
``mujoco.Renderer`` (set MUJOCO_GL=egl or osmesa when there is no display): ``front`` a fixed view of
the workspace, ``wrist`` the Panda model's camera on the hand, which moves with the arm
(``sim_arm.CAMERAS``). Images are square, ``camera_size`` pixels: one size for every camera, or one
per camera (cameras of a real cell often differ). Every camera is rendered at the same instant.

Fault injection (``SimFaults``): added latency on every state read, cameras that freeze after N
frames (their frame ids stop advancing), and a backend fault (a "reflex") after N commands.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from real_robot.backends.base import ArmState, Backend, Frame
from real_robot.backends.sim_arm import CAMERAS, SimArm, SimSettings
from real_robot.backends.sim_loop import InnerLoop
from real_robot.governor import JointLimits, Pose


@dataclass(frozen=True)
class SimFaults:
    latency_ms: float = 0.0
    """Added to every ``read_state`` (a slow driver or network)."""
    freeze_camera_after: int | None = None
    """After this many frames every camera keeps returning its last frame (id and timestamp frozen)."""
    fault_after_commands: int | None = None
    """After this many commands (counted from the start or the last ``recover``) the arm reports a
    reflex until ``recover``: a reflex every N commands, for tests and the soak."""


class InProcess:
    """Lock-step: the arm lives in the server's process and advances only when told to."""

    def __init__(self, settings: SimSettings):
        self.arm = SimArm(settings)

    def now_ns(self) -> int:
        return round(self.arm.data.time * 1e9)

    def read_state(self) -> ArmState:
        return self.arm.state(self.now_ns())

    def command(self, target: Pose, gripper: float, duration_s: float) -> None:
        self.arm.command(target, gripper, duration_s)

    def send(self, method: str, *args: Any) -> None:
        self.call(method, *args)

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self.arm, method)(*args)

    def advance(self, seconds: float) -> None:
        for _ in range(round(seconds * self.arm.settings.inner_hz)):
            self.arm.step()

    def close(self) -> None:
        self.arm.close()


class SimBackend(Backend):
    name = "sim"

    def __init__(
        self,
        lockstep: bool = False,
        inner_hz: float = 500.0,
        cameras: tuple[str, ...] = (),
        camera_size: int | tuple[int, ...] = 64,
        faults: SimFaults | None = None,
        obstacle: tuple[float, ...] | None = None,
        inner_loop: str = "process",
    ):
        self.lockstep = lockstep
        self.faults = faults or SimFaults()
        self._sizes = camera_sizes(tuple(cameras), camera_size)
        settings = SimSettings(inner_hz, tuple(cameras), obstacle, self.faults.fault_after_commands)
        self._arm: InProcess | InnerLoop = (
            InProcess(settings) if lockstep else InnerLoop(settings, inner_loop)
        )
        self._limits = self._arm.call("joint_limits")
        self._frames: dict[str, Frame] = {}
        self._frames_made = 0

    def now_ns(self) -> int:
        return self._arm.now_ns()

    def read_state(self) -> ArmState:
        if self.faults.latency_ms:
            time.sleep(self.faults.latency_ms / 1e3)
        return self._arm.read_state()

    def command(self, target: Pose, gripper: float, duration_s: float) -> None:
        self._arm.command(target, gripper, duration_s)

    def hold(self) -> None:
        self._arm.send("hold")

    def stop(self) -> None:
        self._arm.send("stop")

    def recover(self) -> None:
        self._arm.call("recover")

    def begin_reset(self, target: Pose) -> float:
        return self._arm.call("begin_reset", target)

    def advance(self, seconds: float) -> None:
        if not isinstance(self._arm, InProcess):
            raise NotImplementedError("sim: advance() is for lock-step mode")
        self._arm.advance(seconds)

    def joint_limits(self) -> JointLimits:
        return self._limits

    def camera_shapes(self) -> dict[str, tuple[int, int, int]]:
        return {camera: (size, size, 3) for camera, size in self._sizes.items()}

    def frames(self) -> dict[str, Frame]:
        if not self._sizes:
            return {}
        freeze = self.faults.freeze_camera_after
        if self._frames and freeze is not None and self._frames_made >= freeze:
            return self._frames
        t_capture = self.now_ns()
        images = self._arm.call("render", self._sizes)
        self._frames_made += 1
        self._frames = {camera: Frame(self._frames_made, t_capture, images[camera]) for camera in self._sizes}
        return self._frames

    def close(self) -> None:
        self._arm.close()


def camera_sizes(cameras: tuple[str, ...], camera_size: int | tuple[int, ...]) -> dict[str, int]:
    """Each camera's image size (``camera_size``: one for all, or one per camera), names checked."""
    unknown = [camera for camera in cameras if camera not in CAMERAS]
    if unknown or len(set(cameras)) != len(cameras):
        raise ValueError(f"sim: cameras {list(cameras)}: each at most once, of the sim's {list(CAMERAS)}")
    sizes = (camera_size,) if isinstance(camera_size, int) else tuple(camera_size)
    if len(sizes) == 1:
        sizes *= len(cameras)
    if len(sizes) != len(cameras) or any(size < 1 for size in sizes):
        raise ValueError(
            f"sim: camera_size {camera_size}: one positive size for every camera, or one per camera {list(cameras)}"
        )
    return dict(zip(cameras, sizes, strict=True))
