"""A bounded soak of the arm bridge with injected faults, as JSON (a benchmark, not a CI test).

Loopback only. A server (``python -m real_robot.serve``, sim backend, throwaway keys) runs in a
subprocess; a client drives it with random actions, an operator clears e-stops, and faults are
injected on every side:

- **dropped messages**: the server drops every ``--drop-every``-th inbound message unread
  (``drop_every``); the caller times out and sends again;
- **latency spikes**: before some ACTs the client stalls for 0.2, 0.6 or 1.2 s (a learner pause),
  so the action arrives stale, after a watchdog hold, or after a watchdog stop;
- **backend faults**: the sim arm reports a reflex every ``--fault-every`` commands
  (``fault_after_commands``), which must latch the e-stop until the operator clears it;
- **operator e-stops**: now and then the operator presses ESTOP, which must latch too;
- **client restarts**: now and then the client is closed and a new one takes the lease over;
- **a server kill**: once per phase the server is killed with SIGKILL mid-episode and restarted.

Two phases: lock-step (physics advances one period per ACT, so thousands of ACTs fit in minutes)
and real time at 10 Hz (the sim's inner loop in its own process). At the end every server log is
read back and checked against what the client was told:

- ``records_lost``: observations the client received (each OBS says it was logged) that are not in
  that server's log, plus logs shorter than the ``logged`` count an OBS reported. Goal 0.
- ``estops``: every latch is matched to its cause from the server's log; ``unexpected`` lists
  latches with any other cause, and ``*_not_latched`` count injected reflexes (due after every
  ``--fault-every`` applied commands since a recovery, counted from the log) and operator ESTOPs
  that did not latch. Goal: all three 0.

    .venv/bin/python experiments/bench/bridge_soak.py [--seconds-lockstep 150] [--seconds-realtime 60]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from real_robot import protocol
from real_robot.client import BridgeClient, BridgeError, BridgeTimeout
from real_robot.keygen import main as keygen
from real_robot.keys import load_client_keys
from real_robot.recorder import read_log

ROOT = Path(__file__).resolve().parents[2]
EPISODE_STEPS = 100
SPIKES_S = (0.2, 0.6, 1.2)
P_SPIKE, P_RESTART, P_ESTOP = 0.01, 0.005, 0.003
MAX_ATTEMPTS = 20
"""Retries of one request through dropped messages and a restarting server before giving up."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The server subprocess; every (re)start logs to a directory of its own."""

    def __init__(self, keys: Path, logs: Path, lockstep: bool, drop_every: int, fault_every: int):
        self.keys, self.logs = keys, logs
        self.address = f"tcp://127.0.0.1:{_free_port()}"
        self.options = [
            "backend=sim",
            f"lockstep={str(lockstep).lower()}",
            f"drop_every={drop_every}",
            f"fault_after_commands={fault_every}",
            "control_hz=10",
            f"max_episode_steps={EPISODE_STEPS}",
        ]
        self.instance = -1
        self.log_dirs: list[Path] = []
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.instance += 1
        log_dir = self.logs / f"server-{self.instance}"
        self.log_dirs.append(log_dir)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "real_robot.serve",
                *self.options,
                f"address={self.address}",
                f"keys={self.keys}",
                f"log_dir={log_dir}",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


