"""Uni-O4's AM-Q cost: one model step and one whole AM-Q evaluation. Prints JSON.

    .venv/bin/python -m experiments.bench.amq [--threads 1] [--hidden 200 200 200 200] [--horizon 100]

- ``model_step_ms``: ``DynamicsEnsemble.step`` on the rows of one AM-Q evaluation (``--policies``
  x ``--states`` rows: every member of the policy ensemble from the same start states), which
  deals the rows out to the elites in equal shares and runs each elite on its own rows;
  ``full_pass_step_ms`` the baseline in the same process, MOBILE's way: every member of the
  ensemble on every row, then each row's output taken from one elite drawn at random.
  ``model_step_speedup`` is their ratio. Medians over ``--repeats`` calls.
- ``amq_s``: one ``UniO4.amq_scores`` call (``--horizon`` model steps with the policy and critic
  reads; the paper's gate rolls out 1,000, so 10x the default), on an agent of walker2d's sizes with
  the paper's networks by default, with an env rule that never ends a row so every step runs.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from experiments.bench.replay import median_us
from rl.agents import AGENTS, build_agent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--obs-dim", type=int, default=17)
    parser.add_argument("--action-dim", type=int, default=6)
    parser.add_argument("--hidden", type=int, nargs="+", default=[200, 200, 200, 200], help="dynamics")
    parser.add_argument("--policies", type=int, default=4)
    parser.add_argument("--states", type=int, default=512)
    parser.add_argument("--horizon", type=int, default=100, help="the paper's is 1000")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cfg = AGENTS["unio4"][1](normalize_obs=False, dynamics_hidden=args.hidden, num_policies=args.policies,
                             batch_size=args.states, ope_horizon=args.horizon)  # fmt: skip
    agent = build_agent(cfg, args.obs_dim, args.action_dim, torch.device("cpu"),
                        termination=lambda obs, action, next_obs: torch.zeros(len(obs), dtype=torch.bool))  # fmt: skip
    model = agent.model.dynamics
    with torch.no_grad():  # a model that stays put (small, bounded steps), so nothing diverges
        model.net.layers[-1].weight.mul_(1e-3)
    agent.model.holdout_error.copy_(torch.arange(cfg.dynamics_members, dtype=torch.float))
    elites = agent.model.elites()
    rows = args.policies * args.states
    obs, action = torch.randn(rows, args.obs_dim), torch.rand(rows, args.action_dim) * 2 - 1

    @torch.no_grad()
    def full_pass() -> None:
        mean, log_var, logit = model(obs, action)
        pick = elites[torch.randint(len(elites), (rows,))]
        index = torch.arange(rows)
        mean, std = mean[pick, index], (0.5 * log_var[pick, index]).exp()
        _ = mean + std * torch.randn_like(mean), logit[pick, index]

    dealt = median_us(lambda: model.step(obs, action, elites, agent.model.termination), args.repeats) / 1e3
    full = median_us(full_pass, args.repeats) / 1e3
    start = time.perf_counter()
    agent.amq_scores(torch.randn(args.states, args.obs_dim))
    amq_s = time.perf_counter() - start
    print(json.dumps({
        "threads": args.threads, "rows": rows, "dynamics_hidden": args.hidden,
        "members": cfg.dynamics_members, "elites": cfg.dynamics_elites,
        "model_step_ms": round(dealt, 3), "full_pass_step_ms": round(full, 3), "model_step_speedup": round(full / dealt, 2),
        "amq_s": round(amq_s, 2), "horizon": args.horizon, "load_average": os.getloadavg(),
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
