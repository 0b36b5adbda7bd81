"""The server's side of the wire: a CurveZMQ ROUTER socket, who may connect, and bytes to messages.

Authentication happens in ZeroMQ's handshake: a ``ThreadAuthenticator`` asks ``allowed`` about
every connecting key and refuses any key that is in neither allow-list, so an unknown peer never
gets a message through. Every message that does arrive carries the sender's public key (ZeroMQ's
``User-Id`` property) and from it a ``Role``; what a role may do is the session's and the server's
business, not the transport's.

Decoding is defensive (``protocol.decode``): a frame that cannot be used comes back as an
``Inbound`` with ``error`` set (code and one-line reason) instead of a message, so the server can
answer and log it and keep serving.

Sending never blocks the control loop: a reply to a peer that is gone or not reading is dropped
(and logged).
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass

import zmq
from zmq.auth.thread import ThreadAuthenticator

from real_robot import protocol
from real_robot.keys import ServerKeys

log = logging.getLogger("real_robot.transport")

MAX_BATCH = 100
"""Messages taken per wake-up, so deadlines are still checked under a flood."""


class Role(enum.StrEnum):
    CLIENT = "client"
    """May take the control lease (HELLO) and drive (RESET, ACT, BYE)."""
    OPERATOR = "operator"
    """May clear the e-stop (NONCE, CLEAR) and send human actions (INTERVENE); never drives."""


@dataclass(frozen=True)
class Inbound:
    identity: bytes
    """ZeroMQ routing id of the sender's connection (where the reply goes)."""
    user: str
    """The sender's z85 public key, as authenticated in the handshake."""
    role: Role
    message: protocol.Message | None
    error: tuple[str, str] | None = None
    """(code, reason) when the frames could not be decoded; ``message`` is then None."""


class Transport:
    def __init__(self, address: str, keys: ServerKeys):
        self.keys = keys
        self.ctx = zmq.Context()
        self.auth = ThreadAuthenticator(self.ctx, log=logging.getLogger("real_robot.auth"))
        self.auth.start()
        self.auth.configure_curve_callback("*", self)  # calls self.callback(domain, key)
        self.socket = self.ctx.socket(zmq.ROUTER)
        self.socket.curve_server = True
        self.socket.curve_secretkey = keys.server.secret
        self.socket.curve_publickey = keys.server.public
        self.socket.linger = 0
        # A peer sending a frame this large is disconnected by ZeroMQ before it is buffered;
        # anything between MAX_MESSAGE_BYTES and this gets a proper "oversized" reply.
        self.socket.setsockopt(zmq.MAXMSGSIZE, 4 * protocol.MAX_MESSAGE_BYTES)
        self.socket.setsockopt(zmq.HEARTBEAT_IVL, 500)
        self.socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, 2000)
        self.socket.bind(address)
        self.address = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._poller = zmq.Poller()
        self._poller.register(self.socket, zmq.POLLIN)

    def callback(self, domain: str, key: bytes) -> bool:
        """The authenticator's question, on its own thread: may this key connect at all?"""
        allowed = key in self.keys.clients or key in self.keys.operators
        if not allowed:
            log.warning("refused connection from unknown key %s...", key[:8].decode(errors="replace"))
        return allowed

    def receive(self, timeout_ms: int) -> list[Inbound]:
        """Wait up to ``timeout_ms`` for messages; return at most ``MAX_BATCH`` of them."""
        if not self._poller.poll(timeout_ms):
            return []
        inbound = []
        for _ in range(MAX_BATCH):
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            inbound.append(self._decode(frames))
        return inbound

    def _decode(self, frames: list[zmq.Frame]) -> Inbound:
        identity, user = frames[0].bytes, frames[0].get("User-Id")
        role = Role.OPERATOR if user.encode() in self.keys.operators else Role.CLIENT
        if len(frames) != 2:
            return Inbound(
                identity, user, role, None, ("malformed", f"expected 1 frame, got {len(frames) - 1}")
            )
        try:
            return Inbound(identity, user, role, protocol.decode(frames[1].buffer))
        except protocol.ProtocolError as exc:
            code = "oversized" if "limit" in str(exc) else "malformed"
            return Inbound(identity, user, role, None, (code, str(exc)))

    def send(self, identity: bytes, message: protocol.Message) -> None:
        """Send a reply stamped with the send time; dropped (and logged) if the peer is not reading."""
        stamped = protocol.Message(
            message.type, message.seq, message.body, message.session, message.re, time.monotonic_ns()
        )
        try:
            self.socket.send_multipart([identity, protocol.encode(stamped)], zmq.NOBLOCK)
        except zmq.Again:  # the peer is gone or not reading: never block the control loop on it
            log.warning("reply %s to a peer that is not reading was dropped", message.type)

    def close(self) -> None:
        self.socket.close(0)
        self.auth.stop()
        self.ctx.term()
