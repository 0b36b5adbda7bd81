"""Crash-safe, append-only step log: the server's ground truth of what it received and did.

File layout: an 8-byte magic ``O2OLOG1\\n``, then records ``[u32 length][u32 crc32][payload]``
(little-endian; the CRC covers the payload, a msgpack map with a ``kind``). Kinds: ``header``
(server spec and config), ``cmd`` (every command received, with ``verdict`` accepted/dropped and
the reason), ``applied`` (the governed action and its clips), ``obs`` (every observation sent) and
``event`` (e-stop, clear, watchdog, lease changes).

Durability policy:
- ``write`` is one ``os.write`` of the whole framed record to an ``O_APPEND`` descriptor, done
  synchronously before the server replies. Once it returns, the record is in the kernel's page
  cache and survives the *process* dying (SIGKILL, a crash): this is what ``written`` counts and
  what every OBS reports as ``logged``.
- Surviving a *machine* crash or power cut needs ``fsync``, which can stall for tens of ms, so it
  never runs on the control path: a background thread fsyncs every ``fsync_interval_s`` (1 s by
  default) when something was written, and ``sync()`` (called at every episode end) and
  ``close()`` fsync at once. At most the last ``fsync_interval_s`` of records can be lost to a
  power cut; none to a process kill.
- A torn tail (a record cut short by a crash mid-write, or bytes that fail the CRC) ends the log:
  ``read_log`` yields every record before it and stops, never guessing past damage.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from real_robot.protocol import ProtocolError, packb, unpackb

MAGIC = b"O2OLOG1\n"
_FRAME = struct.Struct("<II")
MAX_RECORD_BYTES = 16 << 20


class Recorder:
    def __init__(self, path: str | Path, fsync_interval_s: float = 1.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if os.fstat(self._fd).st_size == 0:
            os.write(self._fd, MAGIC)
        self.written = 0
        """Records handed to the kernel so far (survive a process kill)."""
        self._dirty = threading.Event()
        self._closing = threading.Event()
        self._lock = threading.Lock()  # fsync and close must not race
        self._flusher = threading.Thread(target=self._flush_loop, args=(fsync_interval_s,), daemon=True)
        self._flusher.start()

    def write(self, kind: str, **fields: Any) -> int:
        """Append one record; returns its index (0-based) once it survives a process kill."""
        payload = packb({"kind": kind, **fields})
        if len(payload) > MAX_RECORD_BYTES:
            raise ValueError(f"recorder: a {kind} record of {len(payload)} bytes exceeds {MAX_RECORD_BYTES}")
        frame = _FRAME.pack(len(payload), zlib.crc32(payload)) + payload
        # One write of the whole frame: O_APPEND keeps it contiguous, and a short write (disk full)
        # is an error rather than a silently torn record followed by more records.
        if os.write(self._fd, frame) != len(frame):
            raise OSError(f"recorder: short write to {self.path}")
        self._dirty.set()
        self.written += 1
        return self.written - 1

    def sync(self) -> None:
        """fsync now (episode ends, e-stops): the records so far survive a power cut."""
        with self._lock:
            if self._fd >= 0:
                self._dirty.clear()
                os.fsync(self._fd)

    def close(self) -> None:
        self._closing.set()
        self._flusher.join()
        self.sync()
        with self._lock:
            os.close(self._fd)
            self._fd = -1

    def _flush_loop(self, interval: float) -> None:
        while not self._closing.wait(interval):
            if self._dirty.is_set():
                self.sync()


def read_log(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield records in order, stopping silently at the first short or corrupt one (a torn tail)."""
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise ValueError(f"{path}: not an o2o bridge log (bad magic)")
        while True:
            head = f.read(_FRAME.size)
            if len(head) < _FRAME.size:
                return
            length, crc = _FRAME.unpack(head)
            if length > MAX_RECORD_BYTES:
                return
            payload = f.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                return
            try:
                record = unpackb(payload, max_bytes=MAX_RECORD_BYTES)
            except ProtocolError:
                return
            if not isinstance(record, dict) or "kind" not in record:
                return
            yield record
