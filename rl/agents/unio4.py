"""Uni-O4 (Lei et al., ICLR 2024): one PPO-clip objective for the offline and the online phase.

Offline. The loop only calls ``update(batch)``, so the agent runs its stages by its own update
counter ``updates`` (a CPU tensor: saved in checkpoints, read without a device sync):

- stage 1, updates ``[0, improvement_start)`` with ``improvement_start = max(critic_steps,
  bc_steps, dynamics_steps)``; each update does, on the same batch, whichever of these is still due
  (they do not depend on one another):
  - IQL critics while ``k < critic_steps``: V by ``expectile_loss(min_e Qbar_e(s, a) - V(s))``, then
    twin Q towards ``r + gamma (1 - terminated) V(s')``, Polyak update of the target critics;
  - ensemble BC while ``k < bc_steps``: n Gaussian policies, all in one batched pass,
    ``sum_i mean[-log pi_i(a|s) - alpha_bc KL(pi_i(.|s) || sg pi_j*(.|s))]`` with
    ``j* = argmax_{j != i} pi_j(a|s)`` (``ensemble_bc_loss``);
  - dynamics while ``k < dynamics_steps``: a Gaussian ensemble (``dynamics_members`` = 7) of
    ``(s' - s, r)`` with a learned termination head (``rl/nets/dynamics.py``), trained on all rows
    but a fixed held-out ~1/``dynamics_holdout`` of them, on which each member's error is tracked;
    the ``dynamics_elites`` = 5 members with the lowest held-out error are the elites;
- stage 2, updates ``[improvement_start, improvement_start + improve_steps)``, step j:
  - at j = 0: the behaviour policies take the BC weights, ``pi_old_i <- pi_i``, and ``J*_i <- AM-Q(pi_i)``;
  - every step: for every member, ``a ~ pi_old_i(.|s)``, ``A = zscore_batch(min_e Q_e(s, a) - V(s))``,
    PPO-clip ``-mean min(rho A, clip(rho, 1 +- eps_j) A)`` with ``rho = pi_i(a|s) / pi_old_i(a|s)``;
    gradient norm clipped at 0.5 per member; ``lr_j = improve_lr (1 - j / K)``,
    ``eps_j = clip_ratio (1 - min(j, 200) / K)`` (decays for 200 steps, then frozen, as the official);
  - every ``ope_every`` steps: ``J_i = AM-Q(pi_i)``; where ``J_i > J*_i``: ``J*_i <- J_i`` and
    ``pi_old_i <- pi_i``. Elsewhere pi_i keeps improving against the same ``pi_old_i``.
- updates past stage 2 change nothing (set ``steps.offline`` to ``agent.offline_steps``).

AM-Q(pi) (``am_q``): from the batch's states, roll out ``a_t = clamp(mean pi(s_t), -1, 1)`` for
``ope_horizon`` steps through the dynamics ensemble (each row on a random elite, a sample of its
Gaussian); the score is the mean of ``q_t = min_e Q_e(s_t, a_t)`` over every (t, row) still alive at
t. A row dies after the step the model marks terminal (its ``q_t`` at that step still counts):
where the learned termination head fires, or where the next state leaves the box of states the
dynamics saw in training, widened by ``dynamics_box_margin`` of the range (``DynamicsEnsemble``).

Online. PPO with GAE, started from the member with the highest ``J*`` (its behaviour-policy weights,
the ones AM-Q certified) and the offline V; no offline data; observations normalised with the
dataset's fixed statistics (``agent.normalize_obs``, saved inside the networks). The on-policy loop
calls (see the methods' docstrings):
- ``begin_online()`` once (idempotent: a resumed run keeps its fine-tuned actor);
- ``policy_step(obs) -> (action, log_prob, value)`` per vector-env step; ``state_value(obs)`` for the
  true final observation of a truncated episode (``RolloutBuffer.add``'s ``bootstrap_value``);
- ``update_rollout(rollout, last_obs) -> metrics`` when the RolloutBuffer is full: GAE
  (``gamma``, ``gae_lambda``), advantages z-scored over the rollout, then ``online_epochs`` epochs of
  shuffled minibatches, each one actor step (PPO-clip, entropy bonus ``entropy_coef``) and one value
  step (clipped value loss), gradient norms clipped at 0.5, Adam eps 1e-5, learning rates decayed
  linearly to 0 over ``online_lr_decay_steps`` env steps. The loop resets the buffer afterwards.
The rewards in the rollout must be scaled like the dataset's (``env.reward_scale``/``reward_bias``):
V starts from the offline V, in those units. ``update(batch)`` refuses to run online.

Decisions on the official code's pitfalls (spec §2.3, §2.6, §2.8, §7):
- Disagreement regulariser: the default official term ``-alpha (log pi_i - sg max_j log pi_j)`` has
  the gradient ``-(1 + alpha) grad log pi_i``, a plain rescaled BC loss. Here it is the
  distribution form, ``-alpha KL(pi_i || sg pi_j*)`` (closed-form Gaussian KL), which does push each
  member away from the other member that best explains the data action. The policies' mean is tanh-
  bounded and log sigma lies in [-5, 0], so the KL is bounded and, with ``alpha_bc = 0.1 < 1``, the
  NLL term dominates (a member still converges to the data when the others do).
- Std range between phases: the official offline policy has log sigma in [-5, 0] and its online
  copy squashes once more, to [-4.40, -0.60], so the fine-tuned actor starts with another sigma. Not
  reproduced: both phases use the same parameterisation (``GaussianPolicyEnsemble``), and the online
  actor starts with exactly the offline member's mean *and* sigma.
- Boolean flags (argparse ``type=bool``) cannot be wrong here: Hydra's typed config parses booleans.
  ``--temperature`` (no effect officially) does not exist: the advantage is z-scored, not exponentiated.
- Terminals: bootstrap masks use ``terminated`` only (the official offline buffer also cuts at time-outs).
- Termination in the model is learned (``DynamicsEnsemble``), not a per-env function: agents do
  not know environments. Elites come from a fixed held-out split chosen by hashing each row's
  observation bits (the loop gives batches, not the dataset), with an exponential moving average of
  the held-out error; a fixed ``dynamics_steps`` budget replaces MOBILE's early stopping.
- Exploding AM-Q (the README's "if q mean explodes, reduce rollout steps"; the official code cuts
  rollouts with a per-env termination function that also bounds every state). Without such a
  function the first hopper-medium runs here diverged: model states left the data's range within
  ~10 steps, grew to ~1e18 by step 1,000 and AM-Q read 1e9-5e16, so the gate compared noise.
  Decision: keep the horizon (1,000) and end a row when the model leaves the box of seen states (the
  environment-free form of those bounds checks); a shorter horizon would only delay the same
  extrapolation. AM-Q then scores each policy on model states the critic was trained near.
- OPE gate: one vectorised compare-and-replace per evaluation (the official calls ``replace``
  redundantly in a loop, harmlessly). NaN scores never replace a policy.
- Choosing the policy to fine-tune: the official takes the top 3 by final AM-Q and then spends
  online evaluation episodes to pick one, loading the *last* ``pi_i``; an agent cannot evaluate in
  an env, so here it is the highest best-so-far AM-Q, and the behaviour snapshot that earned it.
- The official retrains V on rescaled rewards when ``--scale_strategy`` is set; not done: choose one
  reward scale for both phases.
- The online log-probability is that of the clamped action (official), so the stored action is
  exactly what the env executed.
- AM-Q starts from the current batch's ``batch_size`` states (the official samples 512 fresh ones);
  all members are scored on the same states, so their comparison is not blurred by state sampling.
- The BC members are trained simultaneously on one batch (the official updates them one after
  another in a random order); per-member Adam and per-member gradient clipping keep the members'
  updates independent even though their weights are stacked.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from rl.agents.base import Agent, AgentConfig, adam
from rl.agents.iql import critic_step, value_step
from rl.buffers.batch import Batch
from rl.buffers.rollout import RolloutBuffer
from rl.nets import CriticEnsemble, EnsembleMLP, ObservationNormalizer, ValueNet
from rl.nets.dynamics import DynamicsEnsemble


@dataclass
class UniO4Config(AgentConfig):
    name: str = "unio4"
    batch_size: int = 512
    normalize_obs: bool = True
    # offline schedule (in updates)
    critic_steps: int = 2_000_000
    bc_steps: int = 400_000
    dynamics_steps: int = 200_000
    """A fixed budget (MOBILE stops after 5 epochs without held-out improvement)."""
    improve_steps: int = 10_000
    # IQL critics
    expectile: float = 0.7
    tau: float = 5e-3
    critic_lr: float = 1e-4
    value_lr: float = 1e-4
    critic_hidden: list[int] = field(default_factory=lambda: [1024, 1024])
    value_hidden: list[int] = field(default_factory=lambda: [512, 512, 512])
    # policies and ensemble BC
    num_policies: int = 4
    policy_hidden: list[int] = field(default_factory=lambda: [256, 256, 256])
    log_std_range: list[float] = field(default_factory=lambda: [-5.0, 0.0])
    """log sigma = low + (high - low) (tanh(x) + 1) / 2, the same in both phases."""
    bc_lr: float = 1e-4
    bc_alpha: float = 0.1
    """Weight of the KL disagreement term."""
    # dynamics ensemble
    dynamics_members: int = 7
    dynamics_elites: int = 5
    dynamics_hidden: list[int] = field(default_factory=lambda: [200, 200, 200, 200])
    dynamics_lr: float = 1e-3
    dynamics_weight_decay: float = 5e-5
    dynamics_holdout: int = 10
    """About one row in this many is held out of dynamics training, to rank the members."""
    dynamics_box_margin: float = 0.1
    """A model rollout ends where a state leaves the seen-state box widened by this fraction of its range."""
    # offline improvement and AM-Q
    improve_lr: float = 1e-4
    clip_ratio: float = 0.25
    clip_decay_steps: int = 200
    max_grad_norm: float = 0.5
    ope_every: int = 100
    ope_horizon: int = 1000
    """AM-Q rollout length (README: reduce it if the Q mean explodes)."""
    # online PPO
    online_actor_lr: float = 2e-5
    online_value_lr: float = 2e-4
    online_epochs: int = 10
    online_minibatch: int = 128
    online_clip: float = 0.05
    """PPO ratio clip, and the value clip."""
    gae_lambda: float = 0.95
    entropy_coef: float = 0.01
    online_lr_decay_steps: int = 1_000_000
    """Env steps over which the online learning rates decay linearly to 0 (0: constant)."""


# -- networks ------------------------------------------------------------------------------------------


class GaussianPolicyEnsemble(nn.Module):
    """``members`` Gaussian policies stacked: ``[mu, x] = tanh(MLP(s))``, ``log sigma = low + (high - low)(x + 1)/2``.

    Not squashed: actions are clamped to [-1, 1] when acting, and dataset actions have an exact
    density. ``obs`` may be ``(B, D)`` (every member sees the same states) or ``(members, B, D)``.
    """

    def __init__(
        self,
        members: int,
        obs_dim: int,
        action_dim: int,
        hidden: list[int],
        log_std_range: list[float],
        obs_norm: ObservationNormalizer | None = None,
    ) -> None:
        super().__init__()
        self.obs_norm = obs_norm or ObservationNormalizer(obs_dim)
        self.net = EnsembleMLP(members, obs_dim, hidden, 2 * action_dim)
        self.log_std_low, self.log_std_high = log_std_range

    def dist(self, obs: torch.Tensor, members: torch.Tensor | None = None) -> Normal:
        """Batch shape ``(members, B, A)`` (or ``(len(members), B, A)``)."""
        mean, x = torch.tanh(self.net(self.obs_norm(obs), members)).chunk(2, dim=-1)
        log_std = self.log_std_low + (self.log_std_high - self.log_std_low) * 0.5 * (x + 1.0)
        return Normal(mean, log_std.exp())

    def member_dist(self, obs: torch.Tensor, member: torch.Tensor | None = None) -> Normal:
        """One member's distribution, batch shape ``(B, A)``; ``member`` is a 1-element index tensor."""
        dist = self.dist(obs, member)
        return Normal(dist.loc.squeeze(0), dist.scale.squeeze(0))


