"""Learner speed: SAC, CQL, WSRL's 10-critic CQL step and IQL, against their own matmuls and d3rlpy.

    .venv/bin/python experiments/bench/learner.py [--seconds 2] [--rounds 3] [--threads N]
        [--no-d3rlpy] [--no-compile] [--only NAME ...]

Prints JSON. Everything is measured in one process, interleaved round by round, so that load from
other processes hits all variants alike (the machine is shared: compare ratios, not absolute rates).
Shapes: batch 256, obs 17, act 6 (Hopper), 256x256 networks.

- ``sac_2`` / ``sac_10``: o2o's SAC update (LayerNorm critics, 2 or 10 stacked in one ensemble);
- ``cql_2``: ``agent=cql`` as the fidelity issue settled it (max-target backup over 10 next actions,
  mean reductions, no LayerNorm, 10 actions per CQL proposal);
- ``wsrl_cql_10``: WSRL's offline step (the same CQL loss on its 10-critic LayerNorm ensemble);
- ``iql``: ``agent=iql`` (twin Q, V, AWR actor);
- with ``--only``, also ``calql_2``, ``famo2o_cql`` and ``famo2o_iql`` (the fidelity study's other
  pre-training arms, for its cost table);
- ``<name>_compiled``: the same after ``Agent.compile_update()`` (``compile=true``);
- with ``--bf16``, ``<name>_bf16`` and ``<name>_bf16_compiled``: the same under
  ``Agent.update_in_bf16()`` (``precision=bf16``), and ``<name>_bf16_matmuls``, their matmuls
  replayed in bfloat16; ``bf16_over_fp32`` is the best bf16 rate over the best float32 one. The JSON
  says whether this CPU multiplies bfloat16 natively (``native_bf16``: AVX-512-BF16 or AMX);
- ``<name>_matmuls``: the **matmul ceiling**: every ``mm``/``addmm``/``bmm``/``baddbmm`` that one eager
  update calls, recorded with its operands' shapes and strides (a ``TorchDispatchMode``), replayed
  alone on fresh tensors in the same order. An update cannot be faster than its own matmuls; the
  ``fraction_of_matmul_ceiling`` of an update is its rate over this one's;
- ``d3rlpy_sac_2``, ``d3rlpy_sac_10``, ``d3rlpy_cql_2``, ``d3rlpy_iql``: d3rlpy 2.8.1 with the same
  sizes, critic counts, learning rates and (CQL) ``max_q_backup=True``, timing ``algo.impl.update`` on
  a prepared ``TorchMiniBatch`` (as ours runs on a prepared ``Batch``); installed only for this
  benchmark (the ``bench`` extra, ``--no-deps``: docs/stack.md), skipped without it;
- ``sgemm``: a 2048x2048 float32 ``torch.mm``, the most this process computes per second.

Rates are per wall-clock second and per CPU second of this process; ratios and goals use the CPU
clock (the figure other processes' load distorts least), except the absolute CQL goal (updates per
wall-clock second at 2 threads). FLOPs per update are counted by ``FlopCounterMode`` on the eager
update. The load average is printed before and after: write it next to any figure you quote.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from rl.agents import Phase, build_agent
from rl.agents.base import native_bf16
from rl.agents.cql import CalQLConfig, CQLConfig
from rl.agents.famo2o import FamO2OCQLConfig, FamO2OIQLConfig
from rl.agents.iql import IQLConfig
from rl.agents.sac import SACConfig
from rl.agents.wsrl import WSRLConfig
from rl.buffers import Batch

OBS, ACT, BATCH, HIDDEN = 17, 6, 256, [256, 256]
MATMULS = {
    torch.ops.aten.mm.default,
    torch.ops.aten.addmm.default,
    torch.ops.aten.bmm.default,
    torch.ops.aten.baddbmm.default,
}


def random_batch() -> Batch:
    return Batch(
        torch.randn(BATCH, OBS),
        torch.rand(BATCH, ACT) * 2 - 1,
        torch.randn(BATCH),
        torch.randn(BATCH, OBS),
        torch.zeros(BATCH),
        torch.randn(BATCH),  # Monte-Carlo returns (Cal-QL's floor; unused by the others)
    )


def our_update(name: str, batch: Batch, compiled: bool, bf16: bool = False) -> Callable[[], object]:
    configs = {
        "sac_2": SACConfig(num_critics=2),
        "sac_10": SACConfig(num_critics=10, subset_size=2),
        "cql_2": CQLConfig(),
        "wsrl_cql_10": WSRLConfig(),
        "iql": IQLConfig(normalize_obs=False),
        "calql_2": CalQLConfig(),
        "famo2o_cql": FamO2OCQLConfig(),
        "famo2o_iql": FamO2OIQLConfig(normalize_obs=False),
    }
    torch.manual_seed(0)
    agent = build_agent(configs[name], OBS, ACT, torch.device("cpu"))
    agent.set_phase(Phase.OFFLINE)  # WSRL: its CQL pre-training step
    if bf16:
        agent.update_in_bf16()
    if compiled:
        agent.compile_update()
    return lambda: agent.update(batch)


def d3rlpy_update(name: str) -> Callable[[], object]:
    """d3rlpy's update for ``name`` with our sizes and learning rates (its defaults otherwise)."""
    import d3rlpy
    from d3rlpy.models.encoders import VectorEncoderFactory
    from d3rlpy.torch_utility import TorchMiniBatch

    d3rlpy.seed(0)
    layer_norm = name.startswith("sac")  # ours: LayerNorm critics for SAC, plain for CQL and IQL
    encoders = {
        "actor_encoder_factory": VectorEncoderFactory(HIDDEN),
        "critic_encoder_factory": VectorEncoderFactory(HIDDEN, use_layer_norm=layer_norm),
    }
    if name.startswith("sac"):
        config = d3rlpy.algos.SACConfig(
            batch_size=BATCH, actor_learning_rate=1e-4, critic_learning_rate=3e-4,
            temp_learning_rate=1e-4, n_critics=int(name.rsplit("_", 1)[1]), **encoders,
        )  # fmt: skip
    elif name == "cql_2":
        config = d3rlpy.algos.CQLConfig(
            batch_size=BATCH, actor_learning_rate=1e-4, critic_learning_rate=3e-4,
            temp_learning_rate=1e-4, alpha_learning_rate=0.0, conservative_weight=5.0,
            n_action_samples=10, max_q_backup=True, **encoders,
        )  # fmt: skip
    else:
        config = d3rlpy.algos.IQLConfig(
            batch_size=BATCH, value_encoder_factory=VectorEncoderFactory(HIDDEN), **encoders
        )
    algo = config.create(device="cpu:0")
    algo.create_impl((OBS,), ACT)
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
    return lambda: algo.impl.update(batch, next(step))


