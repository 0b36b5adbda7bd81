"""Small wrappers that several families share."""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym

from envs.config import EnvConfig


class TerminateOnSuccess(gym.Wrapper):
    """End the episode (terminated=True) at the first step whose ``info["success"]`` is true.

    Goal-reaching tasks scored by success (AntMaze, robosuite) stop there, as D4RL's AntMaze eval
    does: after success nothing more can be learned from the episode, and the success state is a
    true terminal, so the critic must not bootstrap through it.
    """

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated or bool(info.get("success", False)), truncated, info


def terminate_on_success(env: gym.Env, cfg: EnvConfig, family_default: bool) -> gym.Env:
    """Wrap ``env`` in ``TerminateOnSuccess`` if the config (or, when it says None, the family) asks."""
    wanted = family_default if cfg.terminate_on_success is None else cfg.terminate_on_success
    return TerminateOnSuccess(env) if wanted else env