@torch.no_grad()
def copy_members(target: nn.Module, source: nn.Module, mask: torch.Tensor) -> None:
    """``target``'s members where ``mask`` (members,) is true take ``source``'s weights."""
    for t, s in zip(target.parameters(), source.parameters(), strict=True):
        t.copy_(torch.where(mask.view(-1, *[1] * (t.dim() - 1)), s, t))


@torch.no_grad()
def copy_member_into(target: nn.Module, source: nn.Module, member: torch.Tensor) -> None:
    """A one-member ensemble ``target`` takes member ``member`` (1-element index) of ``source``."""
    for t, s in zip(target.parameters(), source.parameters(), strict=True):
        t.copy_(s[member])


def clip_grad_norm_per_member(params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_`` for each member of stacked parameters (leading dim = member) separately."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch.stack([g.pow(2).flatten(1).sum(1) for g in grads]).sum(0).sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *[1] * (g.dim() - 1)))
    return norms


def holdout_rows(obs: torch.Tensor, every: int) -> torch.Tensor:
    """A fixed ~1/``every`` of all rows, chosen by the bits of each row's observation: the same row is
    held out every time it is sampled, so it is never trained on."""
    return obs.contiguous().view(torch.int32).to(torch.int64).sum(-1) % every == 0


# -- the losses ----------------------------------------------------------------------------------------


def standardize(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return (x - x.mean(dim, keepdim=True)) / (x.std(dim, keepdim=True) + 1e-8)


def ensemble_bc_loss(dist: Normal, action: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``sum_i mean_b[-log pi_i(a_b|s_b) - alpha KL(pi_i(.|s_b) || sg pi_j*(.|s_b))]`` and the KL per member.

    ``dist`` has batch shape ``(n, B, A)``; ``j*(i, b) = argmax_{j != i} log pi_j(a_b|s_b)``.
    """
    log_prob = dist.log_prob(action).sum(-1)  # (n, B)
    n = log_prob.shape[0]
    if n == 1 or alpha == 0.0:
        return -log_prob.mean(1).sum(), torch.zeros(n, device=action.device)
    others = log_prob.detach().unsqueeze(0).expand(n, -1, -1)  # [i, j, b] = log pi_j(a_b|s_b)
    others = others.masked_fill(
        torch.eye(n, dtype=torch.bool, device=action.device).unsqueeze(-1), -torch.inf
    )
    index = others.argmax(1).unsqueeze(-1).expand(-1, -1, action.shape[-1])  # (n, B, A)
    nearest = Normal(dist.loc.detach().gather(0, index), dist.scale.detach().gather(0, index))
    kl = kl_divergence(dist, nearest).sum(-1).mean(1)  # (n,)
    return (-log_prob.mean(1) - alpha * kl).sum(), kl


def ppo_clip_loss(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantage: torch.Tensor, clip: float
) -> torch.Tensor:
    """``-mean_last(min(rho A, clip(rho, 1 - clip, 1 + clip) A))``, ``rho = exp(log_prob - old_log_prob)``."""
    ratio = (log_prob - old_log_prob).exp()
    return -torch.minimum(ratio * advantage, ratio.clamp(1.0 - clip, 1.0 + clip) * advantage).mean(-1)


def clipped_value_loss(
    value: torch.Tensor, old_value: torch.Tensor, returns: torch.Tensor, clip: float
) -> torch.Tensor:
    """``mean(max((V - R)^2, (V_old + clip(V - V_old, -clip, clip) - R)^2))``."""
    clipped = old_value + (value - old_value).clamp(-clip, clip)
    return torch.maximum((value - returns).pow(2), (clipped - returns).pow(2)).mean()


@torch.no_grad()
def am_q(
    policy: Callable[[torch.Tensor], torch.Tensor],
    q: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    step: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    start: torch.Tensor,
    horizon: int,
) -> torch.Tensor:
    """Approximate-model Q: per policy, the mean of ``q(s_t, policy(s_t))`` over all ``t < horizon``
    and all rows not terminated before t, along rollouts of ``step``.

    ``start`` is ``(n, B, D)``: B start states for each of n policies; ``policy`` maps ``(n, B, D)``
    to actions ``(n, B, A)``, ``q`` to ``(n, B)``, ``step`` to ``(next states, terminated bool)``.
    Returns ``(n,)``. Terminated rows are masked, not removed, so shapes stay fixed; the rollout stops
    early once every row has terminated (one host read per step, cheap next to a model step, and with
    the seen-state box most rollouts end within a few hundred steps: ~2.5x faster on hopper-medium).
    """
    obs = start
    alive = torch.ones(start.shape[:-1], dtype=torch.bool, device=start.device)
    total = torch.zeros(start.shape[0], device=start.device)
    count = torch.zeros_like(total)
    for _ in range(horizon):
        action = policy(obs)
        total += torch.where(alive, q(obs, action), 0.0).sum(-1)
        count += alive.sum(-1)
        obs, terminated = step(obs, action)
        alive &= ~terminated
        if not alive.any():
            break
    return total / count


# -- the agent -----------------------------------------------------------------------------------------


class UniO4(Agent):
    name = "unio4"
    config_class = UniO4Config
    on_policy = True

    def __init__(
        self,
        cfg: UniO4Config,
        obs_dim: int,
        action_dim: int,
        device: torch.device,
        obs_norm: ObservationNormalizer | None = None,
    ) -> None:
        super().__init__(cfg, obs_dim, action_dim, device)
        if not 1 <= cfg.dynamics_elites <= cfg.dynamics_members:
            raise ValueError(
                f"agent.dynamics_elites={cfg.dynamics_elites} must lie in [1, dynamics_members={cfg.dynamics_members}]"
            )
        n = cfg.num_policies
        self.critic = CriticEnsemble(obs_dim, action_dim, 2, cfg.critic_hidden, False, obs_norm=obs_norm).to(
            device
        )
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.value = ValueNet(obs_dim, cfg.value_hidden, False, obs_norm=obs_norm).to(device)
        self.actor = GaussianPolicyEnsemble(
            n, obs_dim, action_dim, cfg.policy_hidden, cfg.log_std_range, obs_norm
        ).to(device)
        self.behaviour = copy.deepcopy(self.actor).requires_grad_(False)
        self.online_actor = GaussianPolicyEnsemble(
            1, obs_dim, action_dim, cfg.policy_hidden, cfg.log_std_range, obs_norm
        ).to(device)
        self.dynamics = DynamicsEnsemble(
            obs_dim, action_dim, cfg.dynamics_members, cfg.dynamics_hidden, obs_norm, cfg.dynamics_box_margin
        ).to(device)

        self.critic_optimizer = adam(self.critic.parameters(), cfg.critic_lr)
        self.value_optimizer = adam(self.value.parameters(), cfg.value_lr)
        self.bc_optimizer = adam(self.actor.parameters(), cfg.bc_lr)
        # A fresh Adam for the improvement stage (the official loads the BC weights into new PPO learners).
        self.improve_optimizer = adam(self.actor.parameters(), cfg.improve_lr)
        self.dynamics_optimizer = torch.optim.Adam(
            self.dynamics.parameters(), lr=cfg.dynamics_lr, weight_decay=cfg.dynamics_weight_decay, fused=True
        )
        self.online_actor_optimizer = torch.optim.Adam(
            self.online_actor.parameters(), lr=cfg.online_actor_lr, eps=1e-5, fused=True
        )
        self.online_value_optimizer = torch.optim.Adam(
            self.value.parameters(), lr=cfg.online_value_lr, eps=1e-5, fused=True
        )

        # Counters live on the CPU: Python reads them to choose a stage without a device sync.
        self.updates = torch.zeros((), dtype=torch.long)
        self.online_env_steps = torch.zeros((), dtype=torch.long)
        self.online_started = torch.zeros((), dtype=torch.bool)
        self.holdout_error = torch.full((cfg.dynamics_members,), torch.inf, device=device)
        self.best_score = torch.full((n,), -torch.inf, device=device)
        self.last_score = torch.full((n,), -torch.inf, device=device)
        self.replacements = torch.zeros(n, device=device)

    # -- schedule ---------------------------------------------------------------------------------------

    @property
    def improvement_start(self) -> int:
        cfg = self.cfg
        return max(cfg.critic_steps, cfg.bc_steps, cfg.dynamics_steps)

    @property
    def offline_steps(self) -> int:
        """Updates the offline phase needs (``steps.offline``)."""
        return self.improvement_start + self.cfg.improve_steps

    @property
    def improvement_started(self) -> bool:
        return int(self.updates) > self.improvement_start

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self.online_started:
            raise RuntimeError(
                "unio4's online phase is on-policy: drive it with policy_step() and update_rollout(), not update()"
            )
        cfg = self.cfg
        k = int(self.updates)
        self.updates += 1
        metrics: dict[str, torch.Tensor] = {}
        if k < cfg.critic_steps:
            metrics |= self._critic_step(batch)
        if k < cfg.bc_steps:
            metrics |= self._bc_step(batch)
        if k < cfg.dynamics_steps:
            metrics |= self._dynamics_step(batch)
        j = k - self.improvement_start
        if 0 <= j < cfg.improve_steps:
            if j == 0:
                self._start_improvement(batch.obs)
            metrics |= self._improvement_step(batch, j)
            if (j + 1) % cfg.ope_every == 0:
                metrics |= self._evaluate_and_replace(batch.obs)
            metrics |= self._amq_metrics()
        return metrics

    # -- stage 1 ----------------------------------------------------------------------------------------

    def _critic_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        _, metrics = value_step(self, batch)
        return metrics | critic_step(self, batch)

    def _bc_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        loss, kl = ensemble_bc_loss(self.actor.dist(batch.obs), batch.action, self.cfg.bc_alpha)
        self.bc_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.bc_optimizer.step()
        return {"bc_loss": loss.detach() / self.cfg.num_policies, "bc_kl": kl.detach().mean()}

    def _dynamics_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.dynamics.observe_states(batch.obs, batch.next_obs)
        held_out = holdout_rows(batch.obs, self.cfg.dynamics_holdout)
        loss = self.dynamics.loss(
            batch.obs, batch.action, batch.next_obs, batch.reward, batch.terminated, (~held_out).float()
        )
        self.dynamics_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.dynamics_optimizer.step()

        error = self.dynamics.mean_error(batch.obs, batch.action, batch.next_obs, batch.reward)
        rows = held_out.float()
        count = rows.sum()
        batch_error = (error * rows).sum(1) / count.clamp(min=1.0)
        # Exponential moving average of the held-out error; the first held-out rows replace the initial inf.
        average = torch.where(
            self.holdout_error.isinf(), batch_error, 0.99 * self.holdout_error + 0.01 * batch_error
        )
        self.holdout_error.copy_(torch.where(count > 0, average, self.holdout_error))
        return {
            "dynamics_loss": loss.detach(),
            "dynamics_holdout_error": self.holdout_error[self.elites()].mean(),
        }

    def elites(self) -> torch.Tensor:
        """Indices of the ``dynamics_elites`` members with the lowest held-out error."""
        return torch.topk(self.holdout_error, self.cfg.dynamics_elites, largest=False).indices

    # -- stage 2 ----------------------------------------------------------------------------------------

    def amq_scores(self, obs: torch.Tensor) -> torch.Tensor:
        """AM-Q of each member of ``self.actor``, from the states ``obs`` ``(B, D)``: ``(num_policies,)``."""
        n, elites = self.cfg.num_policies, self.elites()

        def policy(states: torch.Tensor) -> torch.Tensor:
            return self.actor.dist(states).loc.clamp(-1.0, 1.0)

        def q(states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
            return self.critic(states.flatten(0, 1), actions.flatten(0, 1)).min(0).values.view(n, -1)

        def step(states: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            next_obs, _, terminated = self.dynamics.step(states.flatten(0, 1), actions.flatten(0, 1), elites)
            return next_obs.view_as(states), terminated.view(n, -1).bool()

        return am_q(policy, q, step, obs.unsqueeze(0).expand(n, -1, -1), self.cfg.ope_horizon)

    def _start_improvement(self, obs: torch.Tensor) -> None:
        self.behaviour.load_state_dict(self.actor.state_dict())
        self.best_score.copy_(self.amq_scores(obs))
        self.last_score.copy_(self.best_score)

    def _improvement_step(self, batch: Batch, j: int) -> dict[str, torch.Tensor]:
        cfg, obs = self.cfg, batch.obs
        for group in self.improve_optimizer.param_groups:
            group["lr"] = cfg.improve_lr * (1.0 - j / cfg.improve_steps)
        clip = cfg.clip_ratio * (1.0 - min(j, cfg.clip_decay_steps) / cfg.improve_steps)
        with torch.no_grad():
            old = self.behaviour.dist(obs)
            action = old.sample()  # (n, B, A)
            old_log_prob = old.log_prob(action).sum(-1)
            # Q of every member's actions in one pass: actions as (B, n, A) candidates per state.
            q = self.critic(obs, action.transpose(0, 1)).min(0).values.T  # (n, B)
            advantage = standardize(q - self.value(obs), dim=-1)
        log_prob = self.actor.dist(obs).log_prob(action).sum(-1)
        losses = ppo_clip_loss(log_prob, old_log_prob, advantage, clip)  # (n,)
        self.improve_optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        grad_norm = clip_grad_norm_per_member(list(self.actor.parameters()), cfg.max_grad_norm)
        self.improve_optimizer.step()
        return {
            "improve_loss": losses.detach().mean(),
            "improve_ratio_dev": (log_prob.detach() - old_log_prob).exp().sub(1.0).abs().mean(),
            "improve_grad_norm": grad_norm.mean(),
            "improve_clip": torch.tensor(clip),
        }

    def _evaluate_and_replace(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        score = self.amq_scores(obs)
        improved = score > self.best_score  # NaN never improves
        self.best_score.copy_(torch.where(improved, score, self.best_score))
        copy_members(self.behaviour, self.actor, improved)
        self.replacements += improved
        self.last_score.copy_(score)
        return {"amq_replaced": improved.sum().float()}

    def _amq_metrics(self) -> dict[str, torch.Tensor]:
        last, best = self.last_score.clone(), self.best_score.clone()
        metrics = {f"amq_{i}": last[i] for i in range(len(last))}
        metrics |= {f"amq_best_{i}": best[i] for i in range(len(best))}
        metrics["amq_replacements"] = self.replacements.sum()
        return metrics

    # -- acting ----------------------------------------------------------------------------------------

    def best_member(self) -> torch.Tensor:
        """Index (1 element) of the member with the highest best-so-far AM-Q (0 before any score)."""
        return self.best_score.argmax().view(1)

    def _acting_policy(self) -> tuple[GaussianPolicyEnsemble, torch.Tensor | None]:
        if self.online_started:
            return self.online_actor, None
        if self.improvement_started:
            return self.behaviour, self.best_member()
        return self.actor, self.best_member()

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        policy, member = self._acting_policy()
        dist = policy.member_dist(obs, member)
        return (dist.mean if deterministic else dist.sample()).clamp(-1.0, 1.0)

    # -- online PPO ------------------------------------------------------------------------------------

    def begin_online(self) -> None:
        """Start PPO from the chosen member; a resumed online run keeps its fine-tuned actor."""
        if self.online_started:
            return
        policy, member = self._acting_policy()
        copy_member_into(self.online_actor, policy, member)
        self.online_started.fill_(True)

    @torch.no_grad()
    def policy_step(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For a vector-env step: action ``(N, A)`` (sampled, clamped to [-1, 1]), its log-probability
        ``(N,)`` and ``V(obs)`` ``(N,)``, ready for ``RolloutBuffer.add``."""
        if not self.online_started:
            raise RuntimeError("unio4: call begin_online() before policy_step()")
        dist = self.online_actor.member_dist(obs)
        action = dist.sample().clamp(-1.0, 1.0)
        return action, dist.log_prob(action).sum(-1), self.value(obs)

    @torch.no_grad()
    def state_value(self, obs: torch.Tensor) -> torch.Tensor:
        """``V(obs)`` ``(N,)``: the ``bootstrap_value`` of truncated episodes, and the value after a rollout."""
        return self.value(obs)

    def update_rollout(self, rollout: RolloutBuffer, last_obs: torch.Tensor) -> dict[str, torch.Tensor]:
        """PPO on a full ``rollout``; ``last_obs`` ``(num_envs, D)`` are the observations after its last step."""
        cfg = self.cfg
        rollout.compute_gae(self.state_value(last_obs), cfg.gamma, cfg.gae_lambda)
        obs, action = rollout.obs.flatten(0, 1), rollout.action.flatten(0, 1)
        old_log_prob, old_value = rollout.log_prob.flatten(), rollout.value.flatten()
        returns, advantage = rollout.returns.flatten(), standardize(rollout.advantage.flatten(), dim=0)

        totals = torch.zeros(5, device=self.device)
        minibatches = 0
        for _ in range(cfg.online_epochs):
            for index in torch.randperm(len(obs), device=self.device).split(cfg.online_minibatch):
                dist = self.online_actor.member_dist(obs[index])
                log_prob = dist.log_prob(action[index]).sum(-1)
                entropy = dist.entropy().sum(-1).mean()
                actor_loss = (
                    ppo_clip_loss(log_prob, old_log_prob[index], advantage[index], cfg.online_clip)
                    - cfg.entropy_coef * entropy
                )
                self.online_actor_optimizer.zero_grad(set_to_none=True)
                actor_loss.backward()
                nn.utils.clip_grad_norm_(self.online_actor.parameters(), cfg.max_grad_norm)
                self.online_actor_optimizer.step()

                value_loss = clipped_value_loss(
                    self.value(obs[index]), old_value[index], returns[index], cfg.online_clip
                )
                self.online_value_optimizer.zero_grad(set_to_none=True)
                value_loss.backward()
                nn.utils.clip_grad_norm_(self.value.parameters(), cfg.max_grad_norm)
                self.online_value_optimizer.step()
                with torch.no_grad():
                    log_ratio = log_prob - old_log_prob[index]
                    clipped = ((log_ratio.exp() - 1.0).abs() > cfg.online_clip).float().mean()
                    totals += torch.stack(
                        [
                            actor_loss.detach(),
                            value_loss.detach(),
                            entropy.detach(),
                            -log_ratio.mean(),
                            clipped,
                        ]
                    )
                minibatches += 1

        self.online_env_steps += len(obs)
        if cfg.online_lr_decay_steps > 0:
            remaining = max(0.0, 1.0 - int(self.online_env_steps) / cfg.online_lr_decay_steps)
            for optimizer, lr in (
                (self.online_actor_optimizer, cfg.online_actor_lr),
                (self.online_value_optimizer, cfg.online_value_lr),
            ):
                for group in optimizer.param_groups:
                    group["lr"] = lr * remaining
        means = totals / minibatches
        return {
            "actor_loss": means[0],
            "value_loss": means[1],
            "entropy": means[2],
            "approx_kl": means[3],
            "clip_fraction": means[4],
            "advantage_mean": rollout.advantage.mean(),
            "value_mean": old_value.mean(),
        }
