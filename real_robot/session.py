"""The control lease: which client key may drive the arm, in which session, with which sequence numbers.

``HELLO`` from a client key grants a lease with a random session id. RESET, ACT and BYE must then
carry that session id *and* come from the key that took the lease: a session id is not a secret
(it is in the log, and any peer that saw one message has it), so it only names the session; the
key, authenticated in the CurveZMQ handshake, is what proves who is talking. Their ``seq`` must
also increase, so a replayed or reordered message is refused.

Another key is refused (``busy``) while the holder has been heard from within ``timeout_s``; the
same key may take the lease over at once (a restarted actor, whose old session then ends).
ESTOP and STATUS need no lease: every authorised key may stop the arm or look at it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from real_robot.transport import Inbound, Role


@dataclass
class Lease:
    session: str
    user: str
    """The public key that took the lease: the only key that may use it."""
    last_seen_ns: int
    last_seq: int = -1


@dataclass(frozen=True)
class Refusal:
    code: str
    text: str
    counts_as_drop: bool = False
    """True for the holder's own bad commands, which count towards the reject streak's e-stop;
    never for another key's, so no other key can latch the holder's e-stop."""


class LeaseKeeper:
    def __init__(self, timeout_s: float):
        self.timeout_ns = int(timeout_s * 1e9)
        self.lease: Lease | None = None

    def grant(self, inbound: Inbound, now_ns: int) -> Lease | Refusal:
        """HELLO: a new lease (replacing the same key's old one), or why not."""
        if inbound.role != Role.CLIENT:
            return Refusal("forbidden", "HELLO needs a client key (operator keys cannot drive)")
        held = self.lease
        if held is not None and held.user != inbound.user:
            left = (self.timeout_ns - (now_ns - held.last_seen_ns)) / 1e9
            return Refusal("busy", f"another client holds the lease (free in {left:.1f} s if silent)")
        assert inbound.message is not None
        self.lease = Lease(secrets.token_hex(16), inbound.user, now_ns, inbound.message.seq)
        return self.lease

    def check(self, inbound: Inbound, now_ns: int) -> Refusal | None:
        """RESET, ACT, BYE: the holder's key, its session, and a newer seq; updates the lease."""
        message, lease = inbound.message, self.lease
        assert message is not None
        if lease is None or message.session != lease.session or inbound.user != lease.user:
            return Refusal("no_lease", "not the lease holder's key and session: send HELLO")
        if message.seq <= lease.last_seq:
            return Refusal("out_of_order", f"seq {message.seq} after {lease.last_seq}", counts_as_drop=True)
        lease.last_seen_ns, lease.last_seq = now_ns, message.seq
        return None

    def answered(self, now_ns: int) -> None:
        """The server has just answered the holder: its silence counts from now."""
        if self.lease is not None:
            self.lease.last_seen_ns = now_ns

    def release(self) -> None:
        self.lease = None

    def expire(self, now_ns: int) -> Lease | None:
        """Drop a lease whose holder has been silent too long; returns it when it did."""
        lease = self.lease
        if lease is not None and now_ns - lease.last_seen_ns > self.timeout_ns:
            self.lease = None
            return lease
        return None
