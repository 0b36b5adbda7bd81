"""``rl.report``: a sweep with finished, unfinished, failed and never-started jobs to a results page."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

from rl import report
from tests.test_plot import table_rows, write_run


def fake_run(run_dir: Path, agent: str, seed: int, finished: bool = True) -> Path:
    """A run folder as rl.train leaves it: config, overrides, dataset digest, metrics (scores known from
    tests/test_plot.py: cql scores step/10 + seed) and checkpoints; an unfinished one stops at step 150."""
    write_run(run_dir, agent, seed, last_step=200 if finished else 150)
    OmegaConf.save(
        OmegaConf.create([f"agent={agent}", f"seed={seed}"]), run_dir / ".hydra" / "overrides.yaml"
    )
    (run_dir / "dataset_sha256.txt").write_text("ab" * 32 + "  d4rl:/data/door-cloned.hdf5\n")
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"")
    if finished:
        (run_dir / "checkpoints" / "agent_final.pt").write_bytes(b"")
    return run_dir


@pytest.fixture
def half_failed_sweep(tmp_path: Path) -> Path:
    """Three finished seeds, one stopped at step 150, one failed at start, one never started."""
    sweep = tmp_path / "sweep"
    for seed in range(3):
        fake_run(sweep / f"cql-door-{seed}", "cql", seed)
    fake_run(sweep / "cql-door-3", "cql", 3, finished=False)
    rows = [
        ("cql-door-0", "finished", "agent=cql seed=0"),
        ("cql-door-1", "finished", "agent=cql seed=1"),
        ("cql-door-2", "finished", "agent=cql seed=2"),
        ("cql-door-3", "running", "agent=cql seed=3"),
        ("cql-door-4", "failed: dataset d4rl:/x.hdf5: no such file", "agent=cql seed=4"),
        ("cql-door-5", "planned", "agent=cql seed=5"),
    ]
    with (sweep / "index.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["folder", "status", "overrides"])
        writer.writerows(rows)
    return sweep


LEFT_OUT = [
    "- `{sweep}/cql-door-3`: unfinished: last logged step 150 (`agent=cql seed=3`)",
    "- `{sweep}/cql-door-4`: failed: dataset d4rl:/x.hdf5: no such file (`agent=cql seed=4`)",
    "- `{sweep}/cql-door-5`: missing: planned in the index, no run folder (`agent=cql seed=5`)",
]


def test_finished_runs_are_collected_and_drawn_and_the_others_listed(half_failed_sweep, tmp_path, capsys):
    out = tmp_path / "results" / "study"
    assert report.main([str(half_failed_sweep), "--out", str(out), "--online-at", "50"]) == 0

    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == ["cql_door-cloned-v1_s0", "cql_door-cloned-v1_s1", "cql_door-cloned-v1_s2", "index.csv"]
    copied = out / "runs" / "cql_door-cloned-v1_s0"
    assert sorted(p.name for p in copied.rglob("*") if p.is_file()) == [
        "config.yaml",
        "dataset_sha256.txt",  # which copy of the data the run trained on
        "metrics.csv",
        "overrides.yaml",
    ]
    metrics = {row.split(",")[3] for row in (copied / "metrics.csv").read_text().splitlines()[1:]}
    assert metrics == {"eval_return", "normalized_score"}  # critic_loss is not an evaluation
    # seeds 0, 1, 2 of cql (scores step/10 + seed): the three finished runs only
    assert table_rows((out / "table.md").read_text()) == [
        ["door", "door-cloned-v1", "cql", "3", "normalized_score", "11.0 ± 0.8", "16.0 ± 0.8", "21.0 ± 0.8", "100", "+10.0 ± 0.0"]
    ]  # fmt: skip
    with Image.open(out / "curves.png") as image:
        image.verify()
    readme = (out / "README.md").read_text()
    assert f"python -m rl.report {half_failed_sweep} --out {out} --online-at 50" in readme
    assert f"python -m rl.report {out / 'runs'} --out {out} --online-at 50" in readme
    assert (
        "| door | door-cloned-v1 | cql | 0, 1, 2 | `python -m rl.train -m agent=cql seed=0,1,2` |" in readme
    )
    for line in LEFT_OUT:
        assert line.format(sweep=half_failed_sweep) in readme
    assert "rl.report: left out" in capsys.readouterr().err


def test_a_redraw_from_the_collected_runs_keeps_the_page_and_the_hand_written_text(
    half_failed_sweep, tmp_path
):
    out = tmp_path / "study"
    report.main([str(half_failed_sweep), "--out", str(out), "--last", "2"])
    table, readme = (out / "table.md").read_text(), (out / "README.md").read_text()
    analysis = "# Study\n\nWhat the runs show, by hand.\n\n"
    (out / "README.md").write_text(analysis + readme.split("\n", 2)[2] + "\nA closing remark.\n")

    report.main([str(out / "runs"), "--out", str(out), "--last", "2"])
    assert (out / "table.md").read_text() == table
    redrawn = (out / "README.md").read_text()
    assert redrawn.startswith(analysis) and redrawn.endswith(f"{report.END}\nA closing remark.\n")
    assert redrawn.count(report.BEGIN) == 1
    for line in LEFT_OUT:  # the collected index remembers the runs left out
        assert line.format(sweep=half_failed_sweep) in redrawn


def test_no_finished_run_is_an_error(tmp_path):
    fake_run(tmp_path / "sweep" / "cql-door-0", "cql", 0, finished=False)
    with pytest.raises(SystemExit, match=r"rl\.report: error: no finished run with an evaluation under"):
        report.main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="is not a directory"):
        report.main([str(tmp_path / "nope"), "--out", str(tmp_path / "out")])
