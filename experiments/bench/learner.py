"""Learner speed: the SAC update, eager and compiled, against d3rlpy's and this process's matmul limit.

    .venv/bin/python experiments/bench/learner.py [--seconds 3] [--rounds 3] [--threads N] [--no-d3rlpy]

Prints JSON. Measured in one process, interleaved round by round so that load from other processes
hits all variants alike (this machine is shared; compare ratios, not absolute rates):
- ``stacked_2`` / ``stacked_10``: o2o's SAC update (batch 256, 256x256 MLPs, LayerNorm critics,
  obs 17, act 6) with 2 and 10 critics evaluated as one stacked ensemble, eager;
- ``looped_10``: the same update with the 10 critics as separate modules called in a Python loop;
- ``compiled_2`` / ``compiled_10``: ``stacked_*`` after ``Agent.compile_update()`` (``compile=true``);
- ``d3rlpy_2`` / ``d3rlpy_10``: d3rlpy's SAC (``pip install`` as in docs/stack.md) with the same
  sizes, LayerNorm critics and critic count, timing ``algo.impl.update(torch_batch, step)`` on a
  prepared ``TorchMiniBatch``: the whole update (critic, actor, temperature, targets) without the
  numpy-to-torch conversion of ``algo.update``, as ours is timed on a prepared ``Batch``;
- ``d3rlpy_compiled_*``: d3rlpy's ``compile_graph=True`` only acts on CUDA (its ``compiled`` property
  requires a CUDA device, and its ``CudaGraphWrapper`` records CUDA graphs), so on CPU this applies
  the wrapper's other half, ``torch.compile`` of its two gradient functions, by hand;
- ``sgemm``: a 2048x2048 float32 ``torch.mm``, the most this process can compute per second.
Rates are given per wall-clock second and per CPU second of this process (with one thread the CPU
figure is the one that another process's load distorts least). FLOPs per update are counted with
``torch.utils.flop_counter.FlopCounterMode`` on the eager update (compiling does not change them).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from rl.agents.base import adam
from rl.agents.sac import SAC, SACConfig
from rl.buffers import Batch
from rl.nets import MLP

OBS, ACT, BATCH, HIDDEN = 17, 6, 256, [256, 256]


class LoopedMembers(nn.Module):
    """The baseline for ``CriticEnsemble.net``: ``members`` ordinary MLPs called one after another."""

    def __init__(self, members: int, in_dim: int, hidden: list[int]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(MLP(in_dim, hidden, 1, layer_norm=True) for _ in range(members))

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        chosen = range(len(self.nets)) if members is None else members.tolist()
        return torch.stack([self.nets[i](x) for i in chosen])


def make_agent(critics: int, looped: bool = False) -> SAC:
    torch.manual_seed(0)
    agent = SAC(SACConfig(num_critics=critics, subset_size=2), OBS, ACT, torch.device("cpu"))
    if looped:  # same critic module, its stacked network swapped for a loop of separate ones
        agent.ac.critic.net = LoopedMembers(critics, OBS + ACT, agent.cfg.critic_hidden)
        agent.ac.target_critic = copy.deepcopy(agent.ac.critic).requires_grad_(False)
        agent.ac.critic_optimizer = adam(agent.ac.critic.parameters(), agent.cfg.critic_lr)
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


def d3rlpy_update(critics: int, compiled: bool) -> Callable[[], object]:
    """d3rlpy's SAC update with our sizes and learning rates, on a prepared batch (d3rlpy's defaults
    otherwise: Adam without fused/foreach, entropy in the target, min over all critics)."""
    import d3rlpy
    from d3rlpy.models.encoders import VectorEncoderFactory
    from d3rlpy.torch_utility import TorchMiniBatch

    d3rlpy.seed(0)
    algo = d3rlpy.algos.SACConfig(
        batch_size=BATCH,
        actor_learning_rate=1e-4,
        critic_learning_rate=3e-4,
        temp_learning_rate=1e-4,
        actor_encoder_factory=VectorEncoderFactory(HIDDEN),
        critic_encoder_factory=VectorEncoderFactory(HIDDEN, use_layer_norm=True),
        n_critics=critics,
        compile_graph=compiled,
    ).create(device="cpu:0")
    algo.create_impl((OBS,), ACT)
    impl = algo.impl
    if compiled and not algo.compiled:  # see the module docstring: CUDA-only in d3rlpy itself
        impl._compute_critic_grad = torch.compile(impl.compute_critic_grad)
        impl._compute_actor_grad = torch.compile(impl.compute_actor_grad)
    batch = TorchMiniBatch(
        observations=torch.randn(BATCH, OBS),
        actions=torch.rand(BATCH, ACT) * 2 - 1,
        rewards=torch.randn(BATCH, 1),
        next_observations=torch.randn(BATCH, OBS),
        next_actions=torch.rand(BATCH, ACT) * 2 - 1,
        returns_to_go=torch.zeros(BATCH, 1),
        terminals=torch.zeros(BATCH, 1),
        intervals=torch.ones(BATCH, 1),
        device="cpu:0",
    )
    step = iter(range(10**9))
    return lambda: impl.update(batch, next(step))


def count_flops(fn: Callable[[], object]) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def rate(fn: Callable[[], object], seconds: float) -> tuple[float, float]:
    """Calls per wall-clock second and per CPU second of this process, over about ``seconds``."""
    fn()
    calls, wall, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - wall < seconds:
        fn()
        calls += 1
    return calls / (time.perf_counter() - wall), calls / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--no-d3rlpy", action="store_true", help="skip d3rlpy even if it is installed")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled variants")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    batch = random_batch()
    updates: dict[str, Callable[[], object]] = {}
    flops: dict[str, int] = {}
    compile_seconds: dict[str, float] = {}
    for name, critics, looped in [
        ("stacked_2", 2, False),
        ("stacked_10", 10, False),
        ("looped_10", 10, True),
    ]:
        agent = make_agent(critics, looped)
        updates[name] = lambda agent=agent: agent.update(batch)
        flops[name] = count_flops(updates[name])
    if not args.no_compile:
        for critics in (2, 10):
            agent, name = make_agent(critics), f"compiled_{critics}"
            agent.compile_update()
            updates[name] = lambda agent=agent: agent.update(batch)
            start = time.perf_counter()
            updates[name]()  # the first call compiles
            compile_seconds[name] = round(time.perf_counter() - start, 1)
            flops[name] = flops[f"stacked_{critics}"]
    d3rlpy_version = None
    if not args.no_d3rlpy:
        try:
            import d3rlpy

            d3rlpy_version = d3rlpy.__version__
        except ImportError:
            pass
    if d3rlpy_version:
        for critics in (2, 10):
            name = f"d3rlpy_{critics}"
            updates[name] = d3rlpy_update(critics, compiled=False)
            flops[name] = count_flops(updates[name])
            if not args.no_compile:
                compiled_name = f"d3rlpy_compiled_{critics}"
                updates[compiled_name] = d3rlpy_update(critics, compiled=True)
                start = time.perf_counter()
                updates[compiled_name]()
                compile_seconds[compiled_name] = round(time.perf_counter() - start, 1)
                flops[compiled_name] = flops[name]

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    sgemm_flops = 2 * 2048**3
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in [*updates, "sgemm"]}
    for _ in range(args.rounds):
        samples["sgemm"].append(rate(lambda: torch.mm(a, b), args.seconds))
        for name, update in updates.items():
            samples[name].append(rate(update, args.seconds))

    def median(name: str, clock: int) -> float:
        return statistics.median(s[clock] for s in samples[name])

    peak = {clock: median("sgemm", i) * sgemm_flops / 1e9 for i, clock in enumerate(("wall", "cpu"))}
    result: dict = {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "d3rlpy": d3rlpy_version,
        "sgemm_gflops": {clock: round(v, 1) for clock, v in peak.items()},
        "compile_seconds": compile_seconds,
    }
    for name in updates:
        wall, cpu = median(name, 0), median(name, 1)
        result[name] = {
            "updates_per_s": round(wall, 1),
            "updates_per_cpu_s": round(cpu, 1),
            "gflop_per_update": round(flops[name] / 1e9, 3),
            "fraction_of_sgemm_peak": round(wall * flops[name] / 1e9 / peak["wall"], 3),
            "fraction_of_sgemm_peak_cpu": round(cpu * flops[name] / 1e9 / peak["cpu"], 3),
        }

    def ratio(over: str, under: str) -> float | None:
        if over not in result or under not in result:
            return None
        return round(result[over]["updates_per_cpu_s"] / result[under]["updates_per_cpu_s"], 2)

    ratios = {"stacked_10 / looped_10": ratio("stacked_10", "looped_10")}
    for critics in (2, 10):
        ratios[f"compiled_{critics} / stacked_{critics}"] = ratio(f"compiled_{critics}", f"stacked_{critics}")
        ratios[f"stacked_{critics} / d3rlpy_{critics}"] = ratio(f"stacked_{critics}", f"d3rlpy_{critics}")
        ratios[f"compiled_{critics} / d3rlpy_{critics}"] = ratio(f"compiled_{critics}", f"d3rlpy_{critics}")
        ratios[f"compiled_{critics} / d3rlpy_compiled_{critics}"] = ratio(
            f"compiled_{critics}", f"d3rlpy_compiled_{critics}"
        )
    result["ratios_cpu_clock"] = {k: v for k, v in ratios.items() if v is not None}

    def best(prefix: str, critics: int) -> float:
        names = [n for n in updates if n.startswith(prefix) and n.endswith(f"_{critics}")]
        return max(result[n]["updates_per_cpu_s"] for n in names)

    targets = {
        "stacked_10 >= 50% of sgemm peak": result["stacked_10"]["fraction_of_sgemm_peak_cpu"] >= 0.5,
        "stacked_10 not slower than looped_10": ratios["stacked_10 / looped_10"] >= 1.0,
    }
    if "compiled_10" in result:
        targets["compiled_10 >= 60% of sgemm peak"] = (
            result["compiled_10"]["fraction_of_sgemm_peak_cpu"] >= 0.6
        )
    if d3rlpy_version:
        for critics in (2, 10):
            ours = max(best("stacked", critics), best("compiled", critics) if not args.no_compile else 0.0)
            theirs = best("d3rlpy", critics)
            targets[f"ours >= 1.3x d3rlpy, {critics} critics (best of eager/compiled each)"] = bool(
                ours >= 1.3 * theirs
            )
    result["targets (cpu clock)"] = targets
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
