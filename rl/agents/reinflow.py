"""ReinFlow (Zhang et al., NeurIPS 2025): a flow-matching policy over action chunks, pre-trained by
behaviour cloning and fine-tuned online by PPO through a learned-noise Markov chain.

The policy acts on a flat chunk of ``Ta * Da`` numbers given a flat history of ``To`` observations:
the chunk env wrapper (``envs/chunking.py``, ``env.action_chunk`` / ``env.obs_history``) executes the
chunk open loop and presents the history, so one loop step is one chunk and GAE runs per chunk.

Offline (``update(batch)``, ``steps.offline`` updates on the chunked dataset: ``rl/data/chunks.py``):
- ``model=flow``: rectified flow, ``mean((v(x_t, t | o) - (a - x0))^2)``, ``x_t = t a + (1 - t) x0``,
  ``t`` from ``time_sampler`` (uniform | logitnormal | beta; ``rl.nets.flow.sample_flow_time``);
- ``model=shortcut``: a quarter of each batch (``self_consistency_fraction``) trains the
  self-consistency of a step of size ``d`` with two of size ``d/2``, the rest flow matching at
  ``d = 0`` (``losses.shortcut_loss``); the draw of ``d`` is ``sample_shortcut_steps``'s decision.
- AdamW (``bc_lr``, ``bc_weight_decay``) and an EMA of the weights (``ema_decay`` every update); the
  EMA is what is evaluated offline and what fine-tuning starts from.

Online (``set_phase(Phase.ONLINE)``, once): ``actor`` and the frozen ``reference`` (for the W2
regulariser) start as copies of the EMA policy, with a noise net ``sigma(s, t)`` in
``[sigma_min, sigma_max]`` (``rl.nets.flow.NoiseNet``, reading ``[time_emb.detach(), cond]``) and a
value net. Each rollout step (``policy_step``) samples the K-step chain
``x^0 ~ N(0, I)``, ``mu_k = clip(x^k + v(x^k, t_k) / K, +-1)``,
``x^{k+1} = clip(mu_k + sigma_k eps, mu_k +- 3 sigma_k)`` (``x^K`` clipped to [-1, 1]), executes
``x^K`` and keeps the chain; ``update_rollout`` scores the kept chains exactly
(``losses.gaussian_chain_log_prob``: ``log N(x^0) + sum_k log N(x^{k+1}; mu_k, sigma_k^2)``, divided by
``(K + 1) Ta Da``) and runs PPO: rewards divided by the running std of discounted returns (clip 10),
GAE (``gamma`` per chunk, ``gae_lambda``), ``epochs`` passes over ``repeat_samples``-times repeated,
shuffled indices in minibatches of ``minibatch``, advantages z-scored per minibatch, log-probs clamped
to ``logprob_clamp``, PPO-clip (``clip``), ``vf_coef * 0.5 (V - R)^2``, ``- ent_coef`` times the
chain's entropy rate, ``+ bc_coef`` W2 proxy; the critic steps every minibatch, the actor (velocity
and noise nets) only from iteration ``critic_warmup_iterations``; an epoch stops when the approximate
KL exceeds ``target_kl``. After each iteration the cosine learning rates and the sigma_max schedule
(``noise_schedule=learn_decay``: held for ``noise_hold_fraction`` of ``iterations``, then cosine down
to ``noise_final_ratio sigma_max + (1 - noise_final_ratio) sigma_min``) advance.
``act(obs, deterministic=True)`` is the deterministic Euler ODE (no noise net): evaluation and
deployment. As the official evaluation, ``x^0`` is still drawn from N(0, I): the flow's own
randomness is its input, and ``x^0 = 0`` is not a point the policy was trained to map.

Decisions on the official code's pitfalls (spec §1.10) and other deviations:
1. One time grid, ``t_k = k / K`` (``rl.nets.flow.step_times``), in sampling, scoring, evaluation
   and the W2 regulariser; the official rollout used ``linspace(0, 1, K)`` and its scoring
   ``linspace(0, 1 - 1/K, K)``, so the PPO ratio was not 1 at the first minibatch for K > 1.
2. One sigma: the noise net's output, bounded below by ``sigma_min``, is used to sample and to score
   (the official floors only the sampling std, at ``min_sampling_denoising_std``).
3. The chain is scored on its stored, post-clamp samples, with the mean clipped identically in
   both passes (the same function computes both).
4. Shortcut step sizes: ``rl.nets.flow.sample_shortcut_steps`` (the official ``j`` range is
   ``0..max_steps - 2``; here ``0..floor(log2 max_steps) - 1``, Frans et al.'s).
5. ``stochastic_interpolate``'s always-true branch only matters when fewer than K steps are
   fine-tuned; here every step has the learned noise (as every official config).
6. The log-prob clamp (``logprob_clamp``, official [-1, 1]) is kept and configurable; the metric
   ``logprob_min`` shows when it saturates (it zeroes those rows' gradients).
7. W2 regulariser: both ODEs start from the same *random* ``x^0`` per row, a coupling over the
   whole noise distribution (the official uses ``x^0 = 0``, which constrains one point of the map).
8. Reward scaling: the running variance is of discounted returns restarted at each rollout (the
   official carries each env's return across iterations); a rollout of hundreds of chunks makes
   the difference small, and the agent holds no per-env state (it does not know ``num_envs``).
9. Learning rates: cosine from the rate to its minimum over ``iterations``, no warm-up; BC uses a
   constant rate (the official cosine cycle of 3000 epochs barely decays over its 40 epochs).
10. The kept chains live in the agent between ``policy_step`` and ``update_rollout``: the shared
   ``RolloutBuffer`` stores the executed chunk (its action column), and checkpoints are written only
   between rollouts, when none are kept.
11. Pixels (a ``Dict`` of cameras and proprio, with ``env.obs_history = 1`` as the official
   ``img_cond_steps``): the condition starts with an image encoder (``agent.encoder``, the shared
   ``rl.nets.encoders.ObservationEncoder``, in place of the official ViT + ``SpatialEmb``). It is part
   of the policy network, so BC trains it, the EMA averages it, and the actor and reference copy it;
   PPO fine-tunes the actor's encoder at the actor's rate, and the noise net's gradient reaches it
   through the condition, as in the official code (its ``cond_emb`` is not detached). The value net
   has its own encoder (the official ``ViTCritic`` has its own ViT), started from the BC encoder's
   weights when going online rather than from random weights. The random shift (``encoder.pad``)
   is applied in BC only, as the official applies ``RandomShiftsAug`` in pre-training; the PPO update
   encodes the un-shifted frames the rollout acted on, so the first minibatch's ratio stays 1.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from rl.agents.base import Agent, AgentConfig, Part, Phase, polyak_update, set_lr
from rl.agents.losses import (
    approx_kl,
    flow_matching_loss,
    gaussian_chain_entropy,
    gaussian_chain_log_prob,
    ppo_clip_loss,
    shortcut_loss,
    standardize,
)
from rl.buffers.batch import Batch, Obs, map_obs, obs_rows, take_rows
from rl.buffers.rollout import RolloutBuffer
from rl.nets import ObservationNormalizer
from rl.nets.encoders import ObservationEncoder
from rl.nets.flow import (
    FlowMLP,
    FlowNet,
    NoiseNet,
    ResidualMLP,
    ShortcutMLP,
    euler_sample,
    from_official_state_dict,
    sample_flow_time,
    sample_shortcut_steps,
    step_times,
)

MODELS = ("flow", "shortcut")
NOISE_SCHEDULES = ("learn", "learn_decay")


@dataclass
class ReinFlowConfig(AgentConfig):
    name: str = "reinflow"
    batch_size: int = 128
    """BC rows per update (official gym pre-training: 128)."""
    normalize_obs: bool = True
    # the policy
    model: str = "flow"
    """``flow`` (1-rectified flow) or ``shortcut`` (shortcut model)."""
    hidden: list[int] = field(default_factory=lambda: [512, 512, 512])
    """Residual head widths, ``[h] * (2n + 1)``."""
    activation: str = "relu"
    time_dim: int = 16
    cond_hidden: list[int] | None = None
    """Condition MLP on the observation history; None feeds it raw (flow). Shortcut needs one whose
    last width is ``time_dim`` (official [64, 16])."""
    denoising_steps: int = 4
    """K: Euler steps of sampling, fine-tuning and evaluation."""
    clip_intermediate: bool = True
    # behaviour cloning
    bc_lr: float = 1e-3
    bc_weight_decay: float = 1e-6
    ema_decay: float = 0.995
    time_sampler: str = "uniform"
    self_consistency_fraction: float = 0.25
    shortcut_max_steps: int = 20
    # fine-tuning: noise
    sigma_min: float = 0.10
    sigma_max: float = 0.24
    noise_hidden: list[int] = field(default_factory=lambda: [64, 64])
    noise_schedule: str = "learn_decay"
    noise_hold_fraction: float = 0.35
    noise_final_ratio: float = 0.7
    randn_clip: float = 3.0
    """Chain samples stay within ``randn_clip`` stds of their mean."""
    initial_log_prob: bool = True
    """Count ``log N(x^0; 0, I)`` in the chain's log-likelihood (official ``account_for_initial_stochasticity``)."""
    # fine-tuning: PPO
    iterations: int = 1000
    """Rollout iterations the learning-rate and sigma_max schedules span."""
    actor_lr: float = 4.5e-5
    actor_min_lr: float = 2e-5
    critic_lr: float = 6.5e-4
    critic_min_lr: float = 3e-4
    critic_hidden: list[int] = field(default_factory=lambda: [256, 256, 256])
    gae_lambda: float = 0.95
    epochs: int = 5
    minibatch: int = 50_000
    repeat_samples: int = 10
    """Each epoch iterates over the rollout's indices this many times (the official matches DPPO's
    batch of env-step x denoising-step pairs this way)."""
    clip: float = 0.01
    vf_coef: float = 0.5
    ent_coef: float = 0.03
    bc_coef: float = 0.0
    """Weight of the W2 proxy ``mean((ODE_ref(x0) - ODE_actor(x0))^2)``; 0: off."""
    target_kl: float | None = 1.0
    logprob_clamp: list[float] = field(default_factory=lambda: [-1.0, 1.0])
    critic_warmup_iterations: int = 0
    max_grad_norm: float | None = None
    reward_norm: bool = True
    """Divide rewards by the running std of discounted returns (clip 10)."""


