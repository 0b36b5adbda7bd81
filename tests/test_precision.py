"""``precision=bf16``: the update's hidden matmuls in bfloat16, everything that accumulates in float32.

These run on any CPU: autocast computes bfloat16 without native support too, only slower.
"""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from rl.agents import AGENTS, build_agent
from rl.buffers import Batch
from rl.config import check_values, compose_config
from rl.nets.mlp import MLP, EnsembleMLP
from tests.conftest import random_batch

OBS, ACT = 5, 2
SMALL = {
    "cql": {"critic_hidden": [32, 32], "actor_hidden": [32, 32], "batch_size": 32},
    "iql": {"hidden": [32, 32], "batch_size": 32, "normalize_obs": False},
}


def make(name: str, bf16: bool, **overrides):
    torch.manual_seed(0)
    agent = build_agent(AGENTS[name][1](**{**SMALL[name], **overrides}), OBS, ACT, torch.device("cpu"))
    if bf16:
        agent.update_in_bf16()
    return agent


def rewarding_batch(n: int, seed: int) -> Batch:
    """Random transitions with rewards around 1, so Q grows away from zero over the updates."""
    batch = random_batch(n, OBS, ACT, seed, terminal_rate=0.0)
    return Batch(
        batch.obs, batch.action, 1.0 + 0.1 * batch.reward, batch.next_obs, batch.terminated, batch.mc_return
    )


def test_under_autocast_hidden_layers_compute_in_bf16_and_output_layers_in_fp32():
    mlp, ensemble = MLP(OBS, [8, 8], 3), EnsembleMLP(4, OBS, [8, 8], 1)
    hidden_dtypes = []
    mlp[0].register_forward_hook(lambda _m, _i, out: hidden_dtypes.append(out.dtype))
    ensemble.layers[0].register_forward_hook(lambda _m, _i, out: hidden_dtypes.append(out.dtype))
    x = torch.randn(6, OBS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_mlp, out_ensemble = mlp(x), ensemble(x)
    assert hidden_dtypes == [torch.bfloat16, torch.bfloat16]
    assert out_mlp.dtype == out_ensemble.dtype == torch.float32
    # Outside autocast nothing changes: the same modules compute float32 throughout.
    torch.testing.assert_close(mlp(x), out_mlp, rtol=0.05, atol=1e-3)
    assert mlp[0](x).dtype == torch.float32


def test_a_bf16_update_keeps_weights_gradients_and_adam_moments_in_fp32():
    agent = make("cql", bf16=True)
    first_critic_layer = agent.ac.critic.net.layers[0]
    seen = []
    first_critic_layer.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    agent.update(random_batch(agent.batch_size, OBS, ACT, seed=1))
    assert torch.bfloat16 in seen  # the option is not a silent no-op
    for part in (agent.ac.actor, agent.ac.critic):
        for name, parameter in part.named_parameters():
            assert parameter.dtype == torch.float32, name
            assert parameter.grad is None or parameter.grad.dtype == torch.float32, name
    moments = agent.ac.critic_optimizer.state_dict()["state"]
    assert moments and all(state["exp_avg"].dtype == torch.float32 for state in moments.values())


@pytest.mark.parametrize("name", ["cql", "iql"])
def test_a_short_bf16_training_tracks_fp32(name):
    # The tolerance, stated before the first run: each logged metric's mean over the last 50 of 300
    # updates within 2% of float32's (relative), or within 0.02 for a metric whose mean is near zero.
    # bfloat16 keeps 8 significant bits (0.4% per rounding). Q stays small here, so this checks that
    # training follows the same course; the float32 output layers are checked by dtype above.
    fp32, bf16 = make(name, bf16=False), make(name, bf16=True)
    logged: dict[str, list[tuple[float, float]]] = {}
    for step in range(300):
        data = rewarding_batch(fp32.batch_size, seed=step)
        torch.manual_seed(100 + step)
        expected = fp32.update(data)
        torch.manual_seed(100 + step)
        got = bf16.update(data)
        for key in expected:
            logged.setdefault(key, []).append((float(expected[key]), float(got[key])))
    assert "q_mean" in logged or "q_loss" in logged
    for key, pairs in logged.items():
        want = sum(p[0] for p in pairs[-50:]) / 50
        have = sum(p[1] for p in pairs[-50:]) / 50
        assert abs(have - want) <= max(0.02 * abs(want), 0.02), f"{key}: fp32 {want:.4f}, bf16 {have:.4f}"


def test_bf16_is_refused_for_on_policy_agents_and_unknown_precisions_are_refused():
    on_policy = [name for name, (cls, _) in AGENTS.items() if cls.on_policy]
    assert on_policy
    stats = (torch.zeros(OBS), torch.ones(OBS))
    agent = build_agent(AGENTS["unio4"][1](), OBS, ACT, torch.device("cpu"), obs_stats=stats)
    with pytest.raises(ValueError, match="precision=bf16: agent unio4 is on-policy"):
        agent.update_in_bf16()
    with pytest.raises(ValueError, match="precision=fp16: must be one of fp32, bf16"):
        check_values(OmegaConf.create({"precision": "fp16"}))


def test_precision_reaches_the_agent_and_is_part_of_the_run_identity():
    from rl.loops import build_run
    from rl.loops.run_state import comparable_config

    overrides = ["agent.critic_hidden=[32,32]", "agent.actor_hidden=[32,32]", "steps.eval_episodes=0"]
    assert compose_config(overrides).precision == "fp32"
    cfg = compose_config([*overrides, "precision=bf16", "compile=false"])
    # Unlike compile, it changes what a run computes: a resume with another precision is refused.
    assert comparable_config(cfg)["precision"] == "bf16"
    run = build_run(cfg)
    assert vars(run.agent)["update"].__name__ == "update_under_autocast"
    run.close()


def test_a_run_saved_before_precision_existed_resumes_as_fp32_and_not_as_bf16(tmp_path):
    from rl.checkpoint import save_checkpoint
    from rl.loops.run_state import LAST_CHECKPOINT, RUN_FORMAT, comparable_config, read_run_checkpoint

    cfg = compose_config(["steps.eval_episodes=0"])
    older = comparable_config(cfg)
    del older["precision"]  # what the code before the setting saved
    (tmp_path / LAST_CHECKPOINT).parent.mkdir(parents=True)
    save_checkpoint(tmp_path / LAST_CHECKPOINT, {"kind": "run", "run_format": RUN_FORMAT, "config": older})
    assert read_run_checkpoint(tmp_path, cfg)["config"] == older
    cfg.precision = "bf16"
    with pytest.raises(ValueError, match=r"another config \(precision: 'fp32' -> 'bf16'\)"):
        read_run_checkpoint(tmp_path, cfg)
