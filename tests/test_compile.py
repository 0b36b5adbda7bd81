"""``compile=true``: the agent's update through torch.compile matches eager, and the flag reaches it.

Compiling takes tens of seconds on this 2-core machine, so one small agent covers both update
kinds: WSRL, whose offline update carries CQL's conservative term and whose online update is SAC's.
With 2 of 2 critics in the TD target it is the configuration that crashed inductor before the
workaround in ``rl/agents/base.py``.
"""

from __future__ import annotations

import pytest
import torch

from rl.agents import AGENTS, Phase, build_agent
from rl.agents.base import compile_options, compiled_update
from rl.buffers import Batch
from tests.conftest import random_batch

OBS, ACT = 5, 2
SMALL = {"critic_hidden": [32, 32], "actor_hidden": [32, 32], "batch_size": 16}


def make(name: str, **overrides):
    torch.manual_seed(0)
    cfg = AGENTS[name][1](**{**SMALL, **overrides})
    return build_agent(cfg, OBS, ACT, torch.device("cpu"))


def batch(n: int, seed: int) -> Batch:
    return random_batch(n, OBS, ACT, seed)


def assert_same_training(eager, compiled, steps: int, first_seed: int = 0) -> None:
    """Both agents take ``steps`` updates on the same batches from the same global seed; losses and
    every parameter must agree to float rounding (fusion reorders a few sums)."""
    for step in range(first_seed, first_seed + steps):
        data = batch(eager.batch_size, seed=step)
        torch.manual_seed(100 + step)
        expected = eager.update(data)
        torch.manual_seed(100 + step)
        got = compiled.update(data)
        assert got.keys() == expected.keys()
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-5, msg=key)
    for part in ("actor", "critic", "target_critic"):
        for (name, p), q in zip(
            getattr(eager.ac, part).named_parameters(), getattr(compiled.ac, part).parameters(), strict=True
        ):
            torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=f"{part}.{name}")
    torch.testing.assert_close(compiled.ac.log_alpha, eager.ac.log_alpha)


def test_compiled_wsrl_update_matches_eager_offline_and_online():
    # Online, this is SAC's update graph for graph (the same ``ActorCritic`` step).
    overrides = {"num_critics": 2, "cql_samples": 3, "utd": 1, "actor_layer_norm": False}
    eager, compiled = make("wsrl", **overrides), make("wsrl", **overrides)
    assert (eager.cfg.num_critics, eager.cfg.subset_size) == (2, 2)  # whole-randperm index: the bug
    compiled.compile_update()
    assert_same_training(eager, compiled, steps=2)  # CQL's conservative loss
    eager.set_phase(Phase.ONLINE)
    compiled.set_phase(Phase.ONLINE)
    assert_same_training(eager, compiled, steps=2, first_seed=2)  # SAC's loss: dynamo recompiles


def test_cpu_never_takes_the_cuda_graph_path():
    cpu = compile_options(torch.device("cpu"))
    assert not cpu.get("triton.cudagraphs", False)
    assert cpu["fallback_random"] and not cpu["pattern_matcher"]
    assert compile_options(torch.device("cuda"))["triton.cudagraphs"] is True  # no GPU needed to ask

    def update(batch):
        return {}

    assert compiled_update(update, torch.device("cpu")).__name__ != "update_in_cuda_graphs"


def test_compile_flag_is_accepted_by_the_train_config_and_applied_when_the_run_is_built():
    from hydra.errors import ConfigCompositionException

    from rl.config import compose_config
    from rl.loops import build_run
    from rl.loops.run_state import comparable_config

    overrides = ["agent.critic_hidden=[32,32]", "agent.actor_hidden=[32,32]", "steps.eval_episodes=0"]
    assert compose_config(overrides).compile is None  # auto: by the run's length
    cfg = compose_config([*overrides, "compile=true"])
    with pytest.raises(ConfigCompositionException):
        compose_config(["compile=sometimes"])
    assert cfg.compile is True
    # A speed choice like device and threads: a run may resume with or without it.
    assert "compile" not in comparable_config(cfg)

    # Graphs an earlier run left in this process must not pile up towards dynamo's recompile limit.
    earlier_run = torch.compile(lambda x: x + 1, backend="eager")
    earlier_run(torch.ones(1))
    code = earlier_run._torchdynamo_orig_callable.__code__
    assert len(torch._dynamo.eval_frame._debug_get_cache_entry_list(code)) == 1
    run = build_run(cfg)
    assert "update" in vars(run.agent)  # the instance's update is the compiled one
    assert torch._dynamo.eval_frame._debug_get_cache_entry_list(code) == []
    run.close()
    cfg.compile = False
    run = build_run(cfg)
    assert "update" not in vars(run.agent)
    run.close()


def test_compile_auto_compiles_long_schedules_only():
    from rl.config import COMPILE_FROM_STEPS
    from rl.loops.build import Schedule, should_compile

    assert should_compile(None, Schedule(offline=COMPILE_FROM_STEPS - 100, online=100))
    assert not should_compile(None, Schedule(offline=COMPILE_FROM_STEPS - 100, online=99))
    assert should_compile(True, Schedule(offline=10, online=0))  # an explicit choice always wins
    assert not should_compile(False, Schedule(offline=10**6, online=10**6))
