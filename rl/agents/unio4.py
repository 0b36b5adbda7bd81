"""Uni-O4 (Lei et al., ICLR 2024): one PPO-clip objective for the offline and the online phase.

Offline, the agent runs three stages of its own (``Stage``), read off its saved update counter in one
place (``UniO4.stage``); ``offline_steps`` tells the loop how long the offline phase is:

- ``Stage.FIT``, updates ``[0, improvement_start)`` with ``improvement_start = max(critic_steps,
  bc_steps, dynamics_steps)``; each update does, on the same batch, whichever of these is still due
  (they do not depend on one another):
  - IQL critics while ``k < critic_steps`` (``iql.value_step``, ``iql.critic_step``);
  - ensemble BC while ``k < bc_steps``: n Gaussian policies, all in one batched pass,
    ``sum_i mean[-log pi_i(a|s) - alpha_bc (log pi_i(a|s) - sg max_{j != i} log pi_j(a|s))]``
    (``losses.ensemble_bc_loss``, the official default);
  - dynamics while ``k < dynamics_steps``: a Gaussian ensemble (``dynamics_members`` = 7) of
    ``(s' - s, r)``, and its ``dynamics_elites`` = 5 best members on held-out rows (``amq.py``).
  After the last FIT update, the behaviour policies take the BC weights, ``pi_old_i <- pi_i``, that
  batch's states become AM-Q's start states for the whole stage, and ``J*_i <- AM-Q(pi_i)``.
- ``Stage.IMPROVE``, updates ``[improvement_start, improvement_start + improve_steps)``, step j:
  - every step: for every member, ``a ~ pi_old_i(.|s)``, ``A = zscore_batch(min_e Q_e(s, a) - V(s))``,
    PPO-clip ``-mean min(rho A, clip(rho, 1 +- eps_j) A)`` with ``rho = pi_i(a|s) / pi_old_i(a|s)``;
    gradient norm clipped at 0.5 per member; ``lr_j = improve_lr (1 - j / K)``,
    ``eps_j = clip_ratio (1 - min(j, 200) / K)`` (decays for 200 steps, then frozen, as the official);
  - every ``ope_every`` steps, the AM-Q gate: ``J_i = AM-Q(pi_i)``; where ``J_i > J*_i``:
    ``J*_i <- J_i`` and ``pi_old_i <- pi_i``. Elsewhere pi_i keeps improving against the same ``pi_old_i``.
- ``Stage.DONE``: updates change nothing.
A run started from a pre-trained Uni-O4 (``checkpoint=``, ``load_pretrained``) continues its stage
counter, so fine-tuning from a finished offline phase has no offline updates left.

Online (``set_phase(Phase.ONLINE)``, once: a resumed online run keeps its fine-tuned actor). PPO with
GAE, started from the member with the highest ``J*`` (its behaviour-policy weights, the ones AM-Q
certified) and the offline V; no offline data; observations normalised with the dataset's fixed
statistics (``agent.normalize_obs``, saved inside the networks). The on-policy loop calls:
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
- Disagreement regulariser: the official default, ``-alpha (log pi_i - sg max_{j != i} log pi_j)``,
  whose gradient is ``-(1 + alpha) grad log pi_i``: a rescaled BC loss, so the members differ by
  their initialisation only (the official also by the order it trains them in). The distribution
  form the official offers as an option, ``-alpha KL(pi_i || sg pi_j*)``, is not used: measured on
  walker2d-medium (128x128 networks, lr 3e-4) its KL grew without bound (0.2 after 500 updates, 645
  after 3,000; a wide member's KL from a narrow one reaches ~1e4 per dimension with log sigma in
  [-5, 0]), BC's squared error rose from 0.17 to 0.8-1.2 and the BC members fell within 6-9 env
  steps. At alpha = 0.1 the NLL does not bound a divergence the loss maximises.
- Std range between phases: the official offline policy has log sigma in [-5, 0] and its online
  copy squashes once more, to [-4.40, -0.60], so the fine-tuned actor starts with another sigma. Not
  reproduced: both phases use the same parameterisation (``GaussianPolicyEnsemble``), and the online
  actor starts with exactly the offline member's mean *and* sigma.
- Boolean flags (argparse ``type=bool``) cannot be wrong here: Hydra's typed config parses booleans.
  ``--temperature`` (no effect officially) does not exist: the advantage is z-scored, not exponentiated.
- Terminals: bootstrap masks use ``terminated`` only (the official offline buffer also cuts at time-outs).
- Model termination (``amq.py``): the environment's rule when the loop passes one (``termination``,
  from ``envs/termination.py``; agents import no env), else a learned head and the seen-state box.
- OPE gate: one vectorised compare-and-replace per evaluation (the official calls ``replace``
  redundantly in a loop, harmlessly). NaN scores never replace a policy.
- Choosing the policy to fine-tune: the official takes the top 3 by final AM-Q and then spends
  online evaluation episodes to pick one, loading the *last* ``pi_i``; an agent cannot evaluate in
  an env, so here it is the highest best-so-far AM-Q, and the behaviour snapshot that earned it.
- The official retrains V on rescaled rewards when ``--scale_strategy`` is set; not done: choose one
  reward scale for both phases.
- The online log-probability is that of the clamped action (official), so the stored action is
  exactly what the env executed.
- AM-Q's start states: the official samples 512 fresh states for each member at each evaluation, so
  a candidate's J_i is compared with a J*_i measured from other states, and the members with each
  other on different ones: the gate then also accepts steps that only drew easier states. Here one
  set of ``batch_size`` states (the last stage-1 batch, saved) serves every evaluation of every
  member, so the gate compares policies, not state samples. A deliberate deviation: it changes
  which steps are accepted, towards the ones the paper's gate means to accept.
  ``amq_fixed_start=False`` and ``amq_env_termination=False`` restore the gate as it was before
  these fixes (fresh states: the gate step's batch, one set for all members), so
  ``experiments/unio4_gate.py`` can count, with real rollouts, which gate accepts more steps that
  lower the real return (the warm-start study's claim 4). Its answer on walker2d-medium with
  128x128 critics of 20k updates (results/d4rl_o2o_warmstart): neither gate follows the real
  return (about half of either's accepted steps lower it), and the fixed gate accepts more of them;
  AM-Q is only as good as the critic the improvement step ascends, so at that scale the gate can
  hand on a worse policy than BC's (``improve_steps=0`` skips it).
- The BC members are trained simultaneously on one batch (the official updates them one after
  another in a random order); per-member Adam and per-member gradient clipping keep the members'
  updates independent even though their weights are stacked.
"""

