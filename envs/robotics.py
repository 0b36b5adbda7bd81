"""The ``robotics`` family: gymnasium-robotics' D4RL suites with the conventions D4RL-style
datasets (D4RL's own and Minari's ``D4RL/`` re-recordings) assume.

Conventions, per suite (each one a default that ``cfg.kwargs``/``cfg.obs_keys`` can override):

- AntMaze (``AntMaze_{UMaze,Medium,Large}[...]-v5``): D4RL's evaluation layout: a fixed reset cell
  and goal cell per maze size (the maps Minari stores as the datasets' eval env), sparse reward
  (1 within 0.45 of the goal, else 0; D4RL used 0.5, gymnasium-robotics hard-codes 0.45), the goal
  never moves (``continuing_task=True, reset_target=False``), and the episode *terminates* at the
  first success, so the return is 0 or 1 and the D4RL normalised score (min 0, max 1) is 100 x
  success rate. Observation: ``[achieved_goal, observation]`` = the torso x, y then the rest of
  qpos and qvel, 29 numbers in D4RL's ``antmaze-*`` order (the goal is not observed, as in D4RL).
  Time limits as registered (UMaze 700, Medium/Large 1000, D4RL's). The reward transforms the
  algorithms use (10r-5 for WSRL/Cal-QL, r-1 for IQL) belong in ``reward_scale``/``reward_bias``.
- PointMaze (``PointMaze_*-v3``): D4RL maze2d's sparse reward and continuing task with the registered
  time limits (300/600/800); the goal is sampled per episode, so it is observed:
  ``[observation, desired_goal]`` (x, y, vx, vy, goal x, goal y).
- Adroit (``AdroitHand{Door,Hammer,Pen,Relocate}-v1``): D4RL's dense reward, time limits and
  termination, so the D4RL normalised score applies to the raw return. gymnasium-robotics 1.4.2 pays
  ``+0.1 |palm - object|`` on door (the handle), hammer and relocate where D4RL subtracts it (a sign
  flipped in its 1.2.1 refactor; its PR #220, renamed ``-v2`` in 1.4.3), so ``D4RLHandReward``
  subtracts ``0.2 |palm - object|`` there: measured on door against the recorded demonstrations
  (``python -m rl.data check-door-reward``, results/door_cloned), read from D4RL's
  ``hand_manipulation_suite/{hammer,relocate}_v0.py`` for the others, whose other terms are the
  same. Pen's reward is D4RL's, but D4RL ends the episode when the pen falls below z = 0.075 (its
  -5 step) and gymnasium-robotics never does: ``PenDropTermination`` ends it; its time limit is
  D4RL's 100 (gymnasium-robotics registers 200), the others' 200. The observation is already flat
  (39/46/45/39 numbers, D4RL's layout). ``info["success"]`` is the env's goal_achieved.
- Franka Kitchen (``FrankaKitchen-v1``): the 4 D4RL target subtasks (microwave, kettle, light switch,
  slide cabinet: ``kitchen-complete``/``-partial``; ``kitchen-mixed`` uses bottom burner instead of
  slide cabinet, set ``kwargs.tasks_to_complete``). The reward at each step is the number of target
  subtasks *currently* solved (0-4), as in the datasets (D4RL's files and Minari's recordings, made
  with ``remove_task_when_completed=False``) rather than gymnasium-robotics' default of new
  completions per step; the episode terminates when all are solved at once (WSRL's fork of D4RL).
  The D4RL score counts subtasks completed during the episode (0-4): each step reports the newly
  completed ones as ``info["score_reward"]``, which the vector env sums into
  ``EpisodeStats.score_return``. Observation: Minari's 59-number ``observation`` (robot and object
  positions and velocities; D4RL's 60-number layout with the goal appended cannot be rebuilt).
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from envs.config import EnvConfig
from envs.wrappers import terminate_on_success

R, G = "r", "g"
# D4RL's antmaze evaluation mazes (reset cell r, goal cell g), as Minari stores them in the
# datasets' eval env spec (minari-dataset-generation-scripts, scripts/antmaze).
ANTMAZE_EVAL_MAPS: dict[str, list[list[Any]]] = {
    "UMaze": [
        [1, 1, 1, 1, 1],
        [1, 0, 0, R, 1],
        [1, 0, 1, 1, 1],
        [1, 0, 0, G, 1],
        [1, 1, 1, 1, 1],
    ],
    "Medium": [
        [1, 1, 1, 1, 1, 1, 1, 1],
        [1, R, 0, 1, 1, 0, 0, 1],
        [1, 0, 0, 1, 0, 0, 0, 1],
        [1, 1, 0, 0, 0, 1, 1, 1],
        [1, 0, 0, 1, 0, 0, 0, 1],
        [1, 0, 1, 0, 0, 1, 0, 1],
        [1, 0, 0, 0, 1, 0, G, 1],
        [1, 1, 1, 1, 1, 1, 1, 1],
    ],
    "Large": [
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        [1, R, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1],
        [1, 0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1],
        [1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1],
        [1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1],
        [1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1],
        [1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1, 1],
        [1, 0, 0, 1, 0, 0, 0, 1, 0, G, 0, 1],
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    ],
}
KITCHEN_COMPLETE_TASKS = ["microwave", "kettle", "light switch", "slide cabinet"]

# D4RL's door observation (door_v0.py ``get_obs``, kept by AdroitHandDoor-v1): 27 arm and hand
# joint angles, the latch and door hinge angles, the palm and handle positions, palm minus handle,
# and whether the door is open. Its reward reads the hinge angle and palm minus handle.
DOOR_LATCH, DOOR_HINGE = 27, 28
DOOR_PALM, DOOR_HANDLE, DOOR_PALM_MINUS_HANDLE = slice(29, 32), slice(32, 35), slice(35, 38)


def d4rl_door_reward(next_obs: np.ndarray, qvel: np.ndarray | None) -> float:
    """D4RL's door reward (``door_v0.py``) for the state a step reached. Everything it reads is in
    the observation except the joint velocities; ``qvel=None`` leaves out their (small, <= 0) term."""
    door = float(next_obs[DOOR_HINGE])
    reward = -0.1 * float(np.linalg.norm(next_obs[DOOR_PALM_MINUS_HANDLE])) - 0.1 * (door - 1.57) ** 2
    if qvel is not None:
        reward -= 1e-5 * float(np.sum(np.square(qvel)))
    return reward + 2.0 * (door > 0.2) + 8.0 * (door > 1.0) + 10.0 * (door > 1.35)


class FlattenObservation(gym.ObservationWrapper):
    """Concatenate the chosen keys of a dict observation into one float vector, in the given order."""

    def __init__(self, env: gym.Env, keys: list[str]):
        super().__init__(env)
        spaces = env.observation_space.spaces
        for key in keys:
            if key not in spaces or not isinstance(spaces[key], gym.spaces.Box):
                vector_keys = [k for k, s in spaces.items() if isinstance(s, gym.spaces.Box)]
                raise ValueError(
                    f"env.obs_keys: {key!r} is not a vector key of the observation; have {vector_keys}"
                )
        self.keys = keys
        size = sum(int(np.prod(spaces[key].shape)) for key in keys)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(size,), dtype=np.float64)

    def observation(self, observation: dict[str, Any]) -> np.ndarray:
        return np.concatenate([np.ravel(observation[key]) for key in self.keys])


class D4RLHandReward(gym.Wrapper):
    """An Adroit env paying D4RL's reward (module docstring): gymnasium-robotics' reward minus
    ``0.2 |palm - object|``, which turns its ``+0.1 |palm - object|`` into D4RL's ``-0.1``. The
    library's own reward is kept in ``info["env_reward"]``. On door this equals
    ``d4rl_door_reward`` with the joint velocities (the tests check it)."""

    def __init__(self, env: gym.Env, object_name: str, object_kind: str):
        super().__init__(env)
        data = env.unwrapped.data
        self._palm = data.site("S_grasp").xpos  # live views into the simulator's state
        self._object = getattr(data, object_kind)(object_name).xpos

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["env_reward"] = float(reward)
        reward = float(reward) - 0.2 * float(np.linalg.norm(self._palm - self._object))
        return obs, reward, terminated, truncated, info


# The -v1 ids whose palm term has the flipped sign, and what it reaches for (name, "site" or
# "body"), as D4RL's envs read it; -v2 (gymnasium-robotics >= 1.4.3) is said to fix the sign.
FLIPPED_PALM_TERM = {
    "AdroitHandDoor-v1": ("S_handle", "site"),
    "AdroitHandHammer-v1": ("Object", "body"),
    "AdroitHandRelocate-v1": ("Object", "body"),
}
PEN_DROPPED_BELOW = 0.075
"""D4RL's ``pen_v0.py``: the pen's height under which the step pays -5 and the episode ends."""


class PenDropTermination(gym.Wrapper):
    """End a pen episode when the pen falls, as D4RL's pen env does (gymnasium-robotics pays the
    -5 but carries on, so a dropped pen would collect -5 a step until the time limit)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._pen = env.unwrapped.data.body("Object").xpos

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated or bool(self._pen[2] < PEN_DROPPED_BELOW), truncated, info


