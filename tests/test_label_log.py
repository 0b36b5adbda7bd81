"""The bridge's label log (rl/data/label_log.py): round trip, crash safety, one model per episode."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from rl.data.label_log import LabelLogWriter, LabelRecord, labels_by_key, read_label_log
from tests.conftest import REPO


def record(episode: int, step: int, model: str = "aaaa", reward: float = 0.0, p: float | None = 0.25):
    return LabelRecord(episode, step, 100 * episode + step, model, reward, reward > 0, p)


def test_round_trip_and_appending_after_a_reopen(tmp_path):
    path = tmp_path / "labels.jsonl"
    log = LabelLogWriter(path)
    log.write([record(0, 1), record(0, 2, reward=1.0, p=None)])
    log.close()
    log = LabelLogWriter(path)  # a resumed learner appends, no second header
    log.write([record(1, 1, reward=0.5)])
    log.close()
    assert read_label_log(path) == [record(0, 1), record(0, 2, reward=1.0, p=None), record(1, 1, reward=0.5)]
    assert path.read_text().count("o2o_label_log") == 1


def test_labels_survive_a_killed_writer(tmp_path):
    path = tmp_path / "labels.jsonl"
    code = textwrap.dedent(f"""
        import os, signal
        from rl.data.label_log import LabelLogWriter, LabelRecord
        log = LabelLogWriter({str(path)!r})
        log.write([LabelRecord(0, 1, 1, "aaaa", 1.0, True, 0.9)])
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO)
    assert result.returncode == -9
    assert read_label_log(path) == [LabelRecord(0, 1, 1, "aaaa", 1.0, True, 0.9)]


def test_a_torn_last_line_is_dropped_with_a_warning_and_the_rest_kept(tmp_path):
    path = tmp_path / "labels.jsonl"
    log = LabelLogWriter(path)
    log.write([record(0, 1), record(0, 2)])
    log.close()
    whole = path.read_bytes()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b'{"episode":0,"step":3,"obs_id":3,"mod')  # a crash in the middle of a line
    os.close(fd)
    with pytest.warns(UserWarning, match="ignored a torn last line"):
        assert read_label_log(path) == [record(0, 1), record(0, 2)]
    path.write_bytes(whole + b'{"episode":0}\n')  # complete but cut short by the crash: torn too
    with pytest.warns(UserWarning, match="torn last line"):
        assert read_label_log(path) == [record(0, 1), record(0, 2)]


def test_damage_before_the_last_line_and_foreign_files_are_refused(tmp_path):
    path = tmp_path / "labels.jsonl"
    log = LabelLogWriter(path)
    log.write([record(0, 1), record(0, 2)])
    log.close()
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + "garbage\n" + lines[2])
    with pytest.raises(ValueError, match=r"labels.jsonl: line 2 is not a label record: 'garbage'"):
        read_label_log(path)
    path.write_text("step,reward\n")
    with pytest.raises(ValueError, match="not an o2o label log"):
        read_label_log(path)
    with pytest.raises(ValueError, match="cannot read the label log"):
        read_label_log(tmp_path / "missing.jsonl")


def test_non_finite_rewards_are_not_written(tmp_path):
    log = LabelLogWriter(tmp_path / "labels.jsonl")
    with pytest.raises(ValueError, match="not finite"):
        log.write([record(0, 1, reward=float("nan"))])
    log.close()
    assert read_label_log(tmp_path / "labels.jsonl") == []


def test_one_model_per_episode_and_the_last_label_of_a_key_wins():
    records = [record(0, 1, "aaaa"), record(0, 1, "aaaa", reward=1.0), record(1, 1, "bbbb")]
    by_key = labels_by_key(records)
    assert (
        by_key[(0, 1, 1)].reward == 1.0 and by_key[(1, 1, 101)].model == "bbbb"
    )  # models may differ by episode
    mixed = [record(0, 1, "aaaa"), record(0, 2, "bbbb")]
    with pytest.raises(
        ValueError,
        match=r"^label log: episode 0 was labelled by two models \(aaaa and bbbb\); choose one \(--model\)$",
    ):
        labels_by_key(mixed)
    assert list(labels_by_key(mixed, model="bbbb")) == [(0, 2, 2)]
