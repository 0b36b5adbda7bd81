"""The server over real loopback sockets: authentication, the lease, and bad input of every kind."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import zmq

from real_robot import protocol
from real_robot.client import AuthRefused, BridgeClient, BridgeError, BridgeTimeout
from real_robot.keys import ClientKeys, Keypair, load_client_keys, load_public


def _act(client: BridgeClient, obs: protocol.Message, action=None) -> protocol.Message:
    action = np.zeros(7, np.float32) if action is None else np.asarray(action, np.float32)
    return client.request(protocol.ACT, {"obs_id": obs.body["obs_id"], "action": action})


def _start_episode(client: BridgeClient) -> protocol.Message:
    client.hello()
    return client.request(protocol.RESET, {"seed": 1})


def test_client_without_an_allowed_key_is_refused_and_the_arm_does_not_move(start_server, connect, keys_dir):
    server = start_server()
    before = server.backend.read_state().ee.pos.copy()
    public, secret = zmq.curve_keypair()
    stranger = BridgeClient(
        server.address, ClientKeys(Keypair(public, secret), load_public(keys_dir / "server.key"))
    )
    try:
        with pytest.raises(AuthRefused, match="refused our key"):
            stranger.hello()
    finally:
        stranger.close()
    np.testing.assert_array_equal(server.backend.read_state().ee.pos, before)
    assert server.lease is None and server.episode == -1
    # ... and the server keeps serving authorised clients.
    assert _start_episode(connect(server)).type == protocol.OBS


def test_client_with_the_wrong_server_key_is_refused(start_server, keys_dir):
    server = start_server()
    own = load_client_keys(keys_dir)
    wrong = BridgeClient(server.address, ClientKeys(own.own, zmq.curve_keypair()[0]), timeout_s=2.0)
    try:
        with pytest.raises((AuthRefused, TimeoutError)):
            wrong.hello()
    finally:
        wrong.close()
    assert server.lease is None


def test_valid_episode_moves_the_arm_towards_the_goal(start_server, connect):
    # Generous freshness and watchdog limits: a slow client on a loaded machine must not turn this
    # into a stale-action refusal (those have their own test).
    server = start_server(max_action_age_ms=5000.0, hold_after_ms=5000.0, stop_after_ms=6000.0)
    client = connect(server)
    obs = _start_episode(client)
    start_reward = obs.body["reward"]
    for _ in range(10):
        direction = obs.body["state"]["goal"] - obs.body["state"]["ee_pos"]
        obs = _act(client, obs, np.concatenate([np.clip(direction * 50, -1, 1), np.zeros(4)]))
    assert obs.body["reward"] > start_reward + 0.05
    assert obs.body["step"] == 10 and obs.body["t_state_ns"] - obs.body["t_applied_ns"] == 100_000_000


def _expect_error(client: BridgeClient, data: bytes, code: str) -> None:
    client.send_raw(data)
    reply = client.receive(seq=-2)  # undecodable requests are answered with re=-1
    assert reply.type == protocol.ERROR and reply.body["code"] == code, reply.body
    assert "\n" not in reply.body["msg"]


def test_malformed_oversized_out_of_order_stale_and_nan_are_rejected_and_serving_continues(
    start_server, connect
):
    server = start_server()
    client = connect(server)
    obs = _start_episode(client)

    _expect_error(client, b"\xc1garbage", "malformed")
    _expect_error(client, protocol.packb({"v": 1, "type": "ACT", "seq": 99}), "malformed")
    _expect_error(client, b"\x00" * (protocol.MAX_MESSAGE_BYTES + 10), "oversized")
    client.socket.send_multipart([b"two", b"frames"])
    assert client.receive(seq=-2).body["code"] == "malformed"

    # Out of order: a seq at or below the last one the server saw in this session.
    stale_seq = protocol.Message(
        protocol.ACT, 1, {"obs_id": obs.body["obs_id"], "action": np.zeros(7, np.float32)}, client.session
    )
    client.send_raw(protocol.encode(stale_seq))
    assert client.receive(seq=1).body["code"] == "out_of_order"

    # Stale: computed from an observation that is not the latest.
    obs2 = _act(client, obs)
    with pytest.raises(BridgeError, match="stale: computed from obs"):
        _act(client, obs)

    with pytest.raises(BridgeError, match="non_finite"):
        _act(client, obs2, [np.nan, 0, 0, 0, 0, 0, 0])

    with pytest.raises(BridgeError, match="reply type"):
        client.request(protocol.STATUS_REPLY, {"status": {}})

    # Still serving, and the rejections were counted and logged.
    obs3 = _act(client, obs2)
    assert obs3.type == protocol.OBS and not obs3.body["status"]["estop"]
    assert {"malformed", "oversized", "out_of_order", "stale", "non_finite"} <= set(
        obs3.body["status"]["drops"]
    )


def test_action_from_an_old_observation_is_stale_by_age(start_server, connect):
    server = start_server(max_action_age_ms=20.0, hold_after_ms=500.0)
    client = connect(server)
    obs = _start_episode(client)
    time.sleep(0.05)
    with pytest.raises(BridgeError, match=r"stale: obs is \d+ ms old"):
        _act(client, obs)


def test_one_lease_at_a_time_and_the_same_key_may_take_over(start_server, connect):
    server = start_server()
    first = connect(server)
    obs = _start_episode(first)
    other = connect(server, name="client2")
    with pytest.raises(BridgeError, match="busy: another client holds the lease"):
        other.hello()
    restarted = connect(server)  # the same key from a new connection: a restarted actor
    restarted.hello()
    with pytest.raises(BridgeError, match="no_lease"):
        _act(first, obs)
    with pytest.raises(BridgeError, match="not_running"):  # the old episode ended with the takeover
        restarted.request(protocol.ACT, {"obs_id": obs.body["obs_id"], "action": np.zeros(7, np.float32)})
    assert restarted.request(protocol.RESET, {"seed": 2}).type == protocol.OBS


def test_a_reset_longer_than_the_lease_timeout_keeps_the_lease_and_silence_still_ends_it(
    start_server, connect
):
    """The holder's silence counts from the server's last answer, not from its request: a slow reset
    (a real arm homing) must not expire the lease of the client waiting for it."""
    server = start_server(
        lockstep=False, reset_settle_s=1.0, lease_timeout_s=0.4, hold_after_ms=5000.0, stop_after_ms=6000.0
    )
    client = connect(server)
    obs = _start_episode(client)  # waits > 1 s for the reset's answer: longer than the lease timeout
    obs = _act(client, obs)
    assert obs.type == protocol.OBS
    time.sleep(1.0)  # silent for longer than the timeout
    with pytest.raises(BridgeError, match="no_lease"):
        _act(client, obs)


def test_bye_frees_the_lease_for_another_key(start_server, connect):
    server = start_server()
    first = connect(server)
    _start_episode(first)
    first.request(protocol.BYE)
    assert _start_episode(connect(server, name="client2")).type == protocol.OBS


def test_operator_only_commands_need_an_operator_key_and_operators_cannot_drive(start_server, connect):
    server = start_server()
    client = connect(server)
    for kind, body in [
        (protocol.NONCE, {}),
        (protocol.CLEAR, {"nonce": "x"}),
        (protocol.INTERVENE, {"action": None}),
    ]:
        with pytest.raises(BridgeError, match="forbidden"):
            client.request(kind, body)
    with pytest.raises(BridgeError, match="forbidden: HELLO needs a client key"):
        connect(server, name="operator").hello()


def test_human_intervention_replaces_the_policy_action_through_the_governor(start_server, connect):
    server = start_server()
    client, operator = connect(server), connect(server, name="operator")
    obs = _start_episode(client)
    operator.request(protocol.INTERVENE, {"action": np.array([0, 5.0, 0, 0, 0, 0, 0], np.float32)})
    obs = _act(client, obs, [0.5, 0, 0, 0, 0, 0, 0])
    applied = obs.body["applied"]
    assert applied["source"] == "human" and obs.body["status"]["intervened"]
    assert "action_range" in applied["clipped"]  # the human's 5.0 was clipped like any action
    assert applied["applied"][1] == pytest.approx(1.0, abs=1e-3) and abs(applied["applied"][0]) < 1e-3
    operator.request(protocol.INTERVENE, {"action": None})
    assert _act(client, obs, [0.5, 0, 0, 0, 0, 0, 0]).body["applied"]["source"] == "policy"


def _forged_act(client: BridgeClient, session: str, obs: protocol.Message, seq: int) -> protocol.Message:
    """An ACT carrying another client's session id, sent on this client's own (authorised) key."""
    body = {"obs_id": obs.body["obs_id"], "action": np.array([1.0, 0, 0, 0, 0, 0, 0], np.float32)}
    client.send_raw(protocol.encode(protocol.Message(protocol.ACT, seq, body, session)))
    return client.receive(seq)


@pytest.mark.parametrize("intruder_key", ["client2", "operator"])
def test_the_lease_is_bound_to_the_key_that_took_it(start_server, connect, intruder_key):
    server = start_server()
    holder = connect(server)
    obs = _start_episode(holder)
    intruder = connect(server, name=intruder_key)
    before = server.backend.read_state().ee.pos.copy()
    for kind in (protocol.ACT, protocol.RESET, protocol.BYE):
        body = {"seed": 1} if kind == protocol.RESET else {}
        if kind == protocol.ACT:
            reply = _forged_act(intruder, holder.session, obs, seq=10_000)
        else:
            intruder.send_raw(protocol.encode(protocol.Message(kind, 10_001, body, holder.session)))
            reply = intruder.receive(10_001)
        assert reply.type == protocol.ERROR and reply.body["code"] == "no_lease", (kind, reply.body)
    np.testing.assert_array_equal(
        server.backend.read_state().ee.pos, before
    )  # the forged ACT did not move it
    # The holder is neither locked out (out_of_order) nor stopped, and its lease stands.
    obs = _act(holder, obs, [0.5, 0, 0, 0, 0, 0, 0])
    assert obs.type == protocol.OBS and obs.body["step"] == 1 and not obs.body["status"]["estop"]
    assert server.lease is not None and server.lease.session == holder.session
    # STATUS and ESTOP stay open to every authorised key.
    assert intruder.request(protocol.STATUS).body["status"]["lease"] is not None
    assert intruder.request(protocol.ESTOP, {"reason": "seen from outside"}).body["status"]["estop"]


def test_every_client_call_returns_by_its_deadline_even_after_the_handshake_was_refused(
    start_server, keys_dir
):
    """A refused key leaves the DEALER without a peer; no later call may block on it."""
    server = start_server()
    public, secret = zmq.curve_keypair()
    stranger = BridgeClient(
        server.address,
        ClientKeys(Keypair(public, secret), load_public(keys_dir / "server.key")),
        timeout_s=0.5,
    )
    outcomes: list[str] = []

    def calls() -> None:
        for _ in range(4):
            try:
                stranger.request(protocol.HELLO)
                outcomes.append("reply")
            except AuthRefused:
                outcomes.append("refused")
            except BridgeTimeout:
                outcomes.append("timeout")

    caller = threading.Thread(target=calls, daemon=True)
    caller.start()
    caller.join(30)  # a hang detector, far above the four 0.5 s deadlines
    assert not caller.is_alive(), f"a request blocked past its deadline after {outcomes}"
    stranger.close()
    assert len(outcomes) == 4 and "reply" not in outcomes and outcomes[0] == "refused"