def cosine(progress: float, start: float, end: float) -> float:
    """``end + (start - end) (1 + cos(pi p)) / 2`` for ``p`` clamped to [0, 1]."""
    p = min(max(progress, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * p))


def build_flow_net(
    cfg: ReinFlowConfig,
    obs_dim: int,
    action_dim: int,
    obs_norm: ObservationNormalizer | None,
    encoder: ObservationEncoder | None,
) -> FlowNet:
    """The velocity network ``cfg.model`` names, reading ``encoder``'s features for pixels."""
    if cfg.model not in MODELS:
        raise ValueError(f"agent.model={cfg.model!r}: not one of {list(MODELS)}")
    kind = FlowMLP if cfg.model == "flow" else ShortcutMLP
    cond = cfg.cond_hidden if cfg.cond_hidden is not None or cfg.model == "flow" else [64, cfg.time_dim]
    return kind(obs_dim, action_dim, cfg.hidden, cfg.time_dim, cond, cfg.activation, obs_norm, encoder)


class ReturnScale(nn.Module):
    """Running mean/variance (Welford, count starting at 1e-4 as the official ``RunningMeanStd``) of
    discounted returns; ``forward`` divides rewards by their std and clips to +-10."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("stats", torch.tensor([1e-4, 0.0, 1.0], dtype=torch.float64))  # count, mean, var

    @torch.no_grad()
    def forward(self, reward: torch.Tensor, done: torch.Tensor, gamma: float) -> torch.Tensor:
        """``reward``, ``done``: ``(steps, envs)``; returns restart at each episode and each rollout."""
        running = torch.zeros_like(reward[0])
        returns = torch.empty_like(reward)
        for t in range(len(reward)):
            running = reward[t] + gamma * running
            returns[t] = running
            running = running * (1.0 - done[t])
        x = returns.double().flatten()
        count, mean, var = self.stats
        n, batch_mean, batch_var = x.numel(), x.mean(), x.var(unbiased=False)
        total = count + n
        delta = batch_mean - mean
        m2 = var * count + batch_var * n + delta.pow(2) * count * n / total
        self.stats.copy_(torch.stack([total, mean + delta * n / total, m2 / total]))
        return (reward / torch.sqrt(self.stats[2] + 1e-8).float()).clamp(-10.0, 10.0)


class ChainStore:
    """The chains ``policy_step`` sampled during the current rollout, one ``(N, K + 1, A)`` per step."""

    def __init__(self) -> None:
        self.chains: list[torch.Tensor] = []

    def add(self, chain: torch.Tensor) -> None:
        self.chains.append(chain)

    def take(self, steps: int) -> torch.Tensor:
        """``(steps, N, ...)``, emptying the store; refuses a rollout that is not the one stored."""
        if len(self.chains) != steps:
            raise RuntimeError(
                f"rollout holds {steps} steps but policy_step sampled {len(self.chains)} since the last update"
            )
        chains, self.chains = torch.stack(self.chains), []
        return chains


def ppo_minibatches(total: int, repeat: int, size: int, device: torch.device) -> list[torch.Tensor]:
    """One epoch's minibatches: ``repeat`` copies of ``0..total-1`` shuffled together, in pieces of ``size``."""
    return list((torch.randperm(total * repeat, device=device) % total).split(size))


