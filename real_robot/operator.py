"""Operator tools: ``python -m real_robot.operator estop|clear|status|keyboard|spacemouse``.

They connect with the operator key (``keys/operator.key_secret``), which may stop the arm, clear the
e-stop latch and send human actions, but cannot hold the control lease.

- ``estop [--reason TEXT]`` latches the e-stop (any authorised key may do this).
- ``clear`` asks the server for a fresh nonce and clears the latch with it; the arm then waits for a
  RESET from the client, re-anchored where it stands.
- ``status`` prints the server's status as JSON.
- ``keyboard`` (terminal, no X needed): w/s, a/d, r/f move +-x, +-y, +-z; g toggles the gripper;
  space hands control back to the policy; e is an e-stop; q quits. A key press steers for
  ``HOLD_S``; key repeat keeps it going.
- ``spacemouse`` reads a 3Dconnexion SpaceMouse through the optional ``pyspacemouse`` package; a
  deflection above the dead zone steers, the left button toggles the gripper.

Human actions go through the server's governor like any policy action and are flagged in the log.
The hardware e-stop button stays the primary stop: this one is a software stop.
"""

from __future__ import annotations

import argparse
import json
import select
import sys
import termios
import time
import tty
from collections.abc import Callable

import numpy as np

from real_robot import protocol
from real_robot.client import BridgeClient, BridgeError
from real_robot.keys import KeyFileError, load_client_keys

SEND_HZ = 20.0
HOLD_S = 0.25
_KEYS = {"w": (0, 1.0), "s": (0, -1.0), "a": (1, 1.0), "d": (1, -1.0), "r": (2, 1.0), "f": (2, -1.0)}
SPACEMOUSE_DEADZONE = 0.1


def key_action(key: str, gripper: float) -> np.ndarray | None:
    """The human action for one key press, or None when the key does not steer."""
    if key not in _KEYS:
        return None
    axis, sign = _KEYS[key]
    action = np.zeros(protocol.ACTION_DIM, np.float32)
    action[axis] = sign
    action[6] = gripper
    return action


def clear(client: BridgeClient) -> dict:
    nonce = client.request(protocol.NONCE).body["nonce"]
    return client.request(protocol.CLEAR, {"nonce": nonce}).body["status"]


def keyboard(client: BridgeClient, read_key: Callable[[float], str | None]) -> None:
    """Steer until q; ``read_key(timeout)`` returns one key or None (injected so it can be tested)."""
    gripper, action, until = -1.0, None, 0.0
    while True:
        key = read_key(1.0 / SEND_HZ)
        if key == "q":
            client.request(protocol.INTERVENE, {"action": None})
            return
        if key == "e":
            client.request(protocol.ESTOP, {"reason": "keyboard"})
            print("e-stop latched", flush=True)
        elif key == "g":
            gripper = -gripper
            action, until = np.array([0, 0, 0, 0, 0, 0, gripper], np.float32), time.monotonic() + HOLD_S
        elif key == " ":
            action, until = None, 0.0
            client.request(protocol.INTERVENE, {"action": None})
        elif (steer := key_action(key or "", gripper)) is not None:
            action, until = steer, time.monotonic() + HOLD_S
        if action is not None and time.monotonic() < until:
            client.request(protocol.INTERVENE, {"action": action})


def _terminal_keys() -> Callable[[float], str | None]:
    def read_key(timeout: float) -> str | None:
        ready, _, _ = select.select([sys.stdin], [], [], timeout)
        return sys.stdin.read(1) if ready else None

    return read_key


def spacemouse(client: BridgeClient) -> None:
    try:
        import pyspacemouse
    except ImportError:
        raise SystemExit(
            "operator: spacemouse needs the optional package: pip install pyspacemouse"
        ) from None
    if not pyspacemouse.open():
        raise SystemExit("operator: no SpaceMouse found")
    gripper, last_button = -1.0, 0
    while True:
        state = pyspacemouse.read()
        if state.buttons and state.buttons[0] and not last_button:
            gripper = -gripper
        last_button = state.buttons[0] if state.buttons else 0
        axes = np.array([state.x, state.y, state.z, state.roll, state.pitch, state.yaw], np.float32)
        if np.abs(axes).max() > SPACEMOUSE_DEADZONE:
            client.request(
                protocol.INTERVENE, {"action": np.append(np.clip(axes, -1, 1), gripper).astype(np.float32)}
            )
        else:
            client.request(protocol.INTERVENE, {"action": None})
        time.sleep(1.0 / SEND_HZ)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m real_robot.operator", description=__doc__.splitlines()[0]
    )
    parser.add_argument("command", choices=["estop", "clear", "status", "keyboard", "spacemouse"])
    parser.add_argument("--address", default="tcp://127.0.0.1:5555")
    parser.add_argument("--keys", default="keys", help="key directory")
    parser.add_argument("--key-name", default="operator", help="which keypair in --keys to use")
    parser.add_argument("--reason", default="operator console", help="e-stop reason for the log")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    try:
        client = BridgeClient(
            args.address, load_client_keys(args.keys, args.key_name), args.timeout, "operator"
        )
    except KeyFileError as exc:
        print(f"operator: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "estop":
            status = client.request(protocol.ESTOP, {"reason": args.reason}).body["status"]
            print(f"e-stop latched: {status['estop_reason']}")
        elif args.command == "clear":
            status = clear(client)
            print(f"e-stop cleared; arm is {status['mode']} until the client sends RESET")
        elif args.command == "status":
            print(json.dumps(client.request(protocol.STATUS).body["status"], indent=2))
        elif args.command == "keyboard":
            old = termios.tcgetattr(sys.stdin)
            tty.setcbreak(sys.stdin.fileno())
            try:
                keyboard(client, _terminal_keys())
            finally:
                termios.tcsetattr(sys.stdin, termios.TCSADRAIN, old)
        else:
            spacemouse(client)
    except (BridgeError, TimeoutError, ConnectionError) as exc:
        print(f"operator: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
