import csv

import pandas as pd
import pytest

from experiments import switch_metrics
from rl import plot

CONFIG = "agent: {name: wsrl}\nenv: {name: hopper}\ndataset: {name: hopper-medium}\nseed: 3\nsteps: {offline: %d}\n"


def _write_run(run_dir, offline, rows):
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text(CONFIG % offline)
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["step", "phase", "env_steps", "metric", "value"])
        for step, metric, value in rows:
            out.writerow(
                [step, "offline" if step <= offline else "online", max(0, step - offline), metric, value]
            )
    return plot.load_run(run_dir)


def test_windows_average_each_metric_from_the_switch(tmp_path):
    # Switch at 100: offline rows from 60 on fall in the last-50 window (the one at 40 does not);
    # online windows of 10 env steps end at 110 and 120.
    rows = [
        (40, "q_mean", 1.0),
        (60, "q_mean", 10.0),
        (100, "q_mean", 20.0),
        (100, "temperature", 0.2),
        (105, "q_mean", 30.0),
        (110, "q_mean", 50.0),
        (110, "normalized_score", 7.0),
        (120, "q_mean", 60.0),
        (120, "td_loss", 5.0),  # not one of METRICS: left out
    ]
    run = _write_run(tmp_path / "run", 100, rows)
    table = switch_metrics.windows(run, pd.read_csv(run.path / "metrics.csv"), window=10, before=50)
    assert table.index.tolist() == [0, 10, 20]
    assert table["q_mean"].tolist() == pytest.approx([15.0, 40.0, 60.0])
    assert table["temperature"].iloc[0] == pytest.approx(0.2)
    assert table["normalized_score"].iloc[1] == pytest.approx(7.0)
    assert list(table.columns) == ["normalized_score", "q_mean", "temperature"]


def test_a_run_started_from_a_checkpoint_has_only_online_windows_and_the_command_writes_both_files(
    tmp_path, capsys
):
    _write_run(tmp_path / "runs" / "arm", 0, [(5, "q_mean", 2.0), (15, "q_mean", 4.0), (15, "entropy", -3.0)])
    switch_metrics.main([str(tmp_path / "runs"), "--window", "10", "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "switch.md").read_text()
    assert "| steps from the switch | q_mean | entropy |" in text
    assert "| 0-10 | 2 | – |" in text and "| 10-20 | 4 | -3 |" in text
    assert "offline" not in text.split("\n", 1)[1]
    assert (tmp_path / "out" / "switch.png").stat().st_size > 0
    assert "seed 3" in capsys.readouterr().out
