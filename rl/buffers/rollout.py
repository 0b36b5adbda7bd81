"""On-policy storage for PPO-style agents: a fixed number of steps from n parallel envs, and GAE.

Advantages cut at every episode end (terminated or truncated): an advantage never mixes two
episodes. They bootstrap through truncation: at a time-limit step the value of the *true* final
observation (``bootstrap_value``) stands in for the next state's value, because the next row
already belongs to the reset episode; at a terminal step nothing is bootstrapped.

Observations (``obs_layout``) are that many floats, or the columns of an ``ObsSpec``: a dict observation (cameras
and proprio) keeps one column per key, frames as uint8.
"""

from __future__ import annotations

import torch

from rl.buffers.batch import Obs
from rl.buffers.replay import ARRAY_KEY, ObsSpec


class RolloutBuffer:
    def __init__(
        self,
        steps: int,
        num_envs: int,
        obs_layout: int | ObsSpec,
        action_dim: int,
        device: torch.device | str = "cpu",
        reward_scale: float = 1.0,
        reward_bias: float = 0.0,
    ):
        self.steps, self.num_envs = steps, num_envs
        self.device = torch.device(device)
        self.reward_scale, self.reward_bias = reward_scale, reward_bias

        def column(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.zeros((steps, num_envs, *shape), dtype=dtype, device=self.device)

        if not isinstance(obs_layout, ObsSpec):
            obs_layout = ObsSpec({ARRAY_KEY: ((obs_layout,), torch.float32)}, False)
        columns = {key: column(*shape, dtype=dtype) for key, (shape, dtype) in obs_layout.columns.items()}
        self.obs: Obs = columns if obs_layout.is_dict else columns[ARRAY_KEY]
        self.action = column(action_dim)
        self.log_prob = column()
        self.reward = column()
        self.value = column()
        self.terminated = column()
        self.truncated = column()
        self.bootstrap_value = column()
        self.advantage = column()
        self.returns = column()
        self.t = 0

    @property
    def full(self) -> bool:
        return self.t == self.steps

    def add(
        self,
        obs: Obs,
        action: torch.Tensor,
        log_prob: torch.Tensor,
        reward: torch.Tensor,
        value: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        bootstrap_value: torch.Tensor,
    ) -> None:
        """One vector step (raw rewards). ``bootstrap_value`` is V(true final obs) where ``truncated``."""
        if self.full:
            raise RuntimeError("rollout buffer is full; call compute_gae and reset first")
        t = self.t
        if isinstance(self.obs, dict):
            for key, column in self.obs.items():
                column[t] = obs[key]
        else:
            self.obs[t] = obs
        self.action[t], self.log_prob[t] = action, log_prob
        self.reward[t], self.value[t] = self.scale_reward(reward), value
        self.terminated[t], self.truncated[t] = terminated.float(), truncated.float()
        self.bootstrap_value[t] = bootstrap_value
        self.t += 1

    def scale_reward(self, raw_reward: torch.Tensor) -> torch.Tensor:
        """As in ``ReplayBuffer``: the one place a raw reward (env or model) is scaled for a learner."""
        return raw_reward * self.reward_scale + self.reward_bias

    def write_labels(self, t: int, raw_reward: torch.Tensor, done: torch.Tensor) -> None:
        """A reward model's labels for step ``t`` (added with a NaN reward): the reward, and a
        terminal where the label says ``done`` (GAE then neither bootstraps nor carries past it)."""
        self.reward[t] = self.scale_reward(raw_reward.to(self.device, torch.float32))
        self.terminated[t] = torch.maximum(self.terminated[t], done.to(self.device, torch.float32))

    def compute_gae(self, last_value: torch.Tensor, gamma: float, lam: float) -> None:
        """Fill ``advantage`` and ``returns`` (= advantage + value); ``last_value`` = V(obs after the last step)."""
        if not self.full:
            raise RuntimeError(f"rollout holds {self.t} of {self.steps} steps")
        carry = torch.zeros(self.num_envs, device=self.device)
        next_value = last_value
        for t in reversed(range(self.steps)):
            next_value = torch.where(self.truncated[t].bool(), self.bootstrap_value[t], next_value)
            delta = self.reward[t] + gamma * (1.0 - self.terminated[t]) * next_value - self.value[t]
            episode_continues = 1.0 - torch.maximum(self.terminated[t], self.truncated[t])
            carry = delta + gamma * lam * episode_continues * carry
            self.advantage[t] = carry
            next_value = self.value[t]
        self.returns = self.advantage + self.value

    def reset(self) -> None:
        self.t = 0
