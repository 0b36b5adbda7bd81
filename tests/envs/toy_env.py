"""A deterministic toy env for the vector-env tests, in its own torch-free module: subprocess
workers unpickle its builders by reference, so they import this file, not the test module."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from envs import EnvConfig


class ToyEnv(gym.Env):
    """A deterministic env whose observation says where it is: ``[episode, t, u]``, where ``u`` is
    drawn from the env's generator at reset (so seeding is visible). Raw actions lie in [-2, 2] (so
    ``make`` rescales them); a raw action above 1.5 terminates with success; reward = raw action + t, while the
    score counts t alone."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(3,), dtype=np.float64)
    action_space = gym.spaces.Box(-2.0, 2.0, shape=(1,), dtype=np.float32)

    def __init__(self) -> None:
        self.episode = -1
        self.t = 0
        self.u = 0.0

    def _obs(self) -> np.ndarray:
        return np.array([self.episode, self.t, self.u])

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.episode += 1
        self.t = 0
        self.u = float(self.np_random.uniform())
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        terminated = bool(action[0] > 1.5)
        info = {"success": terminated, "score_reward": float(self.t)}
        return self._obs(), float(action[0]) + self.t, terminated, False, info


def make_toy(cfg: EnvConfig) -> gym.Env:
    return gym.wrappers.TimeLimit(ToyEnv(), max_episode_steps=4)


def fail_on_reset(cfg: EnvConfig) -> gym.Env:
    """A toy whose reset raises, to check that worker errors reach the caller."""

    class Broken(ToyEnv):
        def reset(self, *, seed=None, options=None):
            raise OSError("simulator crashed")

    return Broken()
