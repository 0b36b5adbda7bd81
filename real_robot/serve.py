"""``python -m real_robot.serve backend=sim [key=value ...]``: run the arm server.

Keys (all optional except where a backend needs one):
  backend=sim|franky|ur_rtde   keys=keys   log_dir=runs/bridge   address=tcp://127.0.0.1:5555
  control_hz=10   task=reach   max_episode_steps=100   hold_after_ms=   stop_after_ms=1000
  max_action_age_ms=   lease_timeout_s=3   stale_frames_to_estop=0   fsync_interval_s=1
  workspace_low=0.25,-0.25,0.15   workspace_high=0.7,0.25,0.6   max_step_m=0.025 ... (any SafetyLimits field)
  home_xyz=0.307,0,0.491   home_rpy=3.14159,0,0
  sim:      lockstep=false inner_loop=process|thread latency_ms=0
            cameras= (none; front,wrist: a fixed view and one on the hand, each a square RGB image)
            camera_size=64 (pixels, for every camera; or one per camera: 64,48)
            freeze_camera_after= fault_after_commands=
            obstacle=x,y,z,hx,hy,hz (a fixed box: centre and half-sizes, to test the force guard)
            drop_every=0 (fault injection: drop every N-th inbound message)
  franky:   host=<robot ip>   relative_dynamics_factor=0.1
  ur_rtde:  host=<robot ip>   frequency=500

Binding to anything but loopback needs the address spelled out: the default is 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
import typing

from real_robot.backends import make_backend
from real_robot.governor import SafetyLimits
from real_robot.keys import KeyFileError, load_server_keys
from real_robot.server import ArmServer, ServerConfig


def parse_overrides(argv: list[str]) -> dict[str, str]:
    overrides = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            raise ValueError(f"expected key=value, got {arg!r}")
        overrides[key] = value
    return overrides


def _coerce(value: str, annotation: typing.Any, name: str) -> typing.Any:
    """Turn a command-line string into the type of the dataclass field it sets."""
    text = str(annotation)
    if value == "" and "None" in text:
        return None
    try:
        item = _tuple_item(annotation)
        if item is not None:
            return () if value == "" else tuple(item(v) for v in value.split(","))
        if "bool" in text:
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError("expected true or false")
            return value.lower() in ("true", "1")
        if "int" in text and "float" not in text:
            return int(value)
        if "float" in text:
            return float(value)
    except ValueError as exc:
        raise ValueError(f"{name}={value!r}: {exc}") from None
    return value


def _tuple_item(annotation: typing.Any) -> type | None:
    """The items' type of a tuple annotation (``float`` for ``tuple[float, ...] | None``), else None."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(candidate) is tuple:
            return typing.get_args(candidate)[0]
    return None


def build(overrides: dict[str, str]) -> ArmServer:
    overrides = dict(overrides)
    backend_name = overrides.pop("backend", "sim")
    keys_dir = overrides.pop("keys", "keys")
    server_fields = {f.name: f for f in dataclasses.fields(ServerConfig)}
    limit_fields = {f.name: f for f in dataclasses.fields(SafetyLimits)}
    hints = typing.get_type_hints(ServerConfig) | typing.get_type_hints(SafetyLimits)
    config_kwargs, limit_kwargs, backend_kwargs = {}, {}, {}
    backend_hints = {
        "lockstep": bool,
        "cameras": tuple[str, ...],
        "camera_size": tuple[int, ...],
        "inner_hz": float,
        "latency_ms": float,
        "freeze_camera_after": int | None,
        "fault_after_commands": int | None,
        "obstacle": tuple[float, ...] | None,
        "inner_loop": str,
        "relative_dynamics_factor": float,
        "frequency": float,
        "host": str,
    }
    for key, value in overrides.items():
        if key in server_fields and key != "limits":
            config_kwargs[key] = _coerce(value, hints[key], key)
        elif key in limit_fields:
            limit_kwargs[key] = _coerce(value, hints[key], key)
        elif key in backend_hints:
            backend_kwargs[key] = _coerce(value, backend_hints[key], key)
        else:
            raise ValueError(f"unknown key {key!r} (see python -m real_robot.serve --help)")
    if config_kwargs.get("drop_every") and backend_name != "sim":
        raise ValueError("drop_every is fault injection for the sim backend only")
    config = ServerConfig(limits=SafetyLimits(**limit_kwargs), **config_kwargs)
    keys = load_server_keys(keys_dir)
    return ArmServer(config, make_backend(backend_name, **backend_kwargs), keys)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        server = build(parse_overrides(argv))
    except (ValueError, KeyFileError) as exc:
        print(f"serve: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    signal.signal(signal.SIGINT, lambda *_: server.stop())
    print(f"serving on {server.address}; log {server.recorder.path}", flush=True)
    server.serve_forever()
    server.backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