def value_net(
    obs_dim: int,
    hidden: list[int],
    obs_norm: ObservationNormalizer | None,
    encoder: ObservationEncoder | None,
) -> nn.Sequential:
    """``V(s)`` ``(B,)``: the official ``CriticObs`` (residual MLP, Mish), on the normalised state or,
    for pixels, on the features of its own copy of ``encoder`` (``start_value_encoder``)."""
    first = copy.deepcopy(encoder) if encoder is not None else obs_norm or ObservationNormalizer(obs_dim)
    return nn.Sequential(first, ResidualMLP(obs_dim, hidden, 1, "mish"), nn.Flatten(0))


def start_value_encoder(critic: nn.Sequential, policy: FlowNet) -> None:
    """Pixels: the value net's encoder starts online from the pre-trained policy's encoder weights."""
    if policy.cond.encoder is not None:
        critic[0].load_state_dict(policy.cond.encoder.state_dict())


class ReinFlow(Agent):
    name = "reinflow"
    config_class = ReinFlowConfig
    on_policy = True
    takes_images = True

    def __init__(
        self,
        cfg: ReinFlowConfig,
        obs_dim: int,
        action_dim: int,
        device: torch.device,
        obs_norm: ObservationNormalizer | None = None,
        encoder: ObservationEncoder | None = None,
    ) -> None:
        super().__init__(cfg, obs_dim, action_dim, device)
        check_config(cfg)
        self.policy = build_flow_net(cfg, obs_dim, action_dim, obs_norm, encoder).to(device)
        self.ema = copy.deepcopy(self.policy).requires_grad_(False)
        self.actor = copy.deepcopy(self.policy)
        self.reference = copy.deepcopy(self.policy).requires_grad_(False)
        self.noise = NoiseNet(self.policy.noise_input_dim, action_dim, cfg.noise_hidden).to(device)
        self.critic = value_net(obs_dim, cfg.critic_hidden, obs_norm, encoder).to(device)
        self.return_scale = ReturnScale().to(device)
        self.bc_optimizer = torch.optim.AdamW(
            self.policy.parameters(), lr=cfg.bc_lr, weight_decay=cfg.bc_weight_decay
        )
        self.actor_optimizer = torch.optim.AdamW(
            [*self.actor.parameters(), *self.noise.parameters()], lr=cfg.actor_lr, weight_decay=0.0
        )
        self.critic_optimizer = torch.optim.AdamW(
            self.critic.parameters(), lr=cfg.critic_lr, weight_decay=0.0
        )
        self.iteration = torch.zeros((), dtype=torch.long)  # on the CPU: read by Python every rollout
        self.rollout_chains = ChainStore()

    def parts(self) -> dict[str, Part]:
        return {
            "policy": self.policy,
            "ema": self.ema,
            "actor": self.actor,
            "reference": self.reference,
            "noise": self.noise,
            "critic": self.critic,
            "return_scale": self.return_scale,
            "bc_optimizer": self.bc_optimizer,
            "actor_optimizer": self.actor_optimizer,
            "critic_optimizer": self.critic_optimizer,
            "iteration": self.iteration,
        }

    # -- behaviour cloning -----------------------------------------------------------------------------

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One BC step (flow matching or shortcut) on ``batch.obs`` -> ``batch.action`` chunks, then the EMA."""
        if self.phase is Phase.ONLINE:
            raise RuntimeError("reinflow online is on-policy: use policy_step() and update_rollout()")
        loss = bc_loss(self.cfg, self.policy, self.policy.cond.augment(batch.obs), batch.action)
        self.bc_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.bc_optimizer.step()
        polyak_update(self.ema, self.policy, 1.0 - self.cfg.ema_decay)
        return {"bc_loss": loss.detach()}

    # -- acting ----------------------------------------------------------------------------------------

    def _deployed(self) -> FlowNet:
        return self.actor if self.phase is Phase.ONLINE else self.ema

    @torch.no_grad()
    def act(self, obs: Obs, deterministic: bool = False) -> torch.Tensor:
        """The K-step Euler ODE from ``x^0 ~ N(0, I)``; online and not ``deterministic``, the noisy chain."""
        if self.phase is Phase.ONLINE and not deterministic:
            return self.sample_chain(obs)[0][:, -1]
        net = self._deployed()
        x0 = torch.randn(obs_rows(obs), self.action_dim, device=self.device)
        return euler_sample(net, net.encode(obs), x0, self.cfg.denoising_steps, self.cfg.clip_intermediate)

    def set_phase(self, phase: Phase) -> None:
        """Going online starts the fine-tuned actor and the W2 reference from the EMA policy (and, for
        pixels, the value net's encoder from its encoder), once."""
        if self.phase is Phase.OFFLINE and phase is Phase.ONLINE:
            self.actor.load_state_dict(self.ema.state_dict())
            self.reference.load_state_dict(self.ema.state_dict())
            start_value_encoder(self.critic, self.ema)
        super().set_phase(phase)

    # -- the chain -------------------------------------------------------------------------------------

    def sigma_bounds(self) -> tuple[float, float]:
        """``(sigma_min, sigma_max)`` at the current iteration (the sigma_max schedule)."""
        cfg = self.cfg
        if cfg.noise_schedule == "learn":
            return cfg.sigma_min, cfg.sigma_max
        progress = (int(self.iteration) / cfg.iterations - cfg.noise_hold_fraction) / (
            1.0 - cfg.noise_hold_fraction
        )
        final = cfg.noise_final_ratio * cfg.sigma_max + (1.0 - cfg.noise_final_ratio) * cfg.sigma_min
        return cfg.sigma_min, cosine(progress, cfg.sigma_max, final)

    def _transition(
        self, x: torch.Tensor, k: int, cond: torch.Tensor, bounds: tuple[float, float]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of step ``k`` of the chain from ``x``."""
        steps = self.cfg.denoising_steps
        t, d = step_times(k, steps, x.shape[0], x.device)
        velocity, time_emb = self.actor(x, t, d, cond)
        mean = x + velocity / steps
        if self.cfg.clip_intermediate:
            mean = mean.clamp(-1.0, 1.0)
        return mean, self.noise(torch.cat([time_emb.detach(), cond], dim=-1), *bounds)

    @torch.no_grad()
    def sample_chain(self, obs: Obs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The chain ``(N, K + 1, A)`` (``x^0 ~ N(0, I)``, then the noisy Euler steps; ``x^K`` in
        [-1, 1]) and each step's mean and std ``(N, K, A)``."""
        cond, bounds, steps = self.actor.encode(obs), self.sigma_bounds(), self.cfg.denoising_steps
        x = torch.randn(obs_rows(obs), self.action_dim, device=self.device)
        chain, means, stds = [x], [], []
        for k in range(steps):
            mean, std = self._transition(x, k, cond, bounds)
            spread = self.cfg.randn_clip * std
            x = torch.minimum(
                torch.maximum(mean + std * torch.randn_like(mean), mean - spread), mean + spread
            )
            if k == steps - 1:
                x = x.clamp(-1.0, 1.0)
            chain.append(x)
            means.append(mean)
            stds.append(std)
        return torch.stack(chain, dim=1), torch.stack(means, dim=1), torch.stack(stds, dim=1)

    def chain_log_prob(
        self, obs: Obs, chain: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised log-likelihood ``(N,)`` of stored chains, their entropy rate ``(N,)`` and the mean
        sigma, with gradients to the actor and the noise net."""
        cond, bounds = self.actor.encode(obs), self.sigma_bounds()
        moments = [self._transition(chain[:, k], k, cond, bounds) for k in range(self.cfg.denoising_steps)]
        mean = torch.stack([m for m, _ in moments], dim=1)
        std = torch.stack([s for _, s in moments], dim=1)
        initial = self.cfg.initial_log_prob
        return (
            gaussian_chain_log_prob(mean, std, chain, initial),
            gaussian_chain_entropy(std, initial),
            std.detach().mean(),
        )

    # -- online PPO ------------------------------------------------------------------------------------

    @torch.no_grad()
    def policy_step(self, obs: Obs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The executed chunk ``x^K`` ``(N, A)``, its chain's log-likelihood ``(N,)`` (from the means
        and stds of the sampling pass, the same numbers ``chain_log_prob`` recomputes) and ``V(obs)``;
        the chain is kept for ``update_rollout``."""
        if self.phase is not Phase.ONLINE:
            raise RuntimeError("reinflow: call set_phase(Phase.ONLINE) before policy_step()")
        chain, mean, std = self.sample_chain(obs)
        self.rollout_chains.add(chain)
        log_prob = gaussian_chain_log_prob(mean, std, chain, self.cfg.initial_log_prob)
        return chain[:, -1], log_prob, self.critic(obs)

    @torch.no_grad()
    def state_value(self, obs: Obs) -> torch.Tensor:
        return self.critic(obs)

    def update_rollout(self, rollout: RolloutBuffer, last_obs: Obs) -> dict[str, torch.Tensor]:
        """PPO on a full ``rollout`` of chunks and the chains ``policy_step`` kept (module docstring)."""
        cfg = self.cfg
        chains = self.rollout_chains.take(rollout.steps).flatten(0, 1)
        if cfg.reward_norm:  # in place: the loop empties the rollout after this update
            done = torch.maximum(rollout.terminated, rollout.truncated)
            rollout.reward.copy_(self.return_scale(rollout.reward, done, cfg.gamma))
        rollout.compute_gae(self.state_value(last_obs), cfg.gamma, cfg.gae_lambda)
        obs, returns = map_obs(rollout.obs, lambda t: t.flatten(0, 1)), rollout.returns.flatten()
        old_log_prob, advantage = rollout.log_prob.flatten(), rollout.advantage.flatten()
        low, high = cfg.logprob_clamp
        train_actor = int(self.iteration) >= cfg.critic_warmup_iterations

        totals, minibatches, first_ratio = torch.zeros(8, device=self.device), 0, None
        for _ in range(cfg.epochs):
            for index in ppo_minibatches(len(returns), cfg.repeat_samples, cfg.minibatch, self.device):
                mini_obs = take_rows(obs, index)
                log_prob, entropy, sigma = self.chain_log_prob(mini_obs, chains[index])
                old = old_log_prob[index]
                log_ratio = log_prob.clamp(low, high) - old.clamp(low, high)
                policy_loss = ppo_clip_loss(
                    log_prob.clamp(low, high),
                    old.clamp(low, high),
                    standardize(advantage[index], 0),
                    cfg.clip,
                )
                value_loss = 0.5 * (self.critic(mini_obs) - returns[index]).pow(2).mean()
                loss = policy_loss - cfg.ent_coef * entropy.mean() + cfg.vf_coef * value_loss
                w2 = self._w2(mini_obs) if cfg.bc_coef > 0 else torch.zeros((), device=self.device)
                loss = loss + cfg.bc_coef * w2
                self.actor_optimizer.zero_grad(set_to_none=True)
                self.critic_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(
                        [*self.actor.parameters(), *self.noise.parameters()], cfg.max_grad_norm
                    )
                    nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.max_grad_norm)
                self.critic_optimizer.step()
                if train_actor:
                    self.actor_optimizer.step()
                with torch.no_grad():
                    kl = approx_kl(log_ratio)
                    ratio = log_ratio.exp()
                    if first_ratio is None:
                        first_ratio = (ratio - 1.0).abs().max()
                    totals += torch.stack([
                        policy_loss, value_loss, entropy.mean(), kl, ((ratio - 1.0).abs() > cfg.clip).float().mean(),
                        sigma, w2, log_prob.min(),
                    ]).detach()  # fmt: skip
                minibatches += 1
                if cfg.target_kl is not None and float(kl) > cfg.target_kl:
                    break

        self.iteration += 1
        progress = int(self.iteration) / cfg.iterations
        set_lr(self.actor_optimizer, cosine(progress, cfg.actor_lr, cfg.actor_min_lr))
        set_lr(self.critic_optimizer, cosine(progress, cfg.critic_lr, cfg.critic_min_lr))
        means = totals / minibatches
        names = (
            "policy_loss",
            "value_loss",
            "entropy",
            "approx_kl",
            "clip_fraction",
            "sigma",
            "w2_loss",
            "logprob_min",
        )
        return {name: means[i] for i, name in enumerate(names)} | {
            "first_ratio_error": first_ratio,
            "sigma_max": torch.tensor(self.sigma_bounds()[1]),
            "advantage_mean": rollout.advantage.mean(),
            "value_mean": rollout.value.mean(),
            "minibatches": torch.tensor(float(minibatches)),
        }

    def _w2(self, obs: Obs) -> torch.Tensor:
        """``mean((ODE_reference(x0) - ODE_actor(x0))^2)``, one shared random ``x0`` per row (decision 7)."""
        steps, clip = self.cfg.denoising_steps, self.cfg.clip_intermediate
        x0 = torch.randn(obs_rows(obs), self.action_dim, device=self.device)
        with torch.no_grad():
            target = euler_sample(self.reference, self.reference.encode(obs), x0, steps, clip)
        return (euler_sample(self.actor, self.actor.encode(obs), x0, steps, clip) - target).pow(2).mean()

    # -- a policy trained elsewhere --------------------------------------------------------------------

    def load_official(
        self,
        checkpoint: dict[str, Any],
        use_ema: bool = True,
        obs_range: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """Start from a policy pre-trained by ReinFlow's official code: ``checkpoint`` is its
        ``torch.load``-ed pre-training file (``{"epoch", "model", "ema"}``); the ``ema`` (or ``model``)
        weights go into this agent's BC policy and its EMA through ``from_official_state_dict``'s key map,
        so fine-tuning starts from them. Shapes must match this config (``hidden``, ``time_dim``,
        ``cond_hidden``, ``model``, chunk and history sizes).

        ``obs_range``: the official normalisation's ``(obs_min, obs_max)`` (its ``normalization.npz``,
        one entry per number of the flat history), which it applies outside the network as
        ``2 (o - min) / (max - min + 1e-6) - 1``; it becomes the policy's fixed ``obs_norm``
        (build the agent with ``normalize_obs=false``). Actions: the official maps [-1, 1] to the
        dataset's action range, which is [-1, 1] for the D4RL locomotion data; o2o's env does the same
        with the simulator's bounds, so other ranges need the data's own bounds in the env."""
        key = "ema" if use_ema else "model"
        if key not in checkpoint:
            raise ValueError(f"official checkpoint: no {key!r} entry (has {sorted(checkpoint)})")
        mapped = from_official_state_dict(checkpoint[key], shortcut=self.cfg.model == "shortcut")
        ours = self.policy.state_dict()
        extra = sorted(set(mapped) - set(ours))
        if extra:
            raise ValueError(
                f"official checkpoint: {extra[:3]} have no place in agent.model={self.cfg.model!r}"
            )
        missing = sorted(k for k in ours if k not in mapped and not k.startswith("cond.obs_norm."))
        if missing:
            raise ValueError(
                f"official checkpoint: no weights for {missing[:3]} (is agent.model={self.cfg.model!r} right?)"
            )
        for name, tensor in mapped.items():
            if tensor.shape != ours[name].shape:
                raise ValueError(
                    f"official checkpoint: {name} has shape {tuple(tensor.shape)}, this config expects {tuple(ours[name].shape)}"
                )
        state = {**ours, **{k: v.to(self.device) for k, v in mapped.items()}}
        if obs_range is not None:
            low, high = (torch.as_tensor(v, dtype=torch.float32, device=self.device) for v in obs_range)
            half = (high - low + 1e-6) / 2.0
            state["cond.obs_norm.mean"], state["cond.obs_norm.std"] = low + half, half
        self.policy.load_state_dict(state)
        self.ema.load_state_dict(state)


def bc_loss(cfg: ReinFlowConfig, net: FlowNet, obs: Obs, action: torch.Tensor) -> torch.Tensor:
    """The pre-training loss of ``cfg.model`` on one batch of (observation history, action chunk) rows."""
    cond, n = net.encode(obs), action.shape[0]
    x0 = torch.randn_like(action)

    def velocity(x: torch.Tensor, t: torch.Tensor, d: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return net(x, t, d, c)[0]

    if cfg.model == "flow":
        return flow_matching_loss(
            velocity, cond, x0, action, sample_flow_time(n, cfg.time_sampler, action.device)
        )
    consistency = int(cfg.self_consistency_fraction * n)
    t_sc, d_sc = sample_shortcut_steps(consistency, cfg.shortcut_max_steps, action.device)
    t = torch.cat([sample_flow_time(n - consistency, "uniform", action.device), t_sc])
    d = torch.cat([torch.zeros(n - consistency, device=action.device), d_sc])
    return shortcut_loss(velocity, cond, x0, action, t, d, flow_rows=n - consistency)


def check_config(cfg: ReinFlowConfig) -> None:
    """Refuse values a type cannot rule out, naming the field."""
    if cfg.noise_schedule not in NOISE_SCHEDULES:
        raise ValueError(f"agent.noise_schedule={cfg.noise_schedule!r}: not one of {list(NOISE_SCHEDULES)}")
    if not 0 < cfg.sigma_min <= cfg.sigma_max:
        raise ValueError(
            f"agent.sigma_min={cfg.sigma_min}, sigma_max={cfg.sigma_max}: need 0 < sigma_min <= sigma_max"
        )
    if cfg.denoising_steps < 1:
        raise ValueError(f"agent.denoising_steps={cfg.denoising_steps}: must be at least 1")
    if len(cfg.logprob_clamp) != 2 or cfg.logprob_clamp[0] >= cfg.logprob_clamp[1]:
        raise ValueError(f"agent.logprob_clamp={cfg.logprob_clamp}: must be [low, high] with low < high")
