"""Flow networks and their losses (rl/nets/flow.py, rl/agents/losses.py), checked against hand values."""

from __future__ import annotations

import math

import pytest
import torch

from rl.agents.losses import (
    ddpm_loss,
    flow_matching_loss,
    gaussian_chain_entropy,
    gaussian_chain_log_prob,
    shortcut_loss,
)
from rl.nets.flow import (
    FlowMLP,
    ResidualMLP,
    ShortcutMLP,
    SinusoidalEmbedding,
    bounded_std,
    euler_sample,
    sample_flow_time,
    sample_shortcut_steps,
)


def test_sinusoidal_embedding_by_hand():
    # dim 4: frequencies 10000^(-0/1) = 1 and 10000^(-1/1) = 1e-4
    got = SinusoidalEmbedding(4)(torch.tensor([0.5]))
    expected = [math.sin(0.5), math.sin(0.5e-4), math.cos(0.5), math.cos(0.5e-4)]
    assert torch.allclose(got, torch.tensor([expected]))


def test_residual_mlp_is_input_blocks_output_and_refuses_uneven_widths():
    net = ResidualMLP(3, [8, 8, 8, 8, 8], 2)
    assert len(net.blocks) == 2 and net.input.out_features == 8 and net.output.out_features == 2
    with torch.no_grad():
        for p in net.blocks.parameters():
            p.zero_()
        x = torch.randn(5, 3)
        assert torch.allclose(net(x), net.output(net.input(x)))  # zero blocks: identity skips
    with pytest.raises(ValueError, match=r"residual MLP widths \[8, 8\]"):
        ResidualMLP(3, [8, 8], 2)


def test_flow_matching_loss_by_hand():
    # v(x, t) = 2x + t; rows: x0 = 0, x1 = 1, t = 0.5 -> x_t = 0.5, v = 1.5, target 1, error 0.25
    #                         x0 = 1, x1 = -1, t = 0  -> x_t = 1,   v = 2,   target -2, error 16
    def velocity(x, t, d, cond):
        assert torch.all(d == 0)
        return 2 * x + t.unsqueeze(-1)

    loss = flow_matching_loss(
        velocity,
        torch.zeros(2, 1),
        torch.tensor([[0.0], [1.0]]),
        torch.tensor([[1.0], [-1.0]]),
        torch.tensor([0.5, 0.0]),
    )
    assert loss.item() == pytest.approx((0.25 + 16.0) / 2)


def test_shortcut_loss_by_hand():
    # s(x, t, d) = x + d + t. Row 0 (flow): x0 = 1, x1 = 3, t = 0.5, delta = 0:
    #   x_t = 0.5 * 1 + 0.5 * 3 = 2, s = 2 + 0 + 0.5 = 2.5, target 3 - 1 = 2 -> error 0.25.
    # Row 1 (self-consistency): x0 = 0, x1 = 2, t = 0.25, d = 0.5: x_t = 0.5;
    #   s1 = s(0.5, 0.25, 0.25) = 1.0; s2 = s(0.5 + 1.0 * 0.25, 0.5, 0.25) = 0.75 + 0.75 = 1.5;
    #   target 1.25; prediction s(0.5, 0.25, 0.5) = 1.25 -> error 0.
    def velocity(x, t, d, cond):
        return x + d.unsqueeze(-1) + t.unsqueeze(-1)

    loss = shortcut_loss(
        velocity,
        torch.zeros(2, 1),
        torch.tensor([[1.0], [0.0]]),
        torch.tensor([[3.0], [2.0]]),
        torch.tensor([0.5, 0.25]),
        torch.tensor([0.7, 0.5]),  # row 0's d is ignored: flow rows use d = 0
        flow_rows=1,
        delta=0.0,
    )
    assert loss.item() == pytest.approx(0.25 / 2)


def test_self_consistency_target_carries_no_gradient():
    weight = torch.tensor(2.0, requires_grad=True)

    def velocity(x, t, d, cond):
        return weight * x

    loss = shortcut_loss(
        velocity,
        torch.zeros(1, 1),
        torch.ones(1, 1),
        torch.ones(1, 1),
        torch.tensor([0.0]),
        torch.tensor([1.0]),
        0,
        0.0,
    )
    loss.backward()
    # x_t = 1; half steps: s1 = 2, s2 = 2 * (1 + 2 * 0.5) = 4, target 3 (held fixed);
    # d loss / d w = 2 (w x - 3) x = -2 (the half steps, which also depend on w, contribute nothing)
    assert loss.item() == pytest.approx(1.0) and weight.grad.item() == pytest.approx(-2.0)


