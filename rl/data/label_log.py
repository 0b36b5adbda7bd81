"""The bridge's label log: the reward each observation of an arm server got from the learner's model.

With ``env=real reward=<model>`` the arm server logs what it saw and did (``real_robot.recorder``) and
knows nothing of rewards from cameras; the learner labels the frames and appends one line per label
here, keyed by the server's ``(episode, step, obs_id)`` of the observation labelled and the model's
hash. ``python -m real_robot.convert <run.o2olog> <out.hdf5> --labels <labels.jsonl>`` joins the two
(``real_robot/convert.py``). It lives in ``rl.data`` because the converter may import only
``rl.data``, and the learner's loops and reward code may import it too.

Format: JSON lines. The first is a header ``{"o2o_label_log": 1}``; each following line one label,
``{"episode", "step", "obs_id", "model", "reward", "success", "p"}`` (``p``: the model's success
probability, or null for a model without one).

Crash safety (the recorder's policy): each ``write`` is one ``os.write`` of whole lines to an
``O_APPEND`` descriptor, so once it returns the labels survive the learner being killed; ``sync``
(and ``close``) fsync them against a power cut. A crash mid-write can leave only the *last* line
short: the reader drops a last line that lacks its newline or does not parse, with a warning, and
keeps everything before it. A bad line anywhere else is damage, not a torn tail: refused, naming
the file and line.

A key labelled twice (rows relabelled after a resume) keeps its last label. One episode must be
labelled by one model: ``labels_by_key`` refuses an episode with two model hashes in one line
(choose one with ``model=``).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

HEADER = {"o2o_label_log": 1}
FIELDS = ("episode", "step", "obs_id", "model", "reward", "success", "p")

Key = tuple[int, int, int]
"""``(episode, step, obs_id)`` of the server's observation the label is about."""


@dataclass(frozen=True)
class LabelRecord:
    episode: int
    step: int
    obs_id: int
    model: str
    """The reward model's hash (``RewardModel.model_hash``)."""
    reward: float
    success: bool
    p: float | None = None

    @property
    def key(self) -> Key:
        return (self.episode, self.step, self.obs_id)


class LabelLogWriter:
    """Appends labels to ``path`` (created with its header when new or empty)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if os.fstat(self._fd).st_size == 0:
            self._append([HEADER])
        self.written = 0

    def write(self, records: Iterable[LabelRecord]) -> None:
        """Append ``records``; once this returns they survive a process kill."""
        lines = [asdict(r) for r in records]
        for line in lines:
            if not math.isfinite(line["reward"]):
                raise ValueError(f"label log: a reward that is not finite for {line}")
        self._append(lines)
        self.written += len(lines)

    def _append(self, lines: list[dict]) -> None:
        data = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()
        if os.write(self._fd, data) != len(data):
            raise OSError(f"label log: short write to {self.path}")

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            self.sync()
            os.close(self._fd)
            self._fd = -1


def read_label_log(path: str | Path) -> list[LabelRecord]:
    """Every label in ``path``, in order; a torn last line is dropped with a warning (module docstring)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the label log ({e})") from None
    lines = text.split("\n")
    torn = lines.pop()  # "" when the file ends with its newline
    if not lines or _parse(lines[0]) != HEADER:
        raise ValueError(f"{path}: not an o2o label log (its first line is not {json.dumps(HEADER)})")
    records = []
    for number, line in enumerate(lines[1:], start=2):
        fields = _parse(line)
        if fields is None or set(fields) != set(FIELDS):
            if number == len(lines):  # the last line: complete but unparseable counts as torn too
                torn = line
                break
            raise ValueError(f"{path}: line {number} is not a label record: {line[:80]!r}")
        records.append(LabelRecord(**fields))
    if torn:
        warnings.warn(f"{path}: ignored a torn last line ({len(torn)} bytes) left by a crash", stacklevel=2)
    return records


def _parse(line: str) -> dict | None:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def labels_by_key(records: list[LabelRecord], model: str | None = None) -> dict[Key, LabelRecord]:
    """The last label of each key, of ``model`` only when given; refuses an episode labelled by two models."""
    chosen: dict[Key, LabelRecord] = {}
    models: dict[int, str] = {}
    for record in records:
        if model is not None and record.model != model:
            continue
        seen = models.setdefault(record.episode, record.model)
        if seen != record.model:
            raise ValueError(
                f"label log: episode {record.episode} was labelled by two models ({seen} and "
                f"{record.model}); choose one (--model)"
            )
        chosen[record.key] = record
    return chosen
