"""How often Cal-QL's calibration floor binds at a pre-trained snapshot, beside CQL's.

    .venv/bin/python -m experiments.calql_floor [--agents cql calql] [--env walker2d] [--rows 4096]

Cal-QL differs from CQL in one place: the conservative term's Q-values of the policy's actions are
floored at the data row's Monte-Carlo return, ``max(Q(s, a_pi), G)`` (``rl/agents/cql.py``). Where
the critic already sits above the returns the floor never binds and Cal-QL's update is CQL's. This
loads each agent's committed warm-start snapshot (``results/d4rl_o2o_warmstart/checkpoints/
<agent>-<env>-medium.pt``) with the study's dataset, draws ``--rows`` dataset rows (seed 0) and
``cql_samples`` policy actions per state (the conservative term's count, 10), and prints, per agent:
the ensemble-mean Q on the data's actions and on the policy's, the mean return G, the fraction of
policy actions with Q < G (where the floor binds), and how far the policy's actions lie from the
data's.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from rl.config import compose_config
from rl.loops.build import build_run


def floor_report(agent: str, env: str, rows: int) -> dict[str, float]:
    cfg = compose_config(
        [
            f"agent={agent}",
            f"dataset={env}-medium",
            "steps.offline=0",
            "steps.online=1000",
            "steps.eval_episodes=0",
            "compile=false",
            f"checkpoint=results/d4rl_o2o_warmstart/checkpoints/{agent}-{env}-medium.pt",
        ]
    )
    run = build_run(cfg)
    try:
        torch.manual_seed(0)
        ac = run.agent.ac
        with torch.no_grad():
            batch = ac.encode(run.offline_buffer.sample(rows))
            q_data = ac.critic(batch.obs, batch.action).mean(0)
            actions, _ = ac.actor(batch.obs, run.agent.cfg.cql_samples)
            q_policy = ac.critic(batch.obs, actions).mean(0)  # (rows, samples)
        returns = batch.mc_return
        return {
            "q_data": q_data.mean().item(),
            "q_policy": q_policy.mean().item(),
            "mc_return": returns.mean().item(),
            "floor_binds": (q_policy < returns[:, None]).float().mean().item(),
            "action_distance": (actions - batch.action[:, None]).abs().mean().item(),
        }
    finally:
        run.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", nargs="+", default=["cql", "calql"])
    parser.add_argument("--env", default="walker2d")
    parser.add_argument("--rows", type=int, default=4096)
    args = parser.parse_args(argv)
    print(
        "| agent | Q(s, a_data) | Q(s, a_pi) | G | share of policy actions with Q < G | mean abs(a_pi - a_data) |"
    )
    print("|---|---|---|---|---|---|")
    for agent in args.agents:
        r = floor_report(agent, args.env, args.rows)
        print(
            f"| {agent} | {r['q_data']:.1f} | {r['q_policy']:.1f} | {r['mc_return']:.1f} | "
            f"{r['floor_binds']:.3f} | {r['action_distance']:.3f} |"
        )


if __name__ == "__main__":
    main()
