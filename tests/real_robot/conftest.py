"""Fixtures: throwaway Curve keys, and an arm server on a loopback port in a background thread."""

from __future__ import annotations

import os

# Offscreen rendering for the sim camera; EGL works headless here, osmesa is the fallback.
os.environ.setdefault("MUJOCO_GL", "egl")

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from real_robot.backends.sim import SimBackend, SimFaults
from real_robot.client import BridgeClient
from real_robot.keygen import main as keygen
from real_robot.keys import load_client_keys, load_server_keys
from real_robot.server import ArmServer, ServerConfig


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    assert keygen(["--dir", str(directory)]) == 0
    assert keygen(["--dir", str(directory), "--name", "client2", "--role", "client"]) == 0
    return directory


@pytest.fixture
def start_server(keys_dir: Path, tmp_path: Path) -> Iterator[Callable[..., ArmServer]]:
    """Start a server; keyword arguments override ServerConfig fields, ``lockstep``, ``faults``,
    ``cameras``, ``camera_size`` and ``obstacle`` configure the sim."""
    running: list[tuple[ArmServer, threading.Thread]] = []

    def start(
        lockstep: bool = True,
        faults: SimFaults | None = None,
        cameras: tuple[str, ...] = (),
        camera_size: int | tuple[int, ...] = 64,
        obstacle: tuple[float, ...] | None = None,
        **overrides,
    ) -> ArmServer:
        config = replace(
            ServerConfig(address="tcp://127.0.0.1:0", log_dir=str(tmp_path / "logs")), **overrides
        )
        backend = SimBackend(
            lockstep=lockstep, faults=faults, cameras=cameras, camera_size=camera_size, obstacle=obstacle
        )
        server = ArmServer(config, backend, load_server_keys(keys_dir))
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        assert server.ready.wait(5)
        running.append((server, thread))
        return server

    yield start
    for server, thread in running:
        server.stop()
        thread.join(5)
        server.backend.close()


@pytest.fixture
def connect(keys_dir: Path) -> Iterator[Callable[..., BridgeClient]]:
    clients: list[BridgeClient] = []

    # A generous reply timeout: it only detects a wedged server, and a loaded CI machine is slow.
    def make(server: ArmServer, name: str = "client", timeout_s: float = 20.0) -> BridgeClient:
        client = BridgeClient(
            server.address, load_client_keys(keys_dir, name), timeout_s=timeout_s, name=name
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
