"""One battery every agent goes through (after d3rlpy's algo tester)."""

import copy
import math

import pytest
import torch

from rl.agents import AGENT_FORMAT, AGENTS, Phase, build_agent
from rl.buffers import Batch
from tests.conftest import random_batch

OBS, ACT = 5, 2
SMALL = {
    "sac": {
        "critic_hidden": [32, 32],
        "actor_hidden": [32, 32],
        "batch_size": 16,
        "num_critics": 4,
        "utd": 2,
    },
    "cql": {"critic_hidden": [32, 32], "actor_hidden": [32, 32], "batch_size": 16, "cql_samples": 3},
    "calql": {"critic_hidden": [32, 32], "actor_hidden": [32, 32], "batch_size": 16, "cql_samples": 3},
    "iql": {"hidden": [32, 32], "batch_size": 16, "normalize_obs": False},
    "wsrl": {
        "critic_hidden": [32, 32],
        "actor_hidden": [32, 32],
        "batch_size": 16,
        "num_critics": 4,
        "cql_samples": 3,
    },
    "unio4": {
        "normalize_obs": False,
        "batch_size": 16,
        "critic_steps": 2,
        "bc_steps": 2,
        "dynamics_steps": 2,
        "improve_steps": 4,
        "critic_hidden": [32, 32],
        "value_hidden": [32, 32],
        "policy_hidden": [32, 32],
        "num_policies": 2,
        "dynamics_members": 3,
        "dynamics_elites": 2,
        "dynamics_hidden": [32, 32],
        "ope_every": 1,
        "ope_horizon": 3,
    },
    "famo2o_iql": {"hidden": [32, 32], "balance_hidden": [32, 32], "batch_size": 16},
    "reinflow": {
        "hidden": [32, 32, 32],
        "noise_hidden": [16],
        "critic_hidden": [32],
        "batch_size": 16,
        "normalize_obs": False,
    },
    "dppo": {
        "hidden": [32, 32, 32],
        "critic_hidden": [32],
        "batch_size": 16,
        "normalize_obs": False,
        "denoising_steps": 4,
        "ft_steps": 2,
    },
    "famo2o_cql": {
        "critic_hidden": [32, 32],
        "actor_hidden": [32, 32],
        "balance_hidden": [32, 32],
        "batch_size": 16,
        "cql_samples": 3,
    },
}


