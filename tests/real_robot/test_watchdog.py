"""Watchdog and e-stop latch state machines, driven by an injected clock."""

from __future__ import annotations

import pytest

from real_robot.watchdog import ClearRefused, EStopLatch, Watchdog, WatchdogState

MS = 1_000_000


def test_watchdog_holds_then_stops_at_its_deadlines():
    dog = Watchdog(hold_after_s=0.25, stop_after_s=1.0)
    dog.arm(0)
    assert dog.next_deadline_ns() == 250 * MS
    assert dog.poll(249 * MS) is None and dog.state == WatchdogState.RUNNING
    assert dog.poll(250 * MS) == WatchdogState.HOLD and dog.hold_at_ns == 250 * MS
    assert dog.next_deadline_ns() == 1000 * MS
    assert dog.poll(999 * MS) is None
    assert dog.poll(1000 * MS) == WatchdogState.STOPPED and dog.next_deadline_ns() is None


def test_feeding_restarts_the_deadline_and_resumes_from_hold():
    dog = Watchdog(0.25, 1.0)
    dog.arm(0)
    dog.poll(300 * MS)
    dog.feed(400 * MS)
    assert dog.state == WatchdogState.RUNNING and dog.next_deadline_ns() == 650 * MS


def test_feeding_a_stopped_watchdog_does_not_restart_it():
    dog = Watchdog(0.25, 1.0)
    dog.arm(0)
    dog.poll(2000 * MS)
    dog.feed(2001 * MS)
    assert dog.state == WatchdogState.STOPPED


def test_watchdog_checks_its_configuration():
    with pytest.raises(ValueError, match="hold_after"):
        Watchdog(1.0, 0.5)


def test_latch_clears_only_with_a_fresh_single_use_nonce():
    latch = EStopLatch(nonce_ttl_s=10)
    latch.trip("operator", 0)
    with pytest.raises(ClearRefused, match="unknown nonce"):
        latch.clear("guess", 1)
    nonce = latch.issue_nonce(2)
    with pytest.raises(ClearRefused, match="unknown nonce"):
        latch.clear(nonce + "x", 3)
    with pytest.raises(ClearRefused, match="unknown nonce"):  # the failed attempt used it up
        latch.clear(nonce, 4)
    nonce = latch.issue_nonce(5)
    latch.clear(nonce, 6)
    assert not latch.latched


def test_nonce_expires():
    latch = EStopLatch(nonce_ttl_s=1)
    latch.trip("x", 0)
    nonce = latch.issue_nonce(0)
    with pytest.raises(ClearRefused, match="expired"):
        latch.clear(nonce, 1001 * MS)


def test_nonce_from_before_a_newer_trip_cannot_clear_it():
    latch = EStopLatch()
    latch.trip("first", 0)
    nonce = latch.issue_nonce(1)
    latch.trip("second", 2)
    with pytest.raises(ClearRefused):
        latch.clear(nonce, 3)
    assert latch.latched and latch.reason == "first"
