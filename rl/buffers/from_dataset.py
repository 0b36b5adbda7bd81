"""Filling a replay buffer from a ``Dataset``: rows in file order, MC returns per episode.

Rows are one stream in file order: a row's pixel obs reuses the previous row's next frame when the
two are equal, so a pixel dataset's frames are stored once. The frame ring grows if the dataset's
distinct frames do not fit beside the frames the buffer's rows already use, so no row is dropped
(the rows themselves must fit). Returns-to-go are computed per episode on the scaled rewards, the
ones the TD targets see.
"""

from __future__ import annotations

import numpy as np
import torch

from rl.buffers.batch import Obs
from rl.buffers.frames import CHAIN, NO_FRAME
from rl.buffers.replay import ReplayBuffer
from rl.data.dataset import Dataset, mc_return_to_go


def fill_from_dataset(buffer: ReplayBuffer, dataset: Dataset, chunk: int = 65536) -> None:
    """Append all of ``dataset`` to ``buffer`` in chunks of ``chunk`` rows, then its MC returns."""
    n = len(dataset)
    if n > buffer.capacity - len(buffer):
        raise ValueError(
            f"dataset {dataset.info.source}: {n} rows do not fit in the buffer's free {buffer.capacity - len(buffer)}"
        )
    links = None
    if buffer.ring is not None:
        same = _continues_previous_row(dataset, list(buffer.ring.columns))
        buffer.reserve_frames(n + int((~same).sum()))
        links = np.where(same, CHAIN, NO_FRAME)
    first = buffer.ptr
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        prev = None
        if links is not None:
            prev = links[start:stop].copy()
            if prev[0] == CHAIN:  # continues the previous chunk's last row
                prev[0] = buffer.ring.last_next[-1]
        buffer.extend(
            buffer.columns_on_device(_obs_rows(dataset.observations, start, stop)),
            torch.from_numpy(dataset.actions[start:stop]),
            torch.from_numpy(dataset.rewards[start:stop]),
            buffer.columns_on_device(_obs_rows(dataset.next_observations, start, stop)),
            torch.from_numpy(dataset.terminated[start:stop]),
            prev,
        )
    scaled = dataset.rewards.astype(np.float32) * buffer.reward_scale + buffer.reward_bias
    returns = mc_return_to_go(scaled, dataset.episode_ends, buffer.gamma)
    buffer.set_mc_returns((first + torch.arange(n)) % buffer.capacity, torch.from_numpy(returns))


def _obs_rows(obs: np.ndarray | dict, start: int, stop: int) -> Obs:
    if isinstance(obs, dict):
        return {k: torch.from_numpy(np.ascontiguousarray(v[start:stop])) for k, v in obs.items()}
    return torch.from_numpy(np.ascontiguousarray(obs[start:stop]))


def _continues_previous_row(dataset: Dataset, keys: list[str], max_bytes: int = 1 << 26) -> np.ndarray:
    """(n,) bool: row t's observation equals row t-1's next observation in every column of ``keys``
    (row 0: False). Compared in pieces of at most ``max_bytes`` per column."""
    n = len(dataset)
    same = np.ones(n, dtype=bool)
    same[:1] = False
    for key in keys:
        obs = dataset.observations[key] if isinstance(dataset.observations, dict) else dataset.observations
        following = (
            dataset.next_observations[key]
            if isinstance(dataset.next_observations, dict)
            else dataset.next_observations
        )
        step = max(1, max_bytes // max(1, obs[0].nbytes if n else 1))
        for start in range(1, n, step):
            stop = min(start + step, n)
            equal = (obs[start:stop] == following[start - 1 : stop - 1]).reshape(stop - start, -1).all(1)
            same[start:stop] &= equal
    return same
