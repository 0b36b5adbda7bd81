"""The arm server: the only process that talks to the arm.

One thread runs an event loop over a CurveZMQ ROUTER socket. Each turn it handles what arrived, then
``_tick`` sends replies that have come due, runs the watchdog, and checks the backend for faults.
The poll timeout is the time to the nearest deadline, so the watchdog fires within about a
millisecond of its deadline, not at the next message.

Control lease: ``HELLO`` from an authorised client key returns a random session id; RESET, ACT and
BYE must carry it and come from the key that took the lease. A second key is refused while the holder has been heard from within
``lease_timeout_s``; the same key may take the lease over at once (a restarted actor), which ends
the old session's episode. Operator keys cannot hold the lease; they send NONCE, CLEAR and
INTERVENE. Any authenticated key may send ESTOP and STATUS.

Timing of a step: an ACT is governed and applied at once, and its OBS is the state sampled one
control period later (``t_applied_ns`` -> ``t_state_ns``), so the observation shows the effect of
the action. In real time the server holds the reply until then (still serving other messages); in
lock-step it advances physics by one period and replies straight away. The server's clock, not the
client's sleeps, sets the control period.

Freshness: an ACT must name the latest OBS of its session (``obs_id``) and arrive within
``max_action_age_ms`` of that OBS being sent, measured on the server clock alone, so no clock
synchronisation between machines is needed.

Human intervention: while an operator's INTERVENE action is fresh (``intervention_timeout_ms``),
it replaces the policy's action in the next ACTs, passes through the same governor, and is flagged
``source="human"`` in the OBS and the log; the client learns what was executed from
``OBS.applied``.
"""

from __future__ import annotations

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
import zmq
from zmq.auth.thread import ThreadAuthenticator

from real_robot import protocol as P
from real_robot.backends.base import ArmState, Backend, BackendFault
from real_robot.governor import Governor, Pose, SafetyLimits, euler_to_mat, mat_to_quat
from real_robot.keys import ServerKeys
from real_robot.recorder import Recorder
from real_robot.tasks import TASKS
from real_robot.watchdog import HOLD, RUNNING, STOPPED, ClearRefused, EStopLatch, Watchdog

log = logging.getLogger("real_robot.server")

# Server modes (the watchdog's running/hold/stopped plus the states around an episode).
IDLE, RESETTING, LATCHED = "idle", "resetting", "latched"


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
class _Lease:
    session: str
    identity: bytes
    user: str
    last_seen_ns: int
    last_seq: int = -1


@dataclass
class _Pending:
    """A reply that comes due later: the first OBS of a reset, or the OBS one period after an ACT."""

    due_ns: int
    identity: bytes
    re: int
    kind: str  # "reset" or "obs"
    t_applied_ns: int = 0
    applied: dict[str, Any] = field(default_factory=dict)


