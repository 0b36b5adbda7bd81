"""AM-Q, Uni-O4's approximate-model Q: how good a policy looks when rolled out in a learned model.

``ModelEvaluation`` owns the dynamics ensemble (``rl/nets/dynamics.py``) and everything around it:
- training: one step per batch on all rows but a fixed held-out ~1/``holdout`` of them
  (``holdout_rows``: the loop gives batches, not the dataset, so the split is decided by each row's
  observation bits), with an exponential moving average of each member's held-out error;
- elites: the ``elites`` members with the lowest held-out error (a fixed training budget replaces
  MOBILE's early stopping);
- ``scores``: AM-Q of each member of a policy ensemble (``am_q``): from the start states, roll out
  ``a_t = clamp(mean pi(s_t), -1, 1)`` for ``horizon`` steps through the model (each row on a random
  elite, a sample of its Gaussian); the score is the mean of ``q_t = min_e Q_e(s_t, a_t)`` over every
  (t, row) still alive at t. A row dies after the step the model marks terminal (its ``q_t`` at that
  step still counts): where the environment's termination rule says so when the agent has one,
  else where the learned termination head fires or the state leaves the seen-state box.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rl.buffers.batch import Batch
from rl.nets import CriticEnsemble
from rl.nets.actors import GaussianPolicyEnsemble
from rl.nets.dynamics import DynamicsEnsemble, TerminationFn


def holdout_rows(obs: torch.Tensor, every: int) -> torch.Tensor:
    """A fixed ~1/``every`` of all rows, chosen by the bits of each row's observation: the same row is
    held out every time it is sampled, so it is never trained on."""
    return obs.contiguous().view(torch.int32).to(torch.int64).sum(-1) % every == 0


@torch.no_grad()
def am_q(
    policy: Callable[[torch.Tensor], torch.Tensor],
    q: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    step: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    start: torch.Tensor,
    horizon: int,
) -> torch.Tensor:
    """Per policy, the mean of ``q(s_t, policy(s_t))`` over all ``t < horizon`` and all rows not
    terminated before t, along rollouts of ``step``.

    ``start`` is ``(n, B, D)``: B start states for each of n policies; ``policy`` maps ``(n, B, D)``
    to actions ``(n, B, A)``, ``q`` to ``(n, B)``, ``step`` to ``(next states, terminated bool)``.
    Returns ``(n,)``. Terminated rows are masked, not removed, so shapes stay fixed, and they stay
    where they were before their terminal step: the model's step from a state it ended (a fall, a
    state outside the box) can leave every bound, and a NaN state would reach the policy. The
    rollout stops early once every row has terminated (one host read per step, cheap next to a
    model step).
    """
    obs = start
    alive = torch.ones(start.shape[:-1], dtype=torch.bool, device=start.device)
    total = torch.zeros(start.shape[0], device=start.device)
    count = torch.zeros_like(total)
    for _ in range(horizon):
        action = policy(obs)
        total += torch.where(alive, q(obs, action), 0.0).sum(-1)
        count += alive.sum(-1)
        next_obs, terminated = step(obs, action)
        alive &= ~terminated
        obs = torch.where(alive.unsqueeze(-1), next_obs, obs)
        if not alive.any():
            break
    return total / count


class ModelEvaluation:
    def __init__(
        self,
        dynamics: DynamicsEnsemble,
        optimizer: torch.optim.Optimizer,
        elites: int,
        holdout: int,
        termination: TerminationFn | None,
    ) -> None:
        members = dynamics.net.members
        if not 1 <= elites <= members:
            raise ValueError(f"agent.dynamics_elites={elites} must lie in [1, dynamics_members={members}]")
        self.dynamics, self.optimizer, self.termination = dynamics, optimizer, termination
        self.num_elites, self.holdout = elites, holdout
        self.holdout_error = torch.full((members,), torch.inf, device=dynamics.max_log_var.device)

    def parts(self) -> dict[str, torch.nn.Module | torch.optim.Optimizer | torch.Tensor]:
        return {
            "dynamics": self.dynamics,
            "dynamics_optimizer": self.optimizer,
            "holdout_error": self.holdout_error,
        }

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One step on the batch's training rows; the held-out rows update each member's error."""
        self.dynamics.observe_states(batch.obs, batch.next_obs)
        held_out = holdout_rows(batch.obs, self.holdout)
        loss = self.dynamics.loss(
            batch.obs, batch.action, batch.next_obs, batch.reward, batch.terminated, (~held_out).float()
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

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
        """Indices of the ``elites`` members with the lowest held-out error."""
        return torch.topk(self.holdout_error, self.num_elites, largest=False).indices

    @torch.no_grad()
    def scores(
        self, policies: GaussianPolicyEnsemble, critic: CriticEnsemble, start: torch.Tensor, horizon: int
    ) -> torch.Tensor:
        """AM-Q of each of the ``n`` members of ``policies`` from the states ``start`` ``(B, D)``: ``(n,)``."""
        elites = self.elites()
        n = policies.members

        def policy(states: torch.Tensor) -> torch.Tensor:
            return policies.dist(states).loc.clamp(-1.0, 1.0)

        def q(states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
            return critic(states.flatten(0, 1), actions.flatten(0, 1)).min(0).values.view(n, -1)

        def step(states: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            flat_states, flat_actions = states.flatten(0, 1), actions.flatten(0, 1)
            next_obs, _, terminated = self.dynamics.step(flat_states, flat_actions, elites, self.termination)
            return next_obs.view_as(states), terminated.view(n, -1)

        return am_q(policy, q, step, start.unsqueeze(0).expand(n, -1, -1), horizon)
