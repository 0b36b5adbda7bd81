"""Snapshot and restore a running env, so a resumed run continues the very episode it was in.

Gymnasium envs cannot be pickled with their simulator state (a pickled MuJoCo env comes back
freshly initialised), so a snapshot records what defines the future of a MuJoCo env exactly: the
integration state (qpos, qvel, act, time, ...), the env's random generator, and the time limit's
step counter. That is the whole state of Gymnasium's MuJoCo suite only: other MuJoCo envs keep
episode state elsewhere (gymnasium-robotics mazes their goal, Adroit randomises the *model* at reset,
Kitchen tracks completed subtasks, robosuite's controllers and observables have their own state).
Those, and envs without a MuJoCo core, return ``None``; a resumed run then starts a new episode.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

# Modules whose envs' future is fully defined by (physics, np_random, time-limit counter).
_EXACT_MODULES = ("gymnasium.envs.mujoco.",)


def _mujoco_core(env: gym.Env) -> Any | None:
    core = env.unwrapped
    if not type(core).__module__.startswith(_EXACT_MODULES):
        return None
    if hasattr(core, "model") and hasattr(core, "data") and isinstance(core.data, mujoco.MjData):
        return core
    return None


def _time_limit(env: gym.Env) -> gym.wrappers.TimeLimit | None:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.TimeLimit):
            return env
        env = env.env
    return None


def get_env_state(env: gym.Env) -> dict[str, Any] | None:
    """Everything needed to continue ``env`` exactly, or None when this env cannot be snapshotted."""
    core = _mujoco_core(env)
    if core is None:
        return None
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    physics = np.empty(mujoco.mj_stateSize(core.model, spec), dtype=np.float64)
    mujoco.mj_getState(core.model, core.data, physics, spec)
    limit = _time_limit(env)
    return {
        "physics": physics,
        "np_random": copy.deepcopy(core.np_random.bit_generator.state),
        "elapsed_steps": None if limit is None else limit._elapsed_steps,
    }


def set_env_state(env: gym.Env, state: dict[str, Any]) -> None:
    """Restore a snapshot from ``get_env_state`` into an env built from the same config."""
    core = _mujoco_core(env)
    if core is None:
        raise ValueError("env state: this env has no MuJoCo core that a snapshot restores exactly")
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    if state["physics"].shape != (mujoco.mj_stateSize(core.model, spec),):
        raise ValueError("env state: physics state size does not match this env's model")
    mujoco.mj_setState(core.model, core.data, state["physics"], spec)
    mujoco.mj_forward(core.model, core.data)
    core.np_random.bit_generator.state = state["np_random"]
    limit = _time_limit(env)
    if limit is not None and state["elapsed_steps"] is not None:
        limit._elapsed_steps = state["elapsed_steps"]
