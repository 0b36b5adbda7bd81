"""CurveZMQ keys: generation, loading, and the allow-lists the server authenticates against.

A key directory made by ``python -m real_robot.keygen --dir keys`` looks like::

    keys/server.key  server.key_secret          the arm server's keypair
    keys/client.key  client.key_secret          a learner/actor's keypair
    keys/operator.key operator.key_secret       the operator console's keypair
    keys/authorized/clients/client.key          public keys allowed to hold the control lease
    keys/authorized/operators/operator.key      public keys allowed to clear an e-stop and intervene

There is no insecure mode: the server refuses to start without its secret key and at least one
authorised client key, and a client cannot connect without the server's public key. Authorising a
machine means copying its ``*.key`` (public) file into the right ``authorized/`` folder; secret key
files are written with mode 0600 and never leave the machine that made them.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth


class KeyFileError(ValueError):
    """A key file is missing or malformed (one-line message naming the file)."""


@dataclass(frozen=True)
class Keypair:
    public: bytes
    secret: bytes


@dataclass(frozen=True)
class ServerKeys:
    server: Keypair
    clients: frozenset[bytes]
    """z85 public keys allowed to take the control lease."""
    operators: frozenset[bytes]
    """z85 public keys allowed to clear the e-stop latch and to send human actions."""


@dataclass(frozen=True)
class ClientKeys:
    own: Keypair
    server_public: bytes


def generate(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Write ``name.key`` and ``name.key_secret`` into ``directory``; never overwrites a secret."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    secret = directory / f"{name}.key_secret"
    if secret.exists():
        raise KeyFileError(f"keys: {secret} already exists; delete it first to make a new keypair")
    public_file, secret_file = zmq.auth.create_certificates(directory, name)
    os.chmod(secret_file, 0o600)
    return Path(public_file), Path(secret_file)


def authorize(public_key_file: str | Path, directory: str | Path, role: str) -> Path:
    """Copy a public key file into ``directory/authorized/<role>s/``."""
    if role not in ("client", "operator"):
        raise KeyFileError(f"keys: role must be 'client' or 'operator', got {role!r}")
    load_public(public_key_file)  # refuse to authorise a file that is not a key
    target = Path(directory) / "authorized" / f"{role}s"
    target.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(public_key_file, target / Path(public_key_file).name))


def load_public(path: str | Path) -> bytes:
    public, _ = _load(path)
    return public


def load_keypair(path: str | Path) -> Keypair:
    """Load a ``*.key_secret`` file."""
    public, secret = _load(path)
    if secret is None:
        raise KeyFileError(f"keys: {path} holds no secret key (pass the .key_secret file)")
    return Keypair(public, secret)


def _load(path: str | Path) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"keys: cannot read {path}: {exc}") from None
    for key in (public, secret):
        if key is not None and len(key) != 40:
            raise KeyFileError(
                f"keys: {path} holds a key of {len(key)} characters, not a 40-character z85 key"
            )
    return public, secret


def load_allow_list(directory: str | Path) -> frozenset[bytes]:
    directory = Path(directory)
    if not directory.is_dir():
        return frozenset()
    return frozenset(load_public(p) for p in sorted(directory.glob("*.key")))


def load_server_keys(directory: str | Path) -> ServerKeys:
    directory = Path(directory)
    keys = ServerKeys(
        server=load_keypair(directory / "server.key_secret"),
        clients=load_allow_list(directory / "authorized" / "clients"),
        operators=load_allow_list(directory / "authorized" / "operators"),
    )
    if not keys.clients:
        raise KeyFileError(f"keys: no authorised client keys in {directory / 'authorized' / 'clients'}")
    return keys


def load_client_keys(directory: str | Path, name: str = "client") -> ClientKeys:
    directory = Path(directory)
    return ClientKeys(load_keypair(directory / f"{name}.key_secret"), load_public(directory / "server.key"))


def apply_client_keys(socket: zmq.Socket, keys: ClientKeys) -> None:
    socket.curve_secretkey = keys.own.secret
    socket.curve_publickey = keys.own.public
    socket.curve_serverkey = keys.server_public
