"""What a training process does to its own update: the learner bench's update timed in fresh
processes, bare and inside a built ``rl.train`` run, alternating, optionally under another allocator.

    .venv/bin/python -m experiments.bench.process_state [--agent iql] [--dataset walker2d-medium]
        [--pairs 4] [--rounds 3] [--seconds 3] [--threads 2] [--preload /path/to/libjemalloc.so.2]

Prints JSON. ``end_to_end.py`` compares ``rl.train``'s logged rate with the bench's, but the two run
in different processes, so it cannot say whether a gap comes from the loop around the update or from
the state the process is in when it updates. This splits them. Each pair is two fresh processes,
in alternating order:

- ``bare``: the bench's update (``experiments.bench.learner.our_update``, eager, one fixed random
  batch) and nothing else;
- ``run``: ``rl.loops.build_run`` on the same config ``rl.train agent=<agent> dataset=<dataset>``
  would build (dataset loaded, replay buffer filled, agent made), then, interleaved round by round,
  the same bench update and ``rl.train``'s whole offline step (a batch drawn from the run's buffer,
  the run's agent's update, ``Bookkeeper.after_step``'s logging).

``run_over_bare`` (the same update in the two processes) is what the process state costs;
``loop_step_over_update`` (within the run process, paired by round) is what the loop costs. With
``--preload``, every pair is run again with that library in ``LD_PRELOAD`` (PyTorch's own CPU
launcher, ``torch.backends.xeon.run_cpu --enable-jemalloc``, preloads jemalloc the same way, with the
same ``MALLOC_CONF``). Figures are medians over rounds, then over pairs; write the load beside them.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from experiments.bench.end_to_end import BENCH_NAMES, REPO

JEMALLOC_CONF = "oversize_threshold:1,background_thread:true,metadata_thp:auto,dirty_decay_ms:9000000000,muzzy_decay_ms:9000000000"
"""``torch.backends.xeon.run_cpu``'s ``MALLOC_CONF`` when it preloads jemalloc."""


def child(arm: str, agent_name: str, dataset: str, rounds: int, seconds: float, threads: int) -> dict:
    """Runs in a fresh process: the rates of one arm, one figure per round."""
    import torch

    from experiments.bench.learner import our_update, random_batch, rate

    torch.set_num_threads(threads)
    update = our_update(BENCH_NAMES[agent_name], random_batch(), compiled=False)
    if arm == "bare":
        return {"update": [rate(update, seconds)[0] for _ in range(rounds)]}

    from rl.config import compose_config
    from rl.loops import LoopState, build_run
    from rl.loops.bookkeeping import Bookkeeper
    from rl.loops.logger import RunLogger
    from rl.loops.off_policy import offline_step

    overrides = [
        f"agent={agent_name}", f"dataset={dataset}", "steps.offline=100000000", "steps.online=0",
        "steps.eval_episodes=0", "compile=false", f"threads={threads}", "progress=false",
    ]  # fmt: skip
    run = build_run(compose_config(overrides))
    state = LoopState.start(run)
    with tempfile.TemporaryDirectory() as run_dir:
        logger = RunLogger(Path(run_dir), run.schedule.total, 0, progress=False)
        books = Bookkeeper(run, state, Path(run_dir), logger)

        loop_step = functools.partial(offline_step, run, state, books)  # rl.train's offline step
        rates: dict[str, list[float]] = {"update": [], "loop_step": []}
        for _ in range(rounds):
            rates["update"].append(rate(update, seconds)[0])
            rates["loop_step"].append(rate(loop_step, seconds)[0])
        logger.close()
    return rates


def spawn(arm: str, args: argparse.Namespace, preload: str | None) -> dict:
    env = dict(os.environ)
    if preload is not None:
        env["LD_PRELOAD"] = preload
        env["MALLOC_CONF"] = JEMALLOC_CONF
    command = [
        sys.executable, "-m", "experiments.bench.process_state", "--child", arm, "--agent", args.agent,
        "--dataset", args.dataset, "--rounds", str(args.rounds), "--seconds", str(args.seconds),
        "--threads", str(args.threads),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"process_state: the {arm} process failed: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default="iql", choices=sorted(BENCH_NAMES))
    parser.add_argument("--dataset", default="walker2d-medium", help="a conf/dataset preset (obs 17, act 6)")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--preload", help="an allocator library to run every pair again with (LD_PRELOAD)")
    parser.add_argument("--child", choices=["bare", "run"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        rates = child(args.child, args.agent, args.dataset, args.rounds, args.seconds, args.threads)
        print(json.dumps(rates))
        return
    if args.preload is not None and not Path(args.preload).is_file():
        raise SystemExit(f"process_state: --preload {args.preload}: no such file")

    load_before = os.getloadavg()
    result: dict = {"agent": args.agent, "dataset": args.dataset, "threads": args.threads}
    allocators = {"glibc": None} | ({"preloaded": args.preload} if args.preload else {})
    figures = {a: {"bare": [], "run": [], "loop": []} for a in allocators}
    for pair in range(args.pairs):  # allocators and arms alternate, so drift hits them alike
        for allocator, preload in allocators.items():
            arms = ("bare", "run") if pair % 2 == 0 else ("run", "bare")
            rates = {arm: spawn(arm, args, preload) for arm in arms}
            steps, updates = rates["run"]["loop_step"], rates["run"]["update"]
            figures[allocator]["bare"].append(statistics.median(rates["bare"]["update"]))
            figures[allocator]["run"].append(statistics.median(updates))
            figures[allocator]["loop"].append(
                statistics.median([s / u for s, u in zip(steps, updates, strict=True)])
            )
    for allocator, f in figures.items():
        result[allocator] = {
            "bare_update_per_s": [round(r, 1) for r in f["bare"]],
            "run_update_per_s": [round(r, 1) for r in f["run"]],
            "run_over_bare": round(
                statistics.median([r / b for r, b in zip(f["run"], f["bare"], strict=True)]), 3
            ),
            "loop_step_over_update": round(statistics.median(f["loop"]), 3),
        }
    result["preload"] = args.preload
    result["load_average_before_after"] = [load_before, os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
