"""The sim's real-time inner loop: targets through shared memory never overtake a stop, and a dead loop is a fault."""

from __future__ import annotations

import time

import numpy as np

from real_robot.backends.sim_arm import SimSettings
from real_robot.backends.sim_loop import InnerLoop
from real_robot.governor import Pose


def _wait_for(predicate, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_a_stop_sent_right_after_a_command_is_not_overtaken_by_it():
    loop = InnerLoop(SimSettings(), mode="thread")  # the same loop as the process, in this process
    try:
        start = loop.read_state()
        far = Pose(start.ee.pos + np.array([0.0, 0.0, -0.2]), start.ee.quat)
        loop.command(far, 0.0, 0.5)  # shared memory: picked up before the next step ...
        loop.send("stop")  # ... and before this pipe message, so the stop comes last
        time.sleep(0.3)
        held = loop.read_state().ee.pos
        time.sleep(0.2)
        now = loop.read_state().ee.pos
        np.testing.assert_allclose(now, held, atol=1e-3)  # stopped, not travelling to the target
        assert np.linalg.norm(now - start.ee.pos) < 0.02
        # A command after the stop is followed, so the slot works at all.
        loop.command(far, 0.0, 0.2)
        _wait_for(lambda: loop.read_state().ee.pos[2] < start.ee.pos[2] - 0.1)
    finally:
        loop.close()


def test_a_dead_inner_loop_process_is_reported_as_a_fault():
    loop = InnerLoop(SimSettings(), mode="process")
    try:
        assert loop.read_state().fault == ""
        loop._runner.kill()  # the loop's process dies (a crash, an OOM kill)
        _wait_for(lambda: not loop._runner.is_alive())
        assert loop.read_state().fault == "sim: the inner loop is gone"
    finally:
        loop.close()