def test_ddpm_loss_by_hand():
    # ab = 0.64: x_t = 0.8 * 1 + 0.6 * 0.5 = 1.1; eps(x, t) = x -> error (1.1 - 0.5)^2 = 0.36
    loss = ddpm_loss(
        lambda x, t: x, torch.ones(1, 1), torch.tensor([0]), torch.tensor([[0.5]]), torch.tensor([0.64])
    )
    assert loss.item() == pytest.approx(0.36)


def test_chain_log_prob_and_entropy_are_normalised_per_number_and_step():
    mean, std = torch.zeros(1, 1, 2), torch.full((1, 1, 2), 0.5)
    chain = torch.tensor([[[1.0, 0.0], [0.5, -0.5]]])
    normal = torch.distributions.Normal
    expected = (
        normal(0.0, 1.0).log_prob(chain[0, 0]).sum() + normal(0.0, 0.5).log_prob(chain[0, 1]).sum()
    ) / 4
    assert gaussian_chain_log_prob(mean, std, chain).item() == pytest.approx(expected.item())
    without_initial = normal(0.0, 0.5).log_prob(chain[0, 1]).sum() / 2
    assert gaussian_chain_log_prob(mean, std, chain, initial=False).item() == pytest.approx(
        without_initial.item()
    )
    entropy = (normal(0.0, 1.0).entropy() * 2 + normal(0.0, 0.5).entropy() * 2) / 4
    assert gaussian_chain_entropy(std).item() == pytest.approx(entropy.item())


def test_bounded_std_spans_its_bounds_with_the_geometric_mean_at_zero():
    std = bounded_std(torch.tensor([-50.0, 0.0, 50.0]), 0.1, 0.4)
    assert torch.allclose(std, torch.tensor([0.1, 0.2, 0.4]))


def test_time_samplers_stay_in_the_unit_interval_and_differ():
    torch.manual_seed(0)
    means = {}
    for kind in ("uniform", "logitnormal", "beta"):
        t = sample_flow_time(4000, kind, torch.device("cpu"))
        assert t.min() >= 0.0 and t.max() < 1.0
        means[kind] = t.mean().item()
    assert means["beta"] < 0.45  # 0.999 (1 - Beta(1.5, 1)): mean 0.4, more weight near the noise end
    with pytest.raises(ValueError, match="time sampler 'gauss'"):
        sample_flow_time(1, "gauss", torch.device("cpu"))


def test_shortcut_step_sizes_stop_where_half_steps_reach_one_over_max_steps():
    torch.manual_seed(0)
    t, d = sample_shortcut_steps(4000, 20, torch.device("cpu"))
    assert set(d.tolist()) == {1.0, 0.5, 0.25, 0.125}  # half steps down to 1/16 >= 1/20
    assert torch.all(t >= 0) and torch.all(t + d <= 1.0) and torch.all(torch.remainder(t, d) == 0)


def test_euler_sample_with_a_constant_velocity_is_clipped_straight_steps():
    net = FlowMLP(obs_dim=2, action_dim=2, hidden=[8, 8, 8])
    with torch.no_grad():
        net.head.output.weight.zero_()
        net.head.output.bias.copy_(torch.tensor([0.8, -0.4]))
    x0 = torch.tensor([[0.5, 0.0]])
    cond = net.encode(torch.zeros(1, 2))
    # K = 2: x1 = clip(0.5 + 0.4, 0 - 0.2) = (0.9, -0.2); x2 = clip(1.3, -0.4) = (1.0, -0.4)
    assert torch.allclose(euler_sample(net, cond, x0, 2), torch.tensor([[1.0, -0.4]]))


def test_shortcut_net_adds_the_condition_to_the_time_and_step_embedding():
    net = ShortcutMLP(obs_dim=3, action_dim=2, hidden=[8, 8, 8], cond_hidden=[8, 16])
    velocity, td = net(
        torch.zeros(4, 2), torch.zeros(4), torch.full((4,), 0.25), net.encode(torch.zeros(4, 3))
    )
    assert velocity.shape == (4, 2) and td.shape == (4, 16)
    with pytest.raises(ValueError, match="must equal time_dim=16"):
        ShortcutMLP(obs_dim=3, action_dim=2, hidden=[8, 8, 8], cond_hidden=[8, 8])
