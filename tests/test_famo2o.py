"""FamO2O: the beta embedding and mapping, each loss by hand, and which beta each phase uses."""

from __future__ import annotations

import math

import pytest
import torch

from rl.agents import AGENTS, Phase, build_agent
from rl.agents.famo2o import BalanceModel, beta_embedding
from rl.agents.losses import awr_loss, balance_loss, family_sac_actor_loss
from rl.buffers import Batch
from tests.conftest import random_batch

OBS, ACT = 4, 2
SMALL = {
    "famo2o_iql": {"hidden": [16, 16], "balance_hidden": [16, 16], "batch_size": 8},
    "famo2o_cql": {
        "critic_hidden": [16, 16],
        "actor_hidden": [16, 16],
        "balance_hidden": [16, 16],
        "batch_size": 8,
        "cql_samples": 2,
    },
}


def make(name: str, **overrides):
    torch.manual_seed(0)
    return build_agent(AGENTS[name][1](**{**SMALL[name], **overrides}), OBS, ACT, torch.device("cpu"))


def batch(n: int = 8, seed: int = 1) -> Batch:
    return random_batch(n, OBS, ACT, seed, terminal_rate=0.0, mc_return=False)


def test_beta_embedding_is_interleaved_sin_cos_at_geometric_frequencies():
    e = beta_embedding(torch.tensor([2.0]), dim=6, base=1e4)[0]
    w = [1.0, 1e4 ** (-2 / 6), 1e4 ** (-4 / 6)]
    by_hand = [f(2.0 * wi) for wi in w for f in (math.sin, math.cos)]
    assert torch.allclose(e, torch.tensor(by_hand), atol=1e-6)
    assert beta_embedding(torch.rand(3, 5), 6, 1e4).shape == (3, 5, 6)


@pytest.mark.parametrize("low, high", [(0.5, 1.5), (1.0, 5.0), (8.0, 14.0)])
def test_balance_model_maps_exactly_onto_its_range(low, high):
    model = BalanceModel(OBS, [8], low, high)
    ends = model.to_range(torch.tensor([-1.0, 0.0, 1.0]))
    assert ends.tolist() == pytest.approx([low, (low + high) / 2, high], abs=1e-6)
    # The released CQL wrapper's map, x (high - low) + low, sends x = -1 below the range (to -0.5 for
    # [0.5, 1.5]); ours cannot leave it, whatever the network outputs.
    obs = torch.randn(64, OBS)
    for bias in (-1e3, 1e3):
        with torch.no_grad():
            model.net[-1].bias.fill_(bias)
        expected = low if bias < 0 else high
        assert torch.allclose(model.deterministic(obs), torch.full((64,), expected))
        sampled, log_prob = model.sample(obs)
        assert torch.allclose(sampled, torch.full((64,), expected)) and torch.isfinite(log_prob).all()
    with torch.no_grad():
        model.net[-1].bias.zero_()
        model.log_std.fill_(2.0)  # wide: samples reach both ends
    sampled, _ = model.sample(torch.randn(4096, OBS))
    assert sampled.min() >= low and sampled.max() <= high
    assert sampled.min() < low + 0.02 * (high - low) and sampled.max() > high - 0.02 * (high - low)


def test_offline_beta_is_uniform_over_the_range_and_online_beta_comes_from_the_balance_model():
    model = BalanceModel(OBS, [8], 1.0, 5.0)
    obs = torch.randn(20_000, OBS)
    uniform = model.policy_beta(obs, Phase.OFFLINE)
    assert uniform.min() >= 1.0 and uniform.max() <= 5.0
    assert uniform.mean().item() == pytest.approx(3.0, abs=0.05)
    assert uniform.std().item() == pytest.approx(4.0 / math.sqrt(12), abs=0.03)
    torch.manual_seed(3)
    online = model.policy_beta(obs[:5], Phase.ONLINE)
    torch.manual_seed(3)
    assert torch.equal(online, model.sample(obs[:5])[0].detach()) and not online.requires_grad


