"""The subprocess side of ``SubprocVecEnv``: a worker owns a ``Copies`` of its share of the vector
env and serves reset/step/close commands, exchanging arrays with the parent through shared memory.

No torch here: a spawned worker imports only this, the env factory and its simulator.
"""

from __future__ import annotations

import traceback
from multiprocessing import shared_memory
from multiprocessing.connection import Connection

import gymnasium as gym
import numpy as np

from envs.autoreset import Copies, Obs, observation_layout
from envs.config import EnvConfig
from envs.factory import Builder, make_with


def array_specs(
    space: gym.Space, num_envs: int, action_dim: int, view_space: gym.spaces.Dict | None = None
) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name -> (shape, dtype) of every shared array; observations get one array per dict key, and
    the reward view (``view_space``, None for none) one per entry under ``view/``."""
    layout = observation_layout(space)
    specs: dict[str, tuple[tuple[int, ...], str]] = {
        "actions": ((num_envs, action_dim), "float32"),
        "reward": ((num_envs,), "float32"),
        "terminated": ((num_envs,), "bool"),
        "truncated": ((num_envs,), "bool"),
    }
    parts = layout.items() if isinstance(layout, dict) else [("", layout)]
    for key, (shape, dtype) in parts:
        specs[f"obs/{key}"] = ((num_envs, *shape), dtype.str)
        specs[f"next_obs/{key}"] = ((num_envs, *shape), dtype.str)
    if view_space is not None:
        for key, (shape, dtype) in observation_layout(view_space).items():
            specs[f"view/{key}"] = ((num_envs, *shape), dtype.str)
    return specs


def _attach(
    specs: dict, names: dict[str, str]
) -> tuple[list[shared_memory.SharedMemory], dict[str, np.ndarray]]:
    blocks, arrays = [], {}
    for field, (shape, dtype) in specs.items():
        # Spawned workers share the parent's resource tracker, so attaching registers nothing new
        # and the parent's unlink at close is the only cleanup.
        block = shared_memory.SharedMemory(name=names[field])
        blocks.append(block)
        arrays[field] = np.ndarray(shape, dtype=dtype, buffer=block.buf)
    return blocks, arrays


def _write_obs(arrays: dict[str, np.ndarray], prefix: str, rows: slice, obs: Obs) -> None:
    if isinstance(obs, dict):
        for key, value in obs.items():
            arrays[f"{prefix}/{key}"][rows] = value
    else:
        arrays[f"{prefix}/"][rows] = obs


def _describe(error: Exception) -> tuple[str | None, str]:
    """What the parent re-raises: a config error (ValueError) as its one line, anything else with
    the worker's traceback."""
    return (str(error) if isinstance(error, ValueError) else None), traceback.format_exc()


def serve(conn: Connection, builder: Builder, cfg: EnvConfig, first: int, count: int) -> None:
    """A worker's loop: build its copies, then serve reset/step/close commands until closed."""
    blocks: list[shared_memory.SharedMemory] = []
    try:
        copies = Copies([make_with(builder, cfg) for _ in range(count)], first_index=first)
        env = copies.envs[0]
        ready = (
            env.observation_space,
            env.action_space,
            copies.view_space,
            copies.reward_calibration(),
            copies.max_episode_steps,
        )
        conn.send(("ready", ready))
        specs, names = conn.recv()
        blocks, arrays = _attach(specs, names)
        rows = slice(first, first + count)
        while True:
            command, payload = conn.recv()
            try:
                if command == "reset":
                    _write_obs(arrays, "obs", rows, copies.reset(payload))
                    conn.send(("ok", None))
                elif command == "step":
                    batch = copies.step(arrays["actions"][rows])
                    _write_obs(arrays, "obs", rows, batch.obs)
                    _write_obs(arrays, "next_obs", rows, batch.next_obs)
                    arrays["reward"][rows] = batch.reward
                    arrays["terminated"][rows] = batch.terminated
                    arrays["truncated"][rows] = batch.truncated
                    if batch.reward_view is not None:
                        _write_obs(arrays, "view", rows, batch.reward_view)
                    conn.send(("ok", batch.episodes))
                elif command == "close":
                    copies.close()
                    conn.send(("ok", None))
                    return
            except Exception as e:
                conn.send(("error", _describe(e)))
    except Exception as e:
        conn.send(("error", _describe(e)))
    finally:
        for block in blocks:
            block.close()
