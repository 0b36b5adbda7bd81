import torch

from rl.nets import CriticEnsemble, EnsembleMLP, TanhGaussianActor


def _member_forward(ens: EnsembleMLP, member: int, x: torch.Tensor) -> torch.Tensor:
    """The same network written as an ordinary per-member loop of Linear/LayerNorm/ReLU."""
    for layer in ens.layers:
        if isinstance(layer, torch.nn.ReLU):
            x = torch.relu(x)
        elif hasattr(layer, "weight") and layer.weight.dim() == 3 and layer.weight.shape[1] == x.shape[-1]:
            x = x @ layer.weight[member] + layer.bias[member, 0]
        else:  # EnsembleLayerNorm
            x = (
                torch.nn.functional.layer_norm(x, x.shape[-1:]) * layer.weight[member, 0]
                + layer.bias[member, 0]
            )
    return x


def test_stacked_ensemble_equals_each_member_evaluated_alone():
    torch.manual_seed(0)
    ens = EnsembleMLP(members=5, in_dim=7, hidden=[16, 16], out_dim=1, layer_norm=True)
    x = torch.randn(11, 7)
    out = ens(x)
    assert out.shape == (5, 11, 1)
    for m in range(5):
        assert torch.allclose(out[m], _member_forward(ens, m, x), atol=1e-5)


def test_members_are_initialised_differently_and_subsets_select_them():
    critic = CriticEnsemble(obs_dim=3, action_dim=2, members=4, hidden=[8], layer_norm=False)
    obs, act = torch.randn(6, 3), torch.rand(6, 2)
    q = critic(obs, act)
    assert q.shape == (4, 6) and not torch.allclose(q[0], q[1])
    subset = torch.tensor([2, 0])
    assert torch.allclose(critic(obs, act, members=subset), q[subset], atol=1e-6)
    many = torch.rand(6, 5, 2)  # 5 candidate actions per state
    q_many = critic(obs, many)
    assert q_many.shape == (4, 6, 5)
    assert torch.allclose(q_many[:, :, 3], critic(obs, many[:, 3]), atol=1e-6)


def test_tanh_gaussian_log_prob_agrees_with_sampling():
    torch.manual_seed(0)
    actor = TanhGaussianActor(obs_dim=3, action_dim=2, hidden=[16], layer_norm=True)
    obs = torch.randn(4, 3)
    action, log_prob = actor(obs)
    assert action.abs().max() < 1
    assert torch.allclose(actor.log_prob(obs, action), log_prob, atol=1e-3)
    samples, log_probs = actor(obs, num_samples=7)
    assert samples.shape == (4, 7, 2) and log_probs.shape == (4, 7)


def test_actor_sample_is_the_same_draw_as_forward_without_the_log_density():
    actor = TanhGaussianActor(obs_dim=3, action_dim=2, hidden=[16], layer_norm=False)
    obs = torch.randn(8, 3)
    torch.manual_seed(4)
    expected = actor(obs)[0]
    after_forward = torch.rand(1)
    torch.manual_seed(4)
    assert torch.equal(actor.sample(obs), expected)
    assert torch.equal(torch.rand(1), after_forward)  # the random stream continues identically
    generator = torch.Generator().manual_seed(4)
    assert torch.equal(actor.sample(obs, generator), expected)
