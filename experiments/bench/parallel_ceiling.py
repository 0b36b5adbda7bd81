"""What two cores give two robosuite Lift envs with no IPC at all: the ceiling for subprocess workers.

    .venv/bin/python -m experiments.bench.parallel_ceiling [--seconds 6] [--rounds 4]

Each round times, one after another: one single-env process alone; two such processes started
together; and one process driving ``envs.make_vec(lift, 2, mode="async")`` (two subprocess workers,
the ``subprocess_n2`` of ``envs.py``). Random actions, Panda OSC_POSE, state observations, 50 steps
of warm-up. JSON: each round's rates and ratios over ``one_alone``, and their medians. The vector
env cannot beat two independent processes: what is between them is the pipe and the lock-step wait.
The figures of a round are seconds apart, not interleaved: on a VM whose speed drifts (this one's
single-env rate varies by 30% between rounds on an idle machine) read the medians.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from envs.config import EnvConfig

LIFT = EnvConfig(name="lift", id="Lift", family="robosuite", score_name=None)


def timed_rate(step: Callable[[], None], env_steps: int, seconds: float) -> float:
    """Env steps per second of ``step`` (``env_steps`` each) over ``seconds``, after 50 warm-up calls."""
    for _ in range(50):
        step()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        calls += 1
    return calls * env_steps / (time.perf_counter() - start)


def steps_per_second(seconds: float, results: mp.Queue) -> None:
    import envs

    env = envs.make(LIFT)
    env.reset(seed=0)
    rng = np.random.default_rng(0)

    def step() -> None:
        _, _, terminated, truncated, _ = env.step(
            rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        )
        if terminated or truncated:
            env.reset()

    results.put(timed_rate(step, 1, seconds))


def vector_steps_per_second(seconds: float, results: mp.Queue) -> None:
    import envs

    vec = envs.make_vec(LIFT, 2, mode="async")
    vec.reset(seed=0)
    rng = np.random.default_rng(0)

    def step() -> None:
        vec.step(
            torch.as_tensor(rng.uniform(-1, 1, (2, *vec.single_action_space.shape)), dtype=torch.float32)
        )

    results.put(timed_rate(step, 2, seconds))
    vec.close()


def vector(seconds: float) -> float:
    results: mp.Queue = mp.Queue()
    worker = mp.Process(target=vector_steps_per_second, args=(seconds, results))
    worker.start()
    worker.join()
    return results.get()


def together(processes: int, seconds: float) -> list[float]:
    results: mp.Queue = mp.Queue()
    workers = [mp.Process(target=steps_per_second, args=(seconds, results)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return [results.get() for _ in workers]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    mp.set_start_method("spawn")
    load_before = os.getloadavg()[0]
    rounds = []
    for _ in range(args.rounds):
        alone = together(1, args.seconds)[0]
        pair = together(2, args.seconds)
        vec = vector(args.seconds)
        rounds.append({"one_alone": round(alone, 1), "two_together": [round(r, 1) for r in pair],
                       "vector_n2": round(vec, 1), "two_together_over_one": round(sum(pair) / alone, 3),
                       "vector_n2_over_one": round(vec / alone, 3)})  # fmt: skip
    report = {
        "cpus": os.cpu_count(),
        "load_average_before_after": [load_before, os.getloadavg()[0]],
        "rounds": rounds,
        "median_two_together_over_one": statistics.median(r["two_together_over_one"] for r in rounds),
        "median_vector_n2_over_one": statistics.median(r["vector_n2_over_one"] for r in rounds),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