class ArmServer:
    def __init__(self, config: ServerConfig, backend: Backend, keys: ServerKeys):
        self.config = config
        self.backend = backend
        self.keys = keys
        self.task = TASKS[config.task]()
        period = config.period_s
        self.hold_after_s = (config.hold_after_ms or 2500 * period) / 1e3
        self.max_action_age_ns = int((config.max_action_age_ms or 1500 * period) * 1e6)
        self.governor = Governor(config.limits, period, backend.joint_limits())
        self.watchdog = Watchdog(self.hold_after_s, config.stop_after_ms / 1e3)
        self.latch = EStopLatch(config.nonce_ttl_s)
        self.home = Pose(
            np.asarray(config.home_xyz, float), mat_to_quat(euler_to_mat(np.asarray(config.home_rpy)))
        )
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.recorder = Recorder(
            Path(config.log_dir) / f"{stamp}-{secrets.token_hex(3)}.o2olog", config.fsync_interval_s
        )

        self.mode = IDLE
        self.lease: _Lease | None = None
        self.pending: _Pending | None = None
        self.episode, self.step = -1, 0
        self.goal = np.zeros(3, np.float32)
        self.obs_id, self.obs_sent_ns = 0, 0
        self.last_state: ArmState | None = None
        self.drops: Counter[str] = Counter()
        self.reject_streak = self.nan_streak = self.stale_frames = 0
        self.human: tuple[np.ndarray, int] | None = None
        self._inbound = 0
        self._stop = threading.Event()
        self.ready = threading.Event()

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
        self.socket.setsockopt(zmq.MAXMSGSIZE, 4 * P.MAX_MESSAGE_BYTES)
        self.socket.setsockopt(zmq.HEARTBEAT_IVL, 500)
        self.socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, 2000)
        self.socket.bind(config.address)
        self.address = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.recorder.write(
            "header", spec=self.spec(), config=_plain(asdict(config)), t_ns=time.monotonic_ns()
        )

    # --- authentication (called on the authenticator's thread) -----------------------------------

    def callback(self, domain: str, key: bytes) -> bool:
        allowed = key in self.keys.clients or key in self.keys.operators
        if not allowed:
            log.warning("refused connection from unknown key %s...", key[:8].decode(errors="replace"))
        return allowed

    # --- the loop --------------------------------------------------------------------------------

    def spec(self) -> dict[str, Any]:
        dof = self.backend.dof
        obs_dims = {"q": dof, "dq": dof, "ee_pos": 3, "ee_quat": 4, "gripper": 1, **self.task.state_keys()}
        cameras = {name: list(shape) for name, shape in self.backend.camera_shapes().items()}
        return {
            "backend": self.backend.name,
            "lockstep": self.backend.lockstep,
            "control_hz": self.config.control_hz,
            "task": self.config.task,
            "max_episode_steps": self.config.max_episode_steps,
            "action_mode": "ee_delta",
            "action_dim": P.ACTION_DIM,
            "obs_keys": list(obs_dims),
            "obs_dims": obs_dims,
            "cameras": cameras,
            "limits": _plain(asdict(self.config.limits)),
        }

    def serve_forever(self) -> None:
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        self.ready.set()
        log.info(
            "serving %s backend on %s, logging to %s", self.backend.name, self.address, self.recorder.path
        )
        try:
            while not self._stop.is_set():
                if poller.poll(self._poll_timeout_ms()):
                    for _ in range(100):  # bounded, so deadlines still get checked under a flood
                        try:
                            frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        self._receive(frames)
                self._tick(time.monotonic_ns())
        finally:
            self._shutdown()

    def stop(self) -> None:
        self._stop.set()

    def _shutdown(self) -> None:
        try:
            self.backend.stop()
        finally:
            self.socket.close(0)
            self.auth.stop()
            self.ctx.term()
            self.recorder.write("event", what="shutdown", t_ns=time.monotonic_ns())
            self.recorder.close()

    def _poll_timeout_ms(self) -> int:
        now = time.monotonic_ns()
        # Wake at least every 50 ms for stop requests; every 10 ms while the arm may move, so a
        # backend fault or the force guard is noticed within 10 ms.
        moving = self.mode in (RUNNING, HOLD, RESETTING)
        deadlines = [now + (10_000_000 if moving else 50_000_000)]
        if self.pending is not None:
            deadlines.append(self.pending.due_ns)
        watchdog_due = self.watchdog.next_deadline_ns()
        if watchdog_due is not None:
            deadlines.append(watchdog_due)
        return max(0, -(-(min(deadlines) - now) // 1_000_000))  # ceil to whole ms: never wake early

    def _tick(self, now: int) -> None:
        if self.pending is not None and now >= self.pending.due_ns:
            pending, self.pending = self.pending, None
            if pending.kind == "reset":
                self._finish_reset(pending)
            else:
                self._send_obs(pending.identity, pending.re, pending.t_applied_ns, pending.applied)
        transition = self.watchdog.poll(now)
        if transition == HOLD:
            self._hold(now)
        elif transition == STOPPED:
            self._stop_arm(now, "watchdog: no valid command", mode=STOPPED)
        if self.mode in (RUNNING, HOLD, RESETTING):
            self._check_state(self.backend.read_state(), now)
        if self.lease is not None and now - self.lease.last_seen_ns > self.config.lease_timeout_s * 1e9:
            self._event("lease_expired", f"session {self.lease.session[:8]} silent", now)
            self.lease = None

    # --- receiving -------------------------------------------------------------------------------

    def _receive(self, frames: list[zmq.Frame]) -> None:
        now = time.monotonic_ns()
        identity, user = frames[0].bytes, frames[0].get("User-Id")
        self._inbound += 1
        if self.config.drop_every and self._inbound % self.config.drop_every == 0:
            self._record_cmd(now, user, None, "dropped", "fault_injection: dropped on purpose")
            return
        if len(frames) != 2:
            self._reject(identity, user, None, "malformed", f"expected 1 frame, got {len(frames) - 1}", now)
            return
        try:
            msg = P.decode(frames[1].buffer)
        except P.ProtocolError as exc:
            code = "oversized" if "limit" in str(exc) else "malformed"
            self._reject(identity, user, None, code, str(exc), now)
            return
        handler = self._HANDLERS.get(msg.type)
        if handler is None:
            self._reject(identity, user, msg, "unexpected", f"{msg.type} is a reply type", now)
            return
        is_operator = user.encode() in self.keys.operators
        if msg.type in (P.NONCE, P.CLEAR, P.INTERVENE) and not is_operator:
            self._reject(identity, user, msg, "forbidden", f"{msg.type} needs an operator key", now)
            return
        handler(self, identity, user, msg, now)

    def _on_hello(self, identity: bytes, user: str, msg: P.Message, now: int) -> None:
        if user.encode() not in self.keys.clients:
            self._reject(
                identity, user, msg, "forbidden", "HELLO needs a client key (operator keys cannot drive)", now
            )
            return
        lease = self.lease
        if lease is not None and lease.user != user:
            left = self.config.lease_timeout_s - (now - lease.last_seen_ns) / 1e9
            self._reject(
                identity,
                user,
                msg,
                "busy",
                f"another client holds the lease (free in {left:.1f} s if silent)",
                now,
            )
            return
        if lease is not None:  # the same key again: a restarted actor takes over, its old episode ends
            self._end_episode(now, "lease taken over")
        self.lease = _Lease(secrets.token_hex(16), identity, user, now, last_seq=msg.seq)
        self._record_cmd(now, user, msg, "accepted")
        self._event("lease", f"granted to {user[:8]} ({msg.body.get('client', '')})", now)
        self._send(identity, P.Message(P.HELLO_ACK, 0, {"spec": self.spec()}, self.lease.session, msg.seq))

    def _on_bye(self, identity: bytes, user: str, msg: P.Message, now: int) -> None:
        if self._check_session(identity, user, msg, now):
            self._record_cmd(now, user, msg, "accepted")
            self._end_episode(now, "client said BYE")
            self.lease = None
            self._send(identity, P.Message(P.STATUS_REPLY, 0, {"status": self.status(now)}, re=msg.seq))

    def _refused_while_latched(self, identity: bytes, user: str, msg: P.Message, now: int) -> bool:
        """Refuse (fatally) any motion request while the e-stop is latched."""
        if not self.latch.latched:
            return False
        reason = f"e-stop latched ({self.latch.reason}); operator must CLEAR"
        self._reject(identity, user, msg, "estop", reason, now, fatal=True)
        return True

    def _on_reset(self, identity: bytes, user: str, msg: P.Message, now: int) -> None:
        if not self._check_session(identity, user, msg, now) or self._refused_while_latched(
            identity, user, msg, now
        ):
            return
        if self.pending is not None:
            self._reject(identity, user, msg, "busy", "a reset or step is still in progress", now)
            return
        self._record_cmd(now, user, msg, "accepted")
        rng = np.random.default_rng(msg.body.get("seed"))
        start, self.goal = self.task.reset(rng, self.home)
        self.watchdog.disarm()
        self.mode = RESETTING
        try:
            duration = self.backend.begin_reset(start)
        except BackendFault as exc:
            self._trip(f"backend fault during reset: {exc}", now)
            self._reject(identity, user, msg, "estop", f"reset failed: {exc}", now, fatal=True)
            return
        pending = _Pending(now, identity, msg.seq, "reset", applied={"start": start})
        if self.backend.lockstep:
            self.backend.advance(duration + self.config.reset_settle_s)
            self._finish_reset(pending)
        else:
            pending.due_ns = now + int((duration + self.config.reset_settle_s) * 1e9)
            self.pending = pending

    def _finish_reset(self, pending: _Pending) -> None:
        now = time.monotonic_ns()
        state = self.backend.read_state()
        error = float(np.linalg.norm(state.ee.pos - pending.applied["start"].pos))
        if state.fault or error > self.config.reset_tolerance_m:
            reason = state.fault or f"reset ended {error * 1000:.0f} mm from its start pose"
            self._trip(f"reset failed: {reason}", now)
            self._send(pending.identity, _error(pending.re, "estop", f"reset failed: {reason}", fatal=True))
            return
        self.governor.anchor(state.ee)
        self.watchdog.arm(now)
        self.mode = RUNNING
        self.episode, self.step = self.episode + 1, 0
        self.reject_streak = self.nan_streak = self.stale_frames = 0
        self._event("reset", f"episode {self.episode}", now)
        self._send_obs(pending.identity, pending.re, state.t_ns, {}, state)

    def _on_act(self, identity: bytes, user: str, msg: P.Message, now: int) -> None:
        if not self._check_session(identity, user, msg, now) or self._refused_while_latched(
            identity, user, msg, now
        ):
            return
        if self.mode not in (RUNNING, HOLD):
            self._reject(identity, user, msg, "not_running", f"arm is {self.mode}: send RESET", now)
            return
        if self.pending is not None:
            self._drop(identity, user, msg, "busy", "the previous action is still executing", now)
            return
        if msg.body["obs_id"] != self.obs_id:
            self._drop(
                identity,
                user,
                msg,
                "stale",
                f"computed from obs {msg.body['obs_id']}, latest is {self.obs_id}",
                now,
            )
            return
        age_ns = now - self.obs_sent_ns
        if age_ns > self.max_action_age_ns:
            self._drop(
                identity,
                user,
                msg,
                "stale",
                f"obs is {age_ns / 1e6:.0f} ms old (limit {self.max_action_age_ns / 1e6:.0f} ms)",
                now,
            )
            return

        action, source = msg.body["action"], "policy"
        if self.human is not None and now - self.human[1] <= self.config.intervention_timeout_ms * 1e6:
            action, source = self.human[0], "human"
        state = self.backend.read_state()
        if self._check_state(state, now):
            self._reject(identity, user, msg, "estop", self.latch.reason, now, fatal=True)
            return
        decision = self.governor.apply(action, state, self.backend.now_ns())
        if decision.rejected:
            if decision.rejected.startswith("non_finite"):
                self.nan_streak += 1
                if self.nan_streak >= self.config.limits.nan_streak_to_estop:
                    self._trip(f"{self.nan_streak} non-finite actions in a row", now)
            self._drop(identity, user, msg, decision.rejected.split(":")[0], decision.rejected, now)
            return
        self.nan_streak = self.reject_streak = 0
        self.backend.command(decision.target, decision.gripper, self.config.period_s)
        self.watchdog.feed(now)
        self.mode = RUNNING
        self.step += 1
        applied = {
            "requested": np.asarray(msg.body["action"], np.float32),
            "applied": decision.applied,
            "source": source,
            "clipped": list(decision.clipped),
        }
        self._record_cmd(now, user, msg, "accepted")
        self.recorder.write(
            "applied",
            t_ns=now,
            episode=self.episode,
            step=self.step,
            obs_id=self.obs_id,
            target_pos=decision.target.pos,
            target_quat=decision.target.quat,
            **applied,
        )
        t_applied = self.backend.now_ns()  # backend clock, like the state's timestamp
        if self.backend.lockstep:
            self.backend.advance(self.config.period_s)
            self._send_obs(identity, msg.seq, t_applied, applied)
        else:
            self.pending = _Pending(
                now + int(self.config.period_s * 1e9), identity, msg.seq, "obs", t_applied, applied
            )

    def _on_status(self, identity: bytes, user: str, msg: P.Message, now: int) -> None:
        self._send(identity, P.Message(P.STATUS_REPLY, 0, {"status": self.status(now)}, re=msg.seq))

    def _on_estop(self, identity: bytes, user: str, msg: P.Message, now: int) -> None:
        self._record_cmd(now, user, msg, "accepted")
        self._trip(f"ESTOP from {user[:8]}: {msg.body['reason']}", now)
        self._send(identity, P.Message(P.STATUS_REPLY, 0, {"status": self.status(now)}, re=msg.seq))

    def _on_nonce(self, identity: bytes, user: str, msg: P.Message, now: int) -> None:
        self._record_cmd(now, user, msg, "accepted")
        nonce = self.latch.issue_nonce(now)
        self._send(
            identity,
            P.Message(P.NONCE_REPLY, 0, {"nonce": nonce, "ttl_s": self.config.nonce_ttl_s}, re=msg.seq),
        )

    def _on_clear(self, identity: bytes, user: str, msg: P.Message, now: int) -> None:
        try:
            self.latch.clear(msg.body["nonce"], now)
        except ClearRefused as exc:
            self._reject(identity, user, msg, "clear_refused", str(exc), now)
            return
        try:
            self.backend.recover()
        except BackendFault as exc:
            self._trip(f"backend did not recover: {exc}", now)
            self._reject(identity, user, msg, "clear_refused", f"backend did not recover: {exc}", now)
            return
        # Re-anchor to where the arm actually is, so nothing jumps when motion is re-enabled.
        self.backend.hold()
        self.governor.anchor(self.backend.read_state().ee)
        self.mode = STOPPED
        self._record_cmd(now, user, msg, "accepted")
        self._event("estop_cleared", f"by {user[:8]}; RESET needed", now)
        self._send(identity, P.Message(P.STATUS_REPLY, 0, {"status": self.status(now)}, re=msg.seq))

    def _on_intervene(self, identity: bytes, user: str, msg: P.Message, now: int) -> None:
        action = msg.body["action"]
        was_on = self.human is not None
        self.human = None if action is None else (np.array(action), now)
        if was_on != (self.human is not None):
            self._record_cmd(now, user, msg, "accepted")
            self._event("intervention", "on" if self.human is not None else "off", now)
        self._send(identity, P.Message(P.STATUS_REPLY, 0, {"status": self.status(now)}, re=msg.seq))

    _HANDLERS: ClassVar[dict[str, Callable[..., None]]] = {
        P.HELLO: _on_hello,
        P.BYE: _on_bye,
        P.RESET: _on_reset,
        P.ACT: _on_act,
        P.STATUS: _on_status,
        P.ESTOP: _on_estop,
        P.NONCE: _on_nonce,
        P.CLEAR: _on_clear,
        P.INTERVENE: _on_intervene,
    }

    # --- helpers ---------------------------------------------------------------------------------

    def _check_session(self, identity: bytes, user: str, msg: P.Message, now: int) -> bool:
        """The message comes from the key that took the lease, in its session, with a newer seq.

        The key is checked, not only the session id: a session id is not a secret once it has been
        logged or seen, and another authorised key (or an operator's) must not drive with it. Such a
        refusal does not count towards the holder's reject streak, so it cannot latch the holder's
        e-stop either."""
        if self.lease is None or msg.session != self.lease.session or user != self.lease.user:
            self._reject(
                identity, user, msg, "no_lease", "not the lease holder's key and session: send HELLO", now
            )
            return False
        if msg.seq <= self.lease.last_seq:
            self._drop(identity, user, msg, "out_of_order", f"seq {msg.seq} after {self.lease.last_seq}", now)
            return False
        self.lease.identity, self.lease.last_seen_ns, self.lease.last_seq = identity, now, msg.seq
        return True

    def _drop(self, identity: bytes, user: str, msg: P.Message, code: str, text: str, now: int) -> None:
        """Reject a lease holder's ACT; a long streak of these latches the e-stop."""
        self.reject_streak += 1
        self._reject(identity, user, msg, code, text, now)
        if self.reject_streak >= self.config.limits.reject_streak_to_estop and not self.latch.latched:
            self._trip(f"{self.reject_streak} rejected commands in a row (last: {code})", now)

    def _reject(
        self,
        identity: bytes,
        user: str,
        msg: P.Message | None,
        code: str,
        text: str,
        now: int,
        fatal: bool = False,
    ) -> None:
        self.drops[code] += 1
        self._record_cmd(now, user, msg, "dropped", f"{code}: {text}")
        log.warning("rejected %s from %s: %s: %s", msg.type if msg else "message", user[:8], code, text)
        self._send(identity, _error(msg.seq if msg else -1, code, text, fatal))

    def _record_cmd(self, now: int, user: str, msg: P.Message | None, verdict: str, reason: str = "") -> None:
        fields: dict[str, Any] = {"t_ns": now, "user": user[:8], "verdict": verdict, "reason": reason}
        if msg is not None:
            fields.update(type=msg.type, seq=msg.seq, session=msg.session[:8])
            if msg.type in (P.ACT, P.INTERVENE) and isinstance(msg.body.get("action"), np.ndarray):
                fields["action"] = msg.body["action"]
        self.recorder.write("cmd", **fields)

    def _event(self, what: str, detail: str, now: int) -> None:
        log.info("%s: %s", what, detail)
        self.recorder.write("event", what=what, detail=detail, t_ns=now)

    def _send(self, identity: bytes, msg: P.Message) -> None:
        msg = P.Message(msg.type, msg.seq, msg.body, msg.session, msg.re, time.monotonic_ns())
        try:
            self.socket.send_multipart([identity, P.encode(msg)], zmq.NOBLOCK)
        except zmq.Again:  # the peer is gone or not reading: never block the control loop on it
            log.warning("reply %s to a peer that is not reading was dropped", msg.type)

    def _send_obs(
        self,
        identity: bytes,
        re: int,
        t_applied_ns: int,
        applied: dict[str, Any],
        state: ArmState | None = None,
    ) -> None:
        state = state or self.backend.read_state()
        self._check_state(state, time.monotonic_ns())  # so this OBS already reports a latch it causes
        self.last_state = state
        reward, terminated = self.task.score(state, self.goal)
        frames = self._frames(state)
        self.obs_id += 1
        body = {
            "obs_id": self.obs_id,
            "episode": self.episode,
            "step": self.step,
            "t_applied_ns": t_applied_ns,
            "t_state_ns": state.t_ns,
            "state": {
                "q": state.q.astype(np.float32),
                "dq": state.dq.astype(np.float32),
                "ee_pos": state.ee.pos.astype(np.float32),
                "ee_quat": state.ee.quat.astype(np.float32),
                "gripper": np.array([state.gripper], np.float32),
                "goal": self.goal,
            },
            "reward": reward,
            "terminated": terminated,
            "applied": applied,
            "status": self._obs_status(applied),
            "frames": frames,
        }
        self.recorder.write("obs", t_ns=time.monotonic_ns(), **body)
        body["logged"] = self.recorder.written
        self.obs_sent_ns = time.monotonic_ns()
        self._send(identity, P.Message(P.OBS, 0, body, re=re))
        if terminated:
            self.recorder.sync()

    def _frames(self, state: ArmState) -> dict[str, Any]:
        frames = self.backend.frames()
        stale = any(state.t_ns - f.t_capture_ns > self.config.max_frame_age_ms * 1e6 for f in frames.values())
        self.stale_frames = self.stale_frames + 1 if stale else 0
        limit = self.config.stale_frames_to_estop
        if limit and self.stale_frames >= limit and not self.latch.latched:
            self._trip(f"camera frozen for {self.stale_frames} observations", time.monotonic_ns())
        return {
            n: {"frame_id": f.frame_id, "t_capture_ns": f.t_capture_ns, "image": f.image}
            for n, f in frames.items()
        }

    def _obs_status(self, applied: dict[str, Any]) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "estop": self.latch.latched,
            "estop_reason": self.latch.reason,
            "clipped": applied.get("clipped", []),
            "intervened": applied.get("source") == "human",
            "camera_stale": self.stale_frames > 0,
            "drops": dict(self.drops),
        }

    def status(self, now: int) -> dict[str, Any]:
        state = self.last_state or self.backend.read_state()
        return {
            "mode": self.mode,
            "watchdog": self.watchdog.state,
            "estop": self.latch.latched,
            "estop_reason": self.latch.reason,
            "lease": None if self.lease is None else self.lease.user[:8],
            "episode": self.episode,
            "step": self.step,
            "drops": dict(self.drops),
            "last_valid_act_ns": self.watchdog.last_feed_ns,
            "hold_at_ns": self.watchdog.hold_at_ns,
            "stop_at_ns": self.watchdog.stop_at_ns,
            "server_ns": now,
            "ee_pos": state.ee.pos.tolist(),
            "logged": self.recorder.written,
            "log": str(self.recorder.path),
        }

    def _hold(self, now: int) -> None:
        self.backend.hold()
        self.governor.anchor(self.backend.read_state().ee)
        self.mode = HOLD
        self._event("watchdog", f"hold: no valid command for {self.hold_after_s * 1000:.0f} ms", now)

    def _stop_arm(self, now: int, reason: str, mode: str) -> None:
        self.backend.stop()
        self.watchdog.disarm()
        self.mode = mode
        self._event("stop", reason, now)
        self.recorder.sync()

    def _end_episode(self, now: int, reason: str) -> None:
        if self.mode in (RUNNING, HOLD, RESETTING):
            self.backend.hold()
            self.watchdog.disarm()
            self.mode = IDLE
            self.pending = None
            self._event("episode_end", reason, now)
            self.recorder.sync()

    def _trip(self, reason: str, now: int) -> None:
        self.latch.trip(reason, now)
        if self.pending is not None:  # the client waiting on a step or reset hears why at once
            pending, self.pending = self.pending, None
            self._send(pending.identity, _error(pending.re, "estop", reason, fatal=True))
        self._stop_arm(now, f"e-stop: {reason}", mode=LATCHED)

    def _check_state(self, state: ArmState, now: int) -> bool:
        """Latch the e-stop on a backend fault or a wrench past the force guard; True when it latched."""
        if self.latch.latched:
            return False
        if state.fault:
            self._trip(f"backend fault: {state.fault}", now)
            return True
        if reason := self.governor.force_exceeded(state):
            self.backend.hold()  # stop pushing at once: the reference goes to where the arm is
            self._trip(reason, now)
            return True
        return False


def _error(re: int, code: str, text: str, fatal: bool = False) -> P.Message:
    return P.Message(P.ERROR, 0, {"code": code, "msg": text[: P.MAX_STRING], "fatal": fatal}, re=re)


def _plain(obj: Any) -> Any:
    """Config dataclasses as msgpack-friendly plain values (tuples to lists, numpy to Python)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
