"""Pick the D4RL-recipe behaviour policies from a SAC training run and export them (actor only).

    .venv/bin/python experiments/behaviour/select_policies.py runs/behaviour/hopper-sac-s0 hopper

expert = the snapshot with the best evaluation return within the run so far (the documented budget
is the run's length; the run's ``last.pt``, the one checkpoint a session commits, counts as the
snapshot of its last saved step); medium = the snapshot whose evaluation return is closest to one
third of the expert's (D4RL: "about one third of expert"). Both are written to ``rl/data/behaviour/<env>-<level>.pt``,
and the run's replay-buffer rows up to the medium step (the medium-replay level) are exported from
its ``last.pt`` as ``<env>-medium-replay.hdf5`` with their manifest (``export_medium_replay``). The choice (steps and evaluation returns) is
printed as JSON for the behaviour README.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from rl.checkpoint import load_checkpoint
from rl.generate.locomotion import BEHAVIOUR_DIR, export_medium_replay, export_policy


def main(run_dir: Path, env: str) -> dict:
    returns = {}
    with (run_dir / "metrics.csv").open() as f:
        for row in csv.DictReader(f):
            if row["metric"] == "eval_return":
                returns[int(row["step"])] = float(row["value"])
    snapshots = {
        int(p.stem.removeprefix("agent_step")): p for p in (run_dir / "checkpoints").glob("agent_step*.pt")
    }
    # The run's resume checkpoint is a snapshot too: of the agent at the step it was last saved.
    last = run_dir / "checkpoints" / "last.pt"
    if last.is_file():
        snapshots.setdefault(load_checkpoint(last)["loop"]["step"], last)
    candidates = {step: returns[step] for step in snapshots if step in returns}
    if not candidates:
        raise SystemExit(f"{run_dir}: no snapshot with an evaluation yet")
    expert_step = max(candidates, key=candidates.get)
    target = candidates[expert_step] / 3
    medium_step = min((s for s in candidates if s < expert_step), key=lambda s: abs(candidates[s] - target))
    chosen = {"expert": expert_step, "medium": medium_step}
    BEHAVIOUR_DIR.mkdir(parents=True, exist_ok=True)
    for level, step in chosen.items():
        export_policy(snapshots[step], BEHAVIOUR_DIR / f"{env}-{level}.pt")
    if not last.is_file():
        raise SystemExit(f"{run_dir}: no last.pt, so no replay buffer to export medium-replay from")
    export_medium_replay(last, env, medium_step, BEHAVIOUR_DIR)
    result = {
        "env": env,
        "run": str(run_dir),
        "trained_steps": max(returns),
        **{f"{level}_step": step for level, step in chosen.items()},
        **{f"{level}_eval_return": candidates[step] for level, step in chosen.items()},
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
