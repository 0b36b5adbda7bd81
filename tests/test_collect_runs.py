"""experiments/collect_runs.py: rl.report's collection step on its own (the logic is tested in test_report.py)."""

import importlib.util

import pytest

from tests.conftest import REPO
from tests.test_report import fake_run

spec = importlib.util.spec_from_file_location("collect_runs", REPO / "experiments/collect_runs.py")
collect_runs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(collect_runs)


def test_collects_config_and_evaluation_rows_of_finished_runs_only(tmp_path, capsys):
    sweep, out = tmp_path / "sweep", tmp_path / "results" / "runs"
    fake_run(sweep / "cql-door-aaaaaaaa", "cql", 0)
    unfinished = fake_run(sweep / "cql-door-bbbbbbbb", "cql", 1, finished=False)

    assert collect_runs.main([str(sweep), str(out), "--metrics", "critic_"]) == 0

    assert sorted(p.name for p in out.iterdir()) == ["cql_door-cloned-v1_s0", "index.csv"]
    rows = (out / "cql_door-cloned-v1_s0" / "metrics.csv").read_text().splitlines()
    assert {row.split(",")[3] for row in rows[1:]} == {"normalized_score", "eval_return", "critic_loss"}
    printed = capsys.readouterr().out
    assert f"not copied: {unfinished}: unfinished: last logged step 150" in printed
    assert "copied 1 runs" in printed


def test_a_missing_sweep_directory_is_refused(tmp_path):
    with pytest.raises(SystemExit, match=r"rl.report: error: .*nope is not a directory"):
        collect_runs.main([str(tmp_path / "nope"), str(tmp_path / "out")])
