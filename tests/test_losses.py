"""Each loss against a value worked out by hand on a tiny batch."""

import math

import torch

from rl.agents.base import polyak_update
from rl.agents.encoding import Encoded
from rl.agents.iql import cosine_decay
from rl.agents.losses import (
    advantage_weights,
    conservative_loss,
    cql_gap,
    expectile_loss,
    finite_mean,
    subset_min_target,
    td_loss,
    temperature_loss,
)
from rl.agents.sac import ActorCritic, SACConfig, td_target
from rl.buffers import RolloutBuffer
from rl.nets.actors import tanh_log_det_jacobian


def test_expectile_loss_weights_negative_errors_by_one_minus_tau():
    diff = torch.tensor([2.0, -1.0, 0.5, -3.0])
    # tau = 0.7: positive errors weigh 0.7, negative 0.3
    by_hand = (0.7 * 4.0 + 0.3 * 1.0 + 0.7 * 0.25 + 0.3 * 9.0) / 4
    assert math.isclose(expectile_loss(diff, 0.7).item(), by_hand, rel_tol=1e-6)
    # tau = 0.5 is half the mean squared error
    assert math.isclose(expectile_loss(diff, 0.5).item(), 0.5 * (4 + 1 + 0.25 + 9) / 4, rel_tol=1e-6)


def test_subset_min_target_uses_only_the_chosen_critics_and_masks_terminals():
    next_q = torch.tensor([[5.0, 1.0], [3.0, 7.0], [-10.0, -10.0]])  # 3 critics, 2 rows
    reward = torch.tensor([1.0, 2.0])
    terminated = torch.tensor([0.0, 1.0])
    target = subset_min_target(next_q, torch.tensor([0, 1]), reward, terminated, gamma=0.9)
    # row 0: 1 + 0.9 * min(5, 3); row 1 is terminal: just its reward. Critic 2 (-10) is not in the subset.
    assert torch.allclose(target, torch.tensor([1.0 + 0.9 * 3.0, 2.0]))
    target_all = subset_min_target(next_q, torch.tensor([0, 2]), reward, torch.zeros(2), gamma=0.5)
    assert torch.allclose(target_all, torch.tensor([1.0 - 5.0, 2.0 - 5.0]))


def test_temperature_loss_and_its_gradient_sign():
    log_alpha = torch.tensor(math.log(0.5), requires_grad=True)
    log_prob = torch.tensor([-1.0, -3.0])  # entropy estimate = 2
    loss = temperature_loss(log_alpha, log_prob, target_entropy=-6.0)
    assert math.isclose(loss.item(), 0.5 * (2.0 + 6.0), rel_tol=1e-6)
    loss.backward()
    # entropy (2) above target (-6): gradient descent must lower alpha
    assert log_alpha.grad.item() > 0


def test_cql_gap_logsumexp_with_importance_sampling_by_hand():
    # one critic, one state, one sample per proposal
    q_data = torch.tensor([[1.0]])
    q_random, q_current, q_next = torch.tensor([[[2.0]]]), torch.tensor([[[0.5]]]), torch.tensor([[[3.0]]])
    log_q_random = 2 * math.log(0.5)  # |A| = 2
    log_pi_current, log_pi_next = torch.tensor([[-1.0]]), torch.tensor([[0.5]])
    gap = cql_gap(
        q_data, q_random, q_current, q_next, log_q_random, log_pi_current, log_pi_next, temperature=1.0
    )
    terms = [2.0 - log_q_random, 0.5 + 1.0, 3.0 - 0.5]
    by_hand = math.log(sum(math.exp(t) for t in terms)) - 1.0
    assert math.isclose(gap.item(), by_hand, rel_tol=1e-6)


def test_cql_gap_temperature_and_no_importance_sampling():
    q_data = torch.tensor([[0.0]])
    q = torch.tensor([[[1.0]]])
    zeros = torch.zeros(1, 1)
    gap = cql_gap(q_data, q, q, q, 0.0, zeros, zeros, temperature=2.0, importance_sample=False)
    # candidates (1, 1, 1, 0); T * (logsumexp(c / T) - log 4)
    by_hand = 2.0 * (math.log(3 * math.exp(0.5) + 1.0) - math.log(4))
    assert math.isclose(gap.item(), by_hand, rel_tol=1e-6)


