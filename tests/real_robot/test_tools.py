"""Command-line tools: keygen, operator, serve argument checking."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest

from real_robot import protocol
from real_robot.keygen import main as keygen
from real_robot.keys import KeyFileError, load_server_keys
from real_robot.operator import key_action, keyboard
from real_robot.operator import main as operator
from real_robot.recorder import read_log
from real_robot.serve import build, parse_overrides
from real_robot.serve import main as serve


def test_keygen_makes_private_secrets_and_never_overwrites(tmp_path: Path, capsys):
    assert keygen(["--dir", str(tmp_path)]) == 0
    secret = tmp_path / "client.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    before = secret.read_bytes()
    assert keygen(["--dir", str(tmp_path)]) == 0
    assert secret.read_bytes() == before and "exists" in capsys.readouterr().out
    keys = load_server_keys(tmp_path)
    assert len(keys.clients) == 1 and len(keys.operators) == 1 and keys.clients.isdisjoint(keys.operators)


def test_bad_key_files_are_one_line_errors(tmp_path: Path):
    with pytest.raises(KeyFileError, match="cannot read"):
        load_server_keys(tmp_path)
    keygen(["--dir", str(tmp_path), "--name", "server", "--role", "server"])
    with pytest.raises(KeyFileError, match="no authorised client keys"):
        load_server_keys(tmp_path)
    (tmp_path / "authorized" / "clients").mkdir(parents=True)
    (tmp_path / "authorized" / "clients" / "junk.key").write_text('public-key = "short"\n')
    with pytest.raises(KeyFileError, match="not a 40-character z85 key"):
        load_server_keys(tmp_path)


def test_serve_refuses_bad_arguments_with_one_line(tmp_path: Path, capsys):
    assert serve(["backend=sim", f"keys={tmp_path}"]) == 2
    assert capsys.readouterr().err.startswith("serve: keys: cannot read")
    assert serve(["colour=blue"]) == 2
    assert "unknown key 'colour'" in capsys.readouterr().err
    assert serve(["control_hz=fast"]) == 2
    assert "control_hz='fast'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["backend"])


def test_serve_builds_typed_config(keys_dir: Path, tmp_path: Path):
    server = build(
        parse_overrides(
            [
                f"keys={keys_dir}",
                f"log_dir={tmp_path}",
                "address=tcp://127.0.0.1:0",
                "lockstep=true",
                "control_hz=20",
                "max_step_m=0.01",
                "workspace_low=0.2,-0.3,0.1",
                "hold_after_ms=",
            ]
        )
    )
    try:
        assert server.config.control_hz == 20.0 and server.config.hold_after_ms is None
        assert server.config.limits.max_step_m == 0.01 and server.config.limits.workspace_low == (
            0.2,
            -0.3,
            0.1,
        )
        assert server.backend.lockstep
    finally:
        server._shutdown()
        server.backend.close()


def test_operator_estop_status_and_clear(start_server, connect, keys_dir: Path, capsys):
    server = start_server()
    args = ["--address", server.address, "--keys", str(keys_dir)]
    assert operator(["estop", "--reason", "tea break", *args]) == 0
    assert "tea break" in capsys.readouterr().out
    assert operator(["status", *args]) == 0
    assert json.loads(capsys.readouterr().out)["estop"] is True
    assert operator(["clear", *args]) == 0
    assert "cleared" in capsys.readouterr().out and not server.latch.latched
    assert operator(["clear", *args]) == 1
    assert "not latched" in capsys.readouterr().err
    assert operator(["status", "--key-name", "client", *args]) == 0  # any authorised key may read status


def test_keyboard_intervention_steers_through_the_server(start_server, connect, keys_dir: Path):
    server = start_server()
    client = connect(server)
    client.hello()
    obs = client.request(protocol.RESET, {"seed": 0})
    keys = iter(["w", None, "e", "q"])
    keyboard(connect(server, name="operator"), lambda timeout: next(keys))
    assert server.latch.latched and server.human is None
    events = [
        r.get("detail")
        for r in read_log(server.recorder.path)
        if r["kind"] == "event" and r["what"] == "intervention"
    ]
    assert events == ["on", "off"]
    assert obs.type == protocol.OBS


def test_key_mapping():
    np.testing.assert_array_equal(key_action("a", 1.0), [0, 1, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(key_action("f", -1.0), [0, 0, -1, 0, 0, 0, -1])
    assert key_action("x", 1.0) is None