class KitchenSubtaskReward(gym.Wrapper):
    """D4RL-dataset rewards for Franka Kitchen (see the module docstring). Needs the env built with
    ``remove_task_when_completed=False`` and ``terminate_on_tasks_completed=False``."""

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self._completed = 0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, solved_now, terminated, truncated, info = self.env.step(action)
        all_solved = solved_now == len(self.env.unwrapped.goal)
        completed = len(info["episode_task_completions"])
        info["score_reward"] = float(completed - self._completed)
        info["success"] = all_solved
        self._completed = completed
        return obs, solved_now, terminated or all_solved, truncated, info


def _suite(env_id: str) -> str:
    for suite in ("AntMaze", "PointMaze", "AdroitHand", "FrankaKitchen"):
        if env_id.startswith(suite):
            return suite
    raise ValueError(
        f"env.id: {env_id!r} is not an AntMaze_*, PointMaze_*, AdroitHand*-v1 or FrankaKitchen-v1 id "
        "(the robotics family's suites)"
    )


def make_robotics(cfg: EnvConfig) -> gym.Env:
    """One gymnasium-robotics env with the D4RL conventions of its suite (module docstring)."""
    suite = _suite(cfg.id)
    import gymnasium_robotics  # registers the ids

    gym.register_envs(gymnasium_robotics)
    if cfg.id not in gym.registry:
        raise ValueError(f"env.id: unknown gymnasium-robotics id {cfg.id!r} (env.name={cfg.name!r})")

    kwargs: dict[str, Any] = {}
    max_steps = cfg.max_episode_steps
    if suite == "AntMaze":
        size = next((s for s in ANTMAZE_EVAL_MAPS if cfg.id.startswith(f"AntMaze_{s}")), None)
        if size is not None:
            kwargs["maze_map"] = ANTMAZE_EVAL_MAPS[size]
        # Ant-v5 appends 78 contact forces by default; D4RL's ant observes qpos and qvel only.
        kwargs.update(
            continuing_task=True,
            reset_target=False,
            reward_type="sparse",
            include_cfrc_ext_in_observation=False,
        )
        obs_keys = ["achieved_goal", "observation"]
    elif suite == "PointMaze":
        kwargs.update(continuing_task=True, reward_type="sparse")
        obs_keys = ["observation", "desired_goal"]
    elif suite == "AdroitHand":
        obs_keys = None
        if max_steps is None and cfg.id.startswith("AdroitHandPen"):
            max_steps = 100
    else:
        kwargs.update(
            tasks_to_complete=KITCHEN_COMPLETE_TASKS,
            remove_task_when_completed=False,
            terminate_on_tasks_completed=False,
        )
        obs_keys = ["observation"]
    kwargs.update(cfg.kwargs)
    if max_steps is not None:
        kwargs["max_episode_steps"] = max_steps
    try:
        env = gym.make(cfg.id, **kwargs)
    except TypeError as e:  # an unknown constructor keyword
        raise ValueError(f"env.kwargs: {cfg.id!r} rejected {sorted(cfg.kwargs)}: {e}") from None

    if suite == "FrankaKitchen":
        env = KitchenSubtaskReward(env)
    elif cfg.id.startswith("AdroitHandPen"):
        env = PenDropTermination(env)
    elif cfg.id in FLIPPED_PALM_TERM:
        env = D4RLHandReward(env, *FLIPPED_PALM_TERM[cfg.id])
    keys = cfg.obs_keys if cfg.obs_keys is not None else obs_keys
    if keys is not None:
        env = FlattenObservation(env, keys)
    return terminate_on_success(env, cfg, family_default=suite == "AntMaze")
