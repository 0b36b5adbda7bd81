"""The decoder: valid messages round-trip; anything else is a one-line ProtocolError, never a crash."""

from __future__ import annotations

import contextlib

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from real_robot import protocol


def _act(**body) -> bytes:
    fields = {"obs_id": 3, "action": np.zeros(7, np.float32), **body}
    return protocol.encode(protocol.Message(protocol.ACT, 5, fields, session="s1"))


def test_act_round_trips_with_typed_array():
    action = np.arange(7, dtype=np.float32) / 10
    msg = protocol.decode(
        protocol.encode(
            protocol.Message(protocol.ACT, 9, {"obs_id": 4, "action": action}, session="abc", t_ns=12)
        )
    )
    assert (msg.type, msg.seq, msg.session, msg.t_ns, msg.body["obs_id"]) == (protocol.ACT, 9, "abc", 12, 4)
    assert msg.body["action"].dtype == np.float32
    np.testing.assert_array_equal(msg.body["action"], action)


def test_nested_arrays_round_trip_in_replies():
    image = np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    data = protocol.packb({"frames": {"front": {"image": image}}, "q": np.ones(7)})
    back = protocol.unpackb(data)
    np.testing.assert_array_equal(back["frames"]["front"]["image"], image)
    assert back["q"].dtype == np.float64


def _raw(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"\xc1", "not valid msgpack"),
        (_raw([1, 2, 3]), "not a map"),
        (_raw({"v": 2, "type": "ACT", "seq": 1}), "version"),
        (_raw({"v": 1, "type": "FLY", "seq": 1}), "unknown message type"),
        (_raw({"v": 1, "type": "STATUS", "seq": -1}), "seq must be an integer"),
        (_raw({"v": 1, "type": "STATUS", "seq": True}), "seq must be an integer"),
        (_raw({"v": 1, "type": "STATUS", "seq": 1, "extra": 0}), "unknown envelope"),
        (_raw({"v": 1, "type": "ACT", "seq": 1, "body": {}}), "needs the session"),
        (_raw({"v": 1, "type": "ESTOP", "seq": 1, "body": {}}), "ESTOP.reason is missing"),
        (_raw({"v": 1, "type": "ESTOP", "seq": 1, "body": {"reason": 5}}), "must be str"),
        (_raw({"v": 1, "type": "ESTOP", "seq": 1, "body": {"reason": "x" * 300}}), "longer than"),
        (_raw({"v": 1, "type": "STATUS", "seq": 1, "body": {"x": 1}}), "unknown field"),
        (_raw({"v": 1, "type": "RESET", "seq": 1, "session": "s", "body": {"seed": True}}), "must be int"),
        (_act(action=np.zeros(6, np.float32)), "ACT.action must be float32[7]"),
        (_act(action=np.zeros(7, np.float64)), "ACT.action must be float32[7]"),
        (_act(action=[0.0] * 7), "ACT.action must be ndarray"),
        (_raw({"v": 1, "type": "STATUS", "seq": 1, "body": msgpack.ExtType(9, b"")}), "extension type 9"),
        (
            _raw(
                {"v": 1, "type": "STATUS", "seq": 1, "body": msgpack.ExtType(1, b"\x01\x01\x07\x00\x00\x00")}
            ),
            "does not match",
        ),
        (_raw({"v": 1, "type": "STATUS", "seq": 1, "body": msgpack.ExtType(1, b"\x07\x00")}), "dtype code 7"),
        (b"\x00" * (protocol.MAX_MESSAGE_BYTES + 1), "exceeds"),
    ],
)
def test_bad_messages_are_rejected_with_a_reason(data: bytes, fragment: str):
    with pytest.raises(
        protocol.ProtocolError, match=fragment.replace("[", r"\[").replace("]", r"\]")
    ) as info:
        protocol.decode(data)
    assert "\n" not in str(info.value)


def test_encoder_refuses_oversized_messages():
    with pytest.raises(protocol.ProtocolError, match="exceeds"):
        protocol.encode(
            protocol.Message(
                protocol.HELLO_ACK, 1, {"spec": {"blob": np.zeros(protocol.MAX_MESSAGE_BYTES, np.uint8)}}
            )
        )


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=512))
def test_fuzz_random_bytes(data: bytes):
    with contextlib.suppress(protocol.ProtocolError):
        protocol.decode(data)


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(sorted(protocol.SCHEMAS)),
    st.dictionaries(
        st.sampled_from(["v", "type", "seq", "session", "re", "t_ns", "body", "zz"]), _values, max_size=7
    ),
    st.dictionaries(st.text(max_size=10), _values, max_size=5),
)
def test_fuzz_structured_envelopes(kind: str, envelope: dict, body: dict):
    """Plausible maps with wrong types in every position: decode or a ProtocolError, nothing else."""
    envelope = {"v": 1, "type": kind, "seq": 1, **envelope, "body": envelope.get("body", body)}
    try:
        msg = protocol.decode(msgpack.packb(envelope, use_bin_type=True))
    except protocol.ProtocolError:
        return
    assert msg.type in protocol.SCHEMAS and isinstance(msg.body, dict)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 200), st.integers(0, 255), st.integers(1, 60))
def test_fuzz_mutated_valid_message(position: int, byte: int, cut: int):
    data = bytearray(_act())
    data[position % len(data)] = byte
    for candidate in (bytes(data), bytes(data[:-cut])):
        with contextlib.suppress(protocol.ProtocolError):
            protocol.decode(candidate)


def test_deeply_nested_input_is_rejected_not_a_crash():
    data = b"\x91" * 100_000 + b"\x00"  # 100k nested one-element arrays
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(data)


def test_a_camera_named_state_is_refused_because_it_would_take_the_proprio_key():
    assert protocol.check_camera_names(["front", "wrist"]) == ["front", "wrist"]
    with pytest.raises(protocol.ProtocolError, match=r"a camera named 'state' would take the proprio"):
        protocol.check_camera_names(["front", "state"])
