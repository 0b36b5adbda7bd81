"""Implicit Q-Learning (Kostrikov et al. 2022): expectile V, twin Q, advantage-weighted actor.

One ``update`` on a batch, in the official order (ikostrikov/implicit_q_learning ``_update_jit``):
1. V:      ``expectile_loss(min_e Qbar_e(s, a) - V(s), expectile)``  (target twin critics);
2. actor:  ``-mean(min(exp(beta * (min_e Qbar_e(s, a) - V(s))), max_weight) * log pi(a|s))`` with the
           V just updated;
3. Q:      ``sum_e mean (Q_e(s, a) - (r + gamma (1 - terminated) V(s')))^2`` with the new V;
4. Polyak update of the target critics.
Steps 1 and 3 (``value_step``, ``critic_step``) are shared with FamO2O-IQL and Uni-O4, which keep the
same critics under the same attribute names.
Online, IQL keeps the same losses on the mixed offline/online batches the loop provides.

The policy is CORL's: a Gaussian with tanh-bounded mean and a state-independent log-std, not a
squashed distribution, so dataset actions have an exact log-density. ``act`` samples and clamps to
[-1, 1]; evaluation uses the mean. Defaults are CORL's locomotion ones (expectile 0.7, beta 3).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from rl.agents.base import Agent, AgentConfig, adam, expectile_loss, polyak_update
from rl.buffers.batch import Batch
from rl.nets import CriticEnsemble, GaussianActor, ObservationNormalizer, ValueNet


@dataclass
class IQLConfig(AgentConfig):
    name: str = "iql"
    expectile: float = 0.7
    beta: float = 3.0
    """Inverse temperature of the advantage weights."""
    max_weight: float = 100.0
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    value_lr: float = 3e-4
    tau: float = 5e-3
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    layer_norm: bool = False


def value_step(agent: IQL, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """IQL's V step on ``agent.value`` against ``agent.target_critic``; returns ``min_e Qbar_e(s, a)``
    (for the advantages that follow) and metrics."""
    with torch.no_grad():
        target_q = agent.target_critic(batch.obs, batch.action).min(0).values
    v = agent.value(batch.obs)
    loss = expectile_loss(target_q - v, agent.cfg.expectile)
    agent.value_optimizer.zero_grad(set_to_none=True)
    loss.backward()
    agent.value_optimizer.step()
    return target_q, {"value_loss": loss.detach(), "v_mean": v.detach().mean()}


def critic_step(agent: IQL, batch: Batch) -> dict[str, torch.Tensor]:
    """IQL's twin-Q step towards ``r + gamma (1 - terminated) V(s')``, then the Polyak update."""
    cfg = agent.cfg
    with torch.no_grad():
        target = batch.reward + cfg.gamma * (1.0 - batch.terminated) * agent.value(batch.next_obs)
    q = agent.critic(batch.obs, batch.action)
    loss = (q - target).pow(2).mean(1).sum()
    agent.critic_optimizer.zero_grad(set_to_none=True)
    loss.backward()
    agent.critic_optimizer.step()
    polyak_update(agent.target_critic, agent.critic, cfg.tau)
    return {"critic_loss": loss.detach(), "q_mean": q.detach().mean()}


def advantage_weights(q: torch.Tensor, v: torch.Tensor, beta: float, max_weight: float) -> torch.Tensor:
    """``min(exp(beta * (q - v)), max_weight)``, with no gradient to the critics."""
    return torch.exp(beta * (q - v).detach()).clamp(max=max_weight)


class IQL(Agent):
    name = "iql"
    config_class = IQLConfig

    def __init__(
        self,
        cfg: IQLConfig,
        obs_dim: int,
        action_dim: int,
        device: torch.device,
        obs_norm: ObservationNormalizer | None = None,
    ) -> None:
        super().__init__(cfg, obs_dim, action_dim, device)
        self.actor = GaussianActor(obs_dim, action_dim, cfg.hidden, cfg.layer_norm, obs_norm=obs_norm).to(
            device
        )
        self.critic = CriticEnsemble(
            obs_dim, action_dim, 2, cfg.hidden, cfg.layer_norm, obs_norm=obs_norm
        ).to(device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.value = ValueNet(obs_dim, cfg.hidden, cfg.layer_norm, obs_norm=obs_norm).to(device)
        self.actor_optimizer = adam(self.actor.parameters(), cfg.actor_lr)
        self.critic_optimizer = adam(self.critic.parameters(), cfg.critic_lr)
        self.value_optimizer = adam(self.value.parameters(), cfg.value_lr)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        return self.actor.deterministic(obs) if deterministic else self.actor.sample(obs)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        target_q, metrics = value_step(self, batch)
        with torch.no_grad():
            v = self.value(batch.obs)
        weights = advantage_weights(target_q, v, self.cfg.beta, self.cfg.max_weight)
        actor_loss = -(weights * self.actor.log_prob(batch.obs, batch.action)).mean()
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()
        metrics |= critic_step(self, batch)
        return {**metrics, "actor_loss": actor_loss.detach(), "weight_mean": weights.mean()}
