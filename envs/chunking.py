"""Action chunks and observation histories as an env wrapper, so a chunk policy is one more agent.

``ActionChunking(env, action_chunk=Ta, obs_history=To)`` (DPPO's ``MultiStep`` in spirit):
- its action is a flat chunk of ``Ta * Da`` numbers, executed open loop, one env step per ``Da``
  numbers, stopping at the first termination or truncation (the rest of the chunk is dropped);
  the reward is the sum of the executed steps' rewards; ``info`` is the last step's, with
  ``success`` true if any executed step succeeded and ``score_reward`` summed where the env has one;
- its observation is the flat history of the last ``To`` observations, oldest first, with the
  episode's first observation repeated until ``To`` have been seen.
Dict observations (cameras) pass through unchanged; they take only ``To = 1``.

So the loops need no change: a loop step is one chunk, a rollout row a chunk, GAE runs per chunk
(``gamma`` per chunk, as ReinFlow's and DPPO's), and env-step counters count chunks. The env's own
time limit still counts single steps (it sits inside this wrapper).

``envs.factory.make_with`` applies it when ``env.action_chunk`` or ``env.obs_history`` is above 1.
A snapshot for exact resume (``envs.state``) covers the simulator but not this wrapper's history,
so a run resumed mid-episode is exact for ``obs_history = 1`` only.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np


class ActionChunking(gym.Wrapper):
    def __init__(self, env: gym.Env, action_chunk: int, obs_history: int) -> None:
        super().__init__(env)
        if action_chunk < 1 or obs_history < 1:
            raise ValueError(
                f"env.action_chunk={action_chunk}, env.obs_history={obs_history}: both must be >= 1"
            )
        space = env.action_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"env.action_chunk: chunks need a flat Box action space, got {space}")
        self.action_chunk, self.obs_history, self.step_dim = action_chunk, obs_history, space.shape[0]
        self.action_space = gym.spaces.Box(
            np.tile(space.low, action_chunk), np.tile(space.high, action_chunk), dtype=space.dtype
        )
        obs_space = env.observation_space
        if isinstance(obs_space, gym.spaces.Dict):
            if obs_history != 1:
                raise ValueError("env.obs_history: dict (pixel) observations take only obs_history=1")
        elif isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1:
            self.observation_space = gym.spaces.Box(
                np.tile(obs_space.low, obs_history),
                np.tile(obs_space.high, obs_history),
                dtype=obs_space.dtype,
            )
        else:
            raise ValueError(
                f"env.obs_history: needs a flat Box or a Dict observation space, got {obs_space}"
            )
        self.history: deque = deque(maxlen=obs_history)

    def _observation(self) -> Any:
        if self.obs_history == 1:
            return self.history[-1]
        return np.concatenate(list(self.history))

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self.history.extend([obs] * self.obs_history)
        return self._observation(), info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        steps = np.asarray(action).reshape(self.action_chunk, self.step_dim)
        total, score, success = 0.0, 0.0, False
        for step_action in steps:
            obs, reward, terminated, truncated, info = self.env.step(step_action)
            total += float(reward)
            score += float(info.get("score_reward", reward))
            success = success or bool(info.get("success", False))
            self.history.append(obs)
            if terminated or truncated:
                break
        info = dict(info)
        if "score_reward" in info:
            info["score_reward"] = score
        if "success" in info or success:
            info["success"] = success
        return self._observation(), total, terminated, truncated, info


def chunked(env: gym.Env, action_chunk: int, obs_history: int) -> gym.Env:
    """``env`` in ``ActionChunking`` when a chunk or a history longer than 1 is asked for."""
    if action_chunk == 1 and obs_history == 1:
        return env
    return ActionChunking(env, action_chunk, obs_history)


def single_step_spaces(
    observation_space: gym.Space, action_space: gym.spaces.Box, action_chunk: int, obs_history: int
) -> tuple[gym.Space, gym.spaces.Box]:
    """The spaces of one env step behind a chunk env's ``(observation, action)`` spaces: what a
    dataset recorded step by step must match before it is chunked."""
    step_action = gym.spaces.Box(
        action_space.low[: action_space.shape[0] // action_chunk],
        action_space.high[: action_space.shape[0] // action_chunk],
        dtype=action_space.dtype,
    )
    if isinstance(observation_space, gym.spaces.Dict) or obs_history == 1:
        return observation_space, step_action
    width = observation_space.shape[0] // obs_history
    step_obs = gym.spaces.Box(
        observation_space.low[:width], observation_space.high[:width], dtype=observation_space.dtype
    )
    return step_obs, step_action
