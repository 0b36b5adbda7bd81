"""experiments/warmstart_publish.py: a finished pre-training's results and the snapshot the warm rule picks."""

import csv
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from experiments.warmstart_publish import main, publish

SCHEDULE = 100_000


def write_pretraining(run: Path, q_of_step, stopped_at: int = SCHEDULE) -> None:
    """A pre-training's run directory as rl.train leaves it when it stopped at ``stopped_at``: metrics
    every 2,500 steps, an evaluation and a snapshot file (whose bytes name its step) every 25k."""
    (run / ".hydra").mkdir(parents=True)
    cfg = {"agent": {"name": "cql"}, "dataset": {"name": "walker2d-medium"}, "steps": {"offline": SCHEDULE}}
    OmegaConf.save(OmegaConf.create(cfg), run / ".hydra" / "config.yaml")
    (run / ".hydra" / "overrides.yaml").write_text("- agent=cql\n")
    (run / ".hydra" / "hydra.yaml").write_text("hydra: {run: {dir: /somewhere/else}}\n")
    (run / "git_revision.txt").write_text("abc123\n")
    (run / "dataset_sha256.txt").write_text("cd" * 32 + "  walker2d-medium\n")
    with (run / "metrics.csv").open("w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["step", "phase", "env_steps", "metric", "value"])
        for step in range(2500, stopped_at + 1, 2500):
            rows.writerow([step, "offline", 0, "q_mean", q_of_step(step)])
            rows.writerow([step, "offline", 0, "mc_return_mean", 200.0])
            if step % 25_000 == 0:
                rows.writerow([step, "offline", 0, "normalized_score", 30.0])
    (run / "checkpoints").mkdir()
    for step in range(25_000, stopped_at + 1, 25_000):
        (run / "checkpoints" / f"agent_step{step}.pt").write_bytes(f"snapshot {step}".encode())


def test_the_first_warm_snapshot_is_published_with_the_runs_files(tmp_path: Path):
    # Q rises to 180 by 50k (10% below the returns, moved from 100 at 25k: not yet), holds 180 at 75k
    # (moved 0%: warm) and 100k: the 75k snapshot is the one fine-tuning starts from.
    run, results = tmp_path / "pretrain-cql-walker2d-medium", tmp_path / "results"
    write_pretraining(run, lambda step: 100.0 if step <= 25_000 else 180.0)
    assert main([str(run), "--results", str(results)]) == 0
    assert (results / "checkpoints" / "cql-walker2d-medium.pt").read_bytes() == b"snapshot 75000"
    out = results / "pretrain" / "cql-walker2d-medium"
    assert sorted(p.name for p in out.iterdir()) == [
        "calibration.md", "calibration.png", "config.yaml", "dataset_sha256.txt", "git_revision.txt", "metrics.csv",
        "overrides.yaml",
    ]  # fmt: skip
    assert "**Warm at step 75000**" in (out / "calibration.md").read_text()


def test_a_run_stopped_by_the_rule_after_its_warm_snapshot_is_published(tmp_path: Path):
    run, results = tmp_path / "run", tmp_path / "results"
    write_pretraining(run, lambda step: 100.0 if step <= 25_000 else 180.0, stopped_at=80_000)
    assert publish(run, results) == (75_000, results / "checkpoints/cql-walker2d-medium.pt")
    assert (results / "checkpoints/cql-walker2d-medium.pt").read_bytes() == b"snapshot 75000"


def test_a_critic_never_warm_publishes_the_last_snapshot(tmp_path: Path):
    run = tmp_path / "run"
    write_pretraining(run, lambda step: 300.0)  # stable but 50% above the returns
    assert publish(run, tmp_path / "results") == (
        SCHEDULE,
        tmp_path / "results/checkpoints/cql-walker2d-medium.pt",
    )
    assert (
        tmp_path / "results/checkpoints/cql-walker2d-medium.pt"
    ).read_bytes() == f"snapshot {SCHEDULE}".encode()


def test_an_unfinished_run_or_a_missing_snapshot_is_refused_before_anything_is_written(tmp_path, capsys):
    run, results = tmp_path / "unfinished", tmp_path / "results"
    write_pretraining(run, lambda step: 300.0, stopped_at=75_000)
    assert main([str(run), "--results", str(results)]) == 2
    assert "is not warm and has not finished its 100000 offline steps" in capsys.readouterr().err
    run = tmp_path / "deleted"
    write_pretraining(run, lambda step: 300.0)
    (run / "checkpoints" / f"agent_step{SCHEDULE}.pt").unlink()
    with pytest.raises(ValueError, match=r"agent_step100000\.pt is missing"):
        publish(run, results)
    assert not results.exists()


def write_finetuning(run: Path, finished: bool) -> None:
    """A fine-tuning seed's run directory as rl.train leaves it (with ``agent_final.pt`` once finished)."""
    (run / ".hydra").mkdir(parents=True)
    cfg = {"agent": {"name": "calql"}, "steps": {"offline": 0}, "checkpoint": "checkpoints/calql.pt"}
    OmegaConf.save(OmegaConf.create(cfg), run / ".hydra" / "config.yaml")
    (run / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
    (run / ".hydra" / "hydra.yaml").write_text("hydra: {run: {dir: /somewhere/else}}\n")
    (run / "metrics.csv").write_text(
        "step,phase,env_steps,metric,value\n2500,online,2500,normalized_score,7.5\n"
    )
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "agent_step2500.pt").write_bytes(b"snapshot")
    if finished:
        (run / "checkpoints" / "agent_final.pt").write_bytes(b"final")


def test_a_finished_finetuning_seed_is_published_beside_its_arms_other_seeds(tmp_path: Path, capsys):
    run, results = tmp_path / "finetune-calql-walker2d-medium" / "seed1", tmp_path / "results"
    write_finetuning(run, finished=True)
    assert main([str(run), "--results", str(results)]) == 0
    out = results / "finetune" / "finetune-calql-walker2d-medium" / "seed1"
    assert capsys.readouterr().out.strip() == str(out)
    copied = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert copied == [".hydra/config.yaml", ".hydra/overrides.yaml", "metrics.csv"]
    with (out / "metrics.csv").open(newline="") as copy, (run / "metrics.csv").open(newline="") as source:
        assert list(csv.reader(copy)) == list(csv.reader(source))
    assert not (results / "checkpoints").exists()  # a fine-tuning publishes no snapshot


def test_an_unfinished_finetuning_seed_is_refused_before_anything_is_written(tmp_path: Path, capsys):
    run, results = tmp_path / "finetune-calql-walker2d-medium" / "seed2", tmp_path / "results"
    write_finetuning(run, finished=False)
    assert main([str(run), "--results", str(results)]) == 2
    assert (
        "seed2 has not finished (no checkpoints/agent_final.pt): resume it first" in capsys.readouterr().err
    )
    assert not results.exists()
