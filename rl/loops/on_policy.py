"""The on-policy online phase (Uni-O4's PPO; ReinFlow and DPPO use it too).

Rollouts of ``rollout_steps`` env steps over all copies fill a ``RolloutBuffer`` that this loop
creates, fills and empties; when it is full the agent learns from it (``update_rollout``, which
computes the advantages it wants from the stored rewards, values and bootstrap values). A
truncated episode's bootstrap value ``V(next_obs)`` is stored with its step, so GAE bootstraps time
limits and not terminations. Checkpoints are written only between rollouts: a resumed run restarts
the rollout in progress from the same state, so it stays exact. Logging and evaluation keep their
cadence inside a rollout.

With a reward model each step is stored with a NaN reward and its labels are queued
(``RolloutLabeller``); the update waits until the rollout's labels are all written.
"""

from __future__ import annotations

from typing import Any

import torch

from rl.agents import Phase
from rl.buffers import ObsSpec, RolloutBuffer
from rl.loops.bookkeeping import Bookkeeper
from rl.loops.build import Run
from rl.loops.labelling import RolloutLabeller
from rl.loops.run_state import LoopState


def online_phase(run: Run, state: LoopState, books: Bookkeeper) -> None:
    n, schedule, agent = run.cfg.num_envs, run.schedule, run.agent
    agent.set_phase(Phase.ONLINE)
    rollout = RolloutBuffer(
        run.cfg.rollout_steps // n, n, ObsSpec.from_space(run.env.single_observation_space),
        run.action_dim, run.device, run.reward_scale, run.reward_bias,
    )  # fmt: skip
    labeller = run.labeller if isinstance(run.labeller, RolloutLabeller) else None
    while state.step < schedule.total:
        action, log_prob, value = agent.policy_step(state.obs)
        result = run.env.step(action)
        bootstrap = torch.zeros(n, device=run.device)
        # A truncation ends an episode, so the host-side episode tuple settles most steps without
        # reading the device flag (a synchronisation on GPU).
        if result.episodes and result.truncated.any():
            bootstrap = torch.where(result.truncated, agent.state_value(result.next_obs), bootstrap)
        reward = result.reward
        if labeller is not None:
            labeller.add(rollout.t, result)
            reward = torch.full_like(reward, torch.nan)  # until the labels are written
        rollout.add(
            state.obs, action, log_prob, reward, value, result.terminated, result.truncated, bootstrap
        )
        metrics: dict[str, Any] = books.finish_episodes(result.episodes) if result.episodes else {}
        state.obs = result.obs
        state.env_steps += run.env_steps_per_vector_step
        state.step += n
        updated = rollout.full
        if updated:
            if labeller is not None:
                metrics |= labeller.write_all(rollout)
            metrics |= agent.update_rollout(rollout, state.obs)
            rollout.reset()
        books.after_step(
            "online",
            state.step - schedule.offline,
            metrics,
            phase_end=state.step == schedule.total,
            stride=n,
            may_save=rollout.t == 0,
            log_metrics=updated,
        )
