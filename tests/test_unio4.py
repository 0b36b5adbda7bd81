"""Uni-O4: each loss by hand, AM-Q against a closed form, the stage schedule, the AM-Q gate on the
behaviour policies, and the hand-over to online PPO on the RolloutBuffer."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.distributions import Normal

from rl.agents import AGENTS, Phase, build_agent
from rl.agents.amq import am_q, holdout_rows
from rl.agents.losses import clipped_value_loss, ensemble_bc_loss, ppo_clip_loss
from rl.agents.unio4 import Stage, clip_grad_norm_per_member
from rl.buffers import Batch, RolloutBuffer
from rl.checkpoint import load_checkpoint, save_checkpoint
from rl.checkpoint import main as checkpoint_main
from rl.config import compose_config
from rl.loops.build import offline_length
from rl.nets.dynamics import DynamicsEnsemble
from tests.conftest import random_batch

OBS, ACT = 3, 2
SMALL = {
    "normalize_obs": False,
    "batch_size": 16,
    "critic_steps": 2,
    "bc_steps": 2,
    "dynamics_steps": 2,
    "improve_steps": 6,
    "critic_hidden": [16, 16],
    "value_hidden": [16, 16],
    "policy_hidden": [16, 16],
    "num_policies": 2,
    "dynamics_members": 3,
    "dynamics_elites": 2,
    "dynamics_hidden": [16, 16],
    "ope_every": 1,
    "ope_horizon": 3,
    "online_epochs": 2,
    "online_minibatch": 8,
}


def make(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build_agent(AGENTS["unio4"][1](**{**SMALL, **overrides}), OBS, ACT, torch.device("cpu"))


def batch(n: int = 16, seed: int = 1) -> Batch:
    return random_batch(n, OBS, ACT, seed, terminal_rate=0.2, mc_return=False)


# -- losses by hand ----------------------------------------------------------------------------------


def _normal_log_prob(x: float, mu: float, sigma: float) -> float:
    return -0.5 * ((x - mu) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)


def test_ensemble_bc_loss_by_hand_with_the_gap_to_the_other_member_that_best_explains_the_data():
    # three members, one state, one action dimension; data action 0.8
    mu, sigma = [0.0, 1.0, 0.7], [1.0, 0.5, 0.2]
    dist = Normal(torch.tensor(mu).view(3, 1, 1), torch.tensor(sigma).view(3, 1, 1))
    action = torch.tensor([[0.8]])
    log_p = [_normal_log_prob(0.8, m, s) for m, s in zip(mu, sigma, strict=True)]
    # log p: member 2 explains 0.8 best, then member 1, then member 0
    assert log_p[2] > log_p[1] > log_p[0]
    best_other = {0: 2, 1: 2, 2: 1}  # argmax over the *other* members
    gaps = [log_p[i] - log_p[j] for i, j in best_other.items()]
    alpha = 0.1
    by_hand = sum(-log_p[i] - alpha * gaps[i] for i in range(3))
    loss, gap = ensemble_bc_loss(dist, action, alpha)
    assert loss.item() == pytest.approx(by_hand, rel=1e-5)
    assert gap.tolist() == pytest.approx(gaps, rel=1e-5)


def test_the_disagreement_term_only_scales_the_bc_gradient_by_one_plus_alpha():
    """The official default: the best other member's log-probability is detached, so no member is
    pushed away from another (a divergence the loss maximises grows without bound)."""
    mu = torch.tensor([0.1, 0.5, -0.3]).view(3, 1, 1).requires_grad_(True)
    log_sigma = torch.tensor([-2.0, 0.0, -1.0]).view(3, 1, 1).requires_grad_(True)
    action = torch.tensor([[0.0]])
    grads = {}
    for alpha in (0.0, 0.1):
        loss, _ = ensemble_bc_loss(Normal(mu, log_sigma.exp()), action, alpha)
        grads[alpha] = torch.autograd.grad(loss, (mu, log_sigma))
    for plain, with_term in zip(grads[0.0], grads[0.1], strict=True):
        torch.testing.assert_close(with_term, 1.1 * plain)


def test_single_member_bc_is_plain_negative_log_likelihood():
    dist = Normal(torch.zeros(1, 2, 1), torch.ones(1, 2, 1))
    action = torch.tensor([[1.0], [0.0]])
    loss, gap = ensemble_bc_loss(dist, action, alpha=0.1)
    assert loss.item() == pytest.approx(-(_normal_log_prob(1.0, 0, 1) + _normal_log_prob(0.0, 0, 1)) / 2)
    assert gap.tolist() == [0.0]


def test_ppo_clip_loss_by_hand():
    old = torch.zeros(4)
    log_prob = torch.log(torch.tensor([1.5, 0.5, 1.1, 0.5]))
    advantage = torch.tensor([1.0, -1.0, 2.0, 1.0])
    # min(rho A, clip(rho, 0.8, 1.2) A): 1.2 (clipped gain), -0.8 (clipped side is lower), 2.2, 0.5
    by_hand = -(1.2 - 0.8 + 2.2 + 0.5) / 4
    assert ppo_clip_loss(log_prob, old, advantage, 0.2).item() == pytest.approx(by_hand, rel=1e-6)
    per_member = ppo_clip_loss(log_prob.view(2, 2), old.view(2, 2), advantage.view(2, 2), 0.2)
    assert per_member.tolist() == pytest.approx([-(1.2 - 0.8) / 2, -(2.2 + 0.5) / 2], rel=1e-6)


def test_clipped_value_loss_by_hand():
    value, old, returns = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]), torch.tensor([2.0, -1.0])
    # row 0: max((1-2)^2, (0 + 0.1 - 2)^2) = 3.61; row 1: max(1, 1) = 1
    assert clipped_value_loss(value, old, returns, 0.1).item() == pytest.approx((3.61 + 1.0) / 2, rel=1e-6)


def test_per_member_gradient_clipping_matches_clipping_each_member_alone():
    weight = nn.Parameter(torch.zeros(3, 2, 2))
    bias = nn.Parameter(torch.zeros(3, 1, 2))
    weight.grad = torch.stack([torch.full((2, 2), 0.1), torch.full((2, 2), 3.0), torch.full((2, 2), -1.0)])
    bias.grad = torch.stack([torch.full((1, 2), 0.1), torch.full((1, 2), 4.0), torch.full((1, 2), 0.0)])
    expected = []
    for m in range(3):
        w, b = nn.Parameter(torch.zeros(2, 2)), nn.Parameter(torch.zeros(1, 2))
        w.grad, b.grad = weight.grad[m].clone(), bias.grad[m].clone()
        nn.utils.clip_grad_norm_([w, b], 0.5)
        expected.append((w.grad, b.grad))
    clip_grad_norm_per_member([weight, bias], 0.5)
    for m, (w, b) in enumerate(expected):
        assert torch.allclose(weight.grad[m], w) and torch.allclose(bias.grad[m], b)


def test_holdout_rows_are_a_fixed_fraction_decided_by_each_row():
    obs = torch.randn(20_000, 11)
    held = holdout_rows(obs, 10)
    assert 0.08 < held.float().mean().item() < 0.12
    order = torch.randperm(len(obs))
    assert torch.equal(holdout_rows(obs[order], 10), held[order])


# -- AM-Q --------------------------------------------------------------------------------------------


def test_am_q_on_a_linear_system_matches_the_closed_form():
    # s' = rho s, a = k s, q(s, a) = w s + u a  =>  q_t = (w + u k) rho^t s_0
    rho, k, w, u, horizon = 0.5, 0.4, 2.0, -1.0, 4
    start = torch.tensor([[[1.0], [2.0]], [[-1.0], [0.5]]])  # 2 policies x 2 start states
    gains = torch.tensor([k, 2 * k]).view(2, 1, 1)  # policy 1 acts twice as strongly
    score = am_q(
        policy=lambda s: gains * s,
        q=lambda s, a: (w * s + u * a).squeeze(-1),
        step=lambda s, a: (rho * s, torch.zeros(s.shape[:-1], dtype=torch.bool)),
        start=start,
        horizon=horizon,
    )
    discount = sum(rho**t for t in range(horizon)) / horizon  # = (1 - rho^H) / (H (1 - rho))
    assert discount == pytest.approx((1 - rho**horizon) / (horizon * (1 - rho)))
    expected = [(w + u * k) * 1.5 * discount, (w + u * 2 * k) * -0.25 * discount]
    assert score.tolist() == pytest.approx(expected, rel=1e-6)


def test_am_q_counts_q_at_the_terminal_step_and_drops_the_row_after_it():
    # s' = s / 2; a row terminates at the step whose next state falls below 0.3
    start = torch.tensor([[[1.0], [2.0]]])
    score = am_q(
        policy=lambda s: torch.zeros_like(s),
        q=lambda s, a: s.squeeze(-1),
        step=lambda s, a: (s / 2, (s / 2 < 0.3).squeeze(-1)),
        start=start,
        horizon=5,
    )
    # row 1.0: q = 1, 0.5 (terminates on the step to 0.25); row 2.0: q = 2, 1, 0.5 (terminates next)
    assert score.item() == pytest.approx((1 + 0.5 + 2 + 1 + 0.5) / 5)


def test_am_q_rows_stay_where_they_were_before_their_terminal_step():
    # s' = 3 s; the row terminates on the step that leaves |s| < 10, and past it the model gives NaN
    def step(s, a):
        next_s = torch.where(s.abs() < 10, 3 * s, torch.nan)
        return next_s, ~(next_s.abs() < 10).squeeze(-1)

    def policy(s):
        assert torch.isfinite(s).all()  # never asked to act on a state past a terminal step
        return torch.zeros_like(s)

    start = torch.tensor([[[1.0], [0.1]]])
    score = am_q(policy, lambda s, a: s.squeeze(-1), step, start, horizon=5)
    # row 1.0: q = 1, 3, 9 (terminates on the step to 27); row 0.1: q = 0.1, 0.3, 0.9, 2.7, 8.1
    assert score.item() == pytest.approx((1 + 3 + 9 + 0.1 + 0.3 + 0.9 + 2.7 + 8.1) / 8)


def test_am_q_stops_stepping_the_model_once_every_row_has_terminated():
    calls = []

    def step(s, a):
        calls.append(1)
        return s / 2, (s / 2 < 0.3).squeeze(-1)

    start = torch.tensor([[[1.0], [2.0]]])
    score = am_q(lambda s: torch.zeros_like(s), lambda s, a: s.squeeze(-1), step, start, horizon=1000)
    assert len(calls) == 3  # the 2.0 row's third step reaches 0.25
    assert score.item() == pytest.approx((1 + 0.5 + 2 + 1 + 0.5) / 5)


class _LinearModel(nn.Module):
    """Stands in for the dynamics ensemble: s' = rho s + c a (first action dim), never terminal."""

    def __init__(self, rho: float, c: float) -> None:
        super().__init__()
        self.rho, self.c = rho, c

    def step(self, obs, action, elites, termination):
        next_obs = self.rho * obs + self.c * action[:, :1]
        return next_obs, torch.zeros(len(obs)), torch.zeros(len(obs), dtype=torch.bool)


