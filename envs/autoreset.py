"""A batch of env copies stepped one after another with same-step autoreset, in numpy.

This is the part of a vector env that touches the simulators. The in-process vector env owns one
``Copies`` holding all n envs; each subprocess worker owns one holding its share. It has no torch,
so workers stay light.

Same-step autoreset: when copy i's episode ends at step t, ``step`` returns both that episode's true
final observation (in ``next_obs``) and the first observation of the next episode (in ``obs``), and
the next call to ``step`` acts in the new episode. Gymnasium 1.x's vector envs default to next-step
autoreset instead, which spends one extra step per episode on a fake transition whose reward is 0
and whose observation pair straddles two episodes; here no such step exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

Obs = np.ndarray | dict[str, np.ndarray]
"""One observation, or a batch of them stacked on a leading axis (per key for dict observations)."""
Layout = tuple[tuple[int, ...], np.dtype] | dict[str, "Layout"]
"""(shape, dtype) of one stored observation, or one per key of a dict observation."""


@dataclass(frozen=True)
class EpisodeStats:
    """One finished episode of one copy, with raw (unscaled) env rewards."""

    env_index: int
    """Which copy of the vector env (0..n-1)."""
    episode_return: float
    """Sum of the env's rewards over the episode."""
    length: int
    """Number of steps."""
    success: bool
    """Whether ``info["success"]`` was true at any step (always False for envs without that key)."""
    score_return: float
    """The return the D4RL normalised score uses: ``episode_return``, except for envs whose training
    reward differs from the scored one (Franka Kitchen: the number of subtasks completed)."""


@dataclass(frozen=True)
class StepBatch:
    """What ``Copies.step`` returns: numpy arrays with a leading axis of one row per copy."""

    obs: Obs
    """The observation to act on next: where an episode ended, the first one of the next episode."""
    next_obs: Obs
    """The true next observation of this transition; the same object as ``obs`` when none ended."""
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    episodes: tuple[EpisodeStats, ...]
    reward_view: dict[str, np.ndarray] | None = None
    """What the reward camera(s) and named state showed in each copy's ``next_obs`` state (the
    final state where an episode ended, never the reset one); None when the env has no reward view."""


def _outermost(env: gym.Env, name: str) -> Any:
    """``env``'s attribute ``name`` from the outermost wrapper that has it (None if none has)."""
    try:
        return env.get_wrapper_attr(name)
    except AttributeError:
        return None


def time_limit(env: gym.Env) -> int | None:
    """``env``'s episode limit in steps: its registered spec's, else its ``TimeLimit`` wrapper's
    (robosuite's envs are made outside Gymnasium's registry, so they have no spec); None if neither."""
    if env.spec is not None and env.spec.max_episode_steps is not None:
        return env.spec.max_episode_steps
    return _outermost(env, "_max_episode_steps")  # TimeLimit's only name for it


def observation_layout(space: gym.Space) -> Layout:
    """(shape, dtype) of one observation as the vector env stores it: floats become float32 (what
    the networks take; MuJoCo's float64 would only be cast again on the device), other dtypes
    (uint8 images) stay. A Dict space gives one entry per key."""
    if isinstance(space, gym.spaces.Dict):
        return {key: observation_layout(sub) for key, sub in space.spaces.items()}
    if not isinstance(space, gym.spaces.Box):
        raise ValueError(f"env observation space: o2o vector envs take Box or Dict of Box, got {space}")
    dtype = np.dtype(np.float32) if np.issubdtype(space.dtype, np.floating) else np.dtype(space.dtype)
    return space.shape, dtype


def stack(observations: list[Any], layout: Layout) -> Obs:
    """Stack per-copy observations into fresh batch arrays of the stored dtype."""
    if isinstance(layout, dict):
        return {key: stack([o[key] for o in observations], sub) for key, sub in layout.items()}
    return np.stack(observations, dtype=layout[1])


