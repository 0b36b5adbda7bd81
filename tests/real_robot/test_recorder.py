"""The step log: framing, torn tails, and a SIGKILLed server losing nothing it reported as written."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from real_robot import protocol
from real_robot.client import BridgeClient
from real_robot.keys import load_client_keys
from real_robot.recorder import MAGIC, Recorder, read_log


def test_records_round_trip_with_arrays(tmp_path: Path):
    recorder = Recorder(tmp_path / "a.o2olog")
    for i in range(5):
        assert recorder.write("obs", step=i, q=np.full(7, i, np.float32)) == i
    recorder.close()
    records = list(read_log(tmp_path / "a.o2olog"))
    assert [r["step"] for r in records] == list(range(5))
    np.testing.assert_array_equal(records[3]["q"], np.full(7, 3, np.float32))


def test_reader_stops_at_a_torn_tail_whatever_the_cut(tmp_path: Path):
    path = tmp_path / "torn.o2olog"
    recorder = Recorder(path)
    for i in range(3):
        recorder.write("event", i=i)
    recorder.close()
    data = path.read_bytes()
    last_start = len(data) - (len(data) - len(MAGIC)) // 3
    for cut in range(last_start, len(data)):
        path.write_bytes(data[:cut])
        assert [r["i"] for r in read_log(path)] == [0, 1]


def test_reader_stops_at_a_corrupt_record_and_never_reads_past_it(tmp_path: Path):
    path = tmp_path / "bad.o2olog"
    recorder = Recorder(path)
    for i in range(3):
        recorder.write("event", i=i)
    recorder.close()
    data = bytearray(path.read_bytes())
    second = len(MAGIC) + (len(data) - len(MAGIC)) // 3
    data[second + 12] ^= 0xFF  # a payload byte of the second record
    path.write_bytes(bytes(data))
    assert [r["i"] for r in read_log(path)] == [0]


def test_reopening_appends(tmp_path: Path):
    path = tmp_path / "twice.o2olog"
    for i in range(2):
        recorder = Recorder(path)
        recorder.write("event", i=i)
        recorder.close()
    assert [r["i"] for r in read_log(path)] == [0, 1]


def test_not_a_log_is_a_clear_error(tmp_path: Path):
    (tmp_path / "x").write_bytes(b"hello")
    with pytest.raises(ValueError, match="not an o2o bridge log"):
        list(read_log(tmp_path / "x"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigkill_mid_episode_loses_no_record_reported_as_written(keys_dir: Path, tmp_path: Path):
    address = f"tcp://127.0.0.1:{_free_port()}"
    log_dir = tmp_path / "logs"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "real_robot.serve",
            "backend=sim",
            "lockstep=true",
            f"address={address}",
            f"keys={keys_dir}",
            f"log_dir={log_dir}",
            "fsync_interval_s=60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    client = BridgeClient(address, load_client_keys(keys_dir), timeout_s=30)
    try:
        client.hello()
        obs = client.request(protocol.RESET, {"seed": 0})
        seen = [obs]
        for _ in range(25):
            obs = client.request(
                protocol.ACT, {"obs_id": obs.body["obs_id"], "action": np.full(7, 0.3, np.float32)}
            )
            seen.append(obs)
        os.kill(server.pid, signal.SIGKILL)  # no fsync has run (interval 60 s): only write() protects us
        server.wait(10)
    finally:
        client.close()
        if server.poll() is None:
            server.kill()
    (path,) = log_dir.glob("*.o2olog")
    records = list(read_log(path))
    assert len(records) >= seen[-1].body["logged"]
    logged_obs = {r["obs_id"]: r for r in records if r["kind"] == "obs"}
    for obs in seen:
        np.testing.assert_array_equal(
            logged_obs[obs.body["obs_id"]]["state"]["ee_pos"], obs.body["state"]["ee_pos"]
        )
    assert sum(r["kind"] == "applied" for r in records) == 25
