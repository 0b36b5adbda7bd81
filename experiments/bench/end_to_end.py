"""End to end: ``rl.train``'s offline updates per second, read from its own logs, against the learner
bench's figure for the same update (issue 14: within 10%).

    .venv/bin/python -m experiments.bench.end_to_end [--agents cql iql] [--updates 1500] [--threads 2]
        [--dataset walker2d-medium] [--seconds 10]

Prints JSON. For each agent, in turn: the bare update (``experiments.bench.learner.our_update``:
batch 256, obs 17, act 6, the agent's default networks, eager) timed for ``--seconds``; then
``python -m rl.train agent=<agent> dataset=<dataset> steps.offline=<updates> steps.online=0`` (eager,
no evaluation, the same thread count) as a subprocess, whose ``metrics.csv`` logs ``steps_per_second``
every ``log_every`` updates; then the bare update again. The run's rate is the median of its logged
windows after the first (which holds the first update's allocations); the bench's is the mean of the
two figures around the run, so a load change during the run hits both alike. Both are wall-clock
rates. The dataset must have the bench's shapes (obs 17, act 6: walker2d or halfcheetah).

What the run adds to the update is what a real run does per update: sampling a batch from the
replay buffer (an index draw and one gather per column), the step bookkeeping and the logger. The
load average is printed before and after: write it next to any figure you quote.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from experiments.bench.learner import our_update, random_batch, rate

REPO = Path(__file__).resolve().parents[2]
BENCH_NAMES = {"cql": "cql_2", "iql": "iql", "wsrl": "wsrl_cql_10", "calql": "calql_2"}
"""``agent=`` -> the learner bench's name for the same update (its default configuration)."""


def logged_rate(agent: str, dataset: str, updates: int, threads: int, log_every: int) -> float:
    """Median ``steps_per_second`` of a fresh offline run's logged windows, the first left out."""
    with tempfile.TemporaryDirectory() as run_dir:
        command = [
            sys.executable, "-m", "rl.train", f"agent={agent}", f"dataset={dataset}",
            f"steps.offline={updates}", "steps.online=0", "steps.eval_episodes=0", "compile=false",
            f"steps.log_every={log_every}", f"threads={threads}", "progress=false", f"hydra.run.dir={run_dir}",
        ]  # fmt: skip
        subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True)
        with (Path(run_dir) / "metrics.csv").open() as f:
            rates = [float(r["value"]) for r in csv.DictReader(f) if r["metric"] == "steps_per_second"]
    if len(rates) < 3:
        raise SystemExit(f"end_to_end: {agent} logged {len(rates)} windows; raise --updates")
    return statistics.median(rates[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", nargs="+", default=["cql", "iql"], choices=sorted(BENCH_NAMES))
    parser.add_argument("--updates", type=int, default=1500, help="offline updates of each run")
    parser.add_argument("--log-every", type=int, default=250)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dataset", default="walker2d-medium")
    parser.add_argument("--seconds", type=float, default=10.0, help="bare-update timing before and after")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    result: dict = {"threads": args.threads, "dataset": args.dataset, "updates": args.updates}
    goals = {}
    for agent in args.agents:
        update = our_update(BENCH_NAMES[agent], random_batch(), compiled=False)
        before = rate(update, args.seconds)[0]
        run = logged_rate(agent, args.dataset, args.updates, args.threads, args.log_every)
        after = rate(update, args.seconds)[0]
        bench = (before + after) / 2
        result[agent] = {
            "bench_updates_per_s": round(bench, 2),
            "bench_before_after": [round(before, 2), round(after, 2)],
            "rl_train_updates_per_s": round(run, 2),
            "run_over_bench": round(run / bench, 3),
        }
        goals[f"{agent}: rl.train within 10% of the bench"] = run / bench >= 0.9
    result["goals"] = goals
    result["load_average_before_after"] = [load_before, os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
