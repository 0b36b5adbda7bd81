"""A request/reply client over a CurveZMQ DEALER socket (used by the env, operator tools, bench).

Every call returns by its deadline, whatever state the peer is in (absent, refusing our key,
not reading, dropping messages):

- Every request carries a fresh ``seq``; ``request`` waits for the reply whose ``re`` matches and
  discards late replies to earlier requests, so one lost reply never wedges the client (REQ/REP's
  failure mode).
- Sending never blocks: a DEALER with no connected peer (after the server refused our key at the
  CurveZMQ handshake, libzmq drops the connection) would block ``send`` forever, so the client
  sends with ``NOBLOCK`` and polls for room until the deadline.
- A call that fails (no reply in time, key refused) closes the socket (``LINGER`` 0) and opens a
  fresh one: nothing queued for a dead peer and no half-failed handshake carries into the next call.
- A key the server refuses shows up as a handshake event on a monitor socket, which turns a silent
  timeout into ``AuthRefused``.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from real_robot import protocol
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


_monitor_ids = itertools.count()


class BridgeClient:
    def __init__(self, address: str, keys: ClientKeys, timeout_s: float = 5.0, name: str = ""):
        self.address = address
        self.keys = keys
        self.timeout_s = timeout_s
        self.name = name
        self.session = ""
        self._seq = itertools.count(1)
        self.ctx = zmq.Context()
        self._open()

    @property
    def closed(self) -> bool:
        return self.ctx.closed

    def request(
        self, kind: str, body: dict[str, Any] | None = None, timeout_s: float | None = None
    ) -> protocol.Message:
        """Send one request and return its reply by the deadline; raises BridgeError on an ERROR reply."""
        seq = next(self._seq)
        deadline = self._deadline(timeout_s)
        message = protocol.Message(kind, seq, body or {}, self.session, t_ns=time.monotonic_ns())
        self._send(protocol.encode(message), deadline)
        reply = self._receive(seq, deadline)
        if reply.type == protocol.ERROR:
            raise BridgeError(reply.body["code"], reply.body["msg"], reply.body["fatal"])
        return reply

    def send_raw(self, data: bytes, timeout_s: float | None = None) -> None:
        """Send bytes as they are (tests send malformed frames this way)."""
        self._send(data, self._deadline(timeout_s))

    def receive(self, seq: int, timeout_s: float | None = None) -> protocol.Message:
        """The reply to ``seq`` (or an ERROR with no ``re``, sent for undecodable requests)."""
        return self._receive(seq, self._deadline(timeout_s))

    def hello(self) -> dict[str, Any]:
        reply = self.request(protocol.HELLO, {"client": self.name})
        self.session = reply.session
        return reply.body["spec"]

    def close(self) -> None:
        if not self.ctx.closed:
            self.ctx.destroy(linger=0)

    # --- sockets ---------------------------------------------------------------------------------

    def _deadline(self, timeout_s: float | None) -> float:
        return time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)

    def _open(self) -> None:
        self.socket = self.ctx.socket(zmq.DEALER)
        self.socket.linger = 0
        apply_client_keys(self.socket, self.keys)
        # An explicit monitor address: the default one is derived from the socket's file descriptor,
        # which a reopened socket may reuse while the old monitor endpoint still exists.
        address = f"inproc://bridge-client-monitor-{next(_monitor_ids)}"
        self._monitor = self.socket.get_monitor_socket(_AUTH_EVENTS, addr=address)
        self.socket.connect(self.address)

    def _reopen(self) -> None:
        self.socket.disable_monitor()
        self._monitor.close(0)
        self.socket.close(0)
        self._open()

    def _wait(self, events: int, deadline: float) -> bool:
        """Wait until the socket is ready for ``events``; False at the deadline.

        Raises ``AuthRefused`` when the handshake fails meanwhile. Either way out of time, the socket
        is replaced, so the next call starts clean.
        """
        socket, monitor = self.socket, self._monitor
        poller = zmq.Poller()
        poller.register(monitor, zmq.POLLIN)
        poller.register(socket, events)
        while (left := deadline - time.monotonic()) > 0:
            ready = dict(poller.poll(math.ceil(left * 1000)))
            if monitor in ready:
                event = recv_monitor_message(monitor)
                self._reopen()
                raise AuthRefused(f"{self.address} refused our key ({zmq.Event(event['event']).name})")
            if ready.get(socket, 0) & events:
                return True
        self._reopen()
        return False

    def _send(self, data: bytes, deadline: float) -> None:
        while True:
            try:
                self.socket.send(data, zmq.NOBLOCK)
                return
            except zmq.Again:  # no connected peer, or its queue is full: wait for room, not forever
                if not self._wait(zmq.POLLOUT, deadline):
                    raise BridgeTimeout(f"could not send to {self.address}: no connection") from None

    def _receive(self, seq: int, deadline: float) -> protocol.Message:
        while self._wait(zmq.POLLIN, deadline):
            try:
                reply = protocol.decode(self.socket.recv(zmq.NOBLOCK))
            except zmq.Again:
                continue
            if reply.re == seq or (reply.re < 0 and reply.type == protocol.ERROR):
                return reply
        raise BridgeTimeout(f"no reply from {self.address} by the call's deadline")