def test_calql_floors_policy_actions_at_the_mc_return_but_not_random_actions():
    q_data = torch.tensor([[0.0, 0.0]])
    q_random = torch.tensor([[[-5.0], [-5.0]]])
    q_current = torch.tensor([[[-2.0], [4.0]]])
    q_next = torch.tensor([[[-3.0], [1.0]]])
    zeros = torch.zeros(2, 1)
    mc = torch.tensor([1.5, 0.0])
    gap = cql_gap(q_data, q_random, q_current, q_next, 0.0, zeros, zeros, 1.0, mc_return=mc)
    row0 = math.log(math.exp(-5.0) + math.exp(1.5) + math.exp(1.5))  # both policy Qs lifted to 1.5
    row1 = math.log(math.exp(-5.0) + math.exp(4.0) + math.exp(1.0))  # already above the floor 0
    assert math.isclose(gap.item(), (row0 + row1) / 2, rel_tol=1e-6)
    # a floor below every Q changes nothing; random actions are never floored
    unfloored = cql_gap(q_data, q_random, q_current, q_next, 0.0, zeros, zeros, 1.0)
    low = cql_gap(
        q_data, q_random, q_current, q_next, 0.0, zeros, zeros, 1.0, mc_return=torch.tensor([-9.0, -9.0])
    )
    assert torch.allclose(unfloored, low)


def test_iql_advantage_weights_are_clipped():
    q, v = torch.tensor([0.0, 1.0, 10.0]), torch.tensor([1.0, 1.0, 0.0])
    w = advantage_weights(q, v, beta=2.0, max_weight=100.0)
    assert torch.allclose(w, torch.tensor([math.exp(-2.0), 1.0, 100.0]))


def test_tanh_log_det_jacobian_matches_the_direct_formula():
    u = torch.tensor([[0.3, -1.2, 2.0]])
    direct = torch.log(1 - torch.tanh(u) ** 2).sum(-1)
    assert torch.allclose(tanh_log_det_jacobian(u), direct, atol=1e-6)


def test_gae_cuts_at_terminals_and_bootstraps_through_truncation():
    gamma, lam = 0.9, 0.5
    buf = RolloutBuffer(steps=3, num_envs=1, obs_layout=1, action_dim=1)
    values = [1.0, 2.0, 3.0]
    rewards = [1.0, 1.0, 1.0]
    # step 0 truncated (time limit; V(true final obs) = 10), step 1 ordinary, step 2 terminated
    flags = [(False, True, 10.0), (False, False, 0.0), (True, False, 0.0)]
    for v, r, (term, trunc, boot) in zip(values, rewards, flags, strict=True):
        buf.add(
            torch.zeros(1, 1),
            torch.zeros(1, 1),
            torch.zeros(1),
            torch.tensor([r]),
            torch.tensor([v]),
            torch.tensor([term]),
            torch.tensor([trunc]),
            torch.tensor([boot]),
        )
    buf.compute_gae(last_value=torch.tensor([100.0]), gamma=gamma, lam=lam)
    d2 = 1.0 - 3.0  # terminal: no bootstrap, last_value ignored
    d1 = 1.0 + gamma * 3.0 - 2.0
    d0 = 1.0 + gamma * 10.0 - 1.0  # truncation bootstraps from the true final obs, not V(s_1)
    a2, a1 = d2, d1 + gamma * lam * d2
    a0 = d0  # the episode ended at step 0: no advantage flows back across the reset
    assert torch.allclose(buf.advantage[:, 0], torch.tensor([a0, a1, a2]))
    assert torch.allclose(buf.returns[:, 0], torch.tensor([a0 + 1.0, a1 + 2.0, a2 + 3.0]))


def test_polyak_update_moves_targets_by_tau():
    source, target = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        source.weight.fill_(1.0), target.weight.fill_(0.0), source.bias.fill_(2.0), target.bias.fill_(0.0)
    polyak_update(target, source, 0.1)
    assert torch.allclose(target.weight, torch.full((1, 2), 0.1)) and torch.allclose(
        target.bias, torch.tensor([0.2])
    )