class Soak:
    def __init__(self, server: Server, keys: Path, rng: np.random.Generator, timeout_s: float):
        self.server, self.keys, self.rng, self.timeout_s = server, keys, rng, timeout_s
        self.count: Counter[str] = Counter()
        self.received: list[tuple[int, int, int]] = []
        """(server instance, obs_id, logged) of every OBS the client got."""
        self.estops_sent = 0
        self.client = self._client("client")
        self.operator = self._client("operator")

    def _client(self, name: str) -> BridgeClient:
        return BridgeClient(self.server.address, load_client_keys(self.keys, name), self.timeout_s, name)

    def request(self, who: BridgeClient, kind: str, body: dict | None = None, timeout_s: float | None = None):
        """A request sent again through dropped messages and a restarting server (it never blocks)."""
        for _ in range(MAX_ATTEMPTS):
            try:
                return who.request(kind, body, timeout_s)
            except BridgeTimeout:
                self.count["timeouts"] += 1
        raise RuntimeError(f"soak: {kind} unanswered after {MAX_ATTEMPTS} attempts")

    def observe(self, obs: protocol.Message) -> protocol.Message:
        self.received.append((self.server.instance, obs.body["obs_id"], obs.body["logged"]))
        return obs

    def clear(self) -> None:
        """The operator clears the latch (after a server restart there may be none left to clear)."""
        nonce = self.request(self.operator, protocol.NONCE).body["nonce"]
        try:
            self.request(self.operator, protocol.CLEAR, {"nonce": nonce})
            self.count["clears"] += 1
        except BridgeError as exc:
            if "not latched" not in str(exc):
                raise

    def start_episode(self) -> protocol.Message:
        while True:
            self.client.session = ""
            self.client.session = self.request(self.client, protocol.HELLO).session
            try:
                return self.observe(self.request(self.client, protocol.RESET, {"seed": 0}, timeout_s=60))
            except BridgeError as exc:
                if exc.code == "estop":
                    self.clear()
                elif exc.code != "no_lease":  # a dropped HELLO's retry replaced our session: start over
                    raise

    def run(self, seconds: float, kill_at: float) -> None:
        end, killed = time.monotonic() + seconds, False
        obs = self.start_episode()
        while time.monotonic() < end:
            if not killed and time.monotonic() > kill_at:
                killed = True
                self.server.kill()
                self.server.start()
                self.count["server_kills"] += 1
            roll = self.rng.random()
            if roll < P_RESTART:
                self.client.close()
                self.client = self._client("client")
                self.count["client_restarts"] += 1
                obs = self.start_episode()
                continue
            if roll < P_RESTART + P_ESTOP:
                self.request(self.operator, protocol.ESTOP, {"reason": "soak"})
                self.estops_sent += 1
            elif roll < P_RESTART + P_ESTOP + P_SPIKE:
                time.sleep(self.rng.choice(SPIKES_S))
                self.count["latency_spikes"] += 1
            action = self.rng.uniform(-1, 1, protocol.ACTION_DIM).astype(np.float32)
            self.count["acts_sent"] += 1
            try:
                obs = self.observe(
                    self.request(self.client, protocol.ACT, {"obs_id": obs.body["obs_id"], "action": action})
                )
            except BridgeError as exc:
                self.count[f"refused_{exc.code}"] += 1
                if exc.fatal:
                    self.clear()
                obs = self.start_episode()
                continue
            self.count["served"] += 1
            if obs.body["status"]["estop"]:  # this step's state latched it (a backend fault)
                self.clear()
                obs = self.start_episode()
            elif obs.body["step"] >= EPISODE_STEPS or obs.body["terminated"]:
                obs = self.start_episode()

    def close(self) -> None:
        self.client.close()
        self.operator.close()


def check_logs(log_dirs: list[Path], received: list[tuple[int, int, int]], fault_every: int) -> dict:
    """Compare every server log with what its clients were told; match every latch to its cause.

    The sim's reflex comes with the ``fault_every + 1``-th command since the start or the last
    recovery (every CLEAR recovers the backend), so the applied commands in the log say how many
    reflexes there must have been, and each must have latched."""
    lost, records, causes = 0, 0, Counter()
    dropped = reflexes_due = 0
    for instance, log_dir in enumerate(log_dirs):
        (path,) = log_dir.glob("*.o2olog")
        logged_obs, count, since_recovery = set(), 0, 0
        for record in read_log(path):
            count += 1
            kind = record["kind"]
            if kind == "obs":
                logged_obs.add(record["obs_id"])
            elif kind == "applied":
                since_recovery += 1
                reflexes_due += since_recovery == fault_every + 1
            elif kind == "cmd" and record["reason"].startswith("fault_injection"):
                dropped += 1
            elif kind == "event" and record["what"] == "estop_cleared":
                since_recovery = 0
            elif kind == "event" and record["what"] == "stop" and record["detail"].startswith("e-stop:"):
                reason = record["detail"].removeprefix("e-stop: ")
                if reason.startswith("backend fault: injected reflex"):
                    causes["backend_fault"] += 1
                elif reason.startswith("ESTOP from"):
                    causes["operator_estop"] += 1
                else:
                    causes[reason] += 1
        records += count
        mine = [(obs_id, logged) for i, obs_id, logged in received if i == instance]
        lost += sum(obs_id not in logged_obs for obs_id, _ in mine)
        lost += sum(logged > count for _, logged in mine)
    return {
        "records_read": records,
        "records_lost": lost,
        "dropped": dropped,
        "reflexes_due": reflexes_due,
        "causes": causes,
    }


