"""After a warm-start study run: its results, and for a pre-training the snapshot fine-tuning starts from.

    .venv/bin/python -m experiments.warmstart_publish ~/o2o_runs/warmstart/pretrain-calql-walker2d-medium
    .venv/bin/python -m experiments.warmstart_publish ~/o2o_runs/warmstart/finetune-calql-walker2d-medium/seed1

A fine-tuning run (``checkpoint=`` set, no offline steps) that finished (its ``agent_final.pt``, as
``rl.report`` defines it) has its ``metrics.csv`` and record (revision, dataset digest, resolved
config) copied into ``results/d4rl_o2o_warmstart/finetune/<run's folder>/seed<S>/``, where ``rl.plot`` and
``experiments.warmstart_claims`` read the arms; an unfinished one is refused (resume it first).

Into ``results/d4rl_o2o_warmstart/pretrain/<agent>-<dataset>/`` go the run's ``metrics.csv``,
``git_revision.txt``, ``dataset_sha256.txt`` (runs since 2026-12-08), resolved ``config.yaml`` and
``overrides.yaml``, and ``calibration.md`` and
``.png`` by the study's rule (``WARM_RULE``, stated in the results README before any run). Into
``checkpoints/<agent>-<dataset>.pt`` goes the snapshot the rule picks: the first 25k snapshot where the
critic is warm (the rule stops the pre-training there, so the run may have been stopped after it),
else the last one of the whole schedule. Adam's moments stay in it because fine-tuning continues
them. Prints the step, size and sha256 for the README. A run neither warm nor finished, or one that
lacks the snapshot, is refused before anything is written.
Uni-O4's arm has no warm rule (its stages have fixed lengths) and was published by hand (README).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from rl.calibration import CalibrationRule, calibration_points, draw, first_warm_step, offline_series, report
from rl.report import collect_run
from rl.run_files import RUN_RECORD

WARM_RULE = CalibrationRule(window=5000, every=25000, within=0.25, moved=0.02)
RESULTS = Path("results/d4rl_o2o_warmstart")


def finished(run: Path, offline_steps: int) -> bool:
    """Whether the run logged its evaluation at the end of its offline schedule."""
    with (run / "metrics.csv").open(newline="") as f:
        return any(
            row["phase"] == "offline"
            and row["metric"] == "normalized_score"
            and int(row["step"]) >= offline_steps
            for row in csv.DictReader(f)
        )


def publish(run: Path, results: Path = RESULTS) -> tuple[int, Path]:
    """Copy the run's results and chosen snapshot under ``results``; return the snapshot's step and path."""
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    name, offline_steps = f"{cfg.agent.name}-{cfg.dataset.name}", int(cfg.steps.offline)
    series = [offline_series(run / "metrics.csv")]
    points = calibration_points(series, WARM_RULE)
    warm = first_warm_step(points)
    if warm is None and not finished(run, offline_steps):
        raise ValueError(
            f"{run} is not warm and has not finished its {offline_steps} offline steps: resume it"
        )
    step = offline_steps if warm is None else warm
    snapshot = run / "checkpoints" / f"agent_step{step}.pt"
    if not snapshot.is_file():
        raise ValueError(
            f"{snapshot} is missing: the snapshot at step {step} is the one fine-tuning starts from"
        )
    out = results / "pretrain" / name
    out.mkdir(parents=True, exist_ok=True)
    for kept in ("metrics.csv", *RUN_RECORD):  # flat: the folder predates the record's .hydra/ layout
        if (run / kept).is_file():
            shutil.copy2(run / kept, out / Path(kept).name)
    (out / "calibration.md").write_text(report(points, WARM_RULE, [run]))
    draw(series, points, out / "calibration.png")
    target = results / "checkpoints" / f"{name}.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(snapshot, target)
    return step, target


def is_finetuning(run: Path) -> bool:
    """Whether the run fine-tunes a snapshot (``checkpoint=`` and no offline steps) rather than pre-trains."""
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    return bool(cfg.get("checkpoint")) and int(cfg.steps.offline) == 0


def publish_finetuning(run: Path, results: Path = RESULTS) -> Path:
    """Copy a finished fine-tuning run's metrics, revision and config under ``results/finetune``; return
    the folder."""
    if not (run / "checkpoints" / "agent_final.pt").is_file():
        raise ValueError(f"{run} has not finished (no checkpoints/agent_final.pt): resume it first")
    return collect_run(run, results / "finetune" / run.parent.name / run.name, prefixes=("",))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.warmstart_publish", description=__doc__.split("\n")[0]
    )
    parser.add_argument("run", type=Path, help="a pre-training's or a fine-tuning seed's run directory")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the study's results folder")
    args = parser.parse_args(argv)
    try:
        if is_finetuning(args.run):
            print(publish_finetuning(args.run, args.results))
            return 0
        step, target = publish(args.run, args.results)
    except (ValueError, OSError) as err:
        print(f"o2o: error: {err}", file=sys.stderr)
        return 2
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    print(f"{target}: agent_step{step}.pt, {target.stat().st_size / 1e6:.1f} MB, sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
