"""The off-policy schedule: offline updates on the dataset, then online collection with updates.

1. offline: ``schedule.offline`` agent updates on batches from the dataset's buffer;
2. online: ``steps.online`` env steps, taken ``num_envs`` at a time by a vector env with one batched
   ``agent.act`` per vector step; each transition enters the online buffer. After ``steps.warmup``
   env steps, and once the online buffer holds the batch's online share (the official fine-tuning's
   first update; Cal-QL also waits for the env's time limit in steps), every env step is matched by
   one ``agent.update`` on a batch the ``MixedSampler`` draws (``offline_ratio`` of it from the
   dataset). During warm-up the policy (sampled or its mean) or uniform noise acts
   (``steps.warmup_actions``).

With a reward model the transitions wait in the online buffer for their labels (``run.labeller``,
``rl/loops/labelling.py``); only labelled rows count towards the online share (an asynchronous
labeller's first batch delays the first update), and the label metrics join the step's.
"""

from __future__ import annotations

from typing import Any

import torch

import envs
from envs.vector import TensorObs
from rl.agents import Phase
from rl.buffers import ReplayBuffer
from rl.config import WARMUP_ACTIONS
from rl.loops.bookkeeping import Bookkeeper
from rl.loops.build import Run
from rl.loops.labelling import Labeller
from rl.loops.run_state import LoopState


def offline_phase(run: Run, state: LoopState, books: Bookkeeper) -> None:
    while state.step < run.schedule.offline:
        offline_step(run, state, books)
    if run.schedule.offline > 0:
        books.save_agent("agent_offline.pt")


def offline_step(run: Run, state: LoopState, books: Bookkeeper) -> None:
    """One offline update on a batch from the dataset, then its logging, evaluation and checkpoint."""
    metrics = run.agent.update(run.offline_buffer.sample(run.agent.batch_size))
    state.step += 1
    books.after_step("offline", state.step, metrics, phase_end=state.step == run.schedule.offline)


def online_phase(run: Run, state: LoopState, books: Bookkeeper) -> None:
    steps, n, schedule = run.cfg.steps, run.cfg.num_envs, run.schedule
    if steps.warmup_actions not in WARMUP_ACTIONS:
        raise ValueError(
            f"steps.warmup_actions must be one of {WARMUP_ACTIONS}, got {steps.warmup_actions!r}"
        )
    run.agent.set_phase(Phase.ONLINE)
    no_updates_before = steps.warmup
    if run.agent.first_update_waits_an_episode_limit and run.episode_limit is not None:
        no_updates_before = max(no_updates_before, run.episode_limit)
    while state.step < schedule.total:
        online_step = state.step - schedule.offline  # env steps taken so far in this phase
        warming_up = online_step < steps.warmup
        if warming_up and steps.warmup_actions == "random":
            action = torch.rand(n, run.action_dim, device=run.device) * 2.0 - 1.0
        else:
            mean = warming_up and steps.warmup_actions == "policy_mean"
            action = run.agent.act(state.obs, deterministic=mean)
        labeller = run.labeller if isinstance(run.labeller, Labeller) else None
        result = collect_step(run.env, state.obs, action, run.online_buffer, state.episode_rows, labeller)
        metrics: dict[str, Any] = books.finish_episodes(result.episodes) if result.episodes else {}
        if labeller is not None:
            metrics |= labeller.drain()
        state.obs = result.obs
        state.env_steps += run.env_steps_per_vector_step
        if online_step + n > no_updates_before and run.sampler.ready(run.agent.batch_size):
            for _ in range(n):  # one update per env step, whatever the number of copies
                metrics |= run.agent.update(run.sampler.sample(run.agent.batch_size))
        state.step += n
        books.after_step("online", online_step + n, metrics, state.step == schedule.total, stride=n)


def collect_step(
    env: envs.VecEnv,
    obs: TensorObs,
    action: torch.Tensor,
    buffer: ReplayBuffer,
    episode_rows: list[list[int]],
    labeller: Labeller | None = None,
) -> envs.VecStep:
    """One vector step of off-policy collection, learning left out: step every copy with ``action``
    (chosen in ``obs``), add the n transitions to ``buffer``, append each transition's row to its
    copy's ``episode_rows``, and write the MC returns of the episodes that ended (clearing their
    rows). Returns the step; act on its ``obs`` next. With a ``labeller`` (whose buffer is
    ``buffer``) the rows wait for labels, and it keeps the episodes' rows and writes their returns."""
    result = env.step(action)
    if labeller is not None:
        labeller.add(obs, action, result)
        return result
    rows = buffer.add(obs, action, result.reward, result.next_obs, result.terminated)
    # Host integers: one conversion per step instead of a tensor view per copy.
    for copy_rows, row in zip(episode_rows, rows.tolist(), strict=True):
        copy_rows.append(row)
    for episode in result.episodes:
        buffer.write_mc_returns(torch.tensor(episode_rows[episode.env_index]))
        episode_rows[episode.env_index] = []
    return result