def test_awr_loss_weights_each_row_with_its_own_beta():
    q, v = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])  # advantages +1, -1
    beta = torch.tensor([2.0, 5.0])
    log_prob = torch.tensor([-1.0, -2.0])
    by_hand = -(math.exp(2.0) * -1.0 + math.exp(-5.0) * -2.0) / 2
    assert awr_loss(log_prob, q, v, beta, 100.0).item() == pytest.approx(by_hand, rel=1e-6)
    # The weight is clipped at max_weight.
    assert awr_loss(log_prob, q, v, torch.tensor([10.0, 5.0]), 100.0).item() == pytest.approx(
        -(100.0 * -1.0 + math.exp(-5.0) * -2.0) / 2, rel=1e-6
    )
    # The released IQL wrapper broadcasts (B,) * (B, 1): row 0's weight becomes the mean over the
    # batch's betas, (exp(2) + min(exp(5), 100)) / 2, not exp(2). Ours ignores the other rows' beta.
    official = -(torch.exp((q - v) * beta[:, None]).clamp(max=100.0) * log_prob).mean()
    assert official.item() != pytest.approx(by_hand, rel=1e-3)
    other_betas = torch.tensor([2.0, 9.0])
    with_other = awr_loss(log_prob[:1], q[:1], v[:1], other_betas[:1], 100.0)
    assert with_other.item() == pytest.approx(math.exp(2.0), rel=1e-6)


def test_family_sac_actor_loss_scales_q_by_beta():
    log_prob, q = torch.tensor([-1.0, 0.5]), torch.tensor([3.0, -2.0])
    beta, alpha = torch.tensor([0.5, 1.5]), torch.tensor(0.2)
    by_hand = ((0.2 * -1.0 - 0.5 * 3.0) + (0.2 * 0.5 - 1.5 * -2.0)) / 2
    assert family_sac_actor_loss(log_prob, q, beta, alpha).item() == pytest.approx(by_hand, rel=1e-6)


def test_balance_loss_by_hand():
    q, log_prob = torch.tensor([2.0, -1.0]), torch.tensor([0.3, -0.7])
    assert balance_loss(q, log_prob, 0.5).item() == pytest.approx(
        ((0.5 * 0.3 - 2.0) + (0.5 * -0.7 + 1.0)) / 2, rel=1e-6
    )


@pytest.mark.parametrize("name", sorted(SMALL))
def test_policy_loss_beta_is_uniform_offline_and_from_the_balance_model_online(name):
    agent = make(name)
    calls = []
    original = agent.balance.policy_beta

    def spy(obs, phase):
        calls.append(phase)
        return original(obs, phase)

    agent.balance.policy_beta = spy
    agent.update(batch())
    assert calls and set(calls) == {Phase.OFFLINE}
    calls.clear()
    agent.set_phase(Phase.ONLINE)
    agent.update(batch())
    assert calls and set(calls) == {Phase.ONLINE}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_balance_model_is_trained_in_both_phases_and_only_by_its_own_loss(name):
    agent = make(name)
    for online in (False, True):
        if online:
            agent.set_phase(Phase.ONLINE)
        before = {k: v.clone() for k, v in agent.balance.state_dict().items()}
        metrics = agent.update(batch(seed=int(online)))
        assert any(not torch.equal(before[k], v) for k, v in agent.balance.state_dict().items())
        assert {"beta_mean", "beta_std", "beta_min", "beta_max", "balance_loss"} <= set(metrics)
        lo, hi = agent.cfg.beta_low, agent.cfg.beta_high
        assert lo <= metrics["beta_min"] <= metrics["beta_max"] <= hi


def test_balance_gradient_reaches_beta_through_the_universal_policy():
    """pi_b's loss has no term in beta itself: its gradient must come through pi_u's action."""
    agent = make("famo2o_iql")
    obs = batch().obs
    beta, _ = agent.balance.sample(obs)
    action = agent.actor.dist(agent.family_input(obs, beta)).rsample()
    q = agent.iql.target_critic(obs, action).min(0).values
    (grad,) = torch.autograd.grad(q.sum(), beta)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(SMALL))
def test_acting_conditions_on_the_balance_models_deterministic_beta(name):
    agent = make(name)
    with torch.no_grad():
        agent.balance.net[-1].bias.fill_(1e3)  # beta at the top of the range
    obs = torch.randn(5, OBS)
    high = torch.full((5,), agent.cfg.beta_high)
    actor = agent.ac.actor if name == "famo2o_cql" else agent.actor
    expected = actor.deterministic(agent.family_input(obs, high))
    assert torch.allclose(agent.act(obs, deterministic=True), expected)


def test_famo2o_cql_refuses_what_the_released_wrapper_does_not_have():
    with pytest.raises(ValueError, match="no cql_lagrange, max_target_backup or backup_entropy"):
        make("famo2o_cql", cql_lagrange=True)