def replace_rows(batch: Obs, rows: list[int], observations: list[Any]) -> Obs:
    """A copy of ``batch`` with ``batch[rows[j]] = observations[j]``."""
    if isinstance(batch, dict):
        return {
            key: replace_rows(value, rows, [o[key] for o in observations]) for key, value in batch.items()
        }
    out = batch.copy()
    for row, observation in zip(rows, observations, strict=True):
        out[row] = observation
    return out


@dataclass
class RunningEpisode:
    """The statistics of one copy's episode so far (plain Python numbers: a per-copy numpy element
    update costs about a microsecond, a noticeable share of a ~40 us MuJoCo step)."""

    episode_return: float = 0.0
    score_return: float = 0.0
    length: int = 0
    success: bool = False


class Copies:
    """``envs[j]`` is copy ``first_index + j`` of the vector env; it is seeded with ``seed + that``."""

    def __init__(self, envs: list[gym.Env], first_index: int = 0):
        self.envs = envs
        self.first_index = first_index
        self.layout = observation_layout(envs[0].observation_space)
        self.view_space: gym.spaces.Dict | None = _outermost(envs[0], "reward_view_space")
        """The layout of the env's ``info["reward_view"]`` (robosuite's reward camera), or None; the
        outermost wrapper's, which may add to what the inner env shows (reset-free practice)."""
        self.view_layout = None if self.view_space is None else observation_layout(self.view_space)
        self.max_episode_steps = time_limit(envs[0])
        self.running = [RunningEpisode() for _ in envs]

    def reset(self, seed: int | None = None) -> Obs:
        """Start a new episode in every copy; copy i gets seed ``seed + i`` (None: unseeded)."""
        observations = []
        for j, env in enumerate(self.envs):
            copy_seed = None if seed is None else seed + self.first_index + j
            observations.append(env.reset(seed=copy_seed)[0])
        self.running = [RunningEpisode() for _ in self.envs]
        return stack(observations, self.layout)

    def step(self, actions: np.ndarray) -> StepBatch:
        """Step every copy once with ``actions[j]``; reset the copies whose episode ended."""
        observations, rewards, terminations, truncations, ended, views = [], [], [], [], [], []
        for j, (env, action, running) in enumerate(zip(self.envs, actions, self.running, strict=True)):
            observation, reward, terminated, truncated, info = env.step(action)
            observations.append(observation)
            rewards.append(reward)
            terminations.append(terminated)
            truncations.append(truncated)
            if self.view_layout is not None:
                views.append(info["reward_view"])
            running.episode_return += reward
            running.score_return += info.get("score_reward", reward)
            running.length += 1
            running.success = running.success or bool(info.get("success", False))
            if terminated or truncated:
                ended.append(j)
        next_obs = stack(observations, self.layout)
        reward = np.array(rewards, dtype=np.float32)
        terminated = np.array(terminations, dtype=bool)
        truncated = np.array(truncations, dtype=bool)
        view = None if self.view_layout is None else stack(views, self.view_layout)
        if not ended:
            return StepBatch(next_obs, next_obs, reward, terminated, truncated, (), view)
        episodes = tuple(self._finish(j) for j in ended)
        first_observations = [self.envs[j].reset()[0] for j in ended]
        obs = replace_rows(next_obs, ended, first_observations)
        return StepBatch(obs, next_obs, reward, terminated, truncated, episodes, view)

    def reward_calibration(self) -> dict[str, dict[str, Any]] | None:
        """The reward cameras' calibration (``RobosuiteEnv.reward_calibration``), None without one."""
        calibrate = getattr(self.envs[0].unwrapped, "reward_calibration", None)
        return None if calibrate is None else calibrate()

    def _finish(self, j: int) -> EpisodeStats:
        running, self.running[j] = self.running[j], RunningEpisode()
        return EpisodeStats(
            env_index=self.first_index + j,
            episode_return=float(running.episode_return),
            length=running.length,
            success=running.success,
            score_return=float(running.score_return),
        )

    def close(self) -> None:
        for env in self.envs:
            env.close()
