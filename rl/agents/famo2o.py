"""FamO2O (Wang et al., NeurIPS 2023): a family of policies indexed by a balance coefficient beta, and
a balance model that chooses beta state by state; on IQL (``famo2o_iql``) and on CQL (``famo2o_cql``).

Shared by both variants:
- embedding ``e(beta) = [sin(beta / n^(2i/d)), cos(beta / n^(2i/d))]``, i = 0..d/2-1, interleaved,
  n = 1e4, d = 6 (``beta_embedding``; official ``sin_cos_skill_func``);
- universal policy ``pi_u(a | s, e(beta))``: the base algorithm's actor fed ``[normalised s, e(beta)]``
  (``FamilyInput``); Q, V and the balance model see ``s`` only;
- balance model ``pi_b(beta | s)`` (``BalanceModel``): a tanh-squashed Gaussian over one scalar with
  a state-independent std, mapped onto the range as ``low + (x + 1) / 2 * (high - low)``;
- beta in the universal policy's loss: offline ``beta ~ U[low, high]`` per row, so the whole family
  is trained; online (the saved ``Phase``) a sample of ``pi_b(.|s)`` (no gradient). ``pi_b`` itself is
  trained in both phases; only its use in that loss switches (spec §3.5);
- acting: ``beta`` = ``pi_b``'s deterministic value (tanh of its mean, mapped), then a *sample* of
  ``pi_u`` clamped to [-1, 1]; evaluation (``deterministic=True``) takes ``pi_u``'s mean;
- metrics: the distribution over the batch's states of the beta the agent acts with
  (``beta_mean``, ``beta_std``, ``beta_min``, ``beta_max``).

FamO2O-IQL, one ``update`` (the official ``family_learner`` order, one batch):
1. V:      ``expectile_loss(min_e Qbar_e(s, a) - V(s), expectile)``;
2. pi_b:   ``mean(alpha_b log pi_b(beta_b|s) - min_e Qbar_e(s, a_b))``, ``beta_b ~ pi_b`` and
   ``a_b ~ pi_u(.|s, e(beta_b))`` both reparameterised; only pi_b's weights step;
3. alpha_b: ``alpha_b * (H_b - (-0.5))`` (``losses.temperature_loss``), ``H_b = -mean log pi_b``;
4. pi_u:   ``-mean(min(exp(beta_i (min_e Qbar_e(s_i, a_i) - V_new(s_i))), 100) log pi_u(a_i|s_i, e(beta_i)))``;
5. Q:      ``mean_{e,b} (Q_e(s, a) - (r + gamma (1 - terminated) V_new(s')))^2``; Polyak update.
The universal policy is IQL's Gaussian (tanh mean, state-independent log-std in [-5, 2], not squashed).

FamO2O-CQL, one ``update`` (``utd`` critic steps on minibatches, then the rest on all rows):
1. critic: CQL(H) (``cql.cql_gap``), proposals from ``pi_u(.|s, e(beta))`` with the row's policy-loss
   beta and from ``pi_u(.|s', e(beta'))``; TD target ``r + gamma (1 - terminated) min_K Qbar(s', a')``
   with ``a' ~ pi_u(.|s', e(beta'))``, ``beta' ~ pi_b(.|s')``;
2. pi_u:   ``mean(alpha log pi_u(a~|s, e(beta)) - beta * min_e Q_e(s, a~))`` (beta scales Q against the
   entropy; the constraint is CQL's);
3. alpha:  SAC's temperature loss on the entropy of the samples of step 2 (the official wrapper's);
4. pi_b:   ``-mean min_e Q_e(s, a_b)`` with ``a_b ~ pi_u(.|s, e(beta_b))``, ``beta_b ~ pi_b(.|s)`` (no
   entropy term in the CQL wrapper); only pi_b's weights step.

Decisions on the official code's pitfalls (spec §3.4-§3.5 and a reading of the code):
- FamO2O-IQL's rewards: the official IQL-based script scales every locomotion batch's rewards by
  1000 / (max - min) of the dataset's episode returns (``family_train_finetune.py``); so does
  ``return_range_scale`` here. beta is an inverse temperature on the advantage, so the [1, 5] range
  means what it does there only on that scale. States are not standardised (the official code has
  no such step; ``agent=iql`` does, following CORL).
- beta mapping: the CQL wrapper (``HierarchicalPolicy``) maps the tanh output ``x`` as
  ``x (high - low) + low``, i.e. onto (-0.5, 1.5) for [0.5, 1.5], so online beta can leave the range
  the family was trained on, and even turn negative (the actor would then *minimise* Q). Both
  variants here use ``low + (x + 1) / 2 (high - low)``, exactly onto [low, high] (the IQL wrapper's
  mapping): a deliberate deviation from the released CQL wrapper.
- IQL weights broadcast: the official ``exp((q - v) * beta)`` multiplies a ``(B,)`` advantage by a
  ``(B, 1)`` beta, giving a ``(B, B)`` matrix, so each row's weight is averaged over the *batch's*
  betas and does not depend on its own beta: every member of the family is trained with the same
  weights. Here row i is weighted by its own ``beta_i`` (the paper's objective).
- IQL beta range for locomotion: [1, 5] (``beta_low``/``beta_high`` defaults). The family must contain
  the base algorithm's tuned policy and reach both sides of it: locomotion IQL uses beta = 3 (the
  official IQL and CORL value, this repo's ``agent=iql`` default), so [1, 5] brackets it
  symmetrically, as AntMaze's [8, 14] contains IQL's 10 there; it is also the released
  ``FamilyLearner``'s default range (the [1, 5] locomotion setting of the third-party port is
  unverified, spec §3.4). beta is an inverse temperature on the advantage, so the range is tied to the
  reward scale: compare against ``agent=iql`` run with the same ``env.reward_scale``. AntMaze:
  ``agent.beta_low=8 agent.beta_high=14 agent.expectile=0.9 agent.return_range_scale=null
  env.reward_scale=1 env.reward_bias=-1``.
- CQL next-state beta: the official TD target (and the CQL proposals at ``s'``) condition on the
  balance beta of the *current* state ``s``; here ``a'`` conditions on ``pi_b``'s beta at ``s'``, the
  beta the agent would act with there, so the backup evaluates the policy that actually runs.
- The CQL wrapper has no Lagrange multiplier and no max-target backup (``cql_lagrange`` and
  ``max_target_backup`` are refused), ``cql_alpha`` = 1.0 (its ``cql_min_q_weight``), all lrs 3e-4.
- Updates are sequential (critic, then actor, then pi_b on the updated actor), not the official
  simultaneous JAX gradients; the order within the IQL step is the official one.

Pixel observations (``rl/agents/encoding.py``): the critics own the image encoder and only their loss
trains it; pi_u, pi_b, V and ``[s, e(beta)]`` are built on its features, detached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from rl.agents.base import Agent, AgentConfig, Part, Phase, adam
from rl.agents.cql import CQLConfig, cql_critic_loss
from rl.agents.encoding import Encoded
from rl.agents.iql import IQLCritics, critic_step, value_step
from rl.agents.losses import awr_loss, balance_loss, family_sac_actor_loss, temperature_loss
from rl.agents.sac import ActorCritic, apply_critic_loss, temperature_step
from rl.buffers.batch import Batch, Obs
from rl.nets import MLP, GaussianActor, ObservationEncoder, ObservationNormalizer, TanhGaussianActor
from rl.nets.actors import tanh_log_det_jacobian

# -- the family: embedding, policy input, balance model ----------------------------------------------


@dataclass
class FamilyConfig:
    """The fields both FamO2O variants add to their base algorithm's config."""

    beta_low: float = 0.5
    beta_high: float = 1.5
    """The balance coefficient's range: offline beta ~ U[beta_low, beta_high]; pi_b maps onto it exactly."""
    embedding_dim: int = 6
    embedding_base: float = 1e4
    balance_lr: float = 3e-4
    balance_hidden: list[int] = field(default_factory=lambda: [256, 256])


