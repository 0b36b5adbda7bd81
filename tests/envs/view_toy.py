"""A tiny deterministic state env with a reward view, for the labelling tests, in its own torch-free
module: runs name it as ``env.family=tests.envs.view_toy:make_view_toy`` (subprocess workers import it)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from tests.envs.pixel_toy import EPISODE_STEPS, SIZE, PixelToyEnv


class ViewToyEnv(PixelToyEnv):
    """``PixelToyEnv`` seen as a real cell sees it: the policy gets ``[x, t]`` only, while
    ``info["reward_view"]`` shows the camera (``frames/camera``) and the named state ``state/x`` of the
    state the step reached. It never terminates by itself (a time limit ends each episode)."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    reward_view_space = gym.spaces.Dict(
        {
            "frames/camera": gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8),
            "state/x": gym.spaces.Box(-np.inf, np.inf, (1,), np.float32),
        }
    )

    def _view(self) -> dict[str, np.ndarray]:
        seen = super()._obs()
        return {"frames/camera": seen["camera"], "state/x": np.array([self.x], np.float32)}

    def _obs(self) -> np.ndarray:  # type: ignore[override]
        return np.array([self.x, self.t], np.float32)

    def step(self, action):
        obs, reward, _, truncated, _ = super().step(action)
        return obs, reward, False, truncated, {"success": self.x >= 0.9, "reward_view": self._view()}

    def reward_calibration(self) -> dict[str, dict]:
        return {"camera": {"intrinsics": np.eye(3), "extrinsics": np.eye(4), "height": SIZE, "width": SIZE}}


def make_view_toy(cfg: object = None) -> gym.Env:
    """The env with a 5-step time limit (``cfg`` unused: the factory is also called without one)."""
    return gym.wrappers.TimeLimit(ViewToyEnv(), max_episode_steps=EPISODE_STEPS)
