"""Q-function ensembles and state-value networks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from rl.nets.encoders import ObservationEncoder
from rl.nets.mlp import MLP, EnsembleMLP, ObservationNormalizer


class CriticEnsemble(nn.Module):
    """``Q_e(s, a)`` for e = 1..members in one batched pass: returns ``(members, B)``.

    ``action`` may be ``(B, A)`` (one action per state) or ``(B, M, A)`` (M candidate actions per
    state, e.g. CQL's sampled actions); the latter returns ``(members, B, M)``.

    ``encoder`` (pixel observations): the image encoder this critic owns, so the critic's optimizer,
    its Polyak-averaged target copy and its checkpoint all cover it. ``forward`` takes its features
    (``obs_dim = encoder.out_dim``): the agent encodes each batch once and hands the features to
    every network (``rl.agents.encoding``).
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        members: int,
        hidden: Sequence[int],
        layer_norm: bool,
        obs_norm: ObservationNormalizer | None = None,
        encoder: ObservationEncoder | None = None,
    ) -> None:
        super().__init__()
        self.members = members
        self.encoder = encoder
        self.obs_norm = obs_norm or ObservationNormalizer(obs_dim)
        self.net = EnsembleMLP(members, obs_dim + action_dim, hidden, 1, layer_norm)

    def forward(
        self, obs: torch.Tensor, action: torch.Tensor, members: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``members`` (indices) evaluates only those critics: ``(len(members), B[, M])``."""
        obs = self.obs_norm(obs)
        if action.dim() == 3:
            obs = obs.unsqueeze(1).expand(-1, action.shape[1], -1)
        x = torch.cat([obs, action], dim=-1)
        lead = x.shape[:-1]
        q = self.net(x.reshape(-1, x.shape[-1]), members)
        return q.reshape(q.shape[0], *lead)


class ValueNet(nn.Module):
    """``V(s)`` -> ``(B,)``."""

    def __init__(
        self,
        obs_dim: int,
        hidden: Sequence[int],
        layer_norm: bool,
        obs_norm: ObservationNormalizer | None = None,
    ) -> None:
        super().__init__()
        self.obs_norm = obs_norm or ObservationNormalizer(obs_dim)
        self.net = MLP(obs_dim, hidden, 1, layer_norm)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(self.obs_norm(obs)).squeeze(-1)
