"""Implicit Q-Learning (Kostrikov et al. 2022): expectile V, twin Q, advantage-weighted actor.

One ``update`` on a batch, in the official order (ikostrikov/implicit_q_learning ``_update_jit``):
1. V:      ``expectile_loss(min_e Qbar_e(s, a) - V(s), expectile)``  (target twin critics);
2. actor:  ``-mean(min(exp(beta * (min_e Qbar_e(s, a) - V(s))), max_weight) * log pi(a|s))`` with the
           V just updated;
3. Q:      ``td_loss(Q(s, a), r + gamma (1 - terminated) V(s'))`` with the new V;
4. Polyak update of the target critics.
Steps 1 and 3 (``value_step``, ``critic_step``) are functions of an ``IQLCritics`` record, shared
with FamO2O-IQL and Uni-O4. Online, IQL keeps the same losses on the mixed offline/online batches
the loop provides.

Settings that change learning, as the official IQL (ikostrikov, locomotion) and CORL:
- the actor's learning rate follows a cosine from ``actor_lr`` to 0 over ``actor_lr_decay_steps``
  offline updates (official ``opt_decay_schedule="cosine"`` over its 1M updates; CORL's
  ``CosineAnnealingLR``). Online it is ``actor_lr``, constant: the official fine-tuning configs do
  not decay it, and CORL's scheduler, stepped past its period, climbs back up from 0 (an artefact,
  not a setting);
- rewards scaled by 1000 / (max - min) of the dataset's episode returns (``return_range_scale``,
  applied by the loop to dataset and online rewards alike);
- states standardised with the dataset's statistics (``normalize_obs``): CORL's choice (the official
  IQL does not), on by default since CORL's is the schedule this repo's IQL follows.

The policy is CORL's: a Gaussian with tanh-bounded mean and a state-independent log-std, not a
squashed distribution, so dataset actions have an exact log-density. ``act`` samples and clamps to
[-1, 1]; evaluation uses the mean. Defaults are CORL's locomotion ones (expectile 0.7, beta 3).

Pixel observations (``rl/agents/encoding.py``): the twin Q owns the image encoder and only its TD loss
trains it; V and the actor read its features detached, and the target critics their own
Polyak-averaged encoder's features of s (``IQLCritics.encode``). ``normalize_obs`` applies to state
observations only: with an encoder, proprio vectors go through its LayerNorm projection instead.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch

from rl.agents.base import Agent, AgentConfig, Part, Phase, adam, compiled_update, polyak_update, set_lr
from rl.agents.encoding import Encoded, encode, features
from rl.agents.losses import advantage_weights, awr_loss, expectile_loss, finite_mean, td_loss
from rl.buffers.batch import Batch, Obs
from rl.nets import CriticEnsemble, GaussianActor, ObservationEncoder, ObservationNormalizer, ValueNet


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
    normalize_obs: bool = True
    return_range_scale: float | None = 1000.0
    actor_lr_decay_steps: int = 1_000_000
    """Offline updates over which the actor's learning rate decays (cosine) from ``actor_lr`` to 0."""


def cosine_decay(base: float, step: int, steps: int) -> float:
    """``base (1 + cos(pi min(step, steps) / steps)) / 2``: ``base`` at step 0, 0 from ``steps`` on."""
    return base * 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / steps))


@dataclass
class IQLCritics:
    """IQL's value learning: V, twin Q and its target copy, and the two optimizers."""

    value: ValueNet
    critic: CriticEnsemble
    target_critic: CriticEnsemble
    value_optimizer: torch.optim.Optimizer
    critic_optimizer: torch.optim.Optimizer

    @classmethod
    def build(
        cls,
        obs_dim: int,
        action_dim: int,
        device: torch.device,
        obs_norm: ObservationNormalizer | None,
        hidden: tuple[list[int], list[int]],
        lrs: tuple[float, float],
        layer_norm: bool = False,
        encoder: ObservationEncoder | None = None,
    ) -> IQLCritics:
        """``hidden`` and ``lrs``: (critic's, value's). With an image ``encoder`` (owned by the twin Q),
        every network reads its features and ``obs_dim`` is their size."""
        critic = CriticEnsemble(
            obs_dim, action_dim, 2, hidden[0], layer_norm, obs_norm=obs_norm, encoder=encoder
        ).to(device)
        value = ValueNet(obs_dim, hidden[1], layer_norm, obs_norm=obs_norm).to(device)
        return cls(
            value=value,
            critic=critic,
            target_critic=copy.deepcopy(critic).requires_grad_(False),
            value_optimizer=adam(value.parameters(), lrs[1]),
            critic_optimizer=adam(critic.parameters(), lrs[0]),
        )

    def parts(self) -> dict[str, Part]:
        return {
            "value": self.value,
            "critic": self.critic,
            "target_critic": self.target_critic,
            "value_optimizer": self.value_optimizer,
            "critic_optimizer": self.critic_optimizer,
        }

    def encode(self, batch: Batch) -> Encoded:
        """``batch`` as IQL's networks read it; the target critics read s."""
        return encode(self.critic, self.target_critic, batch, target_obs=True)

    def features(self, obs: Obs) -> torch.Tensor:
        """What the actor acts on (``obs`` itself for state observations)."""
        return features(self.critic, obs)


