"""Conservative Q-Learning, CQL(H), and Cal-QL, on the SAC family's steps (``sac.py``).

The critic loss is the TD loss (mean over members and rows) plus the mean, over the critics ``e`` in
the same random subset that formed the TD target (WSRL: with 10 critics the conservative term
touches 2 per step, TD covers all), and over rows, of

    alpha_cql * [ T * logsumexp_j((Q_e(s, a_j) - log q(a_j)) / T) - Q_e(s, a_data) ]

over ``cql_samples`` actions from each of three proposals, all evaluated at ``s``:
uniform on [-1, 1]^|A| (``log q = |A| log 0.5``), ``pi(.|s)`` and ``pi(.|s')`` (``log q`` = their
log-densities). The actor and temperature losses are SAC's.

Cal-QL (``calql=True``) floors the Q-values of the two policy proposals at the Monte-Carlo
return-to-go of the data row, ``max(Q, G)``, *before* the importance-sampling correction; random
actions stay unbounded (Nakamoto et al. 2023; WSRL ``cql.py``; CORL ``cal_ql.py``). Online rows
carry ``G = -inf`` until their episode ends, which leaves them unfloored. As the official
fine-tuning, Cal-QL's first online update waits for the env's time limit in steps
(``first_update_waits_an_episode_limit``), so its first batches hold finished episodes.

Options from the official configs: ``cql_importance_sample=False`` (Kitchen) appends ``Q(s, a_data)``
to the logsumexp and subtracts ``log(3 M + 1)``; ``cql_lagrange=True`` (AntMaze) tunes a
multiplier so the gap stays near ``cql_target_gap``.

One ``update``: ``utd`` critic steps (``cql_critic_loss``) on minibatches, then SAC's actor and
temperature step on all rows. ``cql_critic_loss`` is shared with WSRL's offline phase and FamO2O-CQL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rl.agents.base import Agent, Part, adam
from rl.agents.encoding import Encoded
from rl.agents.losses import conservative_loss, cql_gap, finite_mean, td_loss
from rl.agents.sac import (
    ActorCritic,
    SACConfig,
    actor_temperature_step,
    apply_critic_loss,
    critic_subset,
    td_target,
)
from rl.buffers.batch import Batch, Obs
from rl.nets import ObservationEncoder, ObservationNormalizer


@dataclass
class CQLConfig(SACConfig):
    name: str = "cql"
    max_target_backup: bool = True
    """The TD target's max over ``backup_samples`` next actions, on as in the official CQL config
    (WSRL ``experiments/configs/cql_config.py``: ``cql_max_target_backup=True``) that pre-trains
    WSRL's locomotion agents."""
    critic_layer_norm: bool = False
    """Plain critics, as the official WSRL locomotion CQL and CORL's CQL (WSRL's own ensemble, in
    ``wsrl.py``, has LayerNorm)."""
    cql_alpha: float = 5.0
    cql_samples: int = 10
    """Actions per proposal (uniform, pi(.|s), pi(.|s')) per state."""
    cql_temperature: float = 1.0
    cql_importance_sample: bool = True
    calql: bool = False
    cql_lagrange: bool = False
    cql_target_gap: float = 0.8
    cql_lagrange_lr: float = 3e-4


@dataclass
class CalQLConfig(CQLConfig):
    name: str = "calql"
    calql: bool = True


@dataclass
class CQLLagrange:
    """AntMaze's tuned CQL weight: ``exp(log_multiplier) * cql_alpha``, pushed up while the gap exceeds
    ``cql_target_gap`` and down while it is below."""

    log_multiplier: torch.Tensor
    optimizer: torch.optim.Optimizer

    @classmethod
    def build(cls, cfg: CQLConfig, device: torch.device) -> CQLLagrange | None:
        if not cfg.cql_lagrange:
            return None
        log_multiplier = torch.zeros((), device=device, requires_grad=True)
        return cls(log_multiplier, adam([log_multiplier], cfg.cql_lagrange_lr))

    def parts(self) -> dict[str, Part]:
        return {"log_cql_multiplier": self.log_multiplier, "cql_multiplier_optimizer": self.optimizer}


