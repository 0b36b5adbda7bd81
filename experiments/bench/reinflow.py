"""Fine-tuning speed: ReinFlow (K = 4) against the DPPO-style baseline (10 of 20 denoising steps
fine-tuned) per PPO iteration, and single-observation inference latency at K = 1 and K = 4.

    .venv/bin/python -m experiments.bench.reinflow [--rounds 3] [--envs 8] [--chunks 50] [--threads 1]

Prints JSON. Both agents run the spec's hopper configuration (§1.7 / §1.8) scaled down alike:
Hopper-v5 in chunks of 4 actions (``env.action_chunk=4``) on ``--envs`` in-process copies,
``--chunks`` chunk steps per rollout (official 40 x 500), 5 epochs, the official networks (residual
head 512 x 3, critic 256 x 3), and minibatches sized so each epoch has the official 4 of them:
ReinFlow iterates over its rollout 10 times per epoch (``repeat_samples``), DPPO over its (chunk,
denoising step) pairs. Policies are freshly initialised (speed does not depend on the weights, only
on episode lengths, which random policies keep short for both). One iteration is
- ``rollout``: ``chunks`` times ``policy_step`` + vector env step + ``RolloutBuffer.add``, as the
  on-policy loop does them;
- ``update``: ``update_rollout`` (reward scaling, GAE, for DPPO the old per-step log-probs, epochs).
Rounds interleave the two agents, so load from other processes (the machine is shared) hits both
alike; medians are reported, with the ratios. ``reinflow_k4_repeat1`` is ReinFlow without the
repeated samples (each chunk once per epoch, 4 minibatches), to show what that choice costs. ``network_rows`` counts the rows each phase pushes
through the policy network (forward; the update's are forward and backward), the model of where the
time goes. ``latency_ms``: median of ``agent.act(obs, deterministic=True)`` on one observation.
``load`` is ``os.getloadavg()`` before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

import envs
from envs import EnvConfig
from rl.agents.base import Phase
from rl.agents.dppo import DPPO, DPPOConfig
from rl.agents.reinflow import ReinFlow, ReinFlowConfig
from rl.buffers import RolloutBuffer

EPOCHS, MINIBATCHES, REPEAT, K, T, FT = 5, 4, 10, 4, 20, 10


def make_agents(obs_dim: int, action_dim: int, rows: int) -> dict[str, ReinFlow | DPPO]:
    torch.manual_seed(0)
    shared = {"normalize_obs": False, "epochs": EPOCHS, "target_kl": None, "iterations": 1000}
    reinflow = ReinFlow(
        ReinFlowConfig(denoising_steps=K, repeat_samples=REPEAT, minibatch=rows * REPEAT // MINIBATCHES, **shared),
        obs_dim, action_dim, torch.device("cpu"),
    )  # fmt: skip
    dppo = DPPO(
        DPPOConfig(denoising_steps=T, ft_steps=FT, minibatch=rows * FT // MINIBATCHES, **shared),
        obs_dim, action_dim, torch.device("cpu"),
    )  # fmt: skip
    unrepeated = ReinFlow(
        ReinFlowConfig(denoising_steps=K, repeat_samples=1, minibatch=rows // MINIBATCHES, **shared),
        obs_dim, action_dim, torch.device("cpu"),
    )  # fmt: skip
    for agent in (reinflow, dppo, unrepeated):
        agent.set_phase(Phase.ONLINE)
    return {"reinflow_k4": reinflow, "dppo_ft10": dppo, "reinflow_k4_repeat1": unrepeated}


def iteration(agent, env, obs: torch.Tensor, chunks: int) -> tuple[float, float]:
    """One rollout of ``chunks`` vector steps and one ``update_rollout``: (rollout s, update s)."""
    n = env.num_envs
    rollout = RolloutBuffer(chunks, n, obs.shape[1], env.single_action_space.shape[0])
    start = time.perf_counter()
    for _ in range(chunks):
        action, log_prob, value = agent.policy_step(obs)
        result = env.step(action)
        bootstrap = torch.zeros(n)
        if result.truncated.any():
            bootstrap = torch.where(result.truncated, agent.state_value(result.next_obs), bootstrap)
        rollout.add(
            obs, action, log_prob, result.reward, value, result.terminated, result.truncated, bootstrap
        )
        obs = result.obs
    middle = time.perf_counter()
    agent.update_rollout(rollout, obs)
    return middle - start, time.perf_counter() - middle


def latency_ms(agent, obs_dim: int, calls: int = 200) -> float:
    obs = torch.randn(1, obs_dim)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        agent.act(obs, deterministic=True)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--chunks", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    env = envs.make_vec(EnvConfig(action_chunk=4), args.envs, "cpu", "sync")
    obs_dim, action_dim = env.single_observation_space.shape[0], env.single_action_space.shape[0]
    rows = args.envs * args.chunks
    agents = make_agents(obs_dim, action_dim, rows)
    times: dict[str, dict[str, list[float]]] = {name: {"rollout": [], "update": []} for name in agents}
    for agent in agents.values():  # warm-up: allocator, first-call costs
        iteration(agent, env, env.reset(seed=99), 2)
    for _ in range(args.rounds):
        for name, agent in agents.items():
            rollout_s, update_s = iteration(agent, env, env.reset(seed=0), args.chunks)
            times[name]["rollout"].append(rollout_s)
            times[name]["update"].append(update_s)

    medians = {
        name: {phase: statistics.median(values) for phase, values in phases.items()}
        for name, phases in times.items()
    }
    for phases in medians.values():
        phases["iteration"] = phases["rollout"] + phases["update"]
    rf, dp = medians["reinflow_k4"], medians["dppo_ft10"]
    k1 = ReinFlow(
        ReinFlowConfig(denoising_steps=1, normalize_obs=False), obs_dim, action_dim, torch.device("cpu")
    )
    k1.set_phase(Phase.ONLINE)
    result = {
        "config": {
            "env": "Hopper-v5, action_chunk 4",
            "envs": args.envs,
            "chunks_per_rollout": args.chunks,
            "epochs": EPOCHS,
            "minibatches_per_epoch": MINIBATCHES,
            "reinflow": {"K": K, "repeat_samples": REPEAT, "minibatch": rows * REPEAT // MINIBATCHES},
            "dppo": {"denoising_steps": T, "ft_steps": FT, "minibatch_pairs": rows * FT // MINIBATCHES},
            "threads": args.threads,
            "rounds": args.rounds,
        },
        "seconds_median": medians,
        "dppo_over_reinflow": {phase: dp[phase] / rf[phase] for phase in ("rollout", "update", "iteration")},
        "dppo_over_reinflow_repeat1": {
            phase: dp[phase] / medians["reinflow_k4_repeat1"][phase]
            for phase in ("rollout", "update", "iteration")
        },
        "network_rows": {
            "reinflow_k4": {"rollout": rows * K, "update": EPOCHS * rows * REPEAT * K},
            "reinflow_k4_repeat1": {"rollout": rows * K, "update": EPOCHS * rows * K},
            "dppo_ft10": {"rollout": rows * T, "update": rows * FT + EPOCHS * rows * FT},
        },
        "latency_ms": {
            "reinflow_k1": latency_ms(k1, obs_dim),
            "reinflow_k4": latency_ms(agents["reinflow_k4"], obs_dim),
            "dppo_t20": latency_ms(agents["dppo_ft10"], obs_dim),
        },
        "load": {"before": load_before, "after": os.getloadavg()},
    }
    env.close()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
