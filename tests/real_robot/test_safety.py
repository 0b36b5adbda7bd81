"""Watchdog deadlines, the e-stop latch and fault injection, through a real server on loopback."""

from __future__ import annotations

import time

import numpy as np
import pytest

from real_robot import protocol
from real_robot.backends.sim import SimFaults
from real_robot.client import BridgeClient, BridgeError


def _act(client: BridgeClient, obs: protocol.Message, action=None) -> protocol.Message:
    action = np.zeros(7, np.float32) if action is None else np.asarray(action, np.float32)
    return client.request(protocol.ACT, {"obs_id": obs.body["obs_id"], "action": action})


def _start_episode(client: BridgeClient, seed: int = 1) -> protocol.Message:
    client.hello()
    # A reset moves the arm home (about 1.5 s of simulated motion, rendered when a camera is on): on a
    # loaded 2-core machine that can take far longer in wall time than on an idle one.
    return client.request(protocol.RESET, {"seed": seed}, timeout_s=60)


def _wait_status(client: BridgeClient, predicate, timeout_s: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.request(protocol.STATUS).body["status"]
        if predicate(status):
            return status
        time.sleep(0.01)
    raise AssertionError(f"status never satisfied the condition; last {status}")


def test_watchdog_holds_then_stops_within_one_control_period_of_its_deadlines(start_server, connect):
    """Real-time sim at 20 Hz: the server stamps each transition on its own clock."""
    server = start_server(lockstep=False, control_hz=20.0, hold_after_ms=150.0, stop_after_ms=400.0)
    period_ns = 50_000_000
    client, observer = connect(server), connect(server, name="client2")
    obs = _start_episode(client)
    for _ in range(3):
        obs = _act(client, obs, [1.0, 0, 0, 0, 0, 0, 0])  # moving when the client goes silent
    status = _wait_status(observer, lambda s: s["stop_at_ns"] > 0)
    last = status["last_valid_act_ns"]
    assert 150_000_000 <= status["hold_at_ns"] - last <= 150_000_000 + period_ns
    assert 400_000_000 <= status["stop_at_ns"] - last <= 400_000_000 + period_ns
    assert status["mode"] == "stopped"
    # Stopped means stopped: the arm no longer moves, and actions are refused until a RESET.
    before = server.backend.read_state().ee.pos
    time.sleep(0.2)
    np.testing.assert_allclose(server.backend.read_state().ee.pos, before, atol=5e-4)
    with pytest.raises(BridgeError, match="not_running"):
        _act(client, obs)
    assert client.request(protocol.RESET, {"seed": 2}, timeout_s=60).type == protocol.OBS


def test_hold_stops_the_reference_where_the_arm_is(start_server, connect):
    server = start_server(lockstep=False, control_hz=20.0, hold_after_ms=100.0, stop_after_ms=2000.0)
    client, observer = connect(server), connect(server, name="client2")
    obs = _start_episode(client)
    obs = _act(client, obs, [1.0, 0, 0, 0, 0, 0, 0])
    _wait_status(observer, lambda s: s["mode"] == "hold")
    time.sleep(0.3)  # let the arm settle on the held reference
    held = server.backend.read_state().ee.pos
    time.sleep(0.3)
    np.testing.assert_allclose(server.backend.read_state().ee.pos, held, atol=1e-3)


def test_estop_latches_survives_reconnects_and_only_the_operator_clears_it(start_server, connect):
    server = start_server()
    client = connect(server)
    obs = _start_episode(client)
    obs = _act(client, obs, [1.0, 0, 0, 0, 0, 0, 0])
    status = client.request(protocol.ESTOP, {"reason": "test"}).body["status"]
    assert status["estop"] and status["mode"] == "latched"
    pose_at_stop = server.backend.read_state().ee.pos.copy()

    with pytest.raises(BridgeError, match="estop") as info:
        _act(client, obs)
    assert info.value.fatal

    client.close()
    again = connect(server)  # a reconnecting client: still latched, and it cannot reset
    again.hello()
    with pytest.raises(BridgeError, match="estop"):
        again.request(protocol.RESET, {"seed": 3})
    with pytest.raises(BridgeError, match="forbidden"):
        again.request(protocol.CLEAR, {"nonce": "0" * 32})

    operator = connect(server, name="operator")
    with pytest.raises(BridgeError, match="unknown nonce"):
        operator.request(protocol.CLEAR, {"nonce": "0" * 32})
    old_nonce = operator.request(protocol.NONCE).body["nonce"]
    again.request(protocol.ESTOP, {"reason": "second stop"})
    with pytest.raises(BridgeError, match="unknown nonce"):
        operator.request(protocol.CLEAR, {"nonce": old_nonce})

    nonce = operator.request(protocol.NONCE).body["nonce"]
    status = operator.request(protocol.CLEAR, {"nonce": nonce}).body["status"]
    assert not status["estop"] and status["mode"] == "stopped"
    # Re-anchored: the arm is where it stopped, and nothing moves until a RESET.
    np.testing.assert_allclose(server.backend.read_state().ee.pos, pose_at_stop, atol=1e-6)
    with pytest.raises(BridgeError, match="not_running"):
        again.request(protocol.ACT, {"obs_id": obs.body["obs_id"], "action": np.zeros(7, np.float32)})
    obs = again.request(protocol.RESET, {"seed": 4})
    assert _act(again, obs).type == protocol.OBS


def test_a_streak_of_non_finite_actions_latches(start_server, connect):
    server = start_server()
    client = connect(server)
    obs = _start_episode(client)
    for _ in range(server.config.limits.nan_streak_to_estop):
        with pytest.raises(BridgeError, match="non_finite"):
            _act(client, obs, [np.nan] * 7)
    assert client.request(protocol.STATUS).body["status"]["estop_reason"].startswith("3 non-finite")


def test_a_streak_of_rejected_commands_latches(start_server, connect):
    server = start_server()
    client = connect(server)
    obs = _act(client, obs0 := _start_episode(client))
    for _ in range(server.config.limits.reject_streak_to_estop):
        with pytest.raises(BridgeError, match="stale"):
            _act(client, obs0)
    assert "rejected commands in a row" in client.request(protocol.STATUS).body["status"]["estop_reason"]
    with pytest.raises(BridgeError, match="estop"):
        _act(client, obs)


def test_backend_fault_latches_and_the_waiting_client_is_told(start_server, connect):
    server = start_server(
        faults=SimFaults(fault_after_commands=2),
        max_action_age_ms=5000.0,
        hold_after_ms=5000.0,
        stop_after_ms=6000.0,
    )
    client = connect(server)
    obs = _start_episode(client)
    obs = _act(client, obs)
    obs = _act(client, obs)
    # The fault is noticed on the server's next control tick; on a loaded machine that can be a few
    # commands later, so allow some, but the client must be told and no command may succeed forever.
    with pytest.raises(BridgeError, match="backend fault: injected reflex") as info:
        for _ in range(20):
            obs = _act(client, obs)
    assert info.value.fatal
    operator = connect(server, name="operator")
    operator.request(protocol.CLEAR, {"nonce": operator.request(protocol.NONCE).body["nonce"]})
    obs = client.request(protocol.RESET, {"seed": 5})
    assert _act(client, obs).type == protocol.OBS  # recover() cleared the injected fault


def test_dropped_messages_time_out_and_the_client_recovers(start_server, connect):
    server = start_server(drop_every=3, max_action_age_ms=5000.0, hold_after_ms=5000.0, stop_after_ms=6000.0)
    client = connect(server, timeout_s=0.5)
    client.hello()  # message 1
    obs = client.request(protocol.RESET, {"seed": 1}, timeout_s=60)  # message 2 (a reset is slow when loaded)
    with pytest.raises(TimeoutError):
        client.request(protocol.STATUS)  # message 3: dropped on purpose
    # A later request is answered: no wedged socket (a generous deadline: only the drop should fail).
    act = {"obs_id": obs.body["obs_id"], "action": np.zeros(7, np.float32)}
    assert client.request(protocol.ACT, act, timeout_s=20).type == protocol.OBS


def test_frozen_camera_is_reported_then_latches(start_server, connect):
    # Generous deadlines: on a loaded machine a slow client must not have its action refused as stale
    # or trigger a watchdog hold here; those have their own tests.
    server = start_server(
        cameras=("front",),
        faults=SimFaults(freeze_camera_after=3),
        stale_frames_to_estop=3,
        max_action_age_ms=5000.0,
        hold_after_ms=5000.0,
        stop_after_ms=6000.0,
    )
    client = connect(server)
    obs = _start_episode(client)
    assert obs.body["frames"]["front"]["image"].shape == (64, 64, 3)
    ids = []
    with pytest.raises(BridgeError, match="camera frozen"):
        for _ in range(10):
            obs = _act(client, obs)
            ids.append((obs.body["frames"]["front"]["frame_id"], obs.body["status"]["camera_stale"]))
    assert ids[-1][1] and ids[-1][0] == ids[-2][0]  # the id stopped advancing and it was flagged


def test_force_guard_holds_and_latches_when_the_arm_is_driven_into_an_obstacle(start_server, connect):
    # A box whose top (z = 0.42) is 4-10 cm below every reset start pose (home z 0.491 +- 3 cm).
    server = start_server(
        obstacle=(0.31, 0.0, 0.39, 0.08, 0.08, 0.03),
        max_action_age_ms=5000.0,
        hold_after_ms=5000.0,
        stop_after_ms=6000.0,
    )
    client = connect(server)
    obs = _start_episode(client)
    with pytest.raises(BridgeError, match="force guard: external force") as info:
        for _ in range(30):
            obs = _act(client, obs, [0, 0, -1.0, 0, 0, 0, 0])  # straight down, 2 cm a step
    assert info.value.fatal
    assert obs.body["state"]["ee_pos"][2] > 0.42  # it touched the box; the box held
    status = client.request(protocol.STATUS).body["status"]
    assert status["estop"] and status["mode"] == "latched"
    # Held where it stopped: the reference is where the arm touched, so it no longer pushes (what
    # is left is the resting contact, a few newtons, far below the 20 N it tripped at).
    server.backend.advance(0.5)
    assert (
        np.linalg.norm(server.backend.read_state().wrench_ext[:3]) < 0.25 * server.config.limits.max_force_n
    )