def cql_critic_loss(
    ac: ActorCritic,
    cfg: CQLConfig,
    batch: Encoded,
    policy_inputs: tuple[torch.Tensor, torch.Tensor],
    lagrange: CQLLagrange | None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The TD loss plus the conservative term; ``policy_inputs`` are the actor's inputs at s and s'
    (``batch.obs`` and ``batch.next_obs``, or FamO2O's ``[s, e(beta)]``). With ``lagrange`` this also
    steps the multiplier."""
    m, action_dim = cfg.cql_samples, batch.action.shape[-1]
    obs_input, next_input = policy_inputs
    subset = critic_subset(cfg, batch.reward.device)
    target = td_target(ac, cfg, batch, subset, next_input, cfg.max_target_backup)
    q_all = ac.critic(batch.obs, batch.action)
    td = td_loss(q_all, target)

    with torch.no_grad():
        current_actions, log_pi_current = ac.actor(obs_input, m)
        next_actions, log_pi_next = ac.actor(next_input, m)
    random_actions = torch.rand(len(batch), m, action_dim, device=batch.action.device) * 2.0 - 1.0
    proposals = torch.cat([random_actions, current_actions, next_actions], dim=1)  # (B, 3M, A)
    q_random, q_current, q_next = ac.critic(batch.obs, proposals, members=subset).split(m, dim=-1)
    gap = cql_gap(
        q_all[subset],
        q_random,
        q_current,
        q_next,
        action_dim * math.log(0.5),
        log_pi_current,
        log_pi_next,
        cfg.cql_temperature,
        cfg.cql_importance_sample,
        batch.mc_return if cfg.calql else None,
    )
    metrics = {
        "td_loss": td.detach(),
        "cql_gap": gap.detach().mean(),
        "q_mean": q_all.detach().mean(),
        # Beside q_mean, the Q-calibration check of a pre-training (is Q near the data's discounted
        # returns?); online rows carry G = -inf until their episode ends and are left out.
        "mc_return_mean": finite_mean(batch.mc_return),
    }
    if lagrange is None:
        conservative = conservative_loss(gap, cfg.cql_alpha)
    else:
        multiplier = lagrange.log_multiplier.exp().clamp(0.0, 1e6)
        conservative = conservative_loss(gap, multiplier.detach() * cfg.cql_alpha, cfg.cql_target_gap)
        multiplier_loss = -conservative_loss(gap.detach(), multiplier * cfg.cql_alpha, cfg.cql_target_gap)
        lagrange.optimizer.zero_grad(set_to_none=True)
        multiplier_loss.backward()
        lagrange.optimizer.step()
        metrics["cql_multiplier"] = multiplier.detach()
    loss = td + conservative
    metrics["critic_loss"] = loss.detach()
    return loss, metrics


class CQL(Agent):
    name = "cql"
    config_class = CQLConfig
    takes_images = True

    def __init__(
        self,
        cfg: CQLConfig,
        obs_dim: int,
        action_dim: int,
        device: torch.device,
        obs_norm: ObservationNormalizer | None = None,
        encoder: ObservationEncoder | None = None,
    ) -> None:
        super().__init__(cfg, obs_dim, action_dim, device)
        self.ac = ActorCritic.build(cfg, obs_dim, action_dim, device, obs_norm, encoder=encoder)
        self.lagrange = CQLLagrange.build(cfg, device)

    def parts(self) -> dict[str, Part]:
        return self.ac.parts() | (self.lagrange.parts() if self.lagrange else {})

    @property
    def batch_size(self) -> int:
        return self.cfg.batch_size * self.cfg.utd

    @property
    def first_update_waits_an_episode_limit(self) -> bool:
        # The official fine-tuning (WSRL finetune.py) starts Cal-QL's online updates only after
        # max(batch's online share, env._max_episode_steps) steps; CQL waits for the share alone.
        return self.cfg.calql

    def act(self, obs: Obs, deterministic: bool = False) -> torch.Tensor:
        return self.ac.act(self.ac.features(obs), deterministic)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        seen = []
        for minibatch in batch.split(cfg.utd):
            minibatch = self.ac.encode(minibatch)
            inputs = (minibatch.obs, minibatch.next_obs)
            loss, metrics = cql_critic_loss(self.ac, cfg, minibatch, inputs, self.lagrange)
            apply_critic_loss(self.ac, loss, cfg.tau)
            seen.append(minibatch)
        return metrics | actor_temperature_step(self.ac, Encoded.cat(seen))
