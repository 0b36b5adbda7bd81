"""Soft Actor-Critic with a critic ensemble, random-subset-min targets and a UTD ratio.

This is the online agent of WSRL (and, with ``num_critics=10, subset_size=2``, of RLPD/REDQ-style
training). One ``update`` call receives ``batch_size * utd`` rows and does, in order:
1. ``utd`` critic steps, one per disjoint minibatch of ``batch_size`` rows, each followed by a
   Polyak update of the target critics;
2. one actor step and one temperature step on all rows (WSRL's ``update_high_utd``).

Losses (spec §1.3):
- target  ``y = r + gamma (1 - terminated) min_{k in K} Qbar_k(s', a')``, ``a' ~ pi(.|s')``, with K a
  random subset of ``subset_size`` critics; no entropy term in the backup unless ``backup_entropy``;
  with ``max_target_backup`` (AntMaze) the max over ``backup_samples`` next actions of that min.
- critic  ``sum_e mean_batch (Q_e(s, a) - y)^2``.
- actor   ``mean_s [alpha log pi(a~|s) - min_e Q_e(s, a~)]``, min over *all* critics (as WSRL).
- alpha   ``alpha * (H_hat - H_target)``, ``H_hat = -mean log pi(a'|s')`` at next states,
  ``H_target = -|A|``, ``alpha = exp(log_alpha)``.

Decisions on the official code's pitfalls:
- Subset K is drawn *without* replacement (RLPD's choice). WSRL's ``randint`` draws with
  replacement, so with 10 critics it sometimes takes the min over a single member, and with 2
  critics it would not be clipped double-Q half of the time.
- The critic loss sums the members' mean squared errors, so each member's gradient does not shrink
  with the ensemble size (WSRL averages over members), and CQL's regulariser (cql.py) keeps the
  same weight relative to each member's TD error whatever the ensemble size.
- The target entropy is -|A| (WSRL's fix f73d11e, replacing -|A|/2).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from rl.agents.base import Agent, AgentConfig, adam, polyak_update
from rl.buffers.batch import Batch
from rl.nets import CriticEnsemble, ObservationNormalizer, TanhGaussianActor


@dataclass
class SACConfig(AgentConfig):
    name: str = "sac"
    num_critics: int = 2
    subset_size: int = 2
    """Critics in the random subset whose minimum forms the TD target."""
    utd: int = 1
    """Critic updates per ``update`` call (each on its own minibatch of ``batch_size`` rows)."""
    actor_lr: float = 1e-4
    critic_lr: float = 3e-4
    temperature_lr: float = 1e-4
    initial_temperature: float = 1.0
    target_entropy: float | None = None
    """None means -|A|."""
    tau: float = 5e-3
    critic_hidden: list[int] = field(default_factory=lambda: [256, 256])
    critic_layer_norm: bool = True
    actor_hidden: list[int] = field(default_factory=lambda: [256, 256])
    actor_layer_norm: bool = False
    backup_entropy: bool = False
    max_target_backup: bool = False
    backup_samples: int = 10


def subset_min_target(
    next_q: torch.Tensor,
    subset: torch.Tensor,
    reward: torch.Tensor,
    terminated: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """``r + gamma (1 - terminated) min_{k in subset} next_q[k]``; ``next_q`` is ``(members, B)``."""
    return reward + gamma * (1.0 - terminated) * next_q[subset].min(0).values


def temperature_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """``alpha * (-mean(log_prob) - target_entropy)``; its gradient lowers alpha when entropy is high."""
    return log_alpha.exp() * (-log_prob.detach().mean() - target_entropy)


class SAC(Agent):
    name = "sac"
    config_class = SACConfig

    def __init__(
        self,
        cfg: SACConfig,
        obs_dim: int,
        action_dim: int,
        device: torch.device,
        obs_norm: ObservationNormalizer | None = None,
    ) -> None:
        super().__init__(cfg, obs_dim, action_dim, device)
        if not 1 <= cfg.subset_size <= cfg.num_critics:
            raise ValueError(
                f"agent.subset_size={cfg.subset_size} must lie in [1, num_critics={cfg.num_critics}]"
            )
        self.actor = TanhGaussianActor(
            obs_dim, action_dim, cfg.actor_hidden, cfg.actor_layer_norm, obs_norm=obs_norm
        ).to(device)
        self.critic = CriticEnsemble(
            obs_dim, action_dim, cfg.num_critics, cfg.critic_hidden, cfg.critic_layer_norm, obs_norm=obs_norm
        ).to(device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = (
            torch.tensor(float(cfg.initial_temperature), device=device).log().requires_grad_(True)
        )
        self.target_entropy = -float(action_dim) if cfg.target_entropy is None else cfg.target_entropy
        self.actor_optimizer = adam(self.actor.parameters(), cfg.actor_lr)
        self.critic_optimizer = adam(self.critic.parameters(), cfg.critic_lr)
        self.temperature_optimizer = adam([self.log_alpha], cfg.temperature_lr)

    @property
    def critic_steps(self) -> int:
        """Critic steps per ``update`` (the update-to-data ratio)."""
        return self.cfg.utd

    @property
    def batch_size(self) -> int:
        return self.cfg.batch_size * self.critic_steps

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        return self.actor.deterministic(obs) if deterministic else self.actor.sample(obs)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        for minibatch in batch.split(self.critic_steps):
            metrics = self.update_critic(minibatch)
        metrics.update(self.update_actor_and_temperature(batch))
        return metrics

    # -- critic -----------------------------------------------------------------------------------

    def td_target(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The TD target ``y`` (B,) and the subset of critics it used."""
        cfg = self.cfg
        subset = torch.randperm(cfg.num_critics, device=self.device)[: cfg.subset_size]
        with torch.no_grad():
            if cfg.max_target_backup:
                next_action, next_log_prob = self.actor(batch.next_obs, cfg.backup_samples)  # (B, M, A)
                next_q = self.target_critic(batch.next_obs, next_action)[subset].min(0).values  # (B, M)
                best = next_q.argmax(1, keepdim=True)
                next_q = next_q.gather(1, best).squeeze(1).unsqueeze(0)
                next_log_prob = next_log_prob.gather(1, best).squeeze(1)
                subset_for_target = torch.zeros(1, dtype=torch.long, device=self.device)
            else:
                next_action, next_log_prob = self.actor(batch.next_obs)
                next_q = self.target_critic(batch.next_obs, next_action)
                subset_for_target = subset
            target = subset_min_target(next_q, subset_for_target, batch.reward, batch.terminated, cfg.gamma)
            if cfg.backup_entropy:
                target = target - cfg.gamma * (1.0 - batch.terminated) * self.log_alpha.exp() * next_log_prob
        return target, subset

    def critic_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        target, _ = self.td_target(batch)
        q = self.critic(batch.obs, batch.action)
        loss = (q - target).pow(2).mean(1).sum()
        return loss, {"critic_loss": loss.detach(), "q_mean": q.detach().mean(), "target_mean": target.mean()}

    def update_critic(self, batch: Batch) -> dict[str, torch.Tensor]:
        loss, metrics = self.critic_loss(batch)
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_optimizer.step()
        polyak_update(self.target_critic, self.critic, self.cfg.tau)
        return metrics

    # -- actor and temperature --------------------------------------------------------------------

    def update_actor_and_temperature(self, batch: Batch) -> dict[str, torch.Tensor]:
        alpha = self.log_alpha.exp().detach()
        action, log_prob = self.actor(batch.obs)
        q = self.critic(batch.obs, action).min(0).values
        actor_loss = (alpha * log_prob - q).mean()
        self.actor_optimizer.zero_grad(set_to_none=True)
        # Gradients flow through the critics to the action, but only the actor's weights receive them.
        actor_loss.backward(inputs=list(self.actor.parameters()))
        self.actor_optimizer.step()

        with torch.no_grad():
            _, next_log_prob = self.actor(batch.next_obs)
        alpha_loss = temperature_loss(self.log_alpha, next_log_prob, self.target_entropy)
        self.temperature_optimizer.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.temperature_optimizer.step()
        return {
            "actor_loss": actor_loss.detach(),
            "temperature": alpha,
            "entropy": -log_prob.detach().mean(),
            "temperature_loss": alpha_loss.detach(),
        }