def value_step(
    iql: IQLCritics, batch: Encoded, expectile: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """IQL's V step against the target critics; returns ``min_e Qbar_e(s, a)`` (for the advantages
    that follow) and metrics."""
    with torch.no_grad():
        target_q = iql.target_critic(batch.target_obs, batch.action).min(0).values
    v = iql.value(batch.obs.detach())
    loss = expectile_loss(target_q - v, expectile)
    iql.value_optimizer.zero_grad(set_to_none=True)
    loss.backward()
    iql.value_optimizer.step()
    return target_q, {"value_loss": loss.detach(), "v_mean": v.detach().mean()}


def critic_step(iql: IQLCritics, batch: Encoded, gamma: float, tau: float) -> dict[str, torch.Tensor]:
    """IQL's twin-Q step towards ``r + gamma (1 - terminated) V(s')``, then the Polyak update."""
    with torch.no_grad():
        target = batch.reward + gamma * (1.0 - batch.terminated) * iql.value(batch.next_obs)
    q = iql.critic(batch.obs, batch.action)
    loss = td_loss(q, target)
    iql.critic_optimizer.zero_grad(set_to_none=True)
    loss.backward()
    iql.critic_optimizer.step()
    polyak_update(iql.target_critic, iql.critic, tau)
    # mc_return_mean beside q_mean: the Q-calibration check of a pre-training (online rows left out).
    return {
        "critic_loss": loss.detach(),
        "q_mean": q.detach().mean(),
        "mc_return_mean": finite_mean(batch.mc_return),
    }


class IQL(Agent):
    name = "iql"
    config_class = IQLConfig
    takes_images = True

    def __init__(
        self,
        cfg: IQLConfig,
        obs_dim: int,
        action_dim: int,
        device: torch.device,
        obs_norm: ObservationNormalizer | None = None,
        encoder: ObservationEncoder | None = None,
    ) -> None:
        super().__init__(cfg, obs_dim, action_dim, device)
        self.actor = GaussianActor(obs_dim, action_dim, cfg.hidden, cfg.layer_norm, obs_norm=obs_norm).to(
            device
        )
        self.actor_optimizer = adam(self.actor.parameters(), cfg.actor_lr)
        hidden, lrs = (cfg.hidden, cfg.hidden), (cfg.critic_lr, cfg.value_lr)
        self.iql = IQLCritics.build(
            obs_dim, action_dim, device, obs_norm, hidden, lrs, cfg.layer_norm, encoder=encoder
        )
        # On the CPU: Python reads it to set the learning rate without a device sync.
        self.offline_updates = torch.zeros((), dtype=torch.long)

    def parts(self) -> dict[str, Part]:
        return {
            "actor": self.actor,
            "actor_optimizer": self.actor_optimizer,
            **self.iql.parts(),
            "offline_updates": self.offline_updates,
        }

    @torch.no_grad()
    def act(self, obs: Obs, deterministic: bool = False) -> torch.Tensor:
        obs = self.iql.features(obs)
        return self.actor.deterministic(obs) if deterministic else self.actor.sample(obs)

    def _set_actor_lr(self) -> None:
        """Offline: the cosine schedule at this update (then one more update is counted); online: ``actor_lr``."""
        cfg = self.cfg
        if self.phase is Phase.ONLINE:
            set_lr(self.actor_optimizer, cfg.actor_lr)
            return
        set_lr(
            self.actor_optimizer,
            cosine_decay(cfg.actor_lr, int(self.offline_updates), cfg.actor_lr_decay_steps),
        )
        self.offline_updates += 1

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        self._set_actor_lr()
        return self._learn(batch)

    def compile_update(self) -> None:
        """Only ``_learn`` is compiled: the lr schedule reads a Python counter that changes every
        update, on which dynamo would guard and recompile each time, so it stays eager in front."""
        self._learn = compiled_update(self._learn, self.device)  # type: ignore[method-assign]

    def _learn(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        batch = self.iql.encode(batch)
        target_q, metrics = value_step(self.iql, batch, cfg.expectile)
        obs = batch.obs.detach()  # pixels: no actor gradient reaches the critic's encoder
        with torch.no_grad():
            v = self.iql.value(obs)
        log_prob = self.actor.log_prob(obs, batch.action)
        actor_loss = awr_loss(log_prob, target_q, v, cfg.beta, cfg.max_weight)
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()
        metrics |= critic_step(self.iql, batch, cfg.gamma, cfg.tau)
        weight_mean = advantage_weights(target_q, v, cfg.beta, cfg.max_weight).mean()
        return metrics | {"actor_loss": actor_loss.detach(), "weight_mean": weight_mean}
