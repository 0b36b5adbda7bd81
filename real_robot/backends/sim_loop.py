"""The sim's real-time inner loop, kept out of the server's way.

A ``SimArm`` stepped at 500 Hz in Python holds the interpreter lock for most of each 2 ms period.
As a thread of the server's process it competes with the server for that lock, so a reply can
wait for a physics step to finish: that is the jitter the bridge benchmark measured. Here the loop
runs in its own process (``mode="process"``, the default), like a real arm's controller on its own
box, and the server never waits for it on the per-step path:

- **state**: after every step the loop publishes the arm's state to shared memory, in two slots
  each with a version counter (odd while being written). The loop writes the slot that is not
  published, then publishes it; ``read_state`` copies the published slot and retries in the rare
  case the loop started rewriting it meanwhile. No lock, no system call, no waiting for the loop
  to be scheduled.
- **targets**: ``command`` writes the latest target to a shared-memory slot (versioned the same
  way) and returns; the loop picks it up before its next step (within one inner period), so the
  per-step path makes no system call and does not wake the loop's process, which on a busy machine
  could take the server's CPU away mid-reply.
- **everything else** goes through a pipe: ``hold`` and ``stop`` without waiting for an answer
  (they wake the loop at once), ``begin_reset``, ``recover``, ``render`` and ``joint_limits`` with
  one. The loop applies a pending target before any pipe message, so a ``stop`` sent after a
  ``command`` is never overtaken by it.

``mode="thread"`` runs the very same loop as a thread of the server's process (same memory, same
pipe), which is what the benchmark compares the process against.

The state's timestamp is when the loop published it (at most one inner period before the server
reads it). If the loop's process dies, ``read_state`` reports a fault (the server latches the
e-stop); the loop exits by itself when the server's process dies (its end of the pipe closes).
A script that starts a real-time sim must guard its entry point with ``if __name__ == "__main__"``,
as any program that starts processes with ``multiprocessing``'s spawn method must.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
import time
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from real_robot.backends.base import ArmState, BackendFault
from real_robot.backends.sim_arm import HOME_Q, SimArm, SimSettings
from real_robot.governor import Pose

DOF = len(HOME_Q)
_FAULT_BYTES = 160
STATE_DTYPE = np.dtype(
    [
        ("version", "<u8"),
        ("t_ns", "<i8"),
        ("q", "<f8", DOF),
        ("dq", "<f8", DOF),
        ("pos", "<f8", 3),
        ("quat", "<f8", 4),
        ("gripper", "<f8"),
        ("wrench", "<f8", 6),
        ("jacobian", "<f8", (6, DOF)),
        ("fault", f"S{_FAULT_BYTES}"),
    ]
)
_HEADER = np.dtype([("published", "<i8")])
TARGET_DTYPE = np.dtype(
    [("version", "<u8"), ("pos", "<f8", 3), ("quat", "<f8", 4), ("gripper", "<f8"), ("duration", "<f8")]
)
START_TIMEOUT_S = 120.0
"""Spawning the process, importing MuJoCo and compiling the model: seconds on a loaded machine."""
CALL_TIMEOUT_S = 10.0
MODES = ("process", "thread")


class StateBoard:
    """Two state slots in shared memory: the loop writes one while the server reads the other."""

    def __init__(self, memory: Any):
        self.header = np.frombuffer(memory, _HEADER, count=1)
        self.slots = np.frombuffer(memory, STATE_DTYPE, count=2, offset=_HEADER.itemsize)

    @staticmethod
    def size() -> int:
        return _HEADER.itemsize + 2 * STATE_DTYPE.itemsize

    def publish(self, state: ArmState) -> None:
        i = 1 - int(self.header["published"][0])
        slot = self.slots[i : i + 1]
        slot["version"] += 1  # odd: being written
        slot["t_ns"] = state.t_ns
        slot["q"], slot["dq"] = state.q, state.dq
        slot["pos"], slot["quat"] = state.ee.pos, state.ee.quat
        slot["gripper"], slot["wrench"], slot["jacobian"] = state.gripper, state.wrench_ext, state.jacobian
        slot["fault"] = state.fault.encode()[:_FAULT_BYTES]
        slot["version"] += 1  # even: complete
        self.header["published"] = i

    def read(self) -> ArmState | None:
        """The latest published state, or None before the first one."""
        while True:
            i = int(self.header["published"][0])
            version = int(self.slots["version"][i])
            if version == 0:
                return None
            if version % 2:
                continue
            record = self.slots[i : i + 1].copy()[0]
            if int(self.slots["version"][i]) == version:
                return ArmState(
                    t_ns=int(record["t_ns"]),
                    q=record["q"],
                    dq=record["dq"],
                    ee=Pose(record["pos"], record["quat"]),
                    gripper=float(record["gripper"]),
                    wrench_ext=record["wrench"],
                    fault=record["fault"].decode(),
                    jacobian=record["jacobian"],
                )


class TargetSlot:
    """The latest commanded target in shared memory: the server writes, the loop takes."""

    def __init__(self, memory: Any):
        self.slot = np.frombuffer(memory, TARGET_DTYPE, count=1)
        self.taken = 0
        """The version the loop applied last (loop side only)."""

    def write(self, target: Pose, gripper: float, duration_s: float) -> None:
        slot = self.slot
        slot["version"] += 1  # odd: being written
        slot["pos"], slot["quat"], slot["gripper"], slot["duration"] = (
            target.pos,
            target.quat,
            gripper,
            duration_s,
        )
        slot["version"] += 1  # even: complete

    def take(self) -> tuple[Pose, float, float] | None:
        """A target written since the last ``take``, or None (also while one is half written)."""
        version = int(self.slot["version"][0])
        if version == self.taken or version % 2:
            return None
        record = self.slot.copy()[0]
        if int(self.slot["version"][0]) != version:
            return None
        self.taken = version
        return Pose(record["pos"], record["quat"]), float(record["gripper"]), float(record["duration"])


def run_inner_loop(settings: SimSettings, conn: Connection, state_memory: Any, target_memory: Any) -> None:
    """Step the arm at ``inner_hz`` in real time, handling commands between steps, until told to stop."""
    arm = SimArm(settings)
    board, targets = StateBoard(state_memory), TargetSlot(target_memory)
    period = 1.0 / settings.inner_hz
    board.publish(arm.state(time.monotonic_ns()))
    next_tick = time.monotonic() + period
    try:
        while True:
            while (left := next_tick - time.monotonic()) > 0:
                if conn.poll(left):
                    _take_target(arm, targets)  # before the message: a stop must not be overtaken
                    if not _handle(arm, conn):
                        return
            _take_target(arm, targets)
            arm.step()
            board.publish(arm.state(time.monotonic_ns()))
            next_tick += period
            if time.monotonic() - next_tick > 0.05:  # fell far behind (machine busy): no burst to catch up
                next_tick = time.monotonic()
    finally:
        arm.close()


def _take_target(arm: SimArm, targets: TargetSlot) -> None:
    target = targets.take()
    if target is not None:
        arm.command(*target)


def _handle(arm: SimArm, conn: Connection) -> bool:
    """Run one command from the pipe; False when the loop should end (told to, or the server is gone)."""
    try:
        method, args, wants_reply = conn.recv()
    except (EOFError, OSError):
        return False
    if method == "close":
        return False
    try:
        result, error = getattr(arm, method)(*args), ""
    except BackendFault as exc:
        result, error = None, str(exc)
    if wants_reply:
        conn.send((result, error))
    return True


class InnerLoop:
    """The server's handle on the loop: the same calls as the lock-step ``InProcess``."""

    def __init__(self, settings: SimSettings, mode: str = "process"):
        if mode not in MODES:
            raise ValueError(f"sim: inner_loop must be one of {MODES}, got {mode!r}")
        self.mode = mode
        context = multiprocessing.get_context("spawn")  # never fork a process that runs threads
        state_memory = context.RawArray("b", StateBoard.size())
        target_memory = context.RawArray("b", TARGET_DTYPE.itemsize)
        self.board, self.targets = StateBoard(state_memory), TargetSlot(target_memory)
        self._conn, child_conn = context.Pipe()
        self._lock = threading.Lock()  # the server's thread and a test's may both send
        args = (settings, child_conn, state_memory, target_memory)
        if mode == "process":
            self._runner: Any = context.Process(
                target=run_inner_loop, args=args, daemon=True, name="sim-inner-loop"
            )
        else:
            self._runner = threading.Thread(
                target=run_inner_loop, args=args, daemon=True, name="sim-inner-loop"
            )
        self._runner.start()
        if mode == "process":
            child_conn.close()  # so the loop sees the pipe close if this process dies
        deadline = time.monotonic() + START_TIMEOUT_S
        while self.board.read() is None:
            if not self._runner.is_alive() or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("sim: the inner loop did not start")
            time.sleep(0.01)

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def read_state(self) -> ArmState:
        state = self.board.read()
        if not self._runner.is_alive():
            return replace(state, fault="sim: the inner loop is gone")
        return state

    def command(self, target: Pose, gripper: float, duration_s: float) -> None:
        self.targets.write(target, gripper, duration_s)

    def send(self, method: str, *args: Any) -> None:
        with self._lock:
            self._conn.send((method, args, False))

    def call(self, method: str, *args: Any) -> Any:
        with self._lock:
            try:
                self._conn.send((method, args, True))
                if not self._conn.poll(CALL_TIMEOUT_S):
                    raise BackendFault(
                        f"sim: the inner loop did not answer {method} in {CALL_TIMEOUT_S:.0f} s"
                    )
                result, error = self._conn.recv()
            except (EOFError, OSError):
                raise BackendFault("sim: the inner loop is gone") from None
        if error:
            raise BackendFault(error)
        return result

    def close(self) -> None:
        if self._runner.is_alive():
            with contextlib.suppress(OSError):  # the loop may have gone already
                self.send("close")
            self._runner.join(5)
        if self.mode == "process" and self._runner.is_alive():
            self._runner.terminate()
            self._runner.join(5)
        self._conn.close()