class _LinearQ(nn.Module):
    """Twin critics both equal to Q(s, a) = w s_0 + u a_0."""

    def __init__(self, w: float, u: float) -> None:
        super().__init__()
        self.w, self.u = w, u

    def forward(self, obs, action):
        q = self.w * obs[..., 0] + self.u * action[..., 0]
        return torch.stack([q, q])


class _LinearPolicies(nn.Module):
    """Member i acts a = k_i s (in every action dimension), with unit std."""

    def __init__(self, gains: list[float]) -> None:
        super().__init__()
        self.gains = torch.tensor(gains).view(-1, 1, 1)
        self.members = len(gains)

    def dist(self, obs, members=None):
        mean = (self.gains * obs[..., :1]).expand(*obs.shape[:-1], ACT)
        return Normal(mean, torch.ones_like(mean))


def test_agent_am_q_scores_its_policies_through_its_model_and_critic():
    rho, c, w, u, horizon = 0.6, 0.5, 1.5, 2.0, 5
    gains = [0.3, -0.4]
    agent = make(ope_horizon=horizon, dynamics_members=3, dynamics_elites=2)
    agent.model.dynamics, agent.iql.critic = _LinearModel(rho, c), _LinearQ(w, u)
    agent.actor = _LinearPolicies(gains)
    obs = torch.tensor([[0.5, 9.0, 9.0], [-1.0, 9.0, 9.0], [1.0, 9.0, 9.0]])  # only s_0 matters
    expected = []
    for k in gains:
        factor = rho + c * k
        mean_q = sum((w + u * k) * factor**t * obs[:, 0].mean().item() for t in range(horizon)) / horizon
        expected.append(mean_q)
    assert agent.amq_scores(obs).tolist() == pytest.approx(expected, rel=1e-5)