def test_td_loss_is_the_mean_over_members_and_rows():
    q = torch.tensor([[1.0, 2.0], [3.0, 5.0]])  # 2 critics x 2 rows
    target = torch.tensor([0.0, 1.0])
    # squared errors 1, 1, 9, 16: their mean (official), not the sum over members of row means (13.5)
    assert math.isclose(td_loss(q, target).item(), (1 + 1 + 9 + 16) / 4, rel_tol=1e-6)


def test_conservative_loss_is_the_mean_over_the_members_of_the_subset():
    gap = torch.tensor([0.5, 1.5])  # cql_gap of the 2 critics in the subset
    assert math.isclose(conservative_loss(gap, 5.0).item(), 5.0 * (0.5 + 1.5) / 2, rel_tol=1e-6)
    # Lagrange form: weight * mean(gap - target_gap)
    assert math.isclose(conservative_loss(gap, 2.0, 0.8).item(), 2.0 * (-0.3 + 0.7) / 2, rel_tol=1e-6)


def test_the_cql_weight_per_critic_relative_to_its_td_error_is_the_official_one():
    """10 critics, a 2-critic CQL subset: d(loss)/d(gap_e) over d(loss)/d(sq. error of e) is
    (alpha / 2) / (1 / 10) = 5 alpha, as the official means give (a sum over members gives alpha)."""
    q = torch.zeros(10, 1, requires_grad=True)
    gap = torch.zeros(2, requires_grad=True)
    loss = td_loss(q, torch.ones(1)) + conservative_loss(gap, 5.0)
    dq, dgap = torch.autograd.grad(loss, (q, gap))
    td_weight = -dq[0, 0].item() / 2.0  # d(q - 1)^2/dq = -2 at q = 0
    assert math.isclose(dgap[0].item() / td_weight, 5 * 5.0, rel_tol=1e-6)


def test_max_target_backup_takes_the_best_sampled_next_action_of_the_subset_min():
    next_q = torch.tensor(  # [critic, row, sampled next action]
        [
            [[1.0, 5.0, 2.0], [0.0, -1.0, 3.0]],
            [[4.0, 2.0, 6.0], [1.0, 2.0, 2.5]],
            [[-9.0, -9.0, -9.0], [-9.0, -9.0, -9.0]],
        ]
    )
    ac = ActorCritic(
        actor=lambda obs, samples: (torch.zeros(2, samples, 1), torch.zeros(2, samples)),
        critic=None,
        target_critic=lambda obs, action, members: next_q[members],  # as CriticEnsemble does
        log_alpha=torch.zeros(()),
        actor_optimizer=None,
        critic_optimizer=None,
        temperature_optimizer=None,
        target_entropy=-1.0,
    )
    batch = Encoded(
        torch.zeros(2, 1),
        torch.zeros(2, 1),
        torch.tensor([1.0, 2.0]),
        torch.zeros(2, 1),
        torch.zeros(2),
        torch.zeros(2),
        target_next_obs=torch.zeros(2, 1),
    )
    cfg = SACConfig(gamma=0.9, backup_samples=3)
    target = td_target(ac, cfg, batch, torch.tensor([0, 1]), batch.next_obs, max_backup=True)
    # min over critics 0 and 1 per sample: row 0 (1, 2, 2) -> 2; row 1 (0, -1, 2.5) -> 2.5
    assert torch.allclose(target, torch.tensor([1.0 + 0.9 * 2.0, 2.0 + 0.9 * 2.5]))


def test_cosine_decay_by_hand():
    assert [cosine_decay(2.0, k, 4) for k in (0, 2, 4, 9)] == [2.0, 1.0, 0.0, 0.0]
    assert math.isclose(cosine_decay(2.0, 1, 4), 2.0 * (1 + math.cos(math.pi / 4)) / 2)


def test_finite_mean_leaves_out_online_rows_whose_return_is_not_known_yet():
    assert finite_mean(torch.tensor([1.0, -math.inf, 3.0])).item() == 2.0
    assert finite_mean(torch.tensor([-math.inf, -math.inf])).isnan()