def soak_phase(keys: Path, logs: Path, lockstep: bool, seconds: float, args: argparse.Namespace) -> dict:
    server = Server(keys, logs, lockstep, args.drop_every, args.fault_every)
    # A lock-step ACT answers in tens of ms, a real-time one after its 100 ms period: a dropped
    # message costs one timeout, so it is kept short.
    soak = Soak(server, keys, np.random.default_rng(args.seed), timeout_s=0.5 if lockstep else 1.0)
    try:
        soak.request(soak.operator, protocol.STATUS, timeout_s=120)  # the server is up: start the clock
        start = time.monotonic()
        soak.run(seconds, kill_at=start + seconds / 2)
        elapsed = time.monotonic() - start
    finally:
        soak.close()
        server.stop()
    checked = check_logs(server.log_dirs, soak.received, args.fault_every)
    causes = checked["causes"]
    estops_latched = sum(causes.values())
    expected = {"backend_fault", "operator_estop"}
    return {
        "seconds": round(elapsed, 1),
        "acts_sent": soak.count["acts_sent"],
        "commands_served": soak.count["served"],
        "refusals": {
            k.removeprefix("refused_"): v for k, v in soak.count.items() if k.startswith("refused_")
        },
        "faults_injected": {
            "dropped_messages": checked["dropped"],
            "latency_spikes": soak.count["latency_spikes"],
            "backend_faults": checked["causes"]["backend_fault"],
            "operator_estops": soak.estops_sent,
            "client_restarts": soak.count["client_restarts"],
            "server_kills": soak.count["server_kills"],
        },
        "client_timeouts": soak.count["timeouts"],
        "estops": {
            "latched": estops_latched,
            "latched_as_expected": sum(causes[c] for c in expected),
            "unexpected": {c: n for c, n in causes.items() if c not in expected},
            "operator_estops_not_latched": soak.estops_sent - causes["operator_estop"],
            "backend_faults_not_latched": checked["reflexes_due"] - causes["backend_fault"],
            "cleared_by_operator": soak.count["clears"],
        },
        "observations_checked": len(soak.received),
        "records_read": checked["records_read"],
        "records_lost": checked["records_lost"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds-lockstep", type=float, default=150.0)
    parser.add_argument("--seconds-realtime", type=float, default=60.0)
    parser.add_argument("--drop-every", type=int, default=97, help="server drops every N-th inbound message")
    parser.add_argument("--fault-every", type=int, default=150, help="sim reflex every N commands")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "keys"
        with contextlib.redirect_stdout(io.StringIO()):
            keygen(["--dir", str(keys)])
        phases = {
            "lockstep": soak_phase(keys, Path(tmp) / "lockstep", True, args.seconds_lockstep, args),
            "realtime_10hz": soak_phase(keys, Path(tmp) / "realtime", False, args.seconds_realtime, args),
        }
    print(
        json.dumps(
            {
                "benchmark": "bridge soak with injected faults, loopback, sim backend",
                "date": time.strftime("%Y-%m-%d %H:%M"),
                "command": " ".join([Path(sys.executable).name, *sys.argv]),
                "load_1min_5min_before": [round(x, 2) for x in load_before[:2]],
                "load_1min_5min_after": [round(x, 2) for x in os.getloadavg()[:2]],
                "phases": phases,
                "records_lost": sum(p["records_lost"] for p in phases.values()),
                "unexpected_estops": sum(sum(p["estops"]["unexpected"].values()) for p in phases.values()),
                "estops_not_latched": sum(
                    p["estops"]["operator_estops_not_latched"] + p["estops"]["backend_faults_not_latched"]
                    for p in phases.values()
                ),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
