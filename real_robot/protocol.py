"""Wire format of the bridge: msgpack maps with a version, a sequence number and a timestamp.

Every message is one ZeroMQ frame holding a msgpack map::

    {"v": 1, "type": "ACT", "seq": 17, "t_ns": <sender monotonic ns>, "session": "...", "body": {...}}

Replies carry ``re``, the ``seq`` of the request they answer, so a client can discard a late reply
to an earlier request (the reason for ROUTER/DEALER instead of REQ/REP, which locks up on a lost
reply). numpy arrays travel as a msgpack extension type: a little-endian header (dtype code, ndim,
shape) followed by the raw buffer, never pickle.

Decoding is defensive because the server must keep serving whatever arrives: the frame size is
checked before msgpack sees it, msgpack's own container limits are set, and every field is checked
against the message type's schema before any of it is used. Every failure is a ``ProtocolError``
with a one-line message naming the field.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

VERSION = 1
MAX_MESSAGE_BYTES = 1 << 20
"""Hard limit on one frame. A 128x128 RGB frame is 48 KiB, so 1 MiB leaves room for a few cameras."""
MAX_STRING = 256
MAX_CONTAINER = 64
MAX_NDIM = 4
_NDARRAY_EXT = 1
_DTYPES = {1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("u1"), 4: np.dtype("<i8")}
_DTYPE_CODES = {dt: code for code, dt in _DTYPES.items()}

ACTION_DIM = 7
"""ee_delta actions: (dx, dy, dz, droll, dpitch, dyaw, gripper), each in [-1, 1]."""

# Message types. Client -> server requests, then server -> client replies.
HELLO, RESET, ACT, BYE = "HELLO", "RESET", "ACT", "BYE"
STATUS, ESTOP, NONCE, CLEAR, INTERVENE = "STATUS", "ESTOP", "NONCE", "CLEAR", "INTERVENE"
HELLO_ACK, OBS, STATUS_REPLY, NONCE_REPLY, ERROR = "HELLO_ACK", "OBS", "STATUS_REPLY", "NONCE_REPLY", "ERROR"


class ProtocolError(ValueError):
    """A message that cannot be used; the text is the one-line reason sent back and logged."""


@dataclass(frozen=True)
class Message:
    type: str
    seq: int
    body: dict[str, Any] = field(default_factory=dict)
    session: str = ""
    re: int = -1
    """For replies: the ``seq`` of the request answered (-1 when not a reply)."""
    t_ns: int = 0


# --- schemas -----------------------------------------------------------------------------------
# A field spec is (python types, required). Arrays are checked separately in ``_ARRAYS`` so a
# schema reads as a plain table of what each message may carry.

_INT, _NUM, _STR, _BOOL, _MAP = (int,), (int, float), (str,), (bool,), (dict,)
_OPT_INT = (int, type(None))

SCHEMAS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    HELLO: {"client": (_STR, False)},
    RESET: {"seed": (_OPT_INT, False)},
    ACT: {"obs_id": (_INT, True), "action": ((np.ndarray,), True)},
    BYE: {},
    STATUS: {},
    ESTOP: {"reason": (_STR, True)},
    NONCE: {},
    CLEAR: {"nonce": (_STR, True)},
    INTERVENE: {"action": ((np.ndarray, type(None)), True)},
    HELLO_ACK: {"spec": (_MAP, True)},
    OBS: {
        "obs_id": (_INT, True),
        "episode": (_INT, True),
        "step": (_INT, True),
        "t_applied_ns": (_INT, True),
        "t_state_ns": (_INT, True),
        "state": (_MAP, True),
        "reward": (_NUM, True),
        "terminated": (_BOOL, True),
        "applied": (_MAP, True),
        "status": (_MAP, True),
        "logged": (_INT, True),
        "frames": (_MAP, False),
    },
    STATUS_REPLY: {"status": (_MAP, True)},
    NONCE_REPLY: {"nonce": (_STR, True), "ttl_s": (_NUM, True)},
    ERROR: {"code": (_STR, True), "msg": (_STR, True), "fatal": (_BOOL, True)},
}
"""Body fields per message type. Unknown fields are rejected, so a typo fails loudly."""

_ARRAYS: dict[tuple[str, str], tuple[np.dtype, tuple[int, ...]]] = {
    (ACT, "action"): (np.dtype("<f4"), (ACTION_DIM,)),
    (INTERVENE, "action"): (np.dtype("<f4"), (ACTION_DIM,)),
}
"""Array fields with their exact dtype and shape."""

_NEEDS_SESSION = {RESET, ACT, BYE}


# --- ndarray extension type --------------------------------------------------------------------


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        dtype = obj.dtype.newbyteorder("<") if obj.dtype.byteorder == ">" else obj.dtype
        if dtype not in _DTYPE_CODES:
            raise TypeError(f"protocol: arrays of dtype {obj.dtype} are not sent")
        data = np.ascontiguousarray(obj, dtype=dtype)
        header = struct.pack(f"<BB{data.ndim}I", _DTYPE_CODES[dtype], data.ndim, *data.shape)
        return msgpack.ExtType(_NDARRAY_EXT, header + data.tobytes())
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"protocol: cannot encode {type(obj).__name__}")


def _ext_hook(code: int, data: bytes) -> np.ndarray:
    if code != _NDARRAY_EXT:
        raise ProtocolError(f"unknown msgpack extension type {code}")
    if len(data) < 2:
        raise ProtocolError("array header is truncated")
    dtype_code, ndim = data[0], data[1]
    if dtype_code not in _DTYPES:
        raise ProtocolError(f"array dtype code {dtype_code} is not allowed")
    if ndim > MAX_NDIM or len(data) < 2 + 4 * ndim:
        raise ProtocolError(f"array header with ndim={ndim} is invalid")
    shape = struct.unpack_from(f"<{ndim}I", data, 2)
    dtype = _DTYPES[dtype_code]
    payload = memoryview(data)[2 + 4 * ndim :]
    if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != len(payload):
        raise ProtocolError(f"array of shape {shape} and dtype {dtype} does not match {len(payload)} bytes")
    return np.frombuffer(payload, dtype=dtype).reshape(shape)


def packb(obj: Any) -> bytes:
    """msgpack with numpy arrays as typed binary (also used by the recorder)."""
    return msgpack.packb(obj, default=_default, use_bin_type=True)


def unpackb(data: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> Any:
    """Inverse of ``packb`` with hard size limits; raises ``ProtocolError`` on anything malformed."""
    if len(data) > max_bytes:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the {max_bytes}-byte limit")
    try:
        return msgpack.unpackb(
            data,
            ext_hook=_ext_hook,
            raw=False,
            strict_map_key=True,
            max_str_len=max_bytes,
            max_bin_len=max_bytes,
            max_array_len=max_bytes,
            max_map_len=max_bytes,
            max_ext_len=max_bytes,
        )
    except ProtocolError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:  # msgpack's errors for bad input
        raise ProtocolError(f"not valid msgpack ({type(exc).__name__}: {exc})") from None


# --- messages ----------------------------------------------------------------------------------


def encode(message: Message) -> bytes:
    envelope = {"v": VERSION, "type": message.type, "seq": message.seq, "t_ns": message.t_ns}
    if message.session:
        envelope["session"] = message.session
    if message.re >= 0:
        envelope["re"] = message.re
    envelope["body"] = message.body
    data = packb(envelope)
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"{message.type} of {len(data)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
    return data


def decode(data: bytes) -> Message:
    """Parse and schema-check one frame. Arrays come back read-only (they view the frame)."""
    obj = unpackb(data)
    if not isinstance(obj, dict):
        raise ProtocolError(f"message is a {type(obj).__name__}, not a map")
    extra = set(obj) - {"v", "type", "seq", "t_ns", "session", "re", "body"}
    if extra:
        raise ProtocolError(f"unknown envelope field(s) {sorted(extra)}")
    if obj.get("v") != VERSION:
        raise ProtocolError(f"protocol version {obj.get('v')!r} is not {VERSION}")
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in SCHEMAS:
        raise ProtocolError(f"unknown message type {kind!r}")
    seq = _int_field(obj, "seq", kind, required=True)
    re = _int_field(obj, "re", kind, required=False)
    t_ns = _int_field(obj, "t_ns", kind, required=False)
    session = obj.get("session", "")
    if not isinstance(session, str) or len(session) > MAX_STRING:
        raise ProtocolError(f"{kind}.session must be a string of at most {MAX_STRING} characters")
    if kind in _NEEDS_SESSION and not session:
        raise ProtocolError(f"{kind} needs the session id from HELLO_ACK")
    body = obj.get("body", {})
    if not isinstance(body, dict):
        raise ProtocolError(f"{kind}.body is a {type(body).__name__}, not a map")
    _check_body(kind, body)
    return Message(kind, seq, body, session, -1 if re is None else re, t_ns or 0)


def _int_field(obj: dict, name: str, kind: str, required: bool) -> int | None:
    value = obj.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise ProtocolError(f"{kind}.{name} must be an integer in [0, 2^63), got {value!r}")
    return value


def _check_body(kind: str, body: dict) -> None:
    schema = SCHEMAS[kind]
    unknown = set(body) - set(schema)
    if unknown:
        raise ProtocolError(f"{kind} has unknown field(s) {sorted(unknown)}")
    for name, (types, required) in schema.items():
        if name not in body:
            if required:
                raise ProtocolError(f"{kind}.{name} is missing")
            continue
        value = body[name]
        # bool is an int subclass: an int field must not accept True, a bool field must not accept 1.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = "/".join(t.__name__ for t in types)
            raise ProtocolError(f"{kind}.{name} must be {names}, got {type(value).__name__}")
        if isinstance(value, str) and len(value) > MAX_STRING:
            raise ProtocolError(f"{kind}.{name} is longer than {MAX_STRING} characters")
        if isinstance(value, dict) and len(value) > MAX_CONTAINER:
            raise ProtocolError(f"{kind}.{name} has more than {MAX_CONTAINER} entries")
        if isinstance(value, np.ndarray) and (kind, name) in _ARRAYS:
            dtype, shape = _ARRAYS[(kind, name)]
            if value.dtype != dtype or value.shape != shape:
                raise ProtocolError(
                    f"{kind}.{name} must be {dtype.name}{list(shape)}, got {value.dtype.name}{list(value.shape)}"
                )


def flatten_state(state: dict[str, np.ndarray], keys: list[str]) -> np.ndarray:
    """The flat float32 state vector of an observation (``observation``)."""
    try:
        return np.concatenate([np.asarray(state[k], dtype=np.float32).ravel() for k in keys])
    except KeyError as exc:
        raise ProtocolError(f"observation state lacks {exc.args[0]!r}") from None


def check_camera_names(cameras: list[str]) -> list[str]:
    """``cameras``, each of which keys its frame in a pixel observation by its own name, as
    ``envs.robosuite_adapter`` keys its cameras (``agentview``), so every o2o env lays out a pixel
    observation alike; a camera named ``state`` would take the proprio state's key and is refused."""
    if "state" in cameras:
        raise ProtocolError(f"cameras {cameras}: a camera named 'state' would take the proprio state's key")
    return cameras


def observation(
    body: dict[str, Any], keys: list[str], cameras: list[str]
) -> np.ndarray | dict[str, np.ndarray]:
    """What the client env observes and the log converter stores, from an OBS body or a logged
    ``obs`` record: the flat state of ``keys``; with ``cameras``, a dict of that ``state`` and each
    camera's uint8 frame under the camera's name (``check_camera_names``)."""
    state = flatten_state(body["state"], keys)
    if not cameras:
        return state
    frames = body.get("frames") or {}
    missing = [camera for camera in cameras if camera not in frames]
    if missing:
        raise ProtocolError(f"observation frames lack cameras {missing} (it has {sorted(frames)})")
    return {"state": state} | {
        camera: np.asarray(frames[camera]["image"], np.uint8) for camera in check_camera_names(cameras)
    }
