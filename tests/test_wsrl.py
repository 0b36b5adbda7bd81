"""WSRL: the pre-trained agent arrives whole, warm-up acts with it without updating, no offline data online."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from rl.agents import AGENTS, Phase, build_agent
from rl.agents.wsrl import PRETRAINED_KEYS
from rl.buffers import Batch
from rl.checkpoint import save_checkpoint
from rl.config import compose_config
from rl.loops import LoopState, build_run, run_phases
from rl.loops.evaluate import evaluate

SMALL = {
    "num_critics": 4,
    "critic_hidden": [32, 32],
    "actor_hidden": [32, 32],
    "batch_size": 16,
    "cql_samples": 2,
}


def small_agent(name: str, **extra):
    _, config_class = AGENTS[name]
    return build_agent(config_class(**{**SMALL, **extra}), 11, 3, torch.device("cpu"))


def random_batch(n: int) -> Batch:
    return Batch(
        torch.randn(n, 11),
        torch.rand(n, 3) * 2 - 1,
        torch.randn(n),
        torch.randn(n, 11),
        torch.zeros(n),
        torch.randn(n),
    )


def test_every_pretrained_tensor_arrives_in_the_online_agent():
    cql = small_agent("cql", critic_layer_norm=True, actor_layer_norm=True)
    for _ in range(3):
        cql.update(random_batch(16))
    wsrl = small_agent("wsrl")
    wsrl.load_pretrained(cql.state_dict())
    ours, theirs = wsrl.state_dict()["state"], cql.state_dict()["state"]
    for their_key, our_key in PRETRAINED_KEYS.items():
        assert _flatten(ours[our_key]).keys() == _flatten(theirs[their_key]).keys()
        for name, value in _flatten(theirs[their_key]).items():
            mine = _flatten(ours[our_key])[name]
            assert torch.equal(mine, value) if isinstance(value, torch.Tensor) else mine == value, (
                f"{our_key}{name}"
            )
    assert set(ours) == set(PRETRAINED_KEYS.values())  # nothing of the online agent left unset


def test_wsrl_refuses_an_agent_it_cannot_map():
    with pytest.raises(ValueError, match=r"WSRL starts from a cql/calql/wsrl agent, not 'iql'"):
        small_agent("wsrl").load_pretrained(
            build_agent(
                AGENTS["iql"][1](hidden=[8], normalize_obs=False), 11, 3, torch.device("cpu")
            ).state_dict()
        )
    with pytest.raises(ValueError, match=r"critic"):
        small_agent("wsrl").load_pretrained(
            small_agent("cql", num_critics=2, critic_layer_norm=True, actor_layer_norm=True).state_dict()
        )


def test_online_wsrl_updates_are_sac_with_the_utd_ratio():
    agent = small_agent("wsrl", utd=4)
    assert agent.batch_size == 16  # offline pre-training: UTD 1
    offline = agent.update(random_batch(16))
    assert "cql_gap" in offline
    agent.set_phase(Phase.ONLINE)
    assert agent.batch_size == 64
    online = agent.update(random_batch(64))
    assert "cql_gap" not in online and "critic_loss" in online
    steps = agent.ac.critic_optimizer.state[agent.ac.critic.net.layers[0].weight]["step"]
    assert steps.item() == 1 + 4


def test_pre_training_backs_up_the_best_of_sampled_next_actions_and_fine_tuning_does_not(monkeypatch):
    import rl.agents.cql
    import rl.agents.sac

    assert (AGENTS["cql"][1]().max_target_backup, AGENTS["cql"][1]().critic_layer_norm) == (True, False)
    backups = []
    for module in (rl.agents.cql, rl.agents.sac):
        original = module.td_target

        def spy(*args, _original=original, **kwargs):
            backups.append(args[-1])
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, "td_target", spy)
    agent = small_agent("wsrl", utd=2)
    assert agent.cfg.max_target_backup and not agent.cfg.online_max_target_backup
    agent.update(random_batch(16))
    assert backups == [True]  # the CQL step
    agent.set_phase(Phase.ONLINE)
    agent.update(random_batch(32))
    assert backups == [True, False, False]  # two SAC critic steps


@pytest.mark.parametrize("arm", ["wsrl", "cql"])
def test_the_study_presets_keep_the_papers_actor_and_temperature_rates(arm):
    cfg = compose_config([f"+experiment=d4rl_o2o_{arm}"])
    assert (cfg.agent.actor_lr, cfg.agent.temperature_lr) == (1e-4, 1e-4)


def test_a_wsrl_agent_saved_online_resumes_online():
    agent = small_agent("wsrl", utd=4)
    agent.set_phase(Phase.ONLINE)
    agent.update(random_batch(64))
    resumed = small_agent("wsrl", utd=4)
    resumed.load_state_dict(agent.state_dict())
    assert resumed.phase is Phase.ONLINE and resumed.batch_size == 64
    torch.manual_seed(3)
    expected = agent.update(random_batch(64))
    torch.manual_seed(3)
    got = resumed.update(random_batch(64))
    assert "cql_gap" not in got  # the SAC step, as the agent that was saved
    assert {k: v.item() for k, v in got.items()} == {k: v.item() for k, v in expected.items()}


def pretrained_cql(tmp_path):
    """A small LayerNorm CQL agent saved as an agent checkpoint, as WSRL's pre-training leaves one."""
    cql = small_agent("cql", critic_layer_norm=True, actor_layer_norm=True)
    pretrained = tmp_path / "agent_offline.pt"
    save_checkpoint(pretrained, {"kind": "agent", "agent_config": {}, "agent": cql.state_dict()})
    return cql, pretrained


