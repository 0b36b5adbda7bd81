"""Environment factories. ``make(cfg)`` returns a Gymnasium env whose actions lie in [-1, 1].

Families register a builder in ``FAMILIES``; every builder returns an env with a Box action space,
and ``make`` rescales that space to [-1, 1] so agents never see the simulator's own bounds.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

from envs.config import EnvConfig
from envs.state import get_env_state, set_env_state

__all__ = ["FAMILIES", "EnvConfig", "get_env_state", "make", "set_env_state"]


def _make_gymnasium(cfg: EnvConfig) -> gym.Env:
    if cfg.id not in gym.registry:
        raise ValueError(f"env.id: unknown Gymnasium id {cfg.id!r} (env.name={cfg.name!r})")
    kwargs = dict(cfg.kwargs)
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps
    return gym.make(cfg.id, **kwargs)


FAMILIES: dict[str, Callable[[EnvConfig], gym.Env]] = {"gymnasium": _make_gymnasium}


def make(cfg: EnvConfig) -> gym.Env:
    """Build one env of ``cfg.family`` with actions rescaled to [-1, 1]."""
    if cfg.family not in FAMILIES:
        raise ValueError(f"env.family: unknown family {cfg.family!r}; known: {sorted(FAMILIES)}")
    env = FAMILIES[cfg.family](cfg)
    space = env.action_space
    if not isinstance(space, gym.spaces.Box):
        raise ValueError(f"env {cfg.id!r}: o2o agents need a Box action space, got {space}")
    if not (np.all(space.low == -1.0) and np.all(space.high == 1.0)):
        env = gym.wrappers.RescaleAction(env, -1.0, 1.0)
    return env
