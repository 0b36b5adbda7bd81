"""Policy heads: a tanh-squashed Gaussian (SAC/CQL/WSRL), a plain Gaussian (IQL/AWR) and a stacked
ensemble of plain Gaussians (Uni-O4)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rl.nets.mlp import MLP, EnsembleMLP, ObservationNormalizer


def tanh_log_det_jacobian(pre_tanh: torch.Tensor) -> torch.Tensor:
    """``sum_i log(1 - tanh(u_i)^2)``, written in the numerically stable softplus form."""
    return (2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))).sum(-1)


class TanhGaussianActor(nn.Module):
    """``a = tanh(u)``, ``u ~ N(mu(s), sigma(s))``; sigma is clipped to ``[min_std, max_std]``.

    WSRL clips the standard deviation to [1e-5, 10]; those are the defaults.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: Sequence[int],
        layer_norm: bool,
        min_std: float = 1e-5,
        max_std: float = 10.0,
        obs_norm: ObservationNormalizer | None = None,
    ) -> None:
        super().__init__()
        self.obs_norm = obs_norm or ObservationNormalizer(obs_dim)
        self.net = MLP(obs_dim, hidden, 2 * action_dim, layer_norm)
        self.log_std_min, self.log_std_max = math.log(min_std), math.log(max_std)

    def _dist(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(self.obs_norm(obs)).chunk(2, dim=-1)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max).exp()

    def forward(self, obs: torch.Tensor, num_samples: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised sample and its log-density: ``(B, A), (B,)``, or ``(B, M, A), (B, M)``."""
        mean, std = self._dist(obs)
        if num_samples is not None:
            mean, std = mean.unsqueeze(1), std.unsqueeze(1)
            noise = torch.randn(mean.shape[0], num_samples, mean.shape[-1], device=mean.device)
        else:
            noise = torch.randn_like(mean)
        pre_tanh = mean + std * noise
        log_prob = torch.distributions.Normal(mean, std).log_prob(pre_tanh).sum(-1) - tanh_log_det_jacobian(
            pre_tanh
        )
        return torch.tanh(pre_tanh), log_prob

    def sample(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A stochastic action without its log-density, which acting never reads: the same draw as
        ``forward(obs)[0]``, minus the dozen small ops that cost as much as the network at act time."""
        mean, std = self._dist(obs)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return torch.tanh(mean + std * noise)

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self._dist(obs)[0])

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Log-density of given actions (inside (-1, 1); dataset actions are clipped to 1 - 1e-5)."""
        mean, std = self._dist(obs)
        pre_tanh = torch.atanh(action)
        return torch.distributions.Normal(mean, std).log_prob(pre_tanh).sum(-1) - tanh_log_det_jacobian(
            pre_tanh
        )


class GaussianActor(nn.Module):
    """``a ~ N(tanh(mu(s)), sigma)`` with a state-independent log-std, clamped to [-1, 1] when acting.

    Not squashed: the log-density of dataset actions is exact, which advantage-weighted regression
    (IQL) and PPO ratios need. This is CORL's IQL policy.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: Sequence[int],
        layer_norm: bool = False,
        log_std_range: tuple[float, float] = (-5.0, 2.0),
        obs_norm: ObservationNormalizer | None = None,
    ) -> None:
        super().__init__()
        self.obs_norm = obs_norm or ObservationNormalizer(obs_dim)
        self.net = MLP(obs_dim, hidden, action_dim, layer_norm)
        self.log_std = nn.Parameter(torch.zeros(action_dim))
        self.log_std_range = log_std_range

    def dist(self, obs: torch.Tensor) -> torch.distributions.Normal:
        mean = torch.tanh(self.net(self.obs_norm(obs)))
        std = self.log_std.clamp(*self.log_std_range).exp()
        return torch.distributions.Normal(mean, std.expand_as(mean))

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.dist(obs).log_prob(action).sum(-1)

    def sample(self, obs: torch.Tensor) -> torch.Tensor:
        return self.dist(obs).sample().clamp(-1.0, 1.0)

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        return self.dist(obs).mean


class GaussianPolicyEnsemble(nn.Module):
    """``members`` Gaussian policies stacked: ``[mu, x] = tanh(MLP(s))``, ``log sigma = low + (high - low)(x + 1)/2``.

    Uni-O4's policy (spec §2.4), in both phases. Not squashed: actions are clamped to [-1, 1] when
    acting, and dataset actions have an exact density. ``obs`` may be ``(B, D)`` (every member sees
    the same states) or ``(members, B, D)``.
    """

    def __init__(
        self,
        members: int,
        obs_dim: int,
        action_dim: int,
        hidden: Sequence[int],
        log_std_range: Sequence[float],
        obs_norm: ObservationNormalizer | None = None,
    ) -> None:
        super().__init__()
        self.obs_norm = obs_norm or ObservationNormalizer(obs_dim)
        self.members = members
        self.net = EnsembleMLP(members, obs_dim, hidden, 2 * action_dim)
        self.log_std_low, self.log_std_high = log_std_range

    def dist(self, obs: torch.Tensor, members: torch.Tensor | None = None) -> torch.distributions.Normal:
        """Batch shape ``(members, B, A)`` (or ``(len(members), B, A)``)."""
        mean, x = torch.tanh(self.net(self.obs_norm(obs), members)).chunk(2, dim=-1)
        log_std = self.log_std_low + (self.log_std_high - self.log_std_low) * 0.5 * (x + 1.0)
        return torch.distributions.Normal(mean, log_std.exp())

    def member_dist(
        self, obs: torch.Tensor, member: torch.Tensor | None = None
    ) -> torch.distributions.Normal:
        """One member's distribution, batch shape ``(B, A)``; ``member`` is a 1-element index tensor
        (None for a one-member ensemble)."""
        dist = self.dist(obs, member)
        return torch.distributions.Normal(dist.loc.squeeze(0), dist.scale.squeeze(0))

    @torch.no_grad()
    def copy_members_from(self, source: GaussianPolicyEnsemble, mask: torch.Tensor) -> None:
        """The members where ``mask`` ``(members,)`` is true take ``source``'s weights."""
        for t, s in zip(self.net.parameters(), source.net.parameters(), strict=True):
            t.copy_(torch.where(mask.view(-1, *[1] * (t.dim() - 1)), s, t))

    @torch.no_grad()
    def copy_member_from(self, source: GaussianPolicyEnsemble, member: torch.Tensor) -> None:
        """This one-member ensemble takes member ``member`` (1-element index) of ``source``."""
        for t, s in zip(self.net.parameters(), source.net.parameters(), strict=True):
            t.copy_(s[member])
