"""A dataset as (observation history, action chunk) rows: what a chunk env (``envs/chunking.py``)
observes and executes, so BC on chunks and any agent on a chunk env read the same MDP.

``chunk_dataset(dataset, action_chunk=Ta, obs_history=To)`` keeps one row per original step ``t``:
- ``observations``: ``obs[t - To + 1 .. t]`` flattened, oldest first; before the episode's start the
  first observation is repeated (the wrapper's reset does the same);
- ``actions``: ``a[t .. t + Ta - 1]`` flattened; past the episode's end the last action is repeated
  (see below);
- ``rewards``: the sum over the steps the wrapper would execute, ``t .. min(t + Ta - 1, end)``;
- ``next_observations``: the history after those steps (the episode's final observation included);
- ``terminated`` / ``truncated``: the episode's own flag, on the rows whose chunk reaches its end.
Rows are ordered as ``Ta`` interleaved chains per episode (``t = start + c, start + c + Ta, ...`` for
``c = 0 .. Ta - 1``), each chain a contiguous run ending at the row whose chunk reaches the episode's
end. So a row's next observation is the next row's observation, and returns-to-go and episode
returns computed over contiguous runs are those of the chunk MDP (gamma per chunk).

Actions past an episode's end. ``Batch`` has no mask column (``docs/DESIGN.md`` lists one as
optional; the buffers are not this module's), so those entries repeat the episode's last action,
Diffusion Policy's ``pad_after`` convention, instead of being masked out of the loss. For everything
an env executes the two agree: the wrapper stops at the episode's end, so no padded action is ever
run. ``action_valid`` returns the mask the padding stands in for.

Dict observations (cameras) take only ``To = 1``; their actions are chunked all the same.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rl.data.dataset import Dataset


def _episodes(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    ends = np.flatnonzero(dataset.episode_ends)
    return np.concatenate([[0], ends[:-1] + 1]), ends


def chunk_rows(dataset: Dataset, action_chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(t, start, end)`` of every chunked row, in chain order (module docstring)."""
    rows, starts, ends = [], [], []
    for start, end in zip(*_episodes(dataset), strict=True):
        for offset in range(min(action_chunk, end - start + 1)):
            t = np.arange(start + offset, end + 1, action_chunk)
            rows.append(t)
            starts.append(np.full(len(t), start))
            ends.append(np.full(len(t), end))
    return np.concatenate(rows), np.concatenate(starts), np.concatenate(ends)


def action_valid(dataset: Dataset, action_chunk: int) -> np.ndarray:
    """``(rows, Ta)`` bool, in ``chunk_dataset``'s row order: which chunk entries are real actions
    (False where a chunk runs past its episode's end and repeats the last action)."""
    t, _, end = chunk_rows(dataset, action_chunk)
    return t[:, None] + np.arange(action_chunk) <= end[:, None]


def chunk_dataset(dataset: Dataset, action_chunk: int, obs_history: int) -> Dataset:
    """``dataset`` as chunk rows (module docstring); unchanged when both sizes are 1."""
    if action_chunk < 1 or obs_history < 1:
        raise ValueError(f"env.action_chunk={action_chunk}, env.obs_history={obs_history}: both must be >= 1")
    if action_chunk == 1 and obs_history == 1:
        return dataset
    if isinstance(dataset.observations, dict) and obs_history != 1:
        raise ValueError(f"dataset {dataset.info.source}: dict observations take only env.obs_history=1")
    t, start, end = chunk_rows(dataset, action_chunk)
    steps = np.arange(action_chunk)
    executed = np.minimum(action_chunk, end - t + 1)
    rewards = np.concatenate([[0.0], np.cumsum(dataset.rewards, dtype=np.float64)])
    after = t + executed  # the step whose observation follows the chunk (end + 1: the final one)
    reaches_end = t + action_chunk - 1 >= end
    ended_by_termination = dataset.terminated[end]

    def history(obs: np.ndarray, next_obs: np.ndarray, last: np.ndarray) -> np.ndarray:
        """Frames ``last - To + 1 .. last`` of each row's episode (``end + 1``: its final observation)."""
        frames = np.maximum(last[:, None] - obs_history + 1 + np.arange(obs_history), start[:, None])
        stacked = np.where(
            (frames <= end[:, None]).reshape(*frames.shape, *[1] * (obs.ndim - 1)),
            obs[np.minimum(frames, end[:, None])],
            next_obs[end][:, None],
        )
        return stacked.reshape(len(t), -1) if obs_history > 1 else stacked[:, 0]

    def both(obs, next_obs):
        if isinstance(obs, dict):
            return {k: history(obs[k], next_obs[k], t) for k in obs}, {
                k: history(obs[k], next_obs[k], after) for k in obs
            }
        return history(obs, next_obs, t), history(obs, next_obs, after)

    observations, next_observations = both(dataset.observations, dataset.next_observations)
    return Dataset(
        observations=observations,
        actions=dataset.actions[np.minimum(t[:, None] + steps, end[:, None])].reshape(len(t), -1),
        rewards=(rewards[after] - rewards[t]).astype(np.float32),
        next_observations=next_observations,
        terminated=reaches_end & ended_by_termination,
        truncated=reaches_end & ~ended_by_termination,
        info=dataclasses.replace(
            dataset.info,
            extra={**dataset.info.extra, "action_chunk": action_chunk, "obs_history": obs_history},
        ),
    )
