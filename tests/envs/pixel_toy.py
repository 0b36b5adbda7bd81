"""A tiny deterministic pixel env for the pixel tests, in its own torch-free module: runs name it as
``env.family=tests.envs.pixel_toy:make_pixel_toy`` (in process, or in a CLI subprocess)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

SIZE = 16
"""Camera height and width: the smallest the DrQ conv encoder takes comfortably (16 -> 7 -> 1)."""
EPISODE_STEPS = 5


class PixelToyEnv(gym.Env):
    """A point on a line, seen by a camera: ``{"camera": (16, 16, 3) uint8, "state": [x, t]}``.

    Every episode starts at ``x = -0.5`` (whatever the seed, so a new episode after a resume is the
    one an uninterrupted run would start); an action ``a`` in [-1, 1] moves the point by ``0.5 a``;
    reaching ``x >= 1`` terminates; the reward is ``-|x - 0.5|``. The camera shows a bright column
    where the point is and the step count in its green channel, so the image says what the state says.
    """

    observation_space = gym.spaces.Dict(
        {
            "camera": gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8),
            "state": gym.spaces.Box(-np.inf, np.inf, (2,), np.float32),
        }
    )
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self) -> None:
        self.x, self.t = -0.5, 0

    def _obs(self) -> dict[str, np.ndarray]:
        image = np.zeros((SIZE, SIZE, 3), np.uint8)
        column = round((np.clip(self.x, -1.0, 1.0) + 1.0) / 2.0 * (SIZE - 1))
        image[:, column, 0] = 255
        image[:, :, 1] = 40 * self.t
        return {"camera": image, "state": np.array([self.x, self.t], np.float32)}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.x, self.t = -0.5, 0
        return self._obs(), {}

    def step(self, action):
        self.x = float(np.clip(self.x + 0.5 * float(action[0]), -1.0, 1.0))
        self.t += 1
        terminated = self.x >= 1.0
        return self._obs(), -abs(self.x - 0.5), terminated, False, {"success": terminated}


def make_pixel_toy(cfg: object = None) -> gym.Env:
    """The env with a 5-step time limit (``cfg`` unused: the factory is also called without one)."""
    return gym.wrappers.TimeLimit(PixelToyEnv(), max_episode_steps=EPISODE_STEPS)