def beta_embedding(beta: torch.Tensor, dim: int, base: float) -> torch.Tensor:
    """``[sin(b w_0), cos(b w_0), sin(b w_1), ...]`` with ``w_i = base^(-2i/dim)``: ``(..., dim)``."""
    frequencies = base ** (-torch.arange(0, dim, 2, device=beta.device, dtype=beta.dtype) / dim)
    angles = beta.unsqueeze(-1) * frequencies
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)


class FamilyInput(nn.Module):
    """The universal policy's input ``[obs_norm(s), e(beta)]`` (the base actors normalise nothing more)."""

    def __init__(self, obs_dim: int, cfg: FamilyConfig, obs_norm: ObservationNormalizer | None) -> None:
        super().__init__()
        self.obs_norm = obs_norm or ObservationNormalizer(obs_dim)
        self.dim, self.base = cfg.embedding_dim, cfg.embedding_base

    def forward(self, obs: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.obs_norm(obs), beta_embedding(beta, self.dim, self.base)], dim=-1)


class BalanceModel(nn.Module):
    """``pi_b(beta|s)``: ``beta = low + (tanh(u) + 1) / 2 (high - low)``, ``u ~ N(mu(s), sigma)``.

    ``log_prob`` is the density of the squashed value ``tanh(u)`` in (-1, 1) (as the official IQL
    wrapper, whose target entropy -0.5 refers to it); the affine map onto the range only shifts it.
    """

    def __init__(
        self,
        obs_dim: int,
        hidden: list[int],
        low: float,
        high: float,
        obs_norm: ObservationNormalizer | None = None,
        log_std_range: tuple[float, float] = (-5.0, 2.0),
    ) -> None:
        super().__init__()
        if not low < high:
            raise ValueError(f"agent.beta_low={low} must be below agent.beta_high={high}")
        self.obs_norm = obs_norm or ObservationNormalizer(obs_dim)
        self.net = MLP(obs_dim, hidden, 1)
        self.log_std = nn.Parameter(torch.zeros(1))
        self.low, self.high, self.log_std_range = low, high, log_std_range

    def to_range(self, squashed: torch.Tensor) -> torch.Tensor:
        """(-1, 1) -> (low, high), endpoints onto endpoints."""
        return self.low + (squashed + 1.0) * 0.5 * (self.high - self.low)

    def _mean_std(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(self.obs_norm(obs)).squeeze(-1), self.log_std.clamp(*self.log_std_range).exp()

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised ``beta`` and its log-density, both ``(B,)``."""
        mean, std = self._mean_std(obs)
        pre_tanh = mean + std * torch.randn_like(mean)
        log_prob = torch.distributions.Normal(mean, std).log_prob(pre_tanh) - tanh_log_det_jacobian(
            pre_tanh.unsqueeze(-1)
        )
        return self.to_range(torch.tanh(pre_tanh)), log_prob

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        return self.to_range(torch.tanh(self._mean_std(obs)[0]))

    @torch.no_grad()
    def policy_beta(self, obs: torch.Tensor, phase: Phase) -> torch.Tensor:
        """The beta of the universal policy's loss: uniform over the range offline, a sample of pi_b online."""
        if phase is Phase.ONLINE:
            return self.sample(obs)[0]
        return self.low + (self.high - self.low) * torch.rand(obs.shape[0], device=obs.device)


def beta_stats(beta: torch.Tensor) -> dict[str, torch.Tensor]:
    """How the balance model spreads beta over the batch's states."""
    beta = beta.detach()
    return {
        "beta_mean": beta.mean(),
        "beta_std": beta.std(correction=0),
        "beta_min": beta.min(),
        "beta_max": beta.max(),
    }


# -- FamO2O on IQL -----------------------------------------------------------------------------------


@dataclass
class FamO2OIQLConfig(FamilyConfig, AgentConfig):
    name: str = "famo2o_iql"
    beta_low: float = 1.0
    beta_high: float = 5.0
    """Locomotion range around IQL's beta = 3 (module docstring); AntMaze: 8 and 14."""
    expectile: float = 0.7
    max_weight: float = 100.0
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    value_lr: float = 3e-4
    tau: float = 5e-3
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    layer_norm: bool = False
    return_range_scale: float | None = 1000.0
    """Locomotion rewards times 1000 / (max - min) of the dataset's episode returns, offline and online
    (the official ``family_train_finetune.py``, as IQL's); AntMaze: ``agent.return_range_scale=null
    env.reward_scale=1 env.reward_bias=-1`` (its ``r - 1``)."""
    balance_initial_temperature: float = 1.0
    balance_temperature_lr: float = 3e-4
    balance_target_entropy: float = -0.5


class FamO2OIQL(Agent):
    name = "famo2o_iql"
    config_class = FamO2OIQLConfig
    takes_images = True

    def __init__(
        self,
        cfg: FamO2OIQLConfig,
        obs_dim: int,
        action_dim: int,
        device: torch.device,
        obs_norm: ObservationNormalizer | None = None,
        encoder: ObservationEncoder | None = None,
    ) -> None:
        super().__init__(cfg, obs_dim, action_dim, device)
        self.family_input = FamilyInput(obs_dim, cfg, obs_norm).to(device)
        self.actor = GaussianActor(obs_dim + cfg.embedding_dim, action_dim, cfg.hidden, cfg.layer_norm).to(
            device
        )
        self.actor_optimizer = adam(self.actor.parameters(), cfg.actor_lr)
        hidden, lrs = (cfg.hidden, cfg.hidden), (cfg.critic_lr, cfg.value_lr)
        self.iql = IQLCritics.build(
            obs_dim, action_dim, device, obs_norm, hidden, lrs, cfg.layer_norm, encoder=encoder
        )
        self.balance = BalanceModel(
            obs_dim, cfg.balance_hidden, cfg.beta_low, cfg.beta_high, obs_norm=obs_norm
        ).to(device)
        self.balance_optimizer = adam(self.balance.parameters(), cfg.balance_lr)
        self.log_balance_alpha = torch.tensor(
            math.log(cfg.balance_initial_temperature), device=device
        ).requires_grad_(True)
        self.balance_temperature_optimizer = adam([self.log_balance_alpha], cfg.balance_temperature_lr)

    def parts(self) -> dict[str, Part]:
        return {
            "family_input": self.family_input,
            "actor": self.actor,
            "actor_optimizer": self.actor_optimizer,
            **self.iql.parts(),
            "balance": self.balance,
            "balance_optimizer": self.balance_optimizer,
            "log_balance_alpha": self.log_balance_alpha,
            "balance_temperature_optimizer": self.balance_temperature_optimizer,
        }

    @torch.no_grad()
    def act(self, obs: Obs, deterministic: bool = False) -> torch.Tensor:
        obs = self.iql.features(obs)
        policy_input = self.family_input(obs, self.balance.deterministic(obs))
        return self.actor.deterministic(policy_input) if deterministic else self.actor.sample(policy_input)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg, batch = self.cfg, self.iql.encode(batch)
        obs = batch.obs.detach()  # pixels: only the critics' loss trains the encoder
        with torch.no_grad():
            target_q = self.iql.target_critic(batch.target_obs, batch.action).min(0).values
            # Drawn before pi_b's step on this batch (online: the official uses the pre-step pi_b).
            beta = self.balance.policy_beta(obs, self.phase)

        _, metrics = value_step(self.iql, batch, cfg.expectile)

        alpha_b = self.log_balance_alpha.exp().detach()
        beta_b, log_prob_b = self.balance.sample(obs)
        action_b = self.actor.dist(self.family_input(obs, beta_b)).rsample()
        b_loss = balance_loss(
            self.iql.target_critic(batch.target_obs, action_b).min(0).values, log_prob_b, alpha_b
        )
        self.balance_optimizer.zero_grad(set_to_none=True)
        # The gradient reaches beta through pi_u's reparameterised action; only pi_b's weights step.
        b_loss.backward(inputs=list(self.balance.parameters()))
        self.balance_optimizer.step()
        b_temperature_loss = temperature_loss(self.log_balance_alpha, log_prob_b, cfg.balance_target_entropy)
        self.balance_temperature_optimizer.zero_grad(set_to_none=True)
        b_temperature_loss.backward()
        self.balance_temperature_optimizer.step()

        with torch.no_grad():
            v_new = self.iql.value(obs)
        log_prob = self.actor.log_prob(self.family_input(obs, beta), batch.action)
        actor_loss = awr_loss(log_prob, target_q, v_new, beta, cfg.max_weight)
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()

        metrics |= critic_step(self.iql, batch, cfg.gamma, cfg.tau)
        with torch.no_grad():
            acting_beta = self.balance.deterministic(obs)
        return {
            **metrics,
            "actor_loss": actor_loss.detach(),
            "balance_loss": b_loss.detach(),
            "balance_temperature": alpha_b,
            "balance_entropy": -log_prob_b.detach().mean(),
            **beta_stats(acting_beta),
        }


# -- FamO2O on CQL -----------------------------------------------------------------------------------


@dataclass
class FamO2OCQLConfig(FamilyConfig, CQLConfig):
    name: str = "famo2o_cql"
    max_target_backup: bool = False
    """The released wrapper has no max backup (refused when on)."""
    cql_alpha: float = 1.0
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    temperature_lr: float = 3e-4


class FamO2OCQL(Agent):
    name = "famo2o_cql"
    config_class = FamO2OCQLConfig
    takes_images = True

    def __init__(
        self,
        cfg: FamO2OCQLConfig,
        obs_dim: int,
        action_dim: int,
        device: torch.device,
        obs_norm: ObservationNormalizer | None = None,
        encoder: ObservationEncoder | None = None,
    ) -> None:
        if cfg.cql_lagrange or cfg.max_target_backup or cfg.backup_entropy:
            raise ValueError(
                "famo2o_cql follows the released CQL wrapper: no cql_lagrange, max_target_backup or backup_entropy"
            )
        super().__init__(cfg, obs_dim, action_dim, device)
        self.family_input = FamilyInput(obs_dim, cfg, obs_norm).to(device)
        # The universal policy sees [s, e(beta)] (FamilyInput normalises s); the critics see s.
        actor = TanhGaussianActor(
            obs_dim + cfg.embedding_dim, action_dim, cfg.actor_hidden, cfg.actor_layer_norm
        )
        self.ac = ActorCritic.build(cfg, obs_dim, action_dim, device, obs_norm, actor, encoder)
        self.balance = BalanceModel(
            obs_dim, cfg.balance_hidden, cfg.beta_low, cfg.beta_high, obs_norm=obs_norm
        ).to(device)
        self.balance_optimizer = adam(self.balance.parameters(), cfg.balance_lr)

    def parts(self) -> dict[str, Part]:
        return {
            "family_input": self.family_input,
            **self.ac.parts(),
            "balance": self.balance,
            "balance_optimizer": self.balance_optimizer,
        }

    @property
    def batch_size(self) -> int:
        return self.cfg.batch_size * self.cfg.utd

    @torch.no_grad()
    def act(self, obs: Obs, deterministic: bool = False) -> torch.Tensor:
        obs = self.ac.features(obs)
        policy_input = self.family_input(obs, self.balance.deterministic(obs))
        return self.ac.act(policy_input, deterministic)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        seen = []
        for minibatch in batch.split(cfg.utd):
            minibatch = self.ac.encode(minibatch)
            loss, metrics = cql_critic_loss(self.ac, cfg, minibatch, self._policy_inputs(minibatch), None)
            apply_critic_loss(self.ac, loss, cfg.tau)
            seen.append(minibatch)

        # pixels: only the critics' loss trains the encoder
        obs, ac = Encoded.cat(seen).obs.detach(), self.ac
        alpha = ac.log_alpha.exp().detach()
        beta = self.balance.policy_beta(obs, self.phase)
        action, log_prob = ac.actor(self.family_input(obs, beta))
        actor_loss = family_sac_actor_loss(log_prob, ac.critic(obs, action).min(0).values, beta, alpha)
        ac.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward(inputs=list(ac.actor.parameters()))
        ac.actor_optimizer.step()

        alpha_loss = temperature_step(ac, log_prob)

        beta_b, _ = self.balance.sample(obs)
        action_b, _ = ac.actor(self.family_input(obs, beta_b))
        # The CQL wrapper's pi_b loss has no entropy term; only pi_b's weights step.
        b_loss = -ac.critic(obs, action_b).min(0).values.mean()
        self.balance_optimizer.zero_grad(set_to_none=True)
        b_loss.backward(inputs=list(self.balance.parameters()))
        self.balance_optimizer.step()
        with torch.no_grad():
            acting_beta = self.balance.deterministic(obs)
        return metrics | {
            "actor_loss": actor_loss.detach(),
            "temperature": alpha,
            "entropy": -log_prob.detach().mean(),
            "temperature_loss": alpha_loss,
            "balance_loss": b_loss.detach(),
            **beta_stats(acting_beta),
        }

    @torch.no_grad()
    def _policy_inputs(self, batch: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
        """The universal policy's inputs at s (the row's policy-loss beta) and at s' (pi_b's beta there)."""
        obs_input = self.family_input(batch.obs, self.balance.policy_beta(batch.obs, self.phase))
        next_input = self.family_input(batch.next_obs, self.balance.sample(batch.next_obs)[0])
        return obs_input, next_input
