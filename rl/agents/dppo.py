"""DPPO-style baseline (Ren et al., 2024): a DDPM policy over action chunks, pre-trained by the DDPM
loss on the same chunk rows as ReinFlow and fine-tuned by PPO over its last denoising steps.

It exists to race ReinFlow on time and score in the same run: same networks (``rl.nets.flow.FlowMLP``
is DPPO's ``DiffusionMLP`` layout, predicting the noise from the integer step), same chunk env,
buffers, loops, reward scaling, value net, learning-rate schedules and PPO loss
(``losses.ppo_clip_loss``); what differs is what DPPO is.

Offline (``update(batch)``): ``mean((eps(sqrt(ab_t) a + sqrt(1 - ab_t) e, t | o) - e)^2)``,
``t ~ U{0..T-1}`` (``losses.ddpm_loss``), cosine beta schedule (DPPO's), AdamW and an EMA.

Online (``set_phase(Phase.ONLINE)``, once): the EMA policy is frozen as ``pretrained`` and copied to
``actor``. A chunk is ``T = denoising_steps`` (20) ancestral steps from ``x_T ~ N(0, I)``: each step's
mean from the predicted clean chunk (clipped to [-1, 1]) and DDPM's posterior coefficients, its std
DDPM's posterior std floored at ``min_std`` (0.1, the fixed schedule with a floor), noise clipped to
``randn_clip`` stds, the final chunk clipped to [-1, 1]. The first ``T - ft_steps`` steps run the
frozen network, the last ``ft_steps`` (10) the fine-tuned one, and only those are kept
(``(N, ft_steps + 1, A)``).
``update_rollout``: the same reward scaling and GAE as ReinFlow; the old per-step log-probs are
computed in one pass before the epochs (DPPO's order, so the first ratio is 1); then PPO over
(chunk, denoising step) pairs, DPPO's two-level MDP: each pair's log-prob is the Gaussian step's,
clamped to ``logprob_clamp`` ([-5, 2]) per number and averaged over the chunk's numbers; its
advantage is the chunk's (z-scored per minibatch) times ``gamma_denoising^(ft_steps - k - 1)``
(``k``: the step's index among the kept ones, the last step undiscounted); its clip ``clip_k``
rises exponentially from ``clip_base`` to ``clip`` over k (``clip_rate``). No entropy term (the noise
is fixed), no BC term. Evaluation: the same chain without noise.
The rollout's log-prob column stays 0: the per-step log-probs are computed before the epochs.

Pixels: as ReinFlow's decision 11 (the image encoder is part of the policy network, the value net
has its own copy started from it online, the random shift in BC only).

Deviation: DPPO's deterministic sampling keeps a std of 1e-3 on all steps but the last; here it is 0.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from rl.agents.base import Agent, AgentConfig, Part, Phase, polyak_update, set_lr
from rl.agents.losses import approx_kl, ddpm_loss, ppo_clip_loss, standardize
from rl.agents.reinflow import (
    ChainStore,
    ReturnScale,
    cosine,
    ppo_minibatches,
    start_value_encoder,
    value_net,
)
from rl.buffers.batch import Batch, Obs, map_obs, obs_rows, take_rows
from rl.buffers.rollout import RolloutBuffer
from rl.nets import ObservationNormalizer
from rl.nets.encoders import ObservationEncoder
from rl.nets.flow import FlowMLP


@dataclass
class DPPOConfig(AgentConfig):
    name: str = "dppo"
    batch_size: int = 128
    normalize_obs: bool = True
    hidden: list[int] = field(default_factory=lambda: [512, 512, 512])
    activation: str = "relu"
    time_dim: int = 16
    cond_hidden: list[int] | None = None
    denoising_steps: int = 20
    ft_steps: int = 10
    """Fine-tuned (last) denoising steps."""
    # behaviour cloning
    bc_lr: float = 1e-3
    bc_weight_decay: float = 1e-6
    ema_decay: float = 0.995
    # the chain
    min_std: float = 0.1
    """Floor of every step's std, in sampling and in scoring (DPPO's min_sampling/logprob_denoising_std)."""
    randn_clip: float = 3.0
    # fine-tuning (DPPO's gym hopper defaults)
    iterations: int = 1000
    actor_lr: float = 1e-4
    actor_min_lr: float = 1e-4
    critic_lr: float = 1e-3
    critic_min_lr: float = 1e-3
    critic_hidden: list[int] = field(default_factory=lambda: [256, 256, 256])
    gae_lambda: float = 0.95
    epochs: int = 5
    minibatch: int = 50_000
    """(chunk, denoising step) pairs per minibatch."""
    clip: float = 0.01
    clip_base: float = 0.01
    clip_rate: float = 3.0
    gamma_denoising: float = 0.99
    vf_coef: float = 0.5
    target_kl: float | None = 1.0
    logprob_clamp: list[float] = field(default_factory=lambda: [-5.0, 2.0])
    critic_warmup_iterations: int = 0
    max_grad_norm: float | None = None
    reward_norm: bool = True


class DDPMSchedule:
    """DPPO's cosine beta schedule and DDPM's posterior ``q(x_{t-1} | x_t, x_0)`` coefficients."""

    def __init__(self, steps: int, device: torch.device, s: float = 0.008) -> None:
        x = torch.linspace(0, steps + 1, steps + 1, dtype=torch.float64)
        alpha_bar = torch.cos(((x / (steps + 1)) + s) / (1 + s) * math.pi * 0.5) ** 2
        alpha_bar = alpha_bar / alpha_bar[0]
        betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(0, 0.999)
        alphas = 1 - betas
        ab = torch.cumprod(alphas, 0)
        ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])

        def f32(values: torch.Tensor) -> torch.Tensor:
            return values.float().to(device)

        self.alpha_bar = f32(ab)
        self.mean_x0 = f32(betas * ab_prev.sqrt() / (1 - ab))
        self.mean_xt = f32((1 - ab_prev) * alphas.sqrt() / (1 - ab))
        self.std = f32((betas * (1 - ab_prev) / (1 - ab)).clamp(min=1e-20).sqrt())


class DPPO(Agent):
    name = "dppo"
    config_class = DPPOConfig
    on_policy = True
    takes_images = True

    def __init__(
        self,
        cfg: DPPOConfig,
        obs_dim: int,
        action_dim: int,
        device: torch.device,
        obs_norm: ObservationNormalizer | None = None,
        encoder: ObservationEncoder | None = None,
    ) -> None:
        super().__init__(cfg, obs_dim, action_dim, device)
        if not 1 <= cfg.ft_steps <= cfg.denoising_steps:
            raise ValueError(
                f"agent.ft_steps={cfg.ft_steps}: must be in [1, denoising_steps={cfg.denoising_steps}]"
            )
        self.schedule = DDPMSchedule(cfg.denoising_steps, device)
        net = FlowMLP(
            obs_dim, action_dim, cfg.hidden, cfg.time_dim, cfg.cond_hidden, cfg.activation, obs_norm, encoder
        )
        self.policy = net.to(device)
        self.ema = copy.deepcopy(self.policy).requires_grad_(False)
        self.pretrained = copy.deepcopy(self.policy).requires_grad_(False)
        self.actor = copy.deepcopy(self.policy)
        self.critic = value_net(obs_dim, cfg.critic_hidden, obs_norm, encoder).to(device)
        self.return_scale = ReturnScale().to(device)
        self.bc_optimizer = torch.optim.AdamW(
            self.policy.parameters(), lr=cfg.bc_lr, weight_decay=cfg.bc_weight_decay
        )
        self.actor_optimizer = torch.optim.AdamW(self.actor.parameters(), lr=cfg.actor_lr, weight_decay=0.0)
        self.critic_optimizer = torch.optim.AdamW(
            self.critic.parameters(), lr=cfg.critic_lr, weight_decay=0.0
        )
        self.iteration = torch.zeros((), dtype=torch.long)
        self.rollout_chains = ChainStore()

    def parts(self) -> dict[str, Part]:
        return {
            "policy": self.policy,
            "ema": self.ema,
            "pretrained": self.pretrained,
            "actor": self.actor,
            "critic": self.critic,
            "return_scale": self.return_scale,
            "bc_optimizer": self.bc_optimizer,
            "actor_optimizer": self.actor_optimizer,
            "critic_optimizer": self.critic_optimizer,
            "iteration": self.iteration,
        }

    # -- behaviour cloning -----------------------------------------------------------------------------

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self.phase is Phase.ONLINE:
            raise RuntimeError("dppo online is on-policy: use policy_step() and update_rollout()")
        cond, n = self.policy.encode(self.policy.cond.augment(batch.obs)), len(batch)
        t = torch.randint(0, self.cfg.denoising_steps, (n,), device=self.device)

        def predict_noise(x: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
            return self.policy(x, steps.float(), None, cond)[0]

        loss = ddpm_loss(
            predict_noise, batch.action, t, torch.randn_like(batch.action), self.schedule.alpha_bar
        )
        self.bc_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.bc_optimizer.step()
        polyak_update(self.ema, self.policy, 1.0 - self.cfg.ema_decay)
        return {"bc_loss": loss.detach()}

    def set_phase(self, phase: Phase) -> None:
        """Going online freezes the EMA policy for the early steps and starts the fine-tuned copy (and,
        for pixels, the value net's encoder) from it, once."""
        if self.phase is Phase.OFFLINE and phase is Phase.ONLINE:
            self.pretrained.load_state_dict(self.ema.state_dict())
            self.actor.load_state_dict(self.ema.state_dict())
            start_value_encoder(self.critic, self.ema)
        super().set_phase(phase)

    # -- the chain -------------------------------------------------------------------------------------

    def _step(
        self, net: FlowMLP, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and floored std of ``x_{t-1}`` given ``x_t``; ``t`` ``(B,)`` integer steps."""
        s = self.schedule
        noise = net(x, t.float(), None, cond)[0]
        ab = s.alpha_bar[t].unsqueeze(-1)
        clean = ((x - (1.0 - ab).sqrt() * noise) / ab.sqrt()).clamp(-1.0, 1.0)
        mean = s.mean_x0[t].unsqueeze(-1) * clean + s.mean_xt[t].unsqueeze(-1) * x
        return mean, s.std[t].unsqueeze(-1).clamp(min=self.cfg.min_std).expand_as(mean)

    @torch.no_grad()
    def sample_chain(self, obs: Obs, noisy: bool) -> torch.Tensor:
        """The last ``ft_steps + 1`` points of the T-step chain, ``(N, ft_steps + 1, A)``."""
        cfg, n = self.cfg, obs_rows(obs)
        online = self.phase is Phase.ONLINE
        early, late = (self.pretrained, self.actor) if online else (self.ema, self.ema)
        cond_early, cond_late = early.encode(obs), late.encode(obs)
        x = torch.randn(n, self.action_dim, device=self.device)
        kept = []
        for i, step in enumerate(reversed(range(cfg.denoising_steps))):
            fine_tuned = i >= cfg.denoising_steps - cfg.ft_steps
            if fine_tuned:
                kept.append(x)
            t = torch.full((n,), step, device=self.device, dtype=torch.long)
            mean, std = self._step(
                late if fine_tuned else early, x, t, cond_late if fine_tuned else cond_early
            )
            x = mean + std * torch.randn_like(mean).clamp(-cfg.randn_clip, cfg.randn_clip) if noisy else mean
        kept.append(x.clamp(-1.0, 1.0))
        return torch.stack(kept, dim=1)

    def step_log_prob(
        self, obs: Obs, rows: torch.Tensor, chains: torch.Tensor, k: torch.Tensor
    ) -> torch.Tensor:
        """Log-prob ``(B,)`` of the (chunk ``rows``, kept step ``k``) pairs, ``chains[rows, k] ->
        chains[rows, k + 1]``, under the fine-tuned network: clamped per number, averaged over the
        chunk; ``obs`` and ``chains`` hold every chunk of the rollout."""
        cond = per_chunk(self.actor.encode, obs, rows)
        chain, pair = chains[rows], torch.arange(len(k), device=self.device)
        t = self.cfg.ft_steps - 1 - k  # kept step k runs DDPM step t
        mean, std = self._step(self.actor, chain[pair, k], t, cond)
        low, high = self.cfg.logprob_clamp
        return torch.distributions.Normal(mean, std).log_prob(chain[pair, k + 1]).clamp(low, high).mean(-1)

    # -- acting ----------------------------------------------------------------------------------------

    @torch.no_grad()
    def act(self, obs: Obs, deterministic: bool = False) -> torch.Tensor:
        return self.sample_chain(obs, noisy=not deterministic)[:, -1]

    @torch.no_grad()
    def policy_step(self, obs: Obs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The executed chunk, a zero log-prob (DPPO scores its steps in ``update_rollout``, as the
        official, so the rollout pays only the T denoising passes) and ``V(obs)``; the kept chain is
        stored for the update."""
        if self.phase is not Phase.ONLINE:
            raise RuntimeError("dppo: call set_phase(Phase.ONLINE) before policy_step()")
        chain = self.sample_chain(obs, noisy=True)
        self.rollout_chains.add(chain)
        return chain[:, -1], torch.zeros(obs_rows(obs), device=self.device), self.critic(obs)

    @torch.no_grad()
    def state_value(self, obs: Obs) -> torch.Tensor:
        return self.critic(obs)

    def update_rollout(self, rollout: RolloutBuffer, last_obs: Obs) -> dict[str, torch.Tensor]:
        cfg, k_steps = self.cfg, self.cfg.ft_steps
        chains = self.rollout_chains.take(rollout.steps).flatten(0, 1)
        if cfg.reward_norm:  # in place: the loop empties the rollout after this update
            done = torch.maximum(rollout.terminated, rollout.truncated)
            rollout.reward.copy_(self.return_scale(rollout.reward, done, cfg.gamma))
        rollout.compute_gae(self.state_value(last_obs), cfg.gamma, cfg.gae_lambda)
        obs, returns, advantage = (
            map_obs(rollout.obs, lambda t: t.flatten(0, 1)),
            rollout.returns.flatten(),
            rollout.advantage.flatten(),
        )
        n = len(returns)
        with (
            torch.no_grad()
        ):  # old log-probs of every (chunk, step) pair, pair p = chunk p // K', step p % K'
            old = torch.cat([
                self.step_log_prob(obs, p // k_steps, chains, p % k_steps)
                for p in torch.arange(n * k_steps, device=self.device).split(cfg.minibatch)
            ])  # fmt: skip
        progress = torch.arange(k_steps, device=self.device) / max(k_steps - 1, 1)
        clips = cfg.clip_base + (cfg.clip - cfg.clip_base) * (torch.exp(cfg.clip_rate * progress) - 1) / (
            math.exp(cfg.clip_rate) - 1
        )
        discount = cfg.gamma_denoising ** (k_steps - 1 - torch.arange(k_steps, device=self.device)).float()
        train_actor = int(self.iteration) >= cfg.critic_warmup_iterations

        totals, minibatches, first_ratio = torch.zeros(4, device=self.device), 0, None
        for _ in range(cfg.epochs):
            for pairs in ppo_minibatches(n * k_steps, 1, cfg.minibatch, self.device):
                rows, k = pairs // k_steps, pairs % k_steps
                log_prob = self.step_log_prob(obs, rows, chains, k)
                adv = standardize(advantage[rows], 0) * discount[k]
                policy_loss = ppo_clip_loss(log_prob, old[pairs], adv, clips[k])
                value_loss = 0.5 * (per_chunk(self.critic, obs, rows) - returns[rows]).pow(2).mean()
                loss = policy_loss + cfg.vf_coef * value_loss
                self.actor_optimizer.zero_grad(set_to_none=True)
                self.critic_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(self.actor.parameters(), cfg.max_grad_norm)
                    torch.nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.max_grad_norm)
                self.critic_optimizer.step()
                if train_actor:
                    self.actor_optimizer.step()
                with torch.no_grad():
                    log_ratio = log_prob - old[pairs]
                    kl, ratio = approx_kl(log_ratio), log_ratio.exp()
                    if first_ratio is None:
                        first_ratio = (ratio - 1.0).abs().max()
                    clipped = ((ratio - 1.0).abs() > clips[k]).float().mean()
                    totals += torch.stack([policy_loss, value_loss, kl, clipped]).detach()
                minibatches += 1
                if cfg.target_kl is not None and float(kl) > cfg.target_kl:
                    break

        self.iteration += 1
        progress_itr = int(self.iteration) / cfg.iterations
        set_lr(self.actor_optimizer, cosine(progress_itr, cfg.actor_lr, cfg.actor_min_lr))
        set_lr(self.critic_optimizer, cosine(progress_itr, cfg.critic_lr, cfg.critic_min_lr))
        means = totals / minibatches
        return {
            "policy_loss": means[0],
            "value_loss": means[1],
            "approx_kl": means[2],
            "clip_fraction": means[3],
            "first_ratio_error": first_ratio,
            "advantage_mean": rollout.advantage.mean(),
            "value_mean": rollout.value.mean(),
            "minibatches": torch.tensor(float(minibatches)),
        }


def per_chunk(fn: Callable[[Obs], torch.Tensor], obs: Obs, rows: torch.Tensor) -> torch.Tensor:
    """``fn(obs[rows])``, with each chunk that appears with several of its denoising steps passed
    through ``fn`` once (for pixels an encoder pass per (chunk, step) pair would cost K' times more)."""
    chunks, which = torch.unique(rows, return_inverse=True)
    return fn(take_rows(obs, chunks))[which]
