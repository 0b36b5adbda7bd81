"""``real_robot.convert --labels``: a server log joined with the learner's label log (rl/data/label_log.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from real_robot.convert import join_labels, log_to_dataset
from real_robot.recorder import Recorder
from rl.data.label_log import LabelLogWriter, LabelRecord


def server_log(path: Path) -> Path:
    """Two episodes of three observations (ids 1-3, then 4-6) and two applied actions each; the
    server's task rewards every step 0.5 and never terminates (a camera task it cannot score)."""
    log = Recorder(path)
    log.write("header", spec={"obs_keys": ["q"], "task": "none", "cameras": {}})
    obs_id = 0
    for episode in range(2):
        for step in range(3):
            obs_id += 1
            log.write("obs", episode=episode, step=step, obs_id=obs_id, state={"q": [float(obs_id)]},
                      reward=0.5, terminated=False)  # fmt: skip
            if step < 2:
                log.write("applied", obs_id=obs_id, applied=[0.1], source="policy")
    log.close()
    return path


def label_log(path: Path, labels: list[tuple[int, int, int, str, float, bool]]) -> Path:
    log = LabelLogWriter(path)
    log.write([LabelRecord(e, s, o, m, r, ok, 0.9 if ok else 0.1) for e, s, o, m, r, ok in labels])
    log.close()
    return path


FULL = [  # the observations each transition reached: (0, 1, 2), (0, 2, 3), (1, 1, 5), (1, 2, 6)
    (0, 1, 2, "aaaa", 0.0, False),
    (0, 2, 3, "aaaa", 1.0, True),  # the learner ended episode 0 at this labelled success
    (1, 1, 5, "aaaa", 0.0, False),
    (1, 2, 6, "aaaa", 0.0, False),
]


def test_the_join_writes_the_labelled_rewards_and_successes(tmp_path):
    dataset = join_labels(
        log_to_dataset(server_log(tmp_path / "run.o2olog")), label_log(tmp_path / "l.jsonl", FULL)
    )
    np.testing.assert_array_equal(dataset.rewards, [0.0, 1.0, 0.0, 0.0])  # not the server's 0.5
    np.testing.assert_array_equal(dataset.info.extra["success"], [False, True, False, False])
    np.testing.assert_allclose(dataset.info.extra["p_success"], [0.1, 0.9, 0.1, 0.1])
    np.testing.assert_array_equal(dataset.terminated, [False, True, False, False])  # ended at the success
    np.testing.assert_array_equal(dataset.truncated, [False, False, False, True])
    assert dataset.info.extra["label_model"] == "aaaa" and dataset.info.extra["labelled"].all()


def test_the_cli_writes_labels_into_the_hdf5(tmp_path):
    out = tmp_path / "out.hdf5"
    result = subprocess.run(
        [sys.executable, "-m", "real_robot.convert", str(server_log(tmp_path / "run.o2olog")), str(out),
         "--labels", str(label_log(tmp_path / "l.jsonl", FULL))],
        capture_output=True, text=True, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["rewards"][:], [0.0, 1.0, 0.0, 0.0])
        np.testing.assert_array_equal(f["infos/success"][:], [False, True, False, False])
        np.testing.assert_array_equal(f["terminals"][:], [False, True, False, False])
        assert f.attrs["label_model"] == "aaaa"


def test_unlabelled_rows_are_refused_unless_asked_to_keep_the_server_reward(tmp_path):
    dataset = log_to_dataset(server_log(tmp_path / "run.o2olog"))
    labels = label_log(tmp_path / "l.jsonl", FULL[:2])  # the learner died before labelling episode 1
    with pytest.raises(
        ValueError, match=r"2 of 4 transitions have no label \(first: episode 1, step 1, obs 5\)"
    ):
        join_labels(dataset, labels)
    kept = join_labels(dataset, labels, unlabelled="env")
    np.testing.assert_array_equal(kept.rewards, [0.0, 1.0, 0.5, 0.5])
    np.testing.assert_array_equal(kept.info.extra["labelled"], [True, True, False, False])
    assert np.isnan(kept.info.extra["p_success"][2:]).all()


def test_a_model_change_within_an_episode_is_one_line_and_exit_2(tmp_path):
    mixed = [*FULL[:1], (0, 2, 3, "bbbb", 1.0, True), *FULL[2:]]
    result = subprocess.run(
        [sys.executable, "-m", "real_robot.convert", str(server_log(tmp_path / "run.o2olog")),
         str(tmp_path / "out.hdf5"), "--labels", str(label_log(tmp_path / "l.jsonl", mixed))],
        capture_output=True, text=True, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert result.returncode == 2 and not (tmp_path / "out.hdf5").exists()
    assert result.stderr.strip() == (
        "convert: label log: episode 0 was labelled by two models (aaaa and bbbb); choose one (--model)"
    )
