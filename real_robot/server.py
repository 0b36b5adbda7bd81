"""The arm server: the only process that talks to the arm.

It is three parts and the state machine that joins them:

- ``transport.Transport``: the CurveZMQ ROUTER socket, which keys may connect, bytes to messages;
- ``session.LeaseKeeper``: which client key holds the control lease, in which session;
- ``pipeline.StepPipeline``: an action through governor -> backend -> recorder, an observation
  through backend -> task -> recorder;

and here the server's ``Mode``, the watchdog, the e-stop latch, replies that come due later, and
one handler per message type. One thread runs the loop: each turn it handles what arrived, then
``_tick`` sends replies that have come due, runs the watchdog, checks the backend for faults and
the force guard, and expires a silent lease. The poll timeout is the time to the nearest deadline,
so the watchdog fires within about a millisecond of its deadline, not at the next message.

Who may send what: RESET, ACT and BYE need the lease (the key that took it, its session, a newer
seq); HELLO needs a client key; NONCE, CLEAR and INTERVENE need an operator key; ESTOP and STATUS
are open to every authorised key.

In real time the server holds an ACT's reply for one control period (still serving other messages)
and samples the OBS then; in lock-step it advances physics by one period and replies straight away.
The server's clock, not the client's sleeps, sets the control period.

Freshness: an ACT must name the latest OBS (``obs_id``) and arrive within ``max_action_age_ms`` of
that OBS being sent, measured on the server clock alone, so no clock synchronisation between
machines is needed.

Human intervention: while an operator's INTERVENE action is fresh (``intervention_timeout_ms``),
it replaces the policy's action in the next ACTs, passes through the same governor, and is flagged
``source="human"`` in the OBS and the log; the client learns what was executed from
``OBS.applied``.
"""

from __future__ import annotations

import enum
import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from real_robot import protocol
from real_robot.backends.base import ArmState, Backend, BackendFault
from real_robot.governor import Governor, Pose, SafetyLimits, euler_to_mat, mat_to_quat
from real_robot.keys import ServerKeys
from real_robot.pipeline import Applied, StepPipeline
from real_robot.recorder import Recorder
from real_robot.session import Lease, LeaseKeeper, Refusal
from real_robot.tasks import TASKS
from real_robot.transport import Inbound, Role, Transport
from real_robot.watchdog import ClearRefused, EStopLatch, Watchdog, WatchdogState

log = logging.getLogger("real_robot.server")


class Mode(enum.StrEnum):
    IDLE = "idle"
    """No episode: waiting for a RESET."""
    RESETTING = "resetting"
    RUNNING = "running"
    HOLD = "hold"
    """The watchdog holds the measured pose; a valid ACT resumes."""
    STOPPED = "stopped"
    """The watchdog stopped the arm, or an e-stop was cleared: a RESET is needed."""
    LATCHED = "latched"
    """The e-stop is latched: only an operator's CLEAR gets out."""


ARM_MAY_MOVE = (Mode.RUNNING, Mode.HOLD, Mode.RESETTING)
OPERATOR_ONLY = frozenset({protocol.NONCE, protocol.CLEAR, protocol.INTERVENE})


@dataclass
class ServerConfig:
    address: str = "tcp://127.0.0.1:5555"
    log_dir: str = "runs/bridge"
    control_hz: float = 10.0
    task: str = "reach"
    max_episode_steps: int = 100
    """Sent to clients in the spec; the client env truncates there."""
    home_xyz: tuple[float, float, float] = (0.307, 0.0, 0.491)
    home_rpy: tuple[float, float, float] = (np.pi, 0.0, 0.0)
    limits: SafetyLimits = field(default_factory=SafetyLimits)
    hold_after_ms: float | None = None
    """Default: 2.5 control periods (250 ms at 10 Hz)."""
    stop_after_ms: float = 1000.0
    max_action_age_ms: float | None = None
    """Default: 1.5 control periods (150 ms at 10 Hz)."""
    lease_timeout_s: float = 3.0
    reset_settle_s: float = 0.3
    reset_tolerance_m: float = 0.02
    nonce_ttl_s: float = 10.0
    intervention_timeout_ms: float = 300.0
    max_frame_age_ms: float = 200.0
    stale_frames_to_estop: int = 0
    """Latch after this many consecutive stale camera frames; 0 only reports them."""
    fsync_interval_s: float = 1.0
    drop_every: int = 0
    """Fault injection: silently drop every N-th inbound message (simulated network loss); 0 = off."""

    @property
    def period_s(self) -> float:
        return 1.0 / self.control_hz


