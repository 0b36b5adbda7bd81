"""experiments/warmstart_claims.py: the study's claims 1-3 from fine-tuning runs, checked by hand."""

import csv
from pathlib import Path

from omegaconf import OmegaConf

from experiments.warmstart_claims import claim_rows

STEPS = [0, 2500, 5000, 7500, 10000]  # 0: the snapshot's evaluation, logged as the offline phase's end


def write_run(runs: Path, arm: str, seed: int, scores: list[float]) -> None:
    run_dir = runs / f"finetune-{arm}-walker2d-medium" / f"seed{seed}"
    (run_dir / ".hydra").mkdir(parents=True)
    cfg = {
        "agent": {"name": arm.removesuffix("_nodata")},
        "env": {"name": "walker2d"},
        "dataset": {"name": "walker2d-medium"},
        "steps": {"offline": 0, "online": STEPS[-1]},
        "seed": seed,
    }
    OmegaConf.save(OmegaConf.create(cfg), run_dir / ".hydra" / "config.yaml")
    with (run_dir / "metrics.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["step", "phase", "env_steps", "metric", "value"])
        for step, score in zip(STEPS, scores, strict=False):  # fewer scores: a run still going
            out.writerow([step, "offline" if step == 0 else "online", step, "normalized_score", score])


def verdicts(runs: Path) -> dict[tuple[str, str, str], tuple[str, str]]:
    rows = claim_rows(runs, [0, 1, 2], online=STEPS[-1])
    return {(claim, dataset, what): (numbers, verdict) for claim, dataset, what, numbers, verdict in rows}


def test_a_dip_larger_than_the_spread_fails_claim_1_and_finished_arms_are_compared(tmp_path: Path):
    # WSRL starts at 40 ± 1.63 (38, 40, 42); at 5,000 steps 35 ± 1.63: a dip of 5 > 1.63.
    for seed, start in enumerate([38.0, 40.0, 42.0]):
        write_run(tmp_path, "wsrl", seed, [start, start - 1, start - 5, start, start + 10])
    # CQL without data ends at 52 ± 8.16 (42, 52, 62): WSRL's 50 ± 1.63 is 2 below, within the spread.
    for seed, end in enumerate([42.0, 52.0, 62.0]):
        write_run(tmp_path, "cql_nodata", seed, [30.0, 30.0, 30.0, 30.0, end])
    # Cal-QL without data ends at 60 ± 0: 10 above WSRL, more than the spread (1.63).
    for seed in range(3):
        write_run(tmp_path, "calql_nodata", seed, [30.0, 30.0, 30.0, 30.0, 60.0])
    # FamO2O-CQL has only two seeds and one of them is still running: waiting.
    write_run(tmp_path, "famo2o_cql", 0, [30.0] * 5)
    write_run(tmp_path, "famo2o_cql", 1, [30.0] * 3)
    found = verdicts(tmp_path)
    numbers, verdict = found[("1", "walker2d-medium", "WSRL's dip in the first 10k online steps")]
    assert verdict == "not held" and "largest dip +5.0 at 5000 steps (spread 1.6)" in numbers
    numbers, verdict = found[("2", "walker2d-medium", "wsrl ≥ cql_nodata at 10000 online steps")]
    assert verdict == "held" and "difference -2.0, spread 8.2" in numbers
    numbers, verdict = found[("2", "walker2d-medium", "wsrl ≥ calql_nodata at 10000 online steps")]
    assert verdict == "not held" and "difference -10.0" in numbers
    assert found[("3", "walker2d-medium", "famo2o_cql ≥ cql at 10000 online steps")][1] == "waiting"
    assert found[("1", "hopper-medium", "WSRL's dip in the first 10k online steps")][1] == "waiting"


def test_no_dip_holds_claim_1_even_when_the_seeds_agree_exactly(tmp_path: Path):
    for seed in range(3):  # the warm-up's evaluations repeat the snapshot's score: no spread, no dip
        write_run(tmp_path, "wsrl", seed, [40.0, 40.0, 40.0, 41.0, 45.0])
    found = verdicts(tmp_path)
    assert found[("1", "walker2d-medium", "WSRL's dip in the first 10k online steps")][1] == "held"
    # runs past 10k but short of a 50k schedule answer claim 1 and leave the end comparisons waiting
    rows = {
        (r[0], r[2]): r[4]
        for r in claim_rows(tmp_path, [0, 1, 2], online=50_000)
        if r[1] == "walker2d-medium"
    }
    assert rows[("1", "WSRL's dip in the first 10k online steps")] == "held"
    assert rows[("2", "wsrl ≥ cql_nodata at 50000 online steps")] == "waiting"
