"""A replay buffer of preallocated tensors on the training device, and offline/online mixing.

Transitions enter only through ``ReplayBuffer.add``, which is therefore the one place where
``reward * scale + bias`` is applied; Monte-Carlo returns-to-go are computed from the stored,
scaled rewards (``write_mc_returns``), so Cal-QL's floor and the TD targets see the same rewards.
Sampling is index generation plus gather on the device; the write pointer and fill level are host
integers, so neither adding nor sampling waits on the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rl.buffers.batch import Batch, Obs
from rl.data.dataset import Dataset, mc_return_to_go

ARRAY_KEY = "_"  # internal key for array (non-dict) observations


@dataclass(frozen=True)
class ObsSpec:
    """Shapes and dtypes of the observation columns: one entry for array observations, one per key for dicts."""

    columns: dict[str, tuple[tuple[int, ...], torch.dtype]]
    is_dict: bool

    @staticmethod
    def from_space(space: gym.Space) -> ObsSpec:
        if isinstance(space, gym.spaces.Dict):
            return ObsSpec({k: (s.shape, _torch_dtype(s.dtype)) for k, s in space.spaces.items()}, True)
        return ObsSpec({ARRAY_KEY: (space.shape, _torch_dtype(space.dtype))}, False)


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    # Pixels stay uint8 (4x smaller); everything else is stored as float32.
    return torch.uint8 if dtype == np.uint8 else torch.float32


class ReplayBuffer:
    def __init__(
        self,
        capacity: int,
        obs_spec: ObsSpec,
        action_dim: int,
        device: torch.device | str = "cpu",
        reward_scale: float = 1.0,
        reward_bias: float = 0.0,
        gamma: float = 0.99,
        seed: int = 0,
    ) -> None:
        if capacity <= 0:
            raise ValueError(f"replay buffer capacity must be positive, got {capacity}")
        self.capacity = capacity
        self.obs_spec = obs_spec
        self.device = torch.device(device)
        self.reward_scale, self.reward_bias, self.gamma = reward_scale, reward_bias, gamma

        def column(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.zeros((capacity, *shape), dtype=dtype, device=self.device)

        self.obs = {k: column(shape, dtype) for k, (shape, dtype) in obs_spec.columns.items()}
        self.next_obs = {k: column(shape, dtype) for k, (shape, dtype) in obs_spec.columns.items()}
        self.action = column((action_dim,))
        self.reward = column(())
        self.terminated = column(())
        self.mc_return = torch.full((capacity,), -torch.inf, device=self.device)
        self.ptr = 0
        self.size = 0
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    def __len__(self) -> int:
        return self.size

    def add(
        self,
        obs: Obs,
        action: torch.Tensor,
        raw_reward: torch.Tensor,
        next_obs: Obs,
        terminated: torch.Tensor,
    ) -> torch.Tensor:
        """Append a batch of transitions (leading dim n); returns their row indices (CPU int64)."""
        n = action.shape[0]
        if n > self.capacity:
            raise ValueError(f"adding {n} transitions to a buffer of capacity {self.capacity}")
        index = (self.ptr + torch.arange(n)) % self.capacity
        dev_index = index.to(self.device)
        for key, value in self._columns(obs).items():
            self.obs[key][dev_index] = value.to(self.device, self.obs[key].dtype)
        for key, value in self._columns(next_obs).items():
            self.next_obs[key][dev_index] = value.to(self.device, self.next_obs[key].dtype)
        self.action[dev_index] = action.to(self.device, torch.float32)
        reward = raw_reward.to(self.device, torch.float32)
        self.reward[dev_index] = reward * self.reward_scale + self.reward_bias
        self.terminated[dev_index] = terminated.to(self.device, torch.float32)
        self.mc_return[dev_index] = -torch.inf
        self.ptr = (self.ptr + n) % self.capacity
        self.size = min(self.size + n, self.capacity)
        return index

    def write_mc_returns(self, episode_rows: torch.Tensor) -> None:
        """Fill the return-to-go of one finished episode, given its row indices in time order."""
        rewards = self.reward[episode_rows.to(self.device)].cpu().numpy()
        ends = np.zeros(len(rewards), dtype=bool)
        ends[-1] = True
        returns = mc_return_to_go(rewards, ends, self.gamma)
        self.mc_return[episode_rows.to(self.device)] = torch.from_numpy(returns).to(self.device)

    def add_dataset(self, dataset: Dataset, chunk: int = 65536) -> None:
        """Append a whole dataset, with MC returns computed per episode on the scaled rewards."""
        n = len(dataset)
        if n > self.capacity - self.size:
            raise ValueError(
                f"dataset {dataset.info.source}: {n} rows do not fit in the buffer's free {self.capacity - self.size}"
            )
        first = self.ptr
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            self.add(
                _obs_rows(dataset.observations, start, stop),
                torch.from_numpy(dataset.actions[start:stop]),
                torch.from_numpy(dataset.rewards[start:stop]),
                _obs_rows(dataset.next_observations, start, stop),
                torch.from_numpy(dataset.terminated[start:stop]),
            )
        scaled = dataset.rewards.astype(np.float32) * self.reward_scale + self.reward_bias
        returns = mc_return_to_go(scaled, dataset.episode_ends, self.gamma)
        self.mc_return[first : first + n] = torch.from_numpy(returns).to(self.device)

    def sample(self, n: int) -> Batch:
        if self.size == 0:
            raise RuntimeError("sampling from an empty replay buffer")
        index = torch.randint(0, self.size, (n,), device=self.device, generator=self.generator)
        return self.gather(index)

    def gather(self, index: torch.Tensor) -> Batch:
        # index_select is about twice as fast as advanced indexing for a row gather on CPU.
        def rows(column: torch.Tensor) -> torch.Tensor:
            return column.index_select(0, index)

        return Batch(
            obs=self._as_obs({k: rows(v) for k, v in self.obs.items()}),
            action=rows(self.action),
            reward=rows(self.reward),
            next_obs=self._as_obs({k: rows(v) for k, v in self.next_obs.items()}),
            terminated=rows(self.terminated),
            mc_return=rows(self.mc_return),
        )

    def state_dict(self) -> dict[str, Any]:
        """Only the filled rows are saved, so a checkpoint's size follows the data, not the capacity."""

        def filled(column: torch.Tensor) -> torch.Tensor:
            # clone(): a slice is a view, and torch.save would write the whole preallocated storage.
            return column[: self.size].clone().cpu()

        return {
            "capacity": self.capacity,
            "ptr": self.ptr,
            "size": self.size,
            "obs": {k: filled(v) for k, v in self.obs.items()},
            "next_obs": {k: filled(v) for k, v in self.next_obs.items()},
            "action": filled(self.action),
            "reward": filled(self.reward),
            "terminated": filled(self.terminated),
            "mc_return": filled(self.mc_return),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(
                f"replay buffer: checkpoint capacity {state['capacity']} != configured {self.capacity}"
            )
        if set(state["obs"]) != set(self.obs) or state["action"].shape[1:] != self.action.shape[1:]:
            raise ValueError("replay buffer: checkpoint observation/action columns do not match this buffer")
        size = state["size"]
        for key in self.obs:
            if state["obs"][key].shape[1:] != self.obs[key].shape[1:]:
                raise ValueError(
                    f"replay buffer: observation column {key!r} has another shape in the checkpoint"
                )
            self.obs[key][:size] = state["obs"][key].to(self.device)
            self.next_obs[key][:size] = state["next_obs"][key].to(self.device)
        for name in ("action", "reward", "terminated", "mc_return"):
            getattr(self, name)[:size] = state[name].to(self.device)
        self.ptr, self.size = state["ptr"], size
        self.generator.set_state(state["generator"])

    def _columns(self, obs: Obs) -> dict[str, torch.Tensor]:
        if self.obs_spec.is_dict:
            if not isinstance(obs, dict):
                raise TypeError("this buffer stores dict observations")
            return obs
        return {ARRAY_KEY: obs}

    def _as_obs(self, columns: dict[str, torch.Tensor]) -> Obs:
        return columns if self.obs_spec.is_dict else columns[ARRAY_KEY]


class MixedSampler:
    """Draws ``round(n * offline_ratio)`` rows from the offline buffer and the rest from the online one.

    ``offline_ratio = 0`` samples online data only (WSRL); ``0.5`` is the symmetric RLPD/Cal-QL
    sampling; ``1`` keeps training on the dataset alone. The split is exact in every batch, so the
    ratio holds for each update, not just on average. ``offline`` may be None when the ratio is 0.
    """

    def __init__(self, offline: ReplayBuffer | None, online: ReplayBuffer, offline_ratio: float) -> None:
        if not 0.0 <= offline_ratio <= 1.0:
            raise ValueError(f"offline_ratio must lie in [0, 1], got {offline_ratio}")
        if offline_ratio > 0 and (offline is None or len(offline) == 0):
            raise ValueError(f"offline_ratio={offline_ratio} needs offline data, but the run has no dataset")
        self.offline, self.online, self.offline_ratio = offline, online, offline_ratio

    def sample(self, n: int) -> Batch:
        n_offline = round(n * self.offline_ratio)
        parts = []
        if n_offline:
            parts.append(self.offline.sample(n_offline))
        if n - n_offline:
            parts.append(self.online.sample(n - n_offline))
        return Batch.cat(parts)


def _obs_rows(obs: np.ndarray | dict, start: int, stop: int) -> Obs:
    if isinstance(obs, dict):
        return {k: torch.from_numpy(np.ascontiguousarray(v[start:stop])) for k, v in obs.items()}
    return torch.from_numpy(np.ascontiguousarray(obs[start:stop]))
