"""Environments: ``make(cfg)`` builds one env with actions in [-1, 1]; ``make_vec(cfg, n, device)``
builds n copies behind one batched step whose tensors live on the policy's device.

Families register a builder in ``FAMILIES`` (gymnasium, robotics, robosuite, and ``reset_free``:
RoboFuME's forward/backward practice over another family's scene, ``envs.reset_free``); a package that brings
its own env (the robot bridge) is named by import path in its config instead (``envs.factory``). ``get_env_state``/``set_env_state`` snapshot a MuJoCo env exactly, for resume.
"""

import os

# Headless machines (CI, clusters) have no X display: MuJoCo must render through EGL there, and it
# reads MUJOCO_GL when it is first imported, so this runs before anything imports mujoco.
if not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")


from typing import Any

from envs.autoreset import EpisodeStats, time_limit
from envs.config import EnvConfig
from envs.factory import FAMILIES, make
from envs.reset_free import ResetFreeEnv  # registers the reset_free family (imported by every worker too)
from envs.state import get_env_state, set_env_state

_VECTOR_NAMES = ("InProcessVecEnv", "SubprocVecEnv", "VecEnv", "VecStep", "make_vec")

__all__ = [
    "FAMILIES",
    "EnvConfig",
    "EpisodeStats",
    "ResetFreeEnv",
    "get_env_state",
    "make",
    "set_env_state",
    "time_limit",
    *_VECTOR_NAMES,
]


def __getattr__(name: str) -> Any:
    # envs.vector imports torch; loading it on first use keeps torch out of the subprocess
    # workers, which import this package only to build their envs (~1 s and ~150 MB each).
    if name in _VECTOR_NAMES:
        from envs import vector

        return getattr(vector, name)
    raise AttributeError(f"module 'envs' has no attribute {name!r}")