from __future__ import annotations

import copy
import enum
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from rl.agents.amq import ModelEvaluation
from rl.agents.base import Agent, AgentConfig, Part, Phase, adam, set_lr
from rl.agents.iql import IQLCritics, critic_step, value_step
from rl.agents.losses import clipped_value_loss, ensemble_bc_loss, ppo_clip_loss, standardize
from rl.buffers.batch import Batch
from rl.buffers.rollout import RolloutBuffer
from rl.nets import ObservationNormalizer
from rl.nets.actors import GaussianPolicyEnsemble
from rl.nets.dynamics import DynamicsEnsemble, TerminationFn


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
    """Weight of the official disagreement term (its gradient scales the NLL's by 1 + bc_alpha)."""
    # dynamics ensemble
    dynamics_members: int = 7
    dynamics_elites: int = 5
    dynamics_hidden: list[int] = field(default_factory=lambda: [200, 200, 200, 200])
    dynamics_lr: float = 1e-3
    dynamics_weight_decay: float = 5e-5
    dynamics_holdout: int = 10
    """About one row in this many is held out of dynamics training, to rank the members."""
    dynamics_box_margin: float = 0.1
    """Without an env termination rule, a model rollout ends where a state leaves the seen-state box
    widened by this fraction of its range."""
    # offline improvement and AM-Q
    improve_lr: float = 1e-4
    clip_ratio: float = 0.25
    clip_decay_steps: int = 200
    max_grad_norm: float = 0.5
    ope_every: int = 100
    ope_horizon: int = 1000
    """AM-Q rollout length (README: reduce it if the Q mean explodes)."""
    amq_fixed_start: bool = True
    """AM-Q from one fixed set of start states (the last stage-1 batch). False: from the states of the
    batch at each gate, so a candidate is compared with a best-so-far measured on other states (the
    official code, and this agent before issue 17); kept to measure the fix (experiments/unio4_gate.py)."""
    amq_env_termination: bool = True
    """Model rollouts end where the env's rule says (``termination``). False: by the learned head and the
    seen-state box even where the env has a rule (this agent before issue 17); kept for the same measure."""
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


