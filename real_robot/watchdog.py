"""The watchdog and the e-stop latch: the two pieces of server state no client can talk its way past.

Both take ``now_ns`` from the caller instead of reading a clock, so tests drive them with an
injected clock and the server drives them with ``time.monotonic_ns()``.

Watchdog (per episode): ``RUNNING -> HOLD`` when no valid command has arrived for ``hold_after``;
``HOLD -> STOPPED`` at ``stop_after``. A valid command in HOLD resumes RUNNING (the target was
re-anchored to the measured pose on entering HOLD, so nothing jumps); STOPPED needs a new RESET.
The deadlines run on the server's wall clock in every mode, lock-step included, because they are
about a client that went silent in real time.

E-stop latch: tripped by an ESTOP message (any authenticated key may stop the arm), a backend fault,
or a streak of rejected commands. It survives client reconnects and lease changes because it is
server state, not session state. Clearing it takes a CLEAR carrying a nonce that the server issued
to an operator key (``NONCE``). Only the latest nonce is valid; it is single-use, expires after
``nonce_ttl_s``, and every trip discards it, so a nonce fetched before a newer trip cannot clear
that trip: an operator never clears a stop they have not seen. After a clear the arm is STOPPED: a RESET is still
needed before actions are accepted.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass


class WatchdogState(enum.StrEnum):
    RUNNING = "running"
    HOLD = "hold"
    STOPPED = "stopped"


class Watchdog:
    def __init__(self, hold_after_s: float, stop_after_s: float):
        if not 0 < hold_after_s < stop_after_s:
            raise ValueError(f"watchdog: need 0 < hold_after ({hold_after_s}) < stop_after ({stop_after_s})")
        self.hold_after_ns = int(hold_after_s * 1e9)
        self.stop_after_ns = int(stop_after_s * 1e9)
        self.state = WatchdogState.STOPPED
        self.last_feed_ns = 0
        self.hold_at_ns = 0
        self.stop_at_ns = 0

    def arm(self, now_ns: int) -> None:
        """Start watching (after a reset has brought the arm to its start pose)."""
        self.state, self.last_feed_ns, self.hold_at_ns, self.stop_at_ns = WatchdogState.RUNNING, now_ns, 0, 0

    def feed(self, now_ns: int) -> None:
        """A valid command arrived."""
        if self.state != WatchdogState.STOPPED:
            self.state, self.last_feed_ns = WatchdogState.RUNNING, now_ns

    def disarm(self) -> None:
        self.state = WatchdogState.STOPPED

    def next_deadline_ns(self) -> int | None:
        if self.state == WatchdogState.RUNNING:
            return self.last_feed_ns + self.hold_after_ns
        if self.state == WatchdogState.HOLD:
            return self.last_feed_ns + self.stop_after_ns
        return None

    def poll(self, now_ns: int) -> WatchdogState | None:
        """Advance the state machine; return the new state when it changed (HOLD or STOPPED)."""
        silent = now_ns - self.last_feed_ns
        if self.state == WatchdogState.RUNNING and silent >= self.hold_after_ns:
            self.state, self.hold_at_ns = WatchdogState.HOLD, now_ns
            if silent < self.stop_after_ns:
                return WatchdogState.HOLD
        if self.state == WatchdogState.HOLD and silent >= self.stop_after_ns:
            self.state, self.stop_at_ns = WatchdogState.STOPPED, now_ns
            return WatchdogState.STOPPED
        return None


class ClearRefused(Exception):
    """A CLEAR that does not clear; the text is the one-line reason."""


@dataclass
class _Nonce:
    value: str
    expires_ns: int


class EStopLatch:
    def __init__(self, nonce_ttl_s: float = 10.0):
        self.nonce_ttl_ns = int(nonce_ttl_s * 1e9)
        self.latched = False
        self.reason = ""
        self.since_ns = 0
        self._nonce: _Nonce | None = None

    def trip(self, reason: str, now_ns: int) -> bool:
        """Latch (again). Returns True when this call latched a clear latch."""
        newly = not self.latched
        self._nonce = None  # a nonce handed out before this trip must not clear it
        if newly:
            self.latched, self.reason, self.since_ns = True, reason, now_ns
        return newly

    def issue_nonce(self, now_ns: int) -> str:
        self._nonce = _Nonce(secrets.token_hex(16), now_ns + self.nonce_ttl_ns)
        return self._nonce.value

    def clear(self, nonce: str, now_ns: int) -> None:
        """Clear with a nonce from ``issue_nonce``; raises ``ClearRefused`` otherwise."""
        if not self.latched:
            raise ClearRefused("not latched: nothing to clear")
        issued, self._nonce = self._nonce, None  # single use, whatever the outcome
        if issued is None or not secrets.compare_digest(issued.value, nonce):
            raise ClearRefused("unknown nonce: ask for a fresh one with NONCE")
        if now_ns > issued.expires_ns:
            raise ClearRefused(f"nonce expired ({self.nonce_ttl_ns / 1e9:.0f} s lifetime)")
        self.latched, self.reason = False, ""
