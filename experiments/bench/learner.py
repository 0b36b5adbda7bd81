"""Learner speed: the SAC critic+actor update against this process's matmul limit. Prints JSON.

    .venv/bin/python experiments/bench/learner.py [--seconds 3] [--threads 2]

Measured in one process, interleaved round by round so that load from other processes hits all
variants alike (this machine is shared; compare ratios, not absolute rates):
- ``stacked_2`` / ``stacked_10``: o2o's SAC update (batch 256, 256x256 MLPs, LayerNorm critics,
  obs 17, act 6) with 2 and 10 critics evaluated as one stacked ensemble;
- ``looped_10``: the same update with the 10 critics as separate modules called in a Python loop;
- ``sgemm``: a 2048x2048 float32 ``torch.mm``, the most this process can compute per second.
FLOPs per update are counted with ``torch.utils.flop_counter.FlopCounterMode``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from rl.agents.base import adam
from rl.agents.sac import SAC, SACConfig
from rl.buffers import Batch
from rl.nets import MLP

OBS, ACT, BATCH = 17, 6, 256


class LoopedMembers(nn.Module):
    """The baseline for ``CriticEnsemble.net``: ``members`` ordinary MLPs called one after another."""

    def __init__(self, members: int, in_dim: int, hidden: list[int]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(MLP(in_dim, hidden, 1, layer_norm=True) for _ in range(members))

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        chosen = range(len(self.nets)) if members is None else members.tolist()
        return torch.stack([self.nets[i](x) for i in chosen])


def make_agent(critics: int, looped: bool) -> SAC:
    torch.manual_seed(0)
    agent = SAC(SACConfig(num_critics=critics, subset_size=2), OBS, ACT, torch.device("cpu"))
    if looped:  # same critic module, its stacked network swapped for a loop of separate ones
        agent.critic.net = LoopedMembers(critics, OBS + ACT, agent.cfg.critic_hidden)
        agent.target_critic = copy.deepcopy(agent.critic).requires_grad_(False)
        agent.critic_optimizer = adam(agent.critic.parameters(), agent.cfg.critic_lr)
    return agent


def random_batch() -> Batch:
    return Batch(
        torch.randn(BATCH, OBS),
        torch.rand(BATCH, ACT) * 2 - 1,
        torch.randn(BATCH),
        torch.randn(BATCH, OBS),
        torch.zeros(BATCH),
        torch.zeros(BATCH),
    )


def update_flops(agent: SAC, batch: Batch) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        agent.update(batch)
    return counter.get_total_flops()


def rate(fn, seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds``."""
    fn()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return calls / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    batch = random_batch()
    agents = {
        "stacked_2": make_agent(2, False),
        "stacked_10": make_agent(10, False),
        "looped_10": make_agent(10, True),
    }
    flops = {name: update_flops(agent, batch) for name, agent in agents.items()}
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    sgemm_flops = 2 * 2048**3

    samples: dict[str, list[float]] = {name: [] for name in [*agents, "sgemm"]}
    for _ in range(args.rounds):
        samples["sgemm"].append(rate(lambda: torch.mm(a, b), args.seconds))
        for name, agent in agents.items():
            samples[name].append(rate(lambda agent=agent: agent.update(batch), args.seconds))

    peak = statistics.median(samples["sgemm"]) * sgemm_flops / 1e9
    result = {"threads": torch.get_num_threads(), "torch": torch.__version__, "sgemm_gflops": round(peak, 1)}
    for name in agents:
        per_second = statistics.median(samples[name])
        gflops = per_second * flops[name] / 1e9
        result[name] = {
            "updates_per_s": round(per_second, 1),
            "gflop_per_update": round(flops[name] / 1e9, 3),
            "gflops": round(gflops, 1),
            "fraction_of_sgemm_peak": round(gflops / peak, 3),
        }
    result["stacked_10_over_looped_10"] = round(
        result["stacked_10"]["updates_per_s"] / result["looped_10"]["updates_per_s"], 2
    )
    result["targets"] = {
        "stacked_10 >= 50% of sgemm peak": result["stacked_10"]["fraction_of_sgemm_peak"] >= 0.5,
        "stacked_10 not slower than looped_10": result["stacked_10_over_looped_10"] >= 1.0,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