class _RecordMatmuls(TorchDispatchMode):
    """Records every matmul op with its operands' (shape, stride); runs everything as usual."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[
            tuple[object, list[tuple[tuple[int, ...], tuple[int, ...], torch.dtype] | object]]
        ] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in MATMULS:
            layout = [
                (tuple(a.shape), tuple(a.stride()), a.dtype) if isinstance(a, torch.Tensor) else a
                for a in args
            ]
            self.calls.append((func, layout))
        return func(*args, **(kwargs or {}))


def matmul_ceiling(update: Callable[[], object]) -> Callable[[], object]:
    """The matmuls of one ``update``, with the same shapes, memory layouts and dtypes, and nothing else."""
    recorder = _RecordMatmuls()
    with recorder:
        update()

    def operand(spec: object) -> object:
        if not isinstance(spec, tuple) or not spec or not isinstance(spec[0], tuple):
            return spec
        shape, stride, dtype = spec
        storage = 1 + sum((n - 1) * s for n, s in zip(shape, stride, strict=True) if n > 0)
        return torch.randn(storage, dtype=dtype).as_strided(shape, stride)

    calls = [(func, [operand(spec) for spec in layout]) for func, layout in recorder.calls]
    return lambda: [func(*args) for func, args in calls]


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


OURS = ("sac_2", "sac_10", "cql_2", "wsrl_cql_10", "iql")
EXTRA = ("calql_2", "famo2o_cql", "famo2o_iql")
"""Timed only when named with ``--only``: the other pre-training arms of the fidelity study's cost table."""
D3RLPY = ("sac_2", "sac_10", "cql_2", "iql")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--no-d3rlpy", action="store_true", help="skip d3rlpy even if it is installed")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled variants")
    parser.add_argument("--bf16", action="store_true", help="also time each update with precision=bf16")
    parser.add_argument("--only", action="append", choices=OURS + EXTRA, help="time only these updates")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.only or list(OURS)
    load_before = os.getloadavg()

    batch = random_batch()
    updates: dict[str, Callable[[], object]] = {}
    flops: dict[str, int] = {}
    compile_seconds: dict[str, float] = {}
    for name in names:
        for variant, bf16 in ((name, False), (f"{name}_bf16", True))[: 1 + args.bf16]:
            updates[variant] = our_update(name, batch, compiled=False, bf16=bf16)
            flops[variant] = count_flops(updates[variant])
            updates[f"{variant}_matmuls"] = matmul_ceiling(updates[variant])
            flops[f"{variant}_matmuls"] = count_flops(updates[f"{variant}_matmuls"])
            if not args.no_compile:
                compiled = f"{variant}_compiled"
                updates[compiled] = our_update(name, batch, compiled=True, bf16=bf16)
                start = time.perf_counter()
                updates[compiled]()  # the first call compiles
                compile_seconds[compiled] = round(time.perf_counter() - start, 1)
                flops[compiled] = flops[name]
    d3rlpy_version = None
    if not args.no_d3rlpy:
        try:
            import d3rlpy

            d3rlpy_version = d3rlpy.__version__
        except ImportError:
            pass
    if d3rlpy_version:
        for name in D3RLPY:
            if name in names:
                updates[f"d3rlpy_{name}"] = d3rlpy_update(name)
                flops[f"d3rlpy_{name}"] = count_flops(updates[f"d3rlpy_{name}"])

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    updates["sgemm"], flops["sgemm"] = (lambda: torch.mm(a, b)), 2 * 2048**3
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in updates}
    for _ in range(args.rounds):
        for name, update in updates.items():
            samples[name].append(rate(update, args.seconds))

    result: dict = {
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": native_bf16(torch.device("cpu")),
        "torch": torch.__version__,
        "d3rlpy": d3rlpy_version,
        "load_average_before_after": [round(x, 2) for x in (*load_before[:1], *os.getloadavg()[:1])],
        "compile_seconds": compile_seconds,
    }
    for name in updates:
        wall = statistics.median(s[0] for s in samples[name])
        cpu = statistics.median(s[1] for s in samples[name])
        result[name] = {
            "updates_per_s": round(wall, 2),
            "updates_per_cpu_s": round(cpu, 2),
            "gflop_per_update": round(flops[name] / 1e9, 3),
            "gflop_per_cpu_s": round(cpu * flops[name] / 1e9, 1),
        }
    peak = result["sgemm"]["gflop_per_cpu_s"]
    for name in updates:
        result[name]["fraction_of_sgemm_peak"] = round(result[name]["gflop_per_cpu_s"] / peak, 3)

    def cpu_rate(name: str) -> float:
        return result[name]["updates_per_cpu_s"] if name in result else 0.0

    def best(name: str) -> float:
        return max(cpu_rate(name), cpu_rate(f"{name}_compiled"))

    for name in names:
        ceiling = cpu_rate(f"{name}_matmuls")
        result[name]["fraction_of_matmul_ceiling"] = round(cpu_rate(name) / ceiling, 3)
        if f"{name}_compiled" in result:
            result[f"{name}_compiled"]["fraction_of_matmul_ceiling"] = round(best(name) / ceiling, 3)
    goals = {}
    for name in ("sac_10", "cql_2", "wsrl_cql_10"):
        if name in names:
            fraction = best(name) / cpu_rate(f"{name}_matmuls")
            goals[f"P1 {name} (best of eager/compiled) >= 0.9 of its matmul ceiling"] = fraction >= 0.9
    if "cql_2" in names and torch.get_num_threads() == 2:
        wall = max(result["cql_2"]["updates_per_s"], result.get("cql_2_compiled", {}).get("updates_per_s", 0))
        goals["P1 cql_2 >= 17 updates per wall-clock second at 2 threads"] = wall >= 17
    for name in D3RLPY:
        if f"d3rlpy_{name}" in result:
            ratio = best(name) / cpu_rate(f"d3rlpy_{name}")
            result[f"d3rlpy_{name}"]["ours_best_over_this"] = round(ratio, 2)
            goals[f"P2 {name} >= 1.3x d3rlpy"] = ratio >= 1.3
    for name in names:
        if f"{name}_bf16" in result:
            bf16 = result[f"{name}_bf16"]
            bf16["bf16_over_fp32"] = round(best(f"{name}_bf16") / best(name), 2)
            bf16["fraction_of_bf16_matmul_ceiling"] = round(
                best(f"{name}_bf16") / cpu_rate(f"{name}_bf16_matmuls"), 3
            )
    result["goals"] = goals
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
