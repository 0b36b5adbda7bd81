"""Soft Actor-Critic with a critic ensemble, random-subset-min targets and a UTD ratio.

This is the online agent of WSRL (and, with ``num_critics=10, subset_size=2``, of RLPD/REDQ-style
training). One ``update`` call receives ``batch_size * utd`` rows and does, in order:
1. ``utd`` critic steps, one per disjoint minibatch of ``batch_size`` rows, each followed by a
   Polyak update of the target critics;
2. one actor step and one temperature step on all rows (WSRL's ``update_high_utd``).

Losses (spec §1.3, ``losses.py``):
- target  ``y = r + gamma (1 - terminated) min_{k in K} Qbar_k(s', a')``, ``a' ~ pi(.|s')``, with K a
  random subset of ``subset_size`` critics; no entropy term in the backup unless ``backup_entropy``;
  with ``max_target_backup`` (AntMaze) the max over ``backup_samples`` next actions of that min.
- critic  ``mean_{e, b} (Q_e(s, a) - y)^2`` (``losses.td_loss``: the official mean over members).
- actor   ``mean_s [alpha log pi(a~|s) - min_e Q_e(s, a~)]``, min over *all* critics (as WSRL).
- alpha   ``alpha * (H_hat - H_target)``, ``H_hat = -mean log pi(a'|s')`` at next states,
  ``H_target = -|A|``, ``alpha = exp(log_alpha)``.

The modules and optimizers live in an ``ActorCritic`` record, and the steps are functions of it
(``sac_critic_loss``, ``apply_critic_loss``, ``actor_temperature_step``, ``temperature_step``): CQL, Cal-QL,
WSRL and FamO2O-CQL call them without inheriting from this agent.

Pixel observations: the critic owns the image encoder and each critic step first encodes its
minibatch (``ActorCritic.encode``); the actor reads those features detached and the target critic
its own Polyak-averaged encoder's (``rl/agents/encoding.py``). State observations pass through.

Decisions on the official code's pitfalls:
- Subset K is drawn *without* replacement (RLPD's choice). WSRL's ``randint`` draws with
  replacement, so with 10 critics it sometimes takes the min over a single member, and with 2
  critics it would not be clipped double-Q half of the time.
- The target entropy is -|A| (WSRL's fix f73d11e, replacing -|A|/2).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from rl.agents.base import Agent, AgentConfig, Part, adam, polyak_update
from rl.agents.encoding import Encoded, encode, features
from rl.agents.losses import sac_actor_loss, subset_min_target, td_loss, temperature_loss
from rl.buffers.batch import Batch, Obs
from rl.nets import CriticEnsemble, ObservationEncoder, ObservationNormalizer, TanhGaussianActor


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


@dataclass
class ActorCritic:
    """What the SAC family (SAC, CQL, Cal-QL, WSRL, FamO2O-CQL) learns: a tanh-Gaussian actor, a critic
    ensemble with its target copy, the temperature, and their optimizers."""

    actor: TanhGaussianActor
    critic: CriticEnsemble
    target_critic: CriticEnsemble
    log_alpha: torch.Tensor
    actor_optimizer: torch.optim.Optimizer
    critic_optimizer: torch.optim.Optimizer
    temperature_optimizer: torch.optim.Optimizer
    target_entropy: float

    @classmethod
    def build(
        cls,
        cfg: SACConfig,
        obs_dim: int,
        action_dim: int,
        device: torch.device,
        obs_norm: ObservationNormalizer | None,
        actor: TanhGaussianActor | None = None,
        encoder: ObservationEncoder | None = None,
    ) -> ActorCritic:
        """From ``cfg``: critics of ``(s, a)`` and, unless one is given (FamO2O's actor of ``[s, e(beta)]``),
        an actor of ``s``. With an image ``encoder`` (owned by the critics), ``s`` is its features and
        ``obs_dim`` their size."""
        if not 1 <= cfg.subset_size <= cfg.num_critics:
            raise ValueError(
                f"agent.subset_size={cfg.subset_size} must lie in [1, num_critics={cfg.num_critics}]"
            )
        if actor is None:
            actor = TanhGaussianActor(
                obs_dim, action_dim, cfg.actor_hidden, cfg.actor_layer_norm, obs_norm=obs_norm
            )
        actor = actor.to(device)
        critic = CriticEnsemble(
            obs_dim,
            action_dim,
            cfg.num_critics,
            cfg.critic_hidden,
            cfg.critic_layer_norm,
            obs_norm=obs_norm,
            encoder=encoder,
        ).to(device)
        log_alpha = torch.tensor(float(cfg.initial_temperature), device=device).log().requires_grad_(True)
        return cls(
            actor=actor,
            critic=critic,
            target_critic=copy.deepcopy(critic).requires_grad_(False),
            log_alpha=log_alpha,
            actor_optimizer=adam(actor.parameters(), cfg.actor_lr),
            critic_optimizer=adam(critic.parameters(), cfg.critic_lr),
            temperature_optimizer=adam([log_alpha], cfg.temperature_lr),
            target_entropy=-float(action_dim) if cfg.target_entropy is None else cfg.target_entropy,
        )

    def encode(self, batch: Batch) -> Encoded:
        """``batch`` as the SAC family's networks read it; the target critic reads s'."""
        return encode(self.critic, self.target_critic, batch, target_next_obs=True)

    def features(self, obs: Obs) -> torch.Tensor:
        """What the actor acts on (``obs`` itself for state observations)."""
        return features(self.critic, obs)

    @torch.no_grad()
    def act(self, actor_input: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """The actor's mean action (``deterministic``) or a sample."""
        return self.actor.deterministic(actor_input) if deterministic else self.actor.sample(actor_input)

    def parts(self) -> dict[str, Part]:
        return {
            "actor": self.actor,
            "critic": self.critic,
            "target_critic": self.target_critic,
            "log_alpha": self.log_alpha,
            "actor_optimizer": self.actor_optimizer,
            "critic_optimizer": self.critic_optimizer,
            "temperature_optimizer": self.temperature_optimizer,
        }


# -- the steps the SAC family shares -------------------------------------------------------------------


def critic_subset(cfg: SACConfig, device: torch.device) -> torch.Tensor:
    """``subset_size`` distinct critic indices, drawn at random."""
    return torch.randperm(cfg.num_critics, device=device)[: cfg.subset_size]


@torch.no_grad()
def td_target(
    ac: ActorCritic,
    cfg: SACConfig,
    batch: Encoded,
    subset: torch.Tensor,
    next_input: torch.Tensor,
    max_backup: bool,
) -> torch.Tensor:
    """The TD target ``y`` (B,) from the target critics in ``subset`` at ``batch.target_next_obs``,
    with ``a' ~ pi(.|next_input)`` (the actor's input at s': ``batch.next_obs``, or FamO2O's
    ``[s', e(beta')]``); ``max_backup`` takes the max over ``backup_samples`` next actions of the
    subset's min."""
    # Only the subset's target critics are evaluated: with WSRL's 10 critics and the max backup's 10
    # next actions, evaluating all ten and indexing afterwards was a quarter of the CQL step's FLOPs.
    if max_backup:
        next_action, next_log_prob = ac.actor(next_input, cfg.backup_samples)  # (B, M, A)
        next_q = ac.target_critic(batch.target_next_obs, next_action, members=subset).min(0).values
        best = next_q.argmax(1, keepdim=True)  # (B, 1): the best of the M next actions
        next_q = next_q.gather(1, best).squeeze(1).unsqueeze(0)
        next_log_prob = next_log_prob.gather(1, best).squeeze(1)
    else:
        next_action, next_log_prob = ac.actor(next_input)
        next_q = ac.target_critic(batch.target_next_obs, next_action, members=subset)
    every = torch.arange(next_q.shape[0], device=next_q.device)  # next_q holds the subset's rows only
    target = subset_min_target(next_q, every, batch.reward, batch.terminated, cfg.gamma)
    if cfg.backup_entropy:
        target = target - cfg.gamma * (1.0 - batch.terminated) * ac.log_alpha.exp() * next_log_prob
    return target


def sac_critic_loss(
    ac: ActorCritic, cfg: SACConfig, batch: Encoded, max_backup: bool
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SAC's critic loss: the TD error alone."""
    target = td_target(ac, cfg, batch, critic_subset(cfg, batch.reward.device), batch.next_obs, max_backup)
    q = ac.critic(batch.obs, batch.action)
    loss = td_loss(q, target)
    return loss, {"critic_loss": loss.detach(), "q_mean": q.detach().mean(), "target_mean": target.mean()}


def apply_critic_loss(ac: ActorCritic, loss: torch.Tensor, tau: float) -> None:
    """One optimizer step of the critics on ``loss``, then the Polyak update of their targets."""
    ac.critic_optimizer.zero_grad(set_to_none=True)
    loss.backward()
    ac.critic_optimizer.step()
    polyak_update(ac.target_critic, ac.critic, tau)


def temperature_step(ac: ActorCritic, log_prob: torch.Tensor) -> torch.Tensor:
    """One step of ``log_alpha`` towards the target entropy, given samples' log-densities; its loss."""
    loss = temperature_loss(ac.log_alpha, log_prob, ac.target_entropy)
    ac.temperature_optimizer.zero_grad(set_to_none=True)
    loss.backward()
    ac.temperature_optimizer.step()
    return loss.detach()


def actor_temperature_step(ac: ActorCritic, batch: Encoded) -> dict[str, torch.Tensor]:
    """SAC's actor step on ``batch.obs``, then the temperature step on the entropy at ``batch.next_obs``."""
    alpha = ac.log_alpha.exp().detach()
    obs = batch.obs.detach()  # pixels: no actor gradient reaches the critic's encoder
    action, log_prob = ac.actor(obs)
    actor_loss = sac_actor_loss(log_prob, ac.critic(obs, action).min(0).values, alpha)
    ac.actor_optimizer.zero_grad(set_to_none=True)
    # Gradients flow through the critics to the action, but only the actor's weights receive them.
    actor_loss.backward(inputs=list(ac.actor.parameters()))
    ac.actor_optimizer.step()

    with torch.no_grad():
        _, next_log_prob = ac.actor(batch.next_obs)
    alpha_loss = temperature_step(ac, next_log_prob)
    return {
        "actor_loss": actor_loss.detach(),
        "temperature": alpha,
        "entropy": -log_prob.detach().mean(),
        "temperature_loss": alpha_loss,
    }


# -- the agent -----------------------------------------------------------------------------------------


class SAC(Agent):
    name = "sac"
    config_class = SACConfig
    takes_images = True

    def __init__(
        self,
        cfg: SACConfig,
        obs_dim: int,
        action_dim: int,
        device: torch.device,
        obs_norm: ObservationNormalizer | None = None,
        encoder: ObservationEncoder | None = None,
    ) -> None:
        super().__init__(cfg, obs_dim, action_dim, device)
        self.ac = ActorCritic.build(cfg, obs_dim, action_dim, device, obs_norm, encoder=encoder)

    def parts(self) -> dict[str, Part]:
        return self.ac.parts()

    @property
    def batch_size(self) -> int:
        return self.cfg.batch_size * self.cfg.utd

    def act(self, obs: Obs, deterministic: bool = False) -> torch.Tensor:
        return self.ac.act(self.ac.features(obs), deterministic)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        seen = []
        for minibatch in batch.split(cfg.utd):
            minibatch = self.ac.encode(minibatch)
            loss, metrics = sac_critic_loss(self.ac, cfg, minibatch, cfg.max_target_backup)
            apply_critic_loss(self.ac, loss, cfg.tau)
            seen.append(minibatch)
        return metrics | actor_temperature_step(self.ac, Encoded.cat(seen))
