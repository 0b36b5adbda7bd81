"""The one interface every arm backend implements, and the state it reports.

A backend owns the inner control loop (the sim's 500 Hz Cartesian impedance controller, franky's
1 kHz libfranka loop, ur_rtde's 125/500 Hz servo loop). The server hands it already-governed
targets at the policy rate; the backend interpolates towards each target over ``duration_s``.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from real_robot.governor import JointLimits, Pose


class BackendFault(RuntimeError):
    """The arm or its driver reported an error (a reflex, a protective stop, a lost connection)."""


@dataclass(frozen=True)
class ArmState:
    t_ns: int
    """When the state was sampled, on the backend clock (``Backend.now_ns``)."""
    q: np.ndarray
    dq: np.ndarray
    ee: Pose
    gripper: float
    """Opening as a fraction: 0 open, 1 closed."""
    wrench_ext: np.ndarray
    """External force (N, xyz) and torque (N·m, about the end effector) in the base frame, as the
    backend measures or estimates it: the sim's force/torque sensor, franky's ``O_F_ext_hat_K``,
    ur_rtde's ``getActualTCPForce()``. Drivers differ in sign convention; the force guard uses only
    the magnitudes."""
    fault: str = ""
    """Non-empty when the backend is in an error state (the server latches the e-stop)."""
    jacobian: np.ndarray | None = None
    """6 x dof end-effector Jacobian in the base frame (linear rows, then angular), for the
    governor's joint limits; None when the backend has none."""


@dataclass(frozen=True)
class Frame:
    frame_id: int
    """Advances with every new image; a frozen camera keeps returning the same id."""
    t_capture_ns: int
    image: np.ndarray


class Backend(ABC):
    name: str = ""
    lockstep: bool = False
    """True when physics only advances in ``advance`` (deterministic tests); False for real time."""
    dof: int = 7
    """Number of arm joints (the length of ``q`` and ``dq``)."""

    @abstractmethod
    def now_ns(self) -> int:
        """The backend clock: virtual in lock-step, ``time.monotonic_ns()`` otherwise."""

    @abstractmethod
    def read_state(self) -> ArmState: ...

    @abstractmethod
    def command(self, target: Pose, gripper: float, duration_s: float) -> None:
        """Move the reference to ``target`` over ``duration_s`` (non-blocking)."""

    @abstractmethod
    def hold(self) -> None:
        """Set the reference to the measured pose, zero velocity; stiffness stays on."""

    @abstractmethod
    def stop(self) -> None:
        """Stop motion (the watchdog's STOPPED and every e-stop)."""

    @abstractmethod
    def recover(self) -> None:
        """Clear driver errors after an e-stop; raises ``BackendFault`` if the arm will not recover."""

    @abstractmethod
    def begin_reset(self, target: Pose) -> float:
        """Start moving to ``target`` (non-blocking); returns the seconds the move should take."""

    def advance(self, seconds: float) -> None:
        """Lock-step only: run the inner loop for ``seconds`` of simulated time."""
        raise NotImplementedError(f"{self.name} backend runs in real time")

    def joint_limits(self) -> JointLimits | None:
        """The joint position range the governor keeps targets inside (needs ``ArmState.jacobian``)."""
        return None

    def camera_shapes(self) -> dict[str, tuple[int, int, int]]:
        """Image shape of each camera ``frames`` returns (for the spec; must not render)."""
        return {}

    def frames(self) -> dict[str, Frame]:
        """The latest frame of each camera; called on the server thread only."""
        return {}

    def close(self) -> None:  # noqa: B027 (an optional hook: backends without a driver have nothing to release)
        """Release the driver (idempotent)."""


class Interpolator:
    """The reference an inner loop tracks: linear in position, slerp in orientation, from the previous
    reference to each new target over its duration (like deoxys's trajectory interpolator)."""

    def __init__(self, pose: Pose, t: float):
        self._from = self._to = pose
        self._t0, self._length = t, 0.0

    def retarget(self, target: Pose, t: float, duration_s: float) -> None:
        self._from, self._to = self.at(t), target
        self._t0, self._length = t, duration_s

    def at(self, t: float) -> Pose:
        if self._length <= 0:
            return self._to
        alpha = min(max((t - self._t0) / self._length, 0.0), 1.0)
        start, end = self._from, self._to
        return Pose(start.pos + alpha * (end.pos - start.pos), slerp(start.quat, end.quat, alpha))


def slerp(q0: np.ndarray, q1: np.ndarray, alpha: float) -> np.ndarray:
    dot = float(np.dot(q0, q1))
    if dot < 0:  # take the short way round
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + alpha * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(dot)
    return (np.sin((1 - alpha) * theta) * q0 + np.sin(alpha * theta) * q1) / np.sin(theta)


def import_optional(module: str, package: str) -> ModuleType:
    """Import a hardware driver only when its backend is chosen, with a one-line hint if it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise RuntimeError(f"backend needs the optional package {package!r}: pip install {package}") from None