@dataclass
class _Pending:
    """A reply that comes due later: the first OBS of a reset, or the OBS one period after an ACT."""

    due_ns: int
    identity: bytes
    re: int
    reset_start: Pose | None = None
    """Set for a reset (the pose it should end at); None for an ACT's OBS."""
    applied: Applied | None = None


class ArmServer:
    def __init__(self, config: ServerConfig, backend: Backend, keys: ServerKeys):
        self.config = config
        self.backend = backend
        period = config.period_s
        self.hold_after_s = (config.hold_after_ms or 2500 * period) / 1e3
        self.max_action_age_ns = int((config.max_action_age_ms or 1500 * period) * 1e6)
        self.watchdog = Watchdog(self.hold_after_s, config.stop_after_ms / 1e3)
        self.latch = EStopLatch(config.nonce_ttl_s)
        self.leases = LeaseKeeper(config.lease_timeout_s)
        self.home = Pose(
            np.asarray(config.home_xyz, float), mat_to_quat(euler_to_mat(np.asarray(config.home_rpy)))
        )
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.recorder = Recorder(
            Path(config.log_dir) / f"{stamp}-{secrets.token_hex(3)}.o2olog", config.fsync_interval_s
        )
        self.pipeline = StepPipeline(
            backend,
            Governor(config.limits, period, backend.joint_limits()),
            self.recorder,
            TASKS[config.task](),
            period,
            config.max_frame_age_ms,
        )

        self.mode = Mode.IDLE
        self.pending: _Pending | None = None
        self.drops: Counter[str] = Counter()
        self.reject_streak = self.nan_streak = 0
        self.human: tuple[np.ndarray, int] | None = None
        self._inbound = 0
        self._stop = threading.Event()
        self.ready = threading.Event()

        self.transport = Transport(config.address, keys)
        self.address = self.transport.address
        self.recorder.write(
            "header", spec=self.spec(), config=_plain(asdict(config)), t_ns=time.monotonic_ns()
        )

    @property
    def lease(self) -> Lease | None:
        return self.leases.lease

    @property
    def episode(self) -> int:
        return self.pipeline.episode

    # --- the loop --------------------------------------------------------------------------------

    def spec(self) -> dict[str, Any]:
        dof = self.backend.dof
        task = self.pipeline.task
        obs_dims = {"q": dof, "dq": dof, "ee_pos": 3, "ee_quat": 4, "gripper": 1, **task.state_keys()}
        cameras = {name: list(shape) for name, shape in self.backend.camera_shapes().items()}
        return {
            "backend": self.backend.name,
            "lockstep": self.backend.lockstep,
            "control_hz": self.config.control_hz,
            "task": self.config.task,
            "max_episode_steps": self.config.max_episode_steps,
            "action_mode": "ee_delta",
            "action_dim": protocol.ACTION_DIM,
            "obs_keys": list(obs_dims),
            "obs_dims": obs_dims,
            "cameras": cameras,
            "limits": _plain(asdict(self.config.limits)),
        }

    def serve_forever(self) -> None:
        self.ready.set()
        log.info(
            "serving %s backend on %s, logging to %s", self.backend.name, self.address, self.recorder.path
        )
        try:
            while not self._stop.is_set():
                for inbound in self.transport.receive(self._poll_timeout_ms()):
                    self._receive(inbound)
                self._tick(time.monotonic_ns())
        finally:
            self._shutdown()

    def stop(self) -> None:
        self._stop.set()

    def _shutdown(self) -> None:
        try:
            self.backend.stop()
        finally:
            self.transport.close()
            self.recorder.write("event", what="shutdown", t_ns=time.monotonic_ns())
            self.recorder.close()

    def _poll_timeout_ms(self) -> int:
        now = time.monotonic_ns()
        # Wake at least every 50 ms for stop requests; every 10 ms while the arm may move, so a
        # backend fault or the force guard is noticed within 10 ms.
        deadlines = [now + (10_000_000 if self.mode in ARM_MAY_MOVE else 50_000_000)]
        if self.pending is not None:
            deadlines.append(self.pending.due_ns)
        watchdog_due = self.watchdog.next_deadline_ns()
        if watchdog_due is not None:
            deadlines.append(watchdog_due)
        return max(0, -(-(min(deadlines) - now) // 1_000_000))  # ceil to whole ms: never wake early

    def _tick(self, now: int) -> None:
        if self.pending is not None and now >= self.pending.due_ns:
            pending, self.pending = self.pending, None
            if pending.reset_start is not None:
                self._finish_reset(pending)
            else:
                self._send_obs(pending.identity, pending.re, pending.applied)
        transition = self.watchdog.poll(now)
        if transition == WatchdogState.HOLD:
            self.pipeline.hold()
            self.mode = Mode.HOLD
            self._event("watchdog", f"hold: no valid command for {self.hold_after_s * 1000:.0f} ms", now)
        elif transition == WatchdogState.STOPPED:
            self._stop_arm(now, "watchdog: no valid command", Mode.STOPPED)
        if self.mode in ARM_MAY_MOVE:
            self._check_state(self.backend.read_state(), now)
        expired = None if self.pending is not None else self.leases.expire(now)  # it awaits our answer
        if expired is not None:
            self._event("lease_expired", f"session {expired.session[:8]} silent", now)

    # --- receiving -------------------------------------------------------------------------------

    def _receive(self, inbound: Inbound) -> None:
        now = time.monotonic_ns()
        self._inbound += 1
        if self.config.drop_every and self._inbound % self.config.drop_every == 0:
            self._record_cmd(now, inbound, "dropped", "fault_injection: dropped on purpose")
            return
        if inbound.error is not None:
            self._reject(inbound, *inbound.error, now)
            return
        message = inbound.message
        handler = self._HANDLERS.get(message.type)
        if handler is None:
            self._reject(inbound, "unexpected", f"{message.type} is a reply type", now)
        elif message.type in OPERATOR_ONLY and inbound.role != Role.OPERATOR:
            self._reject(inbound, "forbidden", f"{message.type} needs an operator key", now)
        else:
            handler(self, inbound, now)

    def _on_hello(self, inbound: Inbound, now: int) -> None:
        previous = self.leases.lease
        granted = self.leases.grant(inbound, now)
        if isinstance(granted, Refusal):
            self._reject(inbound, granted.code, granted.text, now)
            return
        if previous is not None:  # the same key again: a restarted actor takes over, its old episode ends
            self._end_episode(now, "lease taken over")
        self._record_cmd(now, inbound, "accepted")
        self._event("lease", f"granted to {inbound.user[:8]} ({inbound.message.body.get('client', '')})", now)
        reply = protocol.Message(
            protocol.HELLO_ACK, 0, {"spec": self.spec()}, granted.session, inbound.message.seq
        )
        self.transport.send(inbound.identity, reply)

    def _on_bye(self, inbound: Inbound, now: int) -> None:
        if self._holds_lease(inbound, now):
            self._record_cmd(now, inbound, "accepted")
            self._end_episode(now, "client said BYE")
            self.leases.release()
            self._send_status(inbound, now)

    def _on_reset(self, inbound: Inbound, now: int) -> None:
        if not self._holds_lease(inbound, now) or self._refused_while_latched(inbound, now):
            return
        if self.pending is not None:
            self._reject(inbound, "busy", "a reset or step is still in progress", now)
            return
        self._record_cmd(now, inbound, "accepted")
        self.watchdog.disarm()
        self.mode = Mode.RESETTING
        try:
            start, duration = self.pipeline.start_reset(inbound.message.body.get("seed"), self.home)
        except BackendFault as exc:
            self._trip(f"backend fault during reset: {exc}", now)
            self._reject(inbound, "estop", f"reset failed: {exc}", now, fatal=True)
            return
        settle = duration + self.config.reset_settle_s
        pending = _Pending(now + int(settle * 1e9), inbound.identity, inbound.message.seq, reset_start=start)
        if self.backend.lockstep:
            self.backend.advance(settle)
            self._finish_reset(pending)
        else:
            self.pending = pending

    def _finish_reset(self, pending: _Pending) -> None:
        now = time.monotonic_ns()
        state = self.backend.read_state()
        error = float(np.linalg.norm(state.ee.pos - pending.reset_start.pos))
        if state.fault or error > self.config.reset_tolerance_m:
            reason = state.fault or f"reset ended {error * 1000:.0f} mm from its start pose"
            self._trip(f"reset failed: {reason}", now)
            self.transport.send(
                pending.identity, _error(pending.re, "estop", f"reset failed: {reason}", fatal=True)
            )
            return
        self.pipeline.begin_episode(state)
        self.watchdog.arm(now)
        self.mode = Mode.RUNNING
        self.reject_streak = self.nan_streak = 0
        self._event("reset", f"episode {self.pipeline.episode}", now)
        self._send_obs(pending.identity, pending.re, None, state)

    def _on_act(self, inbound: Inbound, now: int) -> None:
        if not self._holds_lease(inbound, now) or self._refused_while_latched(inbound, now):
            return
        if self.mode not in (Mode.RUNNING, Mode.HOLD):
            self._reject(inbound, "not_running", f"arm is {self.mode}: send RESET", now)
            return
        if self.pending is not None:
            self._drop(inbound, "busy", "the previous action is still executing", now)
            return
        body, latest = inbound.message.body, self.pipeline.obs_id
        if body["obs_id"] != latest:
            self._drop(inbound, "stale", f"computed from obs {body['obs_id']}, latest is {latest}", now)
            return
        age_ns = now - self.pipeline.obs_sent_ns
        if age_ns > self.max_action_age_ns:
            limit_ms = self.max_action_age_ns / 1e6
            self._drop(inbound, "stale", f"obs is {age_ns / 1e6:.0f} ms old (limit {limit_ms:.0f} ms)", now)
            return

        action, source = body["action"], "policy"
        if self.human is not None and now - self.human[1] <= self.config.intervention_timeout_ms * 1e6:
            action, source = self.human[0], "human"
        state = self.backend.read_state()
        if self._check_state(state, now):
            self._reject(inbound, "estop", self.latch.reason, now, fatal=True)
            return
        decision = self.pipeline.govern(action, state)
        if decision.rejected:
            if decision.rejected.startswith("non_finite"):
                self.nan_streak += 1
                if self.nan_streak >= self.config.limits.nan_streak_to_estop:
                    self._trip(f"{self.nan_streak} non-finite actions in a row", now)
            self._drop(inbound, decision.rejected.split(":")[0], decision.rejected, now)
            return
        self.nan_streak = self.reject_streak = 0
        self._record_cmd(now, inbound, "accepted")
        applied = self.pipeline.execute(decision, body["action"], source, now)
        self.watchdog.feed(now)
        self.mode = Mode.RUNNING
        if self.backend.lockstep:
            self.backend.advance(self.config.period_s)
            self._send_obs(inbound.identity, inbound.message.seq, applied)
        else:
            due = now + int(self.config.period_s * 1e9)
            self.pending = _Pending(due, inbound.identity, inbound.message.seq, applied=applied)

    def _on_status(self, inbound: Inbound, now: int) -> None:
        self._send_status(inbound, now)

    def _on_estop(self, inbound: Inbound, now: int) -> None:
        self._record_cmd(now, inbound, "accepted")
        self._trip(f"ESTOP from {inbound.user[:8]}: {inbound.message.body['reason']}", now)
        self._send_status(inbound, now)

    def _on_nonce(self, inbound: Inbound, now: int) -> None:
        self._record_cmd(now, inbound, "accepted")
        body = {"nonce": self.latch.issue_nonce(now), "ttl_s": self.config.nonce_ttl_s}
        self.transport.send(
            inbound.identity, protocol.Message(protocol.NONCE_REPLY, 0, body, re=inbound.message.seq)
        )

    def _on_clear(self, inbound: Inbound, now: int) -> None:
        try:
            self.latch.clear(inbound.message.body["nonce"], now)
        except ClearRefused as exc:
            self._reject(inbound, "clear_refused", str(exc), now)
            return
        try:
            self.backend.recover()
        except BackendFault as exc:
            self._trip(f"backend did not recover: {exc}", now)
            self._reject(inbound, "clear_refused", f"backend did not recover: {exc}", now)
            return
        self.pipeline.hold()  # re-anchored where the arm is: nothing jumps when motion is re-enabled
        self.mode = Mode.STOPPED
        self._record_cmd(now, inbound, "accepted")
        self._event("estop_cleared", f"by {inbound.user[:8]}; RESET needed", now)
        self._send_status(inbound, now)

    def _on_intervene(self, inbound: Inbound, now: int) -> None:
        action = inbound.message.body["action"]
        was_on = self.human is not None
        self.human = None if action is None else (np.array(action), now)
        if was_on != (self.human is not None):
            self._record_cmd(now, inbound, "accepted")
            self._event("intervention", "on" if self.human is not None else "off", now)
        self._send_status(inbound, now)

    _HANDLERS: ClassVar[dict[str, Callable[..., None]]] = {
        protocol.HELLO: _on_hello,
        protocol.BYE: _on_bye,
        protocol.RESET: _on_reset,
        protocol.ACT: _on_act,
        protocol.STATUS: _on_status,
        protocol.ESTOP: _on_estop,
        protocol.NONCE: _on_nonce,
        protocol.CLEAR: _on_clear,
        protocol.INTERVENE: _on_intervene,
    }

    # --- refusals and records --------------------------------------------------------------------

    def _holds_lease(self, inbound: Inbound, now: int) -> bool:
        refusal = self.leases.check(inbound, now)
        if refusal is None:
            return True
        if refusal.counts_as_drop:
            self._drop(inbound, refusal.code, refusal.text, now)
        else:
            self._reject(inbound, refusal.code, refusal.text, now)
        return False

    def _refused_while_latched(self, inbound: Inbound, now: int) -> bool:
        """Refuse (fatally) any motion request while the e-stop is latched."""
        if not self.latch.latched:
            return False
        reason = f"e-stop latched ({self.latch.reason}); operator must CLEAR"
        self._reject(inbound, "estop", reason, now, fatal=True)
        return True

    def _drop(self, inbound: Inbound, code: str, text: str, now: int) -> None:
        """Reject a lease holder's command; a long streak of these latches the e-stop."""
        self.reject_streak += 1
        self._reject(inbound, code, text, now)
        if self.reject_streak >= self.config.limits.reject_streak_to_estop and not self.latch.latched:
            self._trip(f"{self.reject_streak} rejected commands in a row (last: {code})", now)

    def _reject(self, inbound: Inbound, code: str, text: str, now: int, fatal: bool = False) -> None:
        message = inbound.message
        self.drops[code] += 1
        self._record_cmd(now, inbound, "dropped", f"{code}: {text}")
        kind = message.type if message else "message"
        log.warning("rejected %s from %s: %s: %s", kind, inbound.user[:8], code, text)
        self.transport.send(inbound.identity, _error(message.seq if message else -1, code, text, fatal))

    def _record_cmd(self, now: int, inbound: Inbound, verdict: str, reason: str = "") -> None:
        fields: dict[str, Any] = {"t_ns": now, "user": inbound.user[:8], "verdict": verdict, "reason": reason}
        message = inbound.message
        if message is not None:
            fields.update(type=message.type, seq=message.seq, session=message.session[:8])
            action = message.body.get("action")
            if message.type in (protocol.ACT, protocol.INTERVENE) and isinstance(action, np.ndarray):
                fields["action"] = action
        self.recorder.write("cmd", **fields)

    def _event(self, what: str, detail: str, now: int) -> None:
        log.info("%s: %s", what, detail)
        self.recorder.write("event", what=what, detail=detail, t_ns=now)

    # --- replies ---------------------------------------------------------------------------------

    def _send_status(self, inbound: Inbound, now: int) -> None:
        reply = protocol.Message(
            protocol.STATUS_REPLY, 0, {"status": self.status(now)}, re=inbound.message.seq
        )
        self.transport.send(inbound.identity, reply)

    def _send_obs(
        self, identity: bytes, re: int, applied: Applied | None, state: ArmState | None = None
    ) -> None:
        """The OBS for a reset (``applied`` None: sampled as the episode starts) or an action."""
        state = state or self.backend.read_state()
        self._check_state(state, time.monotonic_ns())  # so this OBS already reports a latch it causes
        frames = self.pipeline.capture(state)
        limit = self.config.stale_frames_to_estop
        if limit and self.pipeline.stale_frames >= limit and not self.latch.latched:
            self._trip(f"camera frozen for {self.pipeline.stale_frames} observations", time.monotonic_ns())
        report = {} if applied is None else applied.report
        t_applied = state.t_ns if applied is None else applied.t_applied_ns
        body = self.pipeline.observe(state, frames, t_applied, report, self._obs_status(report))
        self.transport.send(identity, protocol.Message(protocol.OBS, 0, body, re=re))
        # The holder's silence counts from the server's answer: a reset or step that took longer
        # than the lease timeout (a real arm homing, a loaded machine) must not cost it its lease.
        self.leases.answered(time.monotonic_ns())
        if body["terminated"]:
            self.recorder.sync()

    def _obs_status(self, applied: dict[str, Any]) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "estop": self.latch.latched,
            "estop_reason": self.latch.reason,
            "clipped": applied.get("clipped", []),
            "intervened": applied.get("source") == "human",
            "camera_stale": self.pipeline.stale_frames > 0,
            "drops": dict(self.drops),
        }

    def status(self, now: int) -> dict[str, Any]:
        state = self.pipeline.last_state or self.backend.read_state()
        lease = self.leases.lease
        return {
            "mode": self.mode.value,
            "watchdog": self.watchdog.state.value,
            "estop": self.latch.latched,
            "estop_reason": self.latch.reason,
            "lease": None if lease is None else lease.user[:8],
            "episode": self.pipeline.episode,
            "step": self.pipeline.step,
            "drops": dict(self.drops),
            "last_valid_act_ns": self.watchdog.last_feed_ns,
            "hold_at_ns": self.watchdog.hold_at_ns,
            "stop_at_ns": self.watchdog.stop_at_ns,
            "server_ns": now,
            "ee_pos": state.ee.pos.tolist(),
            "logged": self.recorder.written,
            "log": str(self.recorder.path),
        }

    # --- stopping --------------------------------------------------------------------------------

    def _check_state(self, state: ArmState, now: int) -> bool:
        """Latch the e-stop on a backend fault or a wrench past the force guard; True when it latched."""
        if self.latch.latched:
            return False
        if state.fault:
            self._trip(f"backend fault: {state.fault}", now)
            return True
        if reason := self.pipeline.governor.force_exceeded(state):
            self.backend.hold()  # stop pushing at once: the reference goes to where the arm is
            self._trip(reason, now)
            return True
        return False

    def _stop_arm(self, now: int, reason: str, mode: Mode) -> None:
        self.backend.stop()
        self.watchdog.disarm()
        self.mode = mode
        self._event("stop", reason, now)
        self.recorder.sync()

    def _end_episode(self, now: int, reason: str) -> None:
        if self.mode in ARM_MAY_MOVE:
            self.backend.hold()
            self.watchdog.disarm()
            self.mode = Mode.IDLE
            self.pending = None
            self._event("episode_end", reason, now)
            self.recorder.sync()

    def _trip(self, reason: str, now: int) -> None:
        self.latch.trip(reason, now)
        if self.pending is not None:  # the client waiting on a step or reset hears why at once
            pending, self.pending = self.pending, None
            self.transport.send(pending.identity, _error(pending.re, "estop", reason, fatal=True))
        self._stop_arm(now, f"e-stop: {reason}", Mode.LATCHED)


def _error(re: int, code: str, text: str, fatal: bool = False) -> protocol.Message:
    body = {"code": code, "msg": text[: protocol.MAX_STRING], "fatal": fatal}
    return protocol.Message(protocol.ERROR, 0, body, re=re)


def _plain(obj: Any) -> Any:
    """Config dataclasses as msgpack-friendly plain values (tuples to lists, numpy to Python)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