def wsrl_from_checkpoint(pretrained, dataset_file, warmup, online):
    return compose_config(
        [
            "agent=wsrl",
            *[f"agent.{k}={v}" for k, v in SMALL.items()],
            f"checkpoint={pretrained}",
            f"dataset.source=d4rl:{dataset_file}",
            f"steps.warmup={warmup}",
            f"steps.online={online}",
            "steps.eval_every=1000",
            "steps.eval_episodes=1",
            "progress=false",
        ]
    )


def test_warmup_takes_exactly_k_policy_steps_without_updates_and_the_buffer_starts_empty(
    tmp_path, hopper_d4rl_file
):
    cql, pretrained = pretrained_cql(tmp_path)
    warmup, extra = 64, 5  # a batch's worth (16 x UTD 4): the warm-up, not the batch, is the wait
    cfg = wsrl_from_checkpoint(pretrained, hopper_d4rl_file, warmup=warmup, online=warmup + extra)
    assert (cfg.offline_ratio, cfg.steps.warmup_actions) == (0.0, "policy")
    run = build_run(cfg)
    assert torch.equal(
        run.agent.state_dict()["state"]["actor"]["net.0.weight"],
        cql.state_dict()["state"]["actor"]["net.0.weight"],
    )
    assert len(run.online_buffer) == 0

    calls = {"act": [], "update": 0, "offline_sample": 0}
    act, update = run.agent.act, run.agent.update

    def spy_act(obs, deterministic=False):
        action = act(obs, deterministic)
        if not deterministic:
            calls["act"].append(action.clone())
        return action

    def spy_update(batch):
        calls["update"] += 1
        assert len(run.online_buffer) > warmup  # the first update comes after the warm-up
        return update(batch)

    run.agent.act, run.agent.update = spy_act, spy_update
    run.offline_buffer.sample = lambda n: (
        calls.__setitem__("offline_sample", 1) or pytest.fail("offline data sampled")
    )
    run_phases(run, LoopState.start(run), tmp_path / "run")
    run.close()
    assert calls["update"] == extra
    assert len(calls["act"]) == warmup + extra  # the pre-trained policy acted from the first step
    stored = run.online_buffer.action[:warmup]
    assert torch.equal(stored, torch.cat(calls["act"][:warmup]))
    assert len(run.online_buffer) == warmup + extra  # only online rows: the dataset was not copied in


def test_fine_tuning_a_checkpoint_is_evaluated_before_it_acts(tmp_path, hopper_d4rl_file):
    _, pretrained = pretrained_cql(tmp_path)
    cfg = wsrl_from_checkpoint(pretrained, hopper_d4rl_file, warmup=4, online=6)
    given = build_run(cfg)  # the checkpoint as loaded, evaluated the way the run evaluates
    expected = evaluate(given.agent, given.eval_env, 1, 10_000 * (cfg.seed + 1), given.normalizer)
    given.close()
    run = build_run(cfg)
    summary = run_phases(run, LoopState.start(run), tmp_path / "run")
    run.close()
    rows = pd.read_csv(tmp_path / "run" / "metrics.csv")
    start = rows[(rows.step == 0) & (rows.metric == "eval_return")]
    assert list(start.phase) == ["offline"]  # the score fine-tuning starts from, as rl.plot reads it
    assert start.value.item() == pytest.approx(expected["return"], rel=1e-5)  # the CSV keeps 6 digits
    assert summary["offline"]["return"] == pytest.approx(expected["return"])
    assert summary["online"]["step"] == 6


def _flatten(state, prefix=""):
    if isinstance(state, torch.Tensor):
        return {prefix: state}
    if isinstance(state, dict):
        out = {}
        for k, v in state.items():
            out |= _flatten(v, f"{prefix}.{k}")
        return out
    if isinstance(state, list | tuple):
        out = {}
        for i, v in enumerate(state):
            out |= _flatten(v, f"{prefix}[{i}]")
        return out
    return {prefix: state}


def test_a_warm_start_keeps_the_checkpoints_moments_but_this_runs_learning_rates():
    # The pre-training ran at the demo's raised rates; the fine-tuning asks for the paper's.
    layer_norms = {"critic_layer_norm": True, "actor_layer_norm": True}
    cql = small_agent("cql", **layer_norms, actor_lr=3e-4, temperature_lr=3e-3)
    cql.update(random_batch(16))
    wsrl = small_agent("wsrl", actor_lr=1e-4, temperature_lr=1e-4)
    wsrl.load_pretrained(cql.state_dict())
    for name, lr in (("actor_optimizer", 1e-4), ("temperature_optimizer", 1e-4)):
        ours, theirs = getattr(wsrl.ac, name), getattr(cql.ac, name)
        assert [group["lr"] for group in ours.param_groups] == [lr]
        for mine, pretrained in zip(ours.state.values(), theirs.state.values(), strict=True):
            assert torch.equal(mine["exp_avg"], pretrained["exp_avg"])
    # A resume is the same run continuing: it keeps the checkpoint's rates.
    resumed = small_agent("cql", **layer_norms, actor_lr=1e-4, temperature_lr=1e-4)
    resumed.load_state_dict(cql.state_dict())
    assert [g["lr"] for g in resumed.ac.temperature_optimizer.param_groups] == [3e-3]