# -- the offline schedule and the AM-Q gate -----------------------------------------------------------


def _adam_steps(optimizer: torch.optim.Optimizer) -> int:
    states = list(optimizer.state.values())
    return int(states[0]["step"]) if states else 0


def test_stages_run_by_the_update_counter():
    agent = make(critic_steps=1, bc_steps=3, dynamics_steps=2, improve_steps=2, ope_every=10)
    assert (agent.improvement_start, agent.offline_steps) == (3, 5)
    for i in range(agent.offline_steps):
        agent.update(batch(seed=i))
    assert _adam_steps(agent.iql.critic_optimizer) == 1
    assert _adam_steps(agent.bc_optimizer) == 3
    assert _adam_steps(agent.model.optimizer) == 2
    assert _adam_steps(agent.improve_optimizer) == 2
    assert int(agent.updates) == 5
    before = copy.deepcopy(agent.state_dict()["state"])
    assert agent.update(batch(seed=99)) == {}  # past the schedule: nothing changes but the counter
    after = agent.state_dict()["state"]
    assert all(torch.equal(before["actor"][k], after["actor"][k]) for k in before["actor"])


def _member(module: nn.Module, i: int) -> list[torch.Tensor]:
    return [p[i].clone() for p in module.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_behaviour_policy_is_replaced_only_when_am_q_improves():
    agent = make()
    scripted = iter([[1.0, 1.0], [2.0, 0.5], [1.5, 0.7], [3.0, 1.2]])
    agent.amq_scores = lambda obs: torch.tensor(next(scripted))
    for i in range(agent.improvement_start):
        agent.update(batch(seed=i))
    assert agent.stage is Stage.IMPROVE
    assert agent.best_score.tolist() == [1.0, 1.0]  # the last fit update scored the BC policies
    bc = [_member(agent.actor, i) for i in range(2)]
    assert all(_same(_member(agent.behaviour, i), bc[i]) for i in range(2))

    agent.update(batch(seed=10))  # one PPO step, evaluation [2, 0.5]
    improved_0 = _member(agent.actor, 0)
    assert not _same(improved_0, bc[0])  # the PPO step moved member 0 ...
    assert _same(_member(agent.behaviour, 0), improved_0)  # ... and AM-Q 2 > 1 made it the behaviour
    assert _same(_member(agent.behaviour, 1), bc[1])  # 0.5 < 1: member 1 keeps its BC behaviour
    assert agent.best_score.tolist() == [2.0, 1.0]

    agent.update(batch(seed=11))  # evaluation [1.5, 0.7]: neither beats its best
    assert _same(_member(agent.behaviour, 0), improved_0) and _same(_member(agent.behaviour, 1), bc[1])
    assert not _same(_member(agent.actor, 0), improved_0)  # pi_0 kept training against the same pi_old_0
    assert agent.best_score.tolist() == [2.0, 1.0]

    metrics = agent.update(batch(seed=12))  # evaluation [3, 1.2]: both improve
    for i in range(2):
        assert _same(_member(agent.behaviour, i), _member(agent.actor, i))
    assert agent.best_score.tolist() == pytest.approx([3.0, 1.2])
    assert metrics["amq_replaced"].item() == 2 and metrics["amq_replacements"].item() == 3
    assert metrics["amq_best_1"].item() == pytest.approx(1.2)


def test_a_nan_score_never_replaces_a_behaviour_policy():
    agent = make()
    scripted = iter([[1.0, 1.0], [math.nan, 2.0]])
    agent.amq_scores = lambda obs: torch.tensor(next(scripted))
    for i in range(agent.improvement_start + 1):
        agent.update(batch(seed=i))
    assert agent.best_score.tolist() == [1.0, 2.0]


def test_resume_mid_improvement_continues_identically():
    agent = make()
    for i in range(agent.improvement_start + 2):
        agent.update(batch(seed=i))
    clone = make(seed=7)
    clone.load_state_dict(agent.state_dict())
    for i in range(2):
        torch.manual_seed(100 + i)
        m1 = agent.update(batch(seed=50 + i))
        torch.manual_seed(100 + i)
        m2 = clone.update(batch(seed=50 + i))
        assert {k: v.item() for k, v in m1.items()} == {k: v.item() for k, v in m2.items()}


def test_dynamics_ensemble_learns_a_linear_system_and_its_termination():
    torch.manual_seed(0)
    model = DynamicsEnsemble(2, 1, members=3, hidden=[32, 32])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def data(n):
        obs, action = torch.randn(n, 2), torch.rand(n, 1) * 2 - 1
        next_obs = obs + 0.5 * action
        return obs, action, next_obs, obs[:, 0], (obs[:, 1] > 1.0).float()

    for _ in range(300):
        obs, action, next_obs, reward, terminated = data(128)
        loss = model.loss(obs, action, next_obs, reward, terminated, torch.ones(128))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    obs, action, next_obs, reward, terminated = data(512)
    assert model.mean_error(obs, action, next_obs, reward).mean() < 0.05
    with torch.no_grad():
        _, _, logit = model(obs, action)
    accuracy = ((logit.mean(0) > 0).float() == terminated).float().mean()
    assert accuracy > 0.9
    stepped, _, done = model.step(obs, action, torch.tensor([0, 1]))
    assert stepped.shape == obs.shape and set(done.unique().tolist()) <= {0.0, 1.0}


def _still_model(obs_dim: int, action_dim: int = 1) -> DynamicsEnsemble:
    """A dynamics ensemble that predicts no state change (noise ~1e-4) and never terminates itself."""
    model = DynamicsEnsemble(obs_dim, action_dim, members=2, hidden=[8], box_margin=0.5)
    with torch.no_grad():
        for parameter in model.net.parameters():
            parameter.zero_()
        model.net.layers[-1].bias[..., -1] = -5.0  # termination logit < 0
        model.max_log_var.fill_(-20.0)
        model.min_log_var.fill_(-30.0)
    return model


def test_a_model_step_ends_rows_that_leave_the_box_of_seen_states():
    model = _still_model(2)
    model.observe_states(torch.tensor([[0.0, -1.0], [1.0, 1.0]]), torch.tensor([[2.0, 0.0]]))
    assert model.state_low.tolist() == [0.0, -1.0] and model.state_high.tolist() == [2.0, 1.0]
    # margin 0.5 of the range: dim 0 may lie in [-1, 3], dim 1 in [-2, 2]
    obs = torch.tensor([[2.9, 1.9], [3.1, 0.0], [0.0, -2.1], [-0.9, -1.9], [float("nan"), 0.0]])
    next_obs, _, terminated = model.step(obs, torch.zeros(5, 1), torch.tensor([0, 1]))
    torch.testing.assert_close(next_obs[:4], obs[:4], atol=1e-3, rtol=0)
    assert terminated.tolist() == [0.0, 1.0, 1.0, 0.0, 1.0]


def test_a_model_step_deals_the_rows_to_the_elites_in_equal_shares_each_on_its_own_member():
    torch.manual_seed(0)
    model = DynamicsEnsemble(2, 1, members=4, hidden=[8])
    with torch.no_grad():
        model.max_log_var.fill_(-40.0)  # the Gaussian's noise vanishes: a step gives the member's mean
        model.min_log_var.fill_(-50.0)
    obs, action, elites = torch.randn(11, 2), torch.randn(11, 1), torch.tensor([3, 0, 2])
    next_obs, reward, _ = model.step(obs, action, elites, termination=lambda o, a, n: n[:, 0] > 1e9)
    with torch.no_grad():
        mean, _, _ = model(obs, action)  # (4, 11, 3): every member on every row
    served = []
    for row in range(11):
        close = [
            m for m in range(4)
            if torch.allclose(next_obs[row], obs[row] + mean[m, row, :2], atol=1e-5)
            and torch.isclose(reward[row], mean[m, row, 2], atol=1e-5)
        ]  # fmt: skip
        assert len(close) == 1  # exactly one member made this row's step
        served.append(close[0])
    assert set(served) <= {0, 2, 3}
    assert sorted(served.count(m) for m in (0, 2, 3)) == [3, 4, 4]  # 11 rows over 3 elites


def test_before_any_states_are_seen_every_model_step_terminates():
    model = _still_model(2)
    _, _, terminated = model.step(torch.zeros(3, 2), torch.zeros(3, 1), torch.tensor([0]))
    assert terminated.tolist() == [1.0, 1.0, 1.0]


def test_dynamics_training_records_the_batch_states_in_the_box():
    agent = make(critic_steps=1, bc_steps=1, dynamics_steps=1, improve_steps=1)
    b = batch(seed=3)
    agent.update(b)
    both = torch.cat([b.obs, b.next_obs])
    assert torch.equal(agent.model.dynamics.state_low, both.amin(0))
    assert torch.equal(agent.model.dynamics.state_high, both.amax(0))


# -- online PPO ---------------------------------------------------------------------------------------


def _offline(agent, scores):
    scripted = iter(scores)
    agent.amq_scores = lambda obs: torch.tensor(next(scripted))
    for i in range(agent.offline_steps):
        agent.update(batch(seed=i))


def test_online_ppo_starts_from_the_chosen_members_offline_weights():
    agent = make(improve_steps=2)
    _offline(
        agent, [[1.0, 1.0], [0.5, 3.0], [0.7, 2.0]]
    )  # member 1 is best, certified at the first evaluation
    chosen = _member(agent.behaviour, 1)
    assert not _same(chosen, _member(agent.actor, 1))  # the actor moved on after its certified snapshot
    obs = torch.randn(6, OBS)
    offline_action = agent.act(obs, deterministic=True)
    agent.set_phase(Phase.ONLINE)
    assert _same([p[0] for p in agent.online_actor.parameters()], chosen)
    offline = agent.behaviour.member_dist(obs, torch.tensor([1]))
    online = agent.online_actor.member_dist(obs)
    assert torch.equal(online.loc, offline.loc) and torch.equal(online.scale, offline.scale)  # same sigma too
    assert torch.equal(agent.act(obs, deterministic=True), offline_action)
    with pytest.raises(RuntimeError, match="on-policy"):
        agent.update(batch())


def test_going_online_copies_the_chosen_member_once_and_set_phase_is_idempotent():
    agent = make(improve_steps=1)
    _offline(agent, [[1.0, 1.0], [1.0, 1.0]])
    agent.set_phase(Phase.ONLINE)
    with torch.no_grad():
        for p in agent.online_actor.parameters():
            p.add_(0.1)  # fine-tuning happened
    tuned = [p.clone() for p in agent.online_actor.parameters()]
    agent.set_phase(Phase.ONLINE)  # called again: nothing is copied
    assert _same(list(agent.online_actor.parameters()), tuned)
    clone = make(improve_steps=1, seed=3)
    clone.load_state_dict(agent.state_dict())
    assert clone.phase is Phase.ONLINE
    clone.set_phase(Phase.ONLINE)  # the loop calls it again on resume
    assert _same(list(clone.online_actor.parameters()), tuned)


def _rollout(agent, steps: int = 8, num_envs: int = 2) -> tuple[RolloutBuffer, torch.Tensor]:
    rollout = RolloutBuffer(steps, num_envs, OBS, ACT)
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(num_envs, OBS, generator=g)
    for t in range(steps):
        action, log_prob, value = agent.policy_step(obs)
        next_obs = obs + 0.1 * action.sum(-1, keepdim=True)
        terminated = torch.tensor([t == 5, False])
        truncated = torch.tensor([False, t == 3])
        rollout.add(
            obs,
            action,
            log_prob,
            -next_obs.pow(2).sum(-1),
            value,
            terminated,
            truncated,
            agent.state_value(next_obs),
        )
        obs = torch.where(
            (terminated | truncated).unsqueeze(-1), torch.randn(num_envs, OBS, generator=g), next_obs
        )
    return rollout, obs


def test_policy_step_gives_the_clamped_action_its_log_prob_and_the_value():
    agent = make(improve_steps=1)
    _offline(agent, [[1.0, 1.0], [1.0, 1.0]])
    with pytest.raises(RuntimeError, match=r"set_phase\(Phase.ONLINE\)"):
        make().policy_step(torch.zeros(1, OBS))
    agent.set_phase(Phase.ONLINE)
    obs = torch.randn(64, OBS)
    torch.manual_seed(0)
    action, log_prob, value = agent.policy_step(obs)
    assert action.shape == (64, ACT) and action.abs().max() <= 1.0
    dist = agent.online_actor.member_dist(obs)
    assert torch.allclose(log_prob, dist.log_prob(action).sum(-1))
    assert torch.allclose(value, agent.iql.value(obs))


def test_ppo_update_runs_gae_on_the_rollout_buffer_and_trains_actor_and_value():
    agent = make(improve_steps=1, online_lr_decay_steps=64)
    _offline(agent, [[1.0, 1.0], [1.0, 1.0]])
    agent.set_phase(Phase.ONLINE)
    torch.manual_seed(0)
    rollout, last_obs = _rollout(agent)
    reference = copy.deepcopy(rollout)
    reference.compute_gae(agent.state_value(last_obs), agent.cfg.gamma, agent.cfg.gae_lambda)
    actor_before = [p.clone() for p in agent.online_actor.parameters()]
    value_before = [p.clone() for p in agent.iql.value.parameters()]

    metrics = agent.update_rollout(rollout, last_obs)
    assert torch.equal(rollout.advantage, reference.advantage)
    assert torch.equal(rollout.returns, reference.returns)
    assert not _same(list(agent.online_actor.parameters()), actor_before)
    assert not _same(list(agent.iql.value.parameters()), value_before)
    assert all(v.dim() == 0 and torch.isfinite(v) for v in metrics.values())
    # 16 rows x 2 epochs / minibatches of 8 = 4 actor steps, and the lr decays with env steps
    assert _adam_steps(agent.online_actor_optimizer) == 4
    assert int(agent.online_env_steps) == 16
    assert float(agent.online_actor_optimizer.param_groups[0]["lr"]) == pytest.approx(
        agent.cfg.online_actor_lr * (1 - 16 / 64)
    )


def test_a_finished_offline_agent_without_its_optimizer_moments_fine_tunes_exactly_as_with_them(tmp_path):
    # The committed Uni-O4 snapshot drops its offline optimizers' moments (rl.checkpoint drop-moments):
    # online PPO never steps those optimizers, so fine-tuning from either file must be identical.
    agent = make(improve_steps=2)
    _offline(agent, [[1.0, 1.0], [0.5, 3.0], [0.7, 2.0]])
    full = tmp_path / "full.pt"
    save_checkpoint(full, {"kind": "agent", "agent": agent.state_dict()})
    checkpoint_main(["drop-moments", str(full), str(tmp_path / "small.pt")])
    small = load_checkpoint(tmp_path / "small.pt")["agent"]["state"]
    assert small["bc_optimizer"]["state"] == {} and small["dynamics_optimizer"]["state"] == {}
    assert (
        small["bc_optimizer"]["param_groups"] == agent.state_dict()["state"]["bc_optimizer"]["param_groups"]
    )

    def fine_tuned(path) -> list[torch.Tensor]:
        tuned = make(seed=5, improve_steps=2)
        tuned.load_pretrained(load_checkpoint(path)["agent"])
        assert tuned.offline_steps == 0
        tuned.set_phase(Phase.ONLINE)
        torch.manual_seed(0)
        tuned.update_rollout(*_rollout(tuned))
        return [*tuned.online_actor.parameters(), *tuned.iql.value.parameters()]

    assert _same(fine_tuned(tmp_path / "small.pt"), fine_tuned(full))


def test_drop_moments_refuses_a_run_checkpoint_in_one_line(tmp_path, capsys):
    save_checkpoint(tmp_path / "run.pt", {"kind": "run"})
    with pytest.raises(SystemExit) as refused:
        checkpoint_main(["drop-moments", str(tmp_path / "run.pt"), str(tmp_path / "out.pt")])
    assert refused.value.code == 2 and not (tmp_path / "out.pt").exists()
    assert (
        capsys.readouterr().err
        == f"o2o: error: checkpoint {tmp_path / 'run.pt'}: holds a 'run' checkpoint, not 'agent'\n"
    )


# -- the environment's termination rule and AM-Q's start states ---------------------------------------


def test_termination_rules_end_hopper_and_walker_at_a_fall_as_the_official_rules():
    from envs import termination

    def done(rule, *rows):
        next_obs = torch.tensor(rows)
        return rule(torch.zeros_like(next_obs), torch.zeros(len(rows), 1), next_obs).tolist()

    # hopper: height > 0.7, |angle| < 0.2, finite, obs[1:] < 100 (upper bound only, as written officially)
    assert done(
        termination.hopper, [1.2, 0.1, 5.0], [0.6, 0.0, 0.0], [1.2, -0.3, 0.0], [1.2, 0.0, 150.0]
    ) == [
        False,
        True,
        True,
        True,
    ]
    assert done(termination.hopper, [1.2, 0.0, -150.0], [float("nan"), 0.0, 0.0]) == [False, True]
    # walker2d: 0.8 < height < 2.0, -1 < angle < 1, every entry in (-100, 100)
    assert done(
        termination.walker2d, [1.2, 0.5, 0.0], [2.1, 0.0, 0.0], [1.2, -1.1, 0.0], [1.2, 0.0, -100.0]
    ) == [
        False,
        True,
        True,
        True,
    ]
    # halfcheetah never falls; only the (-100, 100) bounds
    assert done(termination.halfcheetah, [-50.0, 3.0], [0.0, 100.0]) == [False, True]


def test_termination_rule_lookup_by_env_config():
    from envs import EnvConfig, termination

    assert termination.for_env(EnvConfig(id="Hopper-v5")) is termination.hopper
    assert termination.for_env(EnvConfig(id="Walker2d-v5")) is termination.walker2d
    assert termination.for_env(EnvConfig(id="HalfCheetah-v5")) is termination.halfcheetah
    assert termination.for_env(EnvConfig(id="Ant-v5")) is None
    custom = EnvConfig(id="Hopper-v5", kwargs={"exclude_current_positions_from_observation": False})
    assert termination.for_env(custom) is None  # another observation layout: the rule cannot know it


def test_the_env_rule_reaches_the_model_rollouts_and_replaces_the_learned_termination():
    calls = []

    def rule(obs, action, next_obs):
        calls.append(next_obs.shape)
        return next_obs[:, 0] > 100.0  # never, for these states

    cfg = AGENTS["unio4"][1](**{**SMALL, "dynamics_members": 2, "dynamics_elites": 1})  # as _still_model
    agent = build_agent(cfg, OBS, ACT, torch.device("cpu"), termination=rule)
    assert agent.model.termination is rule
    model = _still_model(OBS, ACT)  # its box is empty: without the rule every step would terminate
    _, _, terminated = model.step(torch.zeros(4, OBS), torch.zeros(4, ACT), torch.tensor([0]), rule)
    assert terminated.tolist() == [False] * 4
    agent.model.dynamics = model
    agent.amq_scores(torch.zeros(5, OBS))
    assert calls[-1] == (SMALL["num_policies"] * 5, OBS)  # every policy's rows, stepped through the rule


def test_every_am_q_gate_scores_the_members_from_the_same_saved_start_states():
    agent = make(improve_steps=4, ope_every=1)
    starts = []

    def scores(obs):
        starts.append(obs.clone())
        return torch.zeros(2)

    agent.amq_scores = scores
    last_fit = None
    for i in range(agent.improvement_start + 4):
        b = batch(seed=i)
        if i == agent.improvement_start - 1:
            last_fit = b.obs
        agent.update(b)
    assert len(starts) == 1 + 4  # J* at the start, then 4 gates
    assert all(torch.equal(s, last_fit) for s in starts)
    clone = make(seed=5, improve_steps=4, ope_every=1)
    clone.load_state_dict(agent.state_dict())
    assert torch.equal(clone.amq_start, last_fit)  # saved: a resumed run keeps comparing on them


def test_the_gate_as_before_the_fixes_scores_each_gate_on_its_own_batch_and_ignores_the_env_rule():
    def rule(obs, action, next_obs):
        return next_obs[:, 0] > 100.0

    cfg = AGENTS["unio4"][1](
        **{**SMALL, "improve_steps": 3, "amq_fixed_start": False, "amq_env_termination": False}
    )
    agent = build_agent(cfg, OBS, ACT, torch.device("cpu"), termination=rule)
    assert agent.model.termination is None  # the learned head and the seen-state box end rollouts
    starts = []

    def scores(obs):
        starts.append(obs.clone())
        return torch.zeros(2)

    agent.amq_scores = scores
    batches = [batch(seed=i) for i in range(agent.improvement_start + 3)]
    for b in batches:
        agent.update(b)
    gates = batches[agent.improvement_start :]
    assert torch.equal(starts[0], batches[agent.improvement_start - 1].obs)  # J* from the last FIT batch
    assert len(starts) == 1 + 3 and all(torch.equal(s, b.obs) for s, b in zip(starts[1:], gates, strict=True))


def test_fine_tuning_from_a_pretrained_unio4_has_no_offline_updates_left():
    pretrained = make(improve_steps=2)
    _offline(pretrained, [[1.0, 1.0], [0.5, 3.0], [0.7, 2.0]])  # member 1 certified at the first gate
    agent = make(seed=4, improve_steps=2)
    assert agent.offline_steps == pretrained.offline_steps == agent.stages_end
    agent.load_pretrained(pretrained.state_dict())
    assert (agent.offline_steps, agent.stage, agent.phase) == (0, Stage.DONE, Phase.OFFLINE)
    agent.set_phase(Phase.ONLINE)
    assert _same([p[0] for p in agent.online_actor.parameters()], _member(pretrained.behaviour, 1))
    resumed = make(seed=5, improve_steps=2)
    resumed.load_state_dict(agent.state_dict())
    assert resumed.offline_steps == 0


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_the_warm_start_uni_o4_arm_is_claim_4s_stage_1_with_the_papers_improvement_stage(stage):
    # experiments/warmstart.sh selects [warmstart_<stage>, warmstart_unio4]: the second must win over
    # the pre-training preset's steps.offline=250000, which a Uni-O4 run refuses (it sets its own length).
    cfg = compose_config([f"+experiment=[warmstart_{stage},warmstart_unio4]", "agent=unio4"])
    stats = (torch.zeros(OBS), torch.ones(OBS))
    agent = build_agent(cfg.agent, OBS, ACT, torch.device("cpu"), stats)
    assert (cfg.agent.critic_steps, cfg.agent.bc_steps, cfg.agent.dynamics_steps) == (20000, 20000, 20000)
    assert cfg.agent.critic_hidden == [128, 128] and cfg.agent.improve_steps == 10000
    assert offline_length(cfg, agent) == 30000