class Stage(enum.Enum):
    """Uni-O4's offline stages (module docstring)."""

    FIT = "fit"
    IMPROVE = "improve"
    DONE = "done"


def clip_grad_norm_per_member(params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_`` for each member of stacked parameters (leading dim = member) separately."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch.stack([g.pow(2).flatten(1).sum(1) for g in grads]).sum(0).sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *[1] * (g.dim() - 1)))
    return norms


class UniO4(Agent):
    name = "unio4"
    config_class = UniO4Config
    on_policy = True
    uses_termination = True

    def __init__(
        self,
        cfg: UniO4Config,
        obs_dim: int,
        action_dim: int,
        device: torch.device,
        obs_norm: ObservationNormalizer | None = None,
        termination: TerminationFn | None = None,
    ) -> None:
        super().__init__(cfg, obs_dim, action_dim, device)
        n = cfg.num_policies
        hidden, lrs = (cfg.critic_hidden, cfg.value_hidden), (cfg.critic_lr, cfg.value_lr)
        self.iql = IQLCritics.build(obs_dim, action_dim, device, obs_norm, hidden, lrs)
        # The policy ensemble pi_i, its behaviour snapshots pi_old_i, and the one online actor.
        self.actor = GaussianPolicyEnsemble(
            n, obs_dim, action_dim, cfg.policy_hidden, cfg.log_std_range, obs_norm
        )
        self.actor.to(device)
        self.behaviour = copy.deepcopy(self.actor).requires_grad_(False)
        self.online_actor = GaussianPolicyEnsemble(
            1, obs_dim, action_dim, cfg.policy_hidden, cfg.log_std_range, obs_norm
        ).to(device)
        dynamics = DynamicsEnsemble(
            obs_dim, action_dim, cfg.dynamics_members, cfg.dynamics_hidden, obs_norm, cfg.dynamics_box_margin
        ).to(device)
        self.model = ModelEvaluation(
            dynamics,
            adam(dynamics.parameters(), cfg.dynamics_lr, weight_decay=cfg.dynamics_weight_decay),
            cfg.dynamics_elites,
            cfg.dynamics_holdout,
            termination if cfg.amq_env_termination else None,
        )

        self.bc_optimizer = adam(self.actor.parameters(), cfg.bc_lr)
        # A fresh Adam for the improvement stage (the official loads the BC weights into new PPO learners).
        self.improve_optimizer = adam(self.actor.parameters(), cfg.improve_lr)
        self.online_actor_optimizer = adam(self.online_actor.parameters(), cfg.online_actor_lr, eps=1e-5)
        self.online_value_optimizer = adam(self.iql.value.parameters(), cfg.online_value_lr, eps=1e-5)

        # Counters live on the CPU: Python reads them to choose a stage without a device sync.
        self.updates = torch.zeros((), dtype=torch.long)
        self.start_updates = torch.zeros((), dtype=torch.long)
        self.online_env_steps = torch.zeros((), dtype=torch.long)
        self.amq_start = torch.zeros(cfg.batch_size, obs_dim, device=device)
        self.best_score = torch.full((n,), -torch.inf, device=device)
        self.last_score = torch.full((n,), -torch.inf, device=device)
        self.replacements = torch.zeros(n, device=device)

    def parts(self) -> dict[str, Part]:
        return {
            **self.iql.parts(),
            "actor": self.actor,
            "behaviour": self.behaviour,
            "online_actor": self.online_actor,
            **self.model.parts(),
            "bc_optimizer": self.bc_optimizer,
            "improve_optimizer": self.improve_optimizer,
            "online_actor_optimizer": self.online_actor_optimizer,
            "online_value_optimizer": self.online_value_optimizer,
            "updates": self.updates,
            "start_updates": self.start_updates,
            "online_env_steps": self.online_env_steps,
            "amq_start": self.amq_start,
            "best_score": self.best_score,
            "last_score": self.last_score,
            "replacements": self.replacements,
        }

    # -- the offline stages -----------------------------------------------------------------------------

    @property
    def improvement_start(self) -> int:
        cfg = self.cfg
        return max(cfg.critic_steps, cfg.bc_steps, cfg.dynamics_steps)

    @property
    def stages_end(self) -> int:
        return self.improvement_start + self.cfg.improve_steps

    @property
    def offline_steps(self) -> int:
        """The updates still due when this run started: every stage, or none after ``load_pretrained``
        from a Uni-O4 that finished them (fine-tuning from its own offline stages)."""
        return max(0, self.stages_end - int(self.start_updates))

    @property
    def stage(self) -> Stage:
        """The offline stage the next ``update`` runs in: the one place the counter maps to a stage."""
        k = int(self.updates)
        if k < self.improvement_start:
            return Stage.FIT
        return Stage.IMPROVE if k < self.stages_end else Stage.DONE

    def load_pretrained(self, checkpoint: dict[str, Any]) -> None:
        """Start from another Uni-O4 run's agent: its parts and stage progress; this run's offline phase
        is what remains of the stages."""
        self.load_parts(checkpoint, own_settings=True)
        self.start_updates.copy_(self.updates)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self.phase is Phase.ONLINE:
            raise RuntimeError(
                "unio4's online phase is on-policy: drive it with policy_step() and update_rollout(), not update()"
            )
        stage, k = self.stage, int(self.updates)
        self.updates += 1
        if stage is Stage.FIT:
            metrics = self._fit_step(batch, k)
            if self.stage is not Stage.FIT:
                self._start_improvement(batch.obs)
            return metrics
        if stage is Stage.IMPROVE:
            return self._improve_step(batch, k - self.improvement_start)
        return {}

    def _fit_step(self, batch: Batch, k: int) -> dict[str, torch.Tensor]:
        """Stage 1's update ``k``: critics, BC and dynamics, each while its budget lasts."""
        cfg = self.cfg
        metrics: dict[str, torch.Tensor] = {}
        if k < cfg.critic_steps:
            rows = self.iql.encode(batch)  # the steps' input type; state observations pass through
            _, metrics = value_step(self.iql, rows, cfg.expectile)
            metrics |= critic_step(self.iql, rows, cfg.gamma, cfg.tau)
        if k < cfg.bc_steps:
            loss, gap = ensemble_bc_loss(self.actor.dist(batch.obs), batch.action, cfg.bc_alpha)
            self.bc_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.bc_optimizer.step()
            metrics |= {"bc_loss": loss.detach() / cfg.num_policies, "bc_gap": gap.mean()}
        if k < cfg.dynamics_steps:
            metrics |= self.model.train_step(batch)
        return metrics

    def _start_improvement(self, obs: torch.Tensor) -> None:
        """The behaviour policies take the BC weights, ``obs`` become AM-Q's start states, and the BC
        policies' AM-Q the best so far."""
        self.behaviour.load_state_dict(self.actor.state_dict())
        self.amq_start.copy_(obs)
        self.best_score.copy_(self.amq_scores(self.amq_start))
        self.last_score.copy_(self.best_score)

    def amq_scores(self, obs: torch.Tensor) -> torch.Tensor:
        """AM-Q of each member of the policy ensemble from the states ``obs``: ``(num_policies,)``."""
        return self.model.scores(self.actor, self.iql.critic, obs, self.cfg.ope_horizon)

    def _improve_step(self, batch: Batch, j: int) -> dict[str, torch.Tensor]:
        """Stage 2's step ``j``: one PPO-clip step per member against its behaviour policy, and the
        AM-Q gate every ``ope_every`` steps."""
        cfg, obs = self.cfg, batch.obs
        set_lr(self.improve_optimizer, cfg.improve_lr * (1.0 - j / cfg.improve_steps))
        clip = cfg.clip_ratio * (1.0 - min(j, cfg.clip_decay_steps) / cfg.improve_steps)
        with torch.no_grad():
            old = self.behaviour.dist(obs)
            action = old.sample()  # (n, B, A)
            old_log_prob = old.log_prob(action).sum(-1)
            # Q of every member's actions in one pass: actions as (B, n, A) candidates per state.
            q = self.iql.critic(obs, action.transpose(0, 1)).min(0).values.T  # (n, B)
            advantage = standardize(q - self.iql.value(obs), dim=-1)
        log_prob = self.actor.dist(obs).log_prob(action).sum(-1)
        losses = ppo_clip_loss(log_prob, old_log_prob, advantage, clip)  # (n,)
        self.improve_optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        grad_norm = clip_grad_norm_per_member(list(self.actor.parameters()), cfg.max_grad_norm)
        self.improve_optimizer.step()
        metrics = {
            "improve_loss": losses.detach().mean(),
            "improve_ratio_dev": (log_prob.detach() - old_log_prob).exp().sub(1.0).abs().mean(),
            "improve_grad_norm": grad_norm.mean(),
            "improve_clip": torch.tensor(clip),
        }

        if (j + 1) % cfg.ope_every == 0:
            score = self.amq_scores(self.amq_start if cfg.amq_fixed_start else obs)
            improved = score > self.best_score  # NaN never improves
            self.best_score.copy_(torch.where(improved, score, self.best_score))
            self.behaviour.copy_members_from(self.actor, improved)
            self.replacements += improved
            self.last_score.copy_(score)
            metrics["amq_replaced"] = improved.sum().float()
        last, best = self.last_score.clone(), self.best_score.clone()
        metrics |= {f"amq_{i}": last[i] for i in range(len(last))}
        metrics |= {f"amq_best_{i}": best[i] for i in range(len(best))}
        return metrics | {"amq_replacements": self.replacements.sum()}

    # -- acting ----------------------------------------------------------------------------------------

    def best_member(self) -> torch.Tensor:
        """Index (1 element) of the member with the highest best-so-far AM-Q (0 before any score)."""
        return self.best_score.argmax().view(1)

    def _acting_policy(self) -> tuple[GaussianPolicyEnsemble, torch.Tensor | None]:
        if self.phase is Phase.ONLINE:
            return self.online_actor, None
        if self.stage is Stage.FIT:
            return self.actor, self.best_member()
        return self.behaviour, self.best_member()

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        policy, member = self._acting_policy()
        dist = policy.member_dist(obs, member)
        return (dist.mean if deterministic else dist.sample()).clamp(-1.0, 1.0)

    # -- online PPO ------------------------------------------------------------------------------------

    def set_phase(self, phase: Phase) -> None:
        """Going online copies the chosen member into the online actor, once: entering a phase the agent
        is already in (a resumed online run) keeps its fine-tuned actor."""
        if self.phase is Phase.OFFLINE and phase is Phase.ONLINE:
            policy, member = self._acting_policy()
            self.online_actor.copy_member_from(policy, member)
        super().set_phase(phase)

    @torch.no_grad()
    def policy_step(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For a vector-env step: action ``(N, A)`` (sampled, clamped to [-1, 1]), its log-probability
        ``(N,)`` and ``V(obs)`` ``(N,)``, ready for ``RolloutBuffer.add``."""
        if self.phase is not Phase.ONLINE:
            raise RuntimeError("unio4: call set_phase(Phase.ONLINE) before policy_step()")
        dist = self.online_actor.member_dist(obs)
        action = dist.sample().clamp(-1.0, 1.0)
        return action, dist.log_prob(action).sum(-1), self.iql.value(obs)

    @torch.no_grad()
    def state_value(self, obs: torch.Tensor) -> torch.Tensor:
        """``V(obs)`` ``(N,)``: the ``bootstrap_value`` of truncated episodes, and the value after a rollout."""
        return self.iql.value(obs)

    def update_rollout(self, rollout: RolloutBuffer, last_obs: torch.Tensor) -> dict[str, torch.Tensor]:
        """PPO on a full ``rollout``; ``last_obs`` ``(num_envs, D)`` are the observations after its last step."""
        cfg, value = self.cfg, self.iql.value
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
                    value(obs[index]), old_value[index], returns[index], cfg.online_clip
                )
                self.online_value_optimizer.zero_grad(set_to_none=True)
                value_loss.backward()
                nn.utils.clip_grad_norm_(value.parameters(), cfg.max_grad_norm)
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
            set_lr(self.online_actor_optimizer, cfg.online_actor_lr * remaining)
            set_lr(self.online_value_optimizer, cfg.online_value_lr * remaining)
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