def make(name: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    _, config_class = AGENTS[name]
    cfg = config_class(**{**SMALL[name], **overrides})
    return build_agent(cfg, OBS, ACT, torch.device("cpu"))


def batch(n: int, seed: int = 1) -> Batch:
    return random_batch(n, OBS, ACT, seed)


GENERATIVE = {"reinflow", "dppo"}
"""Their offline update is behaviour cloning of the generative policy; critic and actor learn online."""


def test_every_registered_agent_is_in_the_battery():
    assert set(SMALL) == set(AGENTS)


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_updates_change_weights_and_return_finite_scalars(name):
    agent = make(name)
    before = copy.deepcopy(agent.state_dict()["state"])
    for i in range(3):
        metrics = agent.update(batch(agent.batch_size, seed=i))
    assert metrics and all(v.dim() == 0 and torch.isfinite(v) for v in metrics.values())
    after = agent.state_dict()["state"]
    if name in GENERATIVE:
        assert _differs(before["policy"], after["policy"])
        return
    changed = [
        k for k, v in before.items() if isinstance(v, dict) and "actor" not in k and _differs(v, after[k])
    ]
    assert "critic" in changed
    assert _differs(before["actor"], after["actor"])


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_act_returns_bounded_actions_and_deterministic_is_repeatable(name):
    agent = make(name)
    obs = torch.randn(7, OBS)
    stochastic = agent.act(obs)
    assert stochastic.shape == (7, ACT) and stochastic.abs().max() <= 1.0
    # Repeatable given the seed (a flow policy's deterministic ODE still starts from drawn noise).
    torch.manual_seed(3)
    first = agent.act(obs, deterministic=True)
    torch.manual_seed(3)
    assert torch.equal(first, agent.act(obs, deterministic=True))


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_save_load_round_trip_continues_identically(name):
    agent = make(name, seed=0)
    agent.update(batch(agent.batch_size))
    state = agent.state_dict()
    clone = make(name, seed=123)  # other initial weights, same config
    clone.load_state_dict(state)
    obs = torch.randn(4, OBS)
    torch.manual_seed(4)  # a flow policy's deterministic ODE starts from drawn noise
    first = agent.act(obs, deterministic=True)
    torch.manual_seed(4)
    assert torch.equal(first, clone.act(obs, deterministic=True))
    torch.manual_seed(5)
    m1 = agent.update(batch(agent.batch_size, seed=9))
    torch.manual_seed(5)
    m2 = clone.update(batch(agent.batch_size, seed=9))
    assert {k: v.item() for k, v in m1.items()} == {k: v.item() for k, v in m2.items()}


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_same_seed_gives_same_numbers(name):
    runs = []
    for _ in range(2):
        agent = make(name, seed=42)
        runs.append(
            [
                {k: v.item() for k, v in agent.update(batch(agent.batch_size, seed=s)).items()}
                for s in range(2)
            ]
        )
    assert runs[0] == runs[1]


def test_checkpoint_of_another_agent_or_shape_is_refused():
    sac_state = make("sac").state_dict()
    with pytest.raises(ValueError, match=r"holds agent 'sac', this run builds 'iql'"):
        make("iql").load_state_dict(sac_state)
    with pytest.raises(
        ValueError, match=r"critic\.net\.layers\.0\.weight' has shape \(4, 7, 32\).*\(2, 7, 32\)"
    ):
        make("sac", num_critics=2).load_state_dict(sac_state)
    other_obs = build_agent(AGENTS["sac"][1](**SMALL["sac"]), OBS + 1, ACT, torch.device("cpu"))
    with pytest.raises(ValueError, match=r"obs/action sizes"):
        other_obs.load_state_dict(sac_state)


def test_a_checkpoint_of_another_format_is_refused_in_one_line_naming_both_versions():
    state = make("sac").state_dict()
    assert state["format"] == AGENT_FORMAT == 2
    format_1 = {k: v for k, v in state.items() if k not in ("format", "phase")}  # as o2o wrote it before
    for load in (make("sac").load_state_dict, make("sac").load_pretrained):
        with pytest.raises(ValueError) as refused:
            load(format_1)
        message = str(refused.value)
        assert "\n" not in message
        assert message.startswith("agent checkpoint format 1; this o2o reads format 2")


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_the_phase_is_saved_and_a_pretrained_start_takes_the_parts_but_not_the_phase(name):
    agent = make(name)
    agent.set_phase(Phase.ONLINE)
    state = agent.state_dict()
    assert state["phase"] == "online"
    resumed = make(name, seed=1)
    resumed.load_state_dict(state)
    assert resumed.phase is Phase.ONLINE
    started = make(name, seed=1)
    started.load_pretrained(state)
    assert started.phase is Phase.OFFLINE
    obs = torch.randn(3, OBS)
    if not agent.on_policy:  # an on-policy agent acts online with the actor set_phase gives it
        assert torch.equal(started.act(obs, deterministic=True), agent.act(obs, deterministic=True))


def test_sac_utd_takes_one_critic_step_per_minibatch():
    agent = make("sac", utd=3)
    assert agent.batch_size == 48
    agent.update(batch(48))
    ac = agent.ac
    critic_steps = ac.critic_optimizer.state[ac.critic.net.layers[0].weight]["step"]
    actor_steps = ac.actor_optimizer.state[ac.actor.net[0].weight]["step"]
    assert (critic_steps.item(), actor_steps.item()) == (3, 1)


def test_cql_term_pushes_down_out_of_data_action_values():
    """The same CQL agent with and without its conservative term: with it, Q at random actions ends
    lower relative to Q at the data's actions (critics start near 0, output gain 1e-2: after 150
    updates the two differ by a few hundredths)."""
    data = batch(64, seed=3)
    results = {}
    for alpha in (0.0, 5.0):
        agent = make("cql", seed=0, batch_size=64, cql_alpha=alpha)
        for _ in range(150):
            agent.update(data)
        random_actions = torch.rand(64, ACT) * 2 - 1
        critic = agent.ac.critic
        gap = critic(data.obs, random_actions).mean() - critic(data.obs, data.action).mean()
        results[alpha] = gap.item()
    assert results[5.0] < results[0.0] - 0.03


def test_iql_decays_the_actor_lr_by_a_cosine_offline_and_keeps_it_constant_online():
    agent = make("iql", actor_lr=2.0e-4, actor_lr_decay_steps=4)
    used = []
    for k in range(6):
        agent.update(batch(16, seed=k))
        used.append(float(agent.actor_optimizer.param_groups[0]["lr"]))  # the rate this update stepped with
    c = math.cos(math.pi / 4)
    expected = [2e-4, 2e-4 * (1 + c) / 2, 1e-4, 2e-4 * (1 - c) / 2, 0.0, 0.0]
    assert used == pytest.approx(expected, abs=1e-12)
    resumed = make("iql", seed=1, actor_lr=2.0e-4, actor_lr_decay_steps=4)
    resumed.load_state_dict(agent.state_dict())
    assert int(resumed.offline_updates) == 6
    agent.set_phase(Phase.ONLINE)
    agent.update(batch(16, seed=9))
    assert agent.actor_optimizer.param_groups[0]["lr"] == 2e-4


def test_iql_defaults_are_corls_locomotion_settings():
    cfg = AGENTS["iql"][1]()
    assert (cfg.normalize_obs, cfg.return_range_scale, cfg.actor_lr_decay_steps) == (True, 1000.0, 1_000_000)
    with pytest.raises(ValueError, match="normalize_obs=true needs an offline dataset"):
        build_agent(cfg, OBS, ACT, torch.device("cpu"))


def _differs(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))
