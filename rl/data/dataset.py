"""The one offline-data type every loader produces and every buffer consumes.

A ``Dataset`` is columnar: row ``i`` is the transition ``(obs[i], action[i], reward[i],
next_obs[i], terminated[i], truncated[i])``. Episodes are contiguous runs of rows; an episode ends
at a row whose ``terminated`` or ``truncated`` flag is set (``truncated`` also marks the last row of
a file that stops mid-episode). Rewards are raw, exactly as the source recorded them: reward
scale/bias is applied once, later, when rows enter a replay buffer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Observation = np.ndarray | dict[str, np.ndarray]


@dataclass(frozen=True)
class DatasetInfo:
    """Where a dataset came from and how to normalise returns on its task."""

    source: str
    """The spec it was loaded from, e.g. ``minari:mujoco/hopper/medium-v0`` or ``d4rl:/path.hdf5``."""
    env_id: str | None = None
    """The simulator id the data was recorded in, when the source says so."""
    ref_min_score: float | None = None
    """Return of a random policy (0 on the normalised scale), from the source's metadata."""
    ref_max_score: float | None = None
    """Return of an expert policy (100 on the normalised scale), from the source's metadata."""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Dataset:
    observations: Observation
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: Observation
    terminated: np.ndarray
    truncated: np.ndarray
    info: DatasetInfo

    def __post_init__(self) -> None:
        n = len(self.rewards)
        for name in ("actions", "terminated", "truncated"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"{self.info.source}: '{name}' has {len(getattr(self, name))} rows, rewards {n}"
                )
        for name in ("observations", "next_observations"):
            for key, column in _columns(getattr(self, name)):
                if len(column) != n:
                    raise ValueError(f"{self.info.source}: '{name}{key}' has {len(column)} rows, rewards {n}")

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def episode_ends(self) -> np.ndarray:
        """Boolean per row: True where an episode ends (terminated, truncated, or the last row)."""
        ends = np.logical_or(self.terminated, self.truncated)
        if len(ends):
            ends[-1] = True
        return ends

    @property
    def episode_returns(self) -> np.ndarray:
        """Undiscounted raw return of every episode, in order."""
        ends = np.flatnonzero(self.episode_ends)
        starts = np.concatenate([[0], ends[:-1] + 1])
        sums = np.add.reduceat(self.rewards.astype(np.float64), starts) if len(starts) else np.zeros(0)
        return sums

    @property
    def num_episodes(self) -> int:
        return int(self.episode_ends.sum())

    def sha256(self) -> str:
        """A digest of the rows as loaded: each column's name, dtype, shape and bytes, in a fixed order
        (dict observations by key). Equal digests mean the same data. A generated dataset depends on
        the CPU that made it (its policies' rollouts), so a run records this to name the copy it
        trained on (``dataset_sha256.txt``) and ``python -m rl.data digest`` prints it for any copy."""
        digest = hashlib.sha256()
        for name in ("observations", "actions", "rewards", "next_observations", "terminated", "truncated"):
            for key, column in sorted(_columns(getattr(self, name)), key=lambda pair: pair[0]):
                column = np.ascontiguousarray(column)
                digest.update(f"{name}{key} {column.dtype.str} {column.shape}\n".encode())
                digest.update(column.data)
        return digest.hexdigest()

    def observation_stats(self, eps: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation (floored at ``eps``) of array observations."""
        if isinstance(self.observations, dict):
            raise ValueError(f"{self.info.source}: observation statistics need array observations")
        obs = self.observations.astype(np.float64)
        return obs.mean(0).astype(np.float32), np.maximum(obs.std(0), eps).astype(np.float32)


def _columns(obs: Observation) -> list[tuple[str, np.ndarray]]:
    if isinstance(obs, dict):
        return [(f"/{k}", v) for k, v in obs.items()]
    return [("", obs)]


def mc_return_to_go(
    rewards: np.ndarray,
    episode_ends: np.ndarray,
    gamma: float,
    sparse_negative_reward: float | None = None,
) -> np.ndarray:
    """Discounted return-to-go ``G_t = sum_k gamma^k r_{t+k}`` within each episode.

    Cal-QL uses ``G`` as a lower bound on the behaviour policy's value. With
    ``sparse_negative_reward`` set (AntMaze/Adroit-binary style data), an episode whose every reward
    equals that value never succeeded, and Cal-QL's official code gives each of its rows the
    infinite-horizon value ``r_neg / (1 - gamma)`` instead of the truncated sum.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    returns = np.empty_like(rewards)
    ends = np.flatnonzero(episode_ends)
    start = 0
    for end in ends:
        episode = rewards[start : end + 1]
        if sparse_negative_reward is not None and np.all(episode == sparse_negative_reward):
            returns[start : end + 1] = sparse_negative_reward / (1.0 - gamma)
        else:
            acc = 0.0
            for t in range(end, start - 1, -1):
                acc = rewards[t] + gamma * acc
                returns[t] = acc
        start = end + 1
    if start != len(rewards):
        raise ValueError("mc_return_to_go: the last row must end an episode")
    return returns.astype(np.float32)
