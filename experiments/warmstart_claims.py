"""Claims 1-3 of the warm-start study, answered from its fine-tuning runs: held, not held, or waiting.

    .venv/bin/python -m experiments.warmstart_claims [--runs ~/o2o_runs/warmstart] [--out DIR]
        [--seeds 0 1 2] [--online 50000]

Reads the runs ``experiments/warmstart.sh finetune`` writes, ``<runs>/finetune-<arm>-<env>-medium/
seed<S>``, with ``rl.plot``'s reader (each run's normalised score at its evaluations; the snapshot's
own evaluation before the first online step is the end of the offline phase). An arm counts once
every seed has reached ``--online`` steps (claim 1: 10,000); a claim whose arms have not is "waiting".
The rules are the results README's, stated before the runs, with numpy's population std across
seeds as in ``rl.plot``'s tables ("the spread" of two arms: the larger of their two stds):

1. WSRL, at every evaluation in the first 10,000 online steps: the pre-trained mean minus the mean
   there is below the spread of the two (no dip larger than the std across seeds).
2. WSRL's final mean is at or above CQL's and Cal-QL's without offline data, or below by less than
   the spread (``cql_nodata``, ``calql_nodata``).
3. FamO2O's final mean is at or above its base algorithm's by the same rule (``famo2o_cql`` against
   ``cql``, ``famo2o_iql`` against ``iql``, all with offline data).

``claims.md`` in ``--out`` gets one row per claim, dataset and comparison with the numbers.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rl.plot import Line, Scores, align_scores, load_run

DATASETS = ("walker2d", "hopper")
FIRST_ONLINE = 10_000
COMPARISONS = {
    2: [("wsrl", "cql_nodata"), ("wsrl", "calql_nodata")],
    3: [("famo2o_cql", "cql"), ("famo2o_iql", "iql")],
}


@dataclass
class Arm:
    scores: Scores

    @property
    def start(self) -> np.ndarray:
        """Per seed, the snapshot's score before the first online step."""
        return self.scores.values[:, np.flatnonzero(~self.scores.online)[-1]]

    @property
    def end(self) -> np.ndarray:
        return self.scores.values[:, -1]


def load_arm(runs: Path, arm: str, env: str, seeds: Sequence[int], online: int) -> Arm | None:
    """The arm's seeds, or None until every one of them has finished ``online`` steps."""
    dirs = [runs / f"finetune-{arm}-{env}-medium" / f"seed{seed}" for seed in seeds]
    if not all((d / "metrics.csv").is_file() for d in dirs):
        return None
    loaded = [load_run(d) for d in dirs]
    if any(run.evals["step"].max() < run.offline_steps + online for run in loaded):
        return None
    return Arm(align_scores(Line(arm, loaded), "normalized_score"))


def spread(a: np.ndarray, b: np.ndarray) -> float:
    return float(max(a.std(), b.std()))


def _ms(values: np.ndarray) -> str:
    return f"{values.mean():.1f} ± {values.std():.1f}"


def claim_rows(runs: Path, seeds: Sequence[int], online: int) -> list[list[str]]:
    rows = []
    for env in DATASETS:
        names = {"wsrl", *(name for pairs in COMPARISONS.values() for pair in pairs for name in pair)}
        arms = {name: load_arm(runs, name, env, seeds, online) for name in names}
        wsrl = load_arm(runs, "wsrl", env, seeds, FIRST_ONLINE)  # claim 1 needs only the first 10k
        if wsrl is None:
            rows.append(["1", f"{env}-medium", "WSRL's dip in the first 10k online steps", "", "waiting"])
        else:
            s = wsrl.scores
            early = np.flatnonzero(s.online & (s.steps - s.offline_steps <= FIRST_ONLINE))
            dips = [(int(s.steps[i] - s.offline_steps), wsrl.start.mean() - s.values[:, i].mean(),
                     spread(wsrl.start, s.values[:, i])) for i in early]  # fmt: skip
            step, dip, allowed = max(dips, key=lambda d: d[1] - d[2])
            numbers = (f"pre-trained {_ms(wsrl.start)}; largest dip {dip:+.1f} at {step} steps "
                       f"(spread {allowed:.1f})")  # fmt: skip
            held = all(d <= 0 or d < a for _, d, a in dips)
            rows.append(["1", f"{env}-medium", "WSRL's dip in the first 10k online steps", numbers,
                         "held" if held else "not held"])  # fmt: skip
        for claim, pairs in COMPARISONS.items():
            for ours, theirs in pairs:
                a, b = arms[ours], arms[theirs]
                what = f"{ours} ≥ {theirs} at {online} online steps"
                if a is None or b is None:
                    rows.append([str(claim), f"{env}-medium", what, "", "waiting"])
                    continue
                difference, allowed = a.end.mean() - b.end.mean(), spread(a.end, b.end)
                numbers = (
                    f"{_ms(a.end)} against {_ms(b.end)} (difference {difference:+.1f}, spread {allowed:.1f})"
                )
                held = difference >= 0 or -difference < allowed
                rows.append([str(claim), f"{env}-medium", what, numbers, "held" if held else "not held"])
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path.home() / "o2o_runs" / "warmstart")
    parser.add_argument("--out", type=Path, help="write claims.md here")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--online", type=int, default=50_000, help="online steps of a finished run")
    args = parser.parse_args(argv)
    rows = claim_rows(args.runs, args.seeds, args.online)
    lines = ["| claim | dataset | comparison | numbers | verdict |", "|---|---|---|---|---|"]
    text = "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"
    print(text, end="")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "claims.md").write_text(text)


if __name__ == "__main__":
    main()
