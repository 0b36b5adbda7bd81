"""A blocking request/reply client over a CurveZMQ DEALER socket (used by the env, operator tools, bench).

Every request carries a fresh ``seq``; ``request`` waits, with a deadline, for the reply whose
``re`` matches and discards late replies to earlier requests, so one lost reply never wedges the
client (REQ/REP's failure mode). A key the server refuses shows up as a ZeroMQ handshake event on
a monitor socket, which turns a silent timeout into ``AuthRefused``.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from real_robot import protocol as P
from real_robot.keys import ClientKeys, apply_client_keys


class BridgeError(RuntimeError):
    """The server answered with ERROR; ``code`` says why (e.g. stale, estop, busy)."""

    def __init__(self, code: str, msg: str, fatal: bool):
        super().__init__(f"{code}: {msg}")
        self.code, self.fatal = code, fatal


class BridgeTimeout(TimeoutError):
    pass


class AuthRefused(ConnectionRefusedError):
    pass


_AUTH_EVENTS = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


class BridgeClient:
    def __init__(self, address: str, keys: ClientKeys, timeout_s: float = 5.0, name: str = ""):
        self.address = address
        self.timeout_s = timeout_s
        self.name = name
        self.session = ""
        self._seq = itertools.count(1)
        self.ctx = zmq.Context()
        self.socket = self.ctx.socket(zmq.DEALER)
        self.socket.linger = 0
        apply_client_keys(self.socket, keys)
        self._monitor = self.socket.get_monitor_socket(_AUTH_EVENTS)
        self.socket.connect(address)

    def request(
        self, kind: str, body: dict[str, Any] | None = None, timeout_s: float | None = None
    ) -> P.Message:
        """Send one request and return its reply; raises BridgeError on an ERROR reply."""
        seq = next(self._seq)
        self.send_raw(P.encode(P.Message(kind, seq, body or {}, self.session, t_ns=time.monotonic_ns())))
        reply = self.receive(seq, timeout_s)
        if reply.type == P.ERROR:
            raise BridgeError(reply.body["code"], reply.body["msg"], reply.body["fatal"])
        return reply

    def send_raw(self, data: bytes) -> None:
        self.socket.send(data)

    def receive(self, seq: int, timeout_s: float | None = None) -> P.Message:
        """The reply to ``seq`` (or an ERROR with no ``re``, sent for undecodable requests)."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        while (left := deadline - time.monotonic()) > 0:
            ready = dict(poller.poll(left * 1000))
            if self._monitor in ready:
                event = recv_monitor_message(self._monitor)
                raise AuthRefused(f"{self.address} refused our key ({zmq.Event(event['event']).name})")
            if self.socket in ready:
                reply = P.decode(self.socket.recv())
                if reply.re == seq or (reply.re < 0 and reply.type == P.ERROR):
                    return reply
        raise BridgeTimeout(f"no reply from {self.address} within {timeout_s:.1f} s")

    def hello(self) -> dict[str, Any]:
        reply = self.request(P.HELLO, {"client": self.name})
        self.session = reply.session
        return reply.body["spec"]

    def close(self) -> None:
        self._monitor.close(0)
        self.socket.close(0)
        self.ctx.term()
