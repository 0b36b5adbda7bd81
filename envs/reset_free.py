"""Reset-free forward/backward practice over one scene (RoboFuME, SERL's FWBW task graph).

One scene, two tasks: ``forward`` (the target task: Lift's pick-and-lift) and ``backward`` (undo it:
put the cube back down near where it started and let go). Practice episodes never reset the
simulator: when an episode ends the scene keeps its state and the next task starts from it.

- **Task graph** (SERL ``task_graph``: switch iff success). A practice episode ends at the current
  task's success (``terminated``: a true terminal of that task) or after ``max_episode_steps``
  steps (``truncated``). At the boundary the task switches to the other one if the episode
  succeeded, else the same task is tried again from where the scene now is.
- **One task-conditioned agent, not two** (RoboFuME's choice; SERL uses two). The task id is a
  one-hot appended to the state vector (to ``state`` for dict observations), so the loop, the
  buffers, the checkpoint and the agent contract stay those of any single-agent run: one network
  learns both tasks from one buffer and shares what they have in common (reaching, grasping the
  same cube), and every row says which task it was taken under. Two agents would need two buffers
  and two update streams in the loop, which the code's one-agent ``Run`` does not have.
- **Stuck.** Consecutive failed practice episodes (any task; a success sets the count to 0) call
  for help: every ``human_after`` of them the human fallback resets the object (on a real arm the
  bridge's operator intervention; in sim a scripted "human" puts the cube back at its start pose),
  and at ``safety_after`` a safety reset calls the real ``env.reset()`` (arm and object), after
  which the count starts again. Both are counted, and both restart on the forward task. The spec's
  pitfall (§3.5: a wrong backward classifier deadlocks the loop) is why they exist.
- **Counting.** ``counts`` holds every real ``env.reset()`` (the first one too: a run needs a
  starting scene), every human reset, and episodes and successes per task. RoboFuME's figure is
  *successes per reset*: forward successes / (env resets + human resets).
- **Success signal.** By default each task's success is a state predicate of the scene (``SceneTasks``;
  Lift below). The loop may replace either with a labelled success (a reward model's verdict on the
  reward camera's frame, ``set_success_fn(task, fn)``): ``fn(obs, info) -> bool`` is called on the
  step's raw observation and ``info`` (which carries ``info["reward_view"]`` when the env renders a
  reward camera), inside ``step``, as SERL's classifier wrapper does, so the episode ends on the very
  step the model says success. envs never import rl: the loop hands the callable in.
- **Reward.** 1 on the step where the current task succeeds, else 0 (the forward task's reward is
  then exactly robosuite Lift's sparse reward). ``info["success"]`` is the current task's success;
  ``info["task"]`` the task index; ``info["env_success"]`` the inner env's own success flag. When the
  inner env shows a reward view, the wrapper adds ``state/task`` and ``state/task_success`` (this
  step's verdict) to it, so that a labeller scoring stored rows with a forward-task model can take
  the backward rows' success from the practice env (``rl.rewards.PerTaskLabels``).
- **Episodic baseline** (``mode: episodic``): the same wrapper and observation layout, the forward
  task only, and a real ``env.reset()`` at every episode boundary; then successes per reset is the
  plain success rate, and the two modes compare at the same env-step budget.
- **Seeded resets are real**: ``reset(seed=s)`` (a run's start, every evaluation episode) always
  resets the scene and starts the forward task; only the unseeded reset of an autoresetting vector
  env is a practice boundary.
- **Inner episode ends.** The inner env's own ``terminated``/``truncated`` (a bridge refusal, for
  one) ends the practice episode as a failure, and its boundary is a real reset. The inner env is
  built without its own time limit (``INNER_STEP_LIMIT``) and without ending at success: the
  practice episode's limit is ``max_episode_steps`` of the config, here.

Configured as the env family ``reset_free`` (registered in ``envs.FAMILIES`` when this module is
imported): ``env.kwargs.reset_free`` holds ``ResetFreeConfig``'s fields (the inner env's family
among them); the rest of ``env`` describes the inner env as usual (``id: Lift``, cameras, ...).

Backward success for Lift (``LiftTasks``): the cube rests on the table (its centre's height within
``rest_tolerance`` of the table top plus half the cube), its centre is within ``place_radius`` of
where it started (xy), and the gripper does not hold it (robosuite's own grasp check). Forward
success is robosuite's ``_check_success`` (cube more than 4 cm above the table).

Not done: Door (open/close) has no ``SceneTasks`` yet. The wrapper's task and failure count are not
in the env snapshot (robosuite has none either), so a resumed run starts with a real reset on the
forward task; its counters are carried over by the loop (``rl/loops/reset_free.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, SupportsFloat

import gymnasium as gym
import numpy as np

from envs.config import EnvConfig
from envs.factory import FAMILIES, family_builder

FORWARD, BACKWARD = 0, 1
TASKS = ("forward", "backward")
MODES = ("reset_free", "episodic")
DEFAULT_STEP_LIMIT = 200
INNER_STEP_LIMIT = 10**9
"""The inner env's own time limit: practice episodes are cut by the wrapper, never by it."""

SuccessFn = Callable[[Any, dict[str, Any]], bool]


@dataclass
class ResetFreeConfig:
    """``env.kwargs.reset_free`` of the ``reset_free`` family."""

    family: str = "robosuite"
    """The inner env's family (it is built from the rest of ``env``)."""
    mode: str = "reset_free"
    """``reset_free`` (forward/backward, no resets between practice episodes) or ``episodic``
    (forward only, a real reset every episode: the baseline)."""
    human_after: int = 3
    """Every this many consecutive failed practice episodes, the human fallback resets the object; 0: never."""
    safety_after: int = 9
    """At this many consecutive failed practice episodes, a real ``env.reset()``; 0: never."""
    place_radius: float = 0.05
    """Lift backward success: the cube's centre within this many metres (xy) of its start."""
    rest_tolerance: float = 0.01
    """Lift backward success: the cube's height within this many metres of its resting height."""

    @staticmethod
    def from_kwargs(options: dict[str, Any]) -> ResetFreeConfig:
        known = {f.name for f in dataclasses.fields(ResetFreeConfig)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"env.kwargs.reset_free: unknown keys {unknown}; known: {sorted(known)}")
        config = ResetFreeConfig(**options)
        if config.mode not in MODES:
            raise ValueError(f"env.kwargs.reset_free.mode: must be one of {MODES}, got {config.mode!r}")
        if config.human_after < 0 or config.safety_after < 0:
            raise ValueError("env.kwargs.reset_free: human_after and safety_after must be >= 0 (0: never)")
        return config


@dataclass
class ResetCounts:
    """What a reset-free run counts; the loop logs it."""

    env_resets: int = 0
    """Real ``env.reset()`` calls: the first one, safety resets, resets after an inner episode end,
    and every episode of the episodic baseline."""
    human_resets: int = 0
    """Human fallbacks (scripted in sim)."""
    safety_resets: int = 0
    """The part of ``env_resets`` that was a safety reset after repeated failures."""
    episodes: list[int] = field(default_factory=lambda: [0, 0])
    """Finished practice episodes per task (forward, backward)."""
    successes: list[int] = field(default_factory=lambda: [0, 0])
    """Successful practice episodes per task."""

    @property
    def successes_per_reset(self) -> float:
        """RoboFuME's figure: forward successes / (env resets + human resets)."""
        return self.successes[FORWARD] / max(1, self.env_resets + self.human_resets)

    @staticmethod
    def from_metrics(metrics: dict[str, float]) -> ResetCounts:
        """The counts ``metrics()`` gave (a resumed run continues them)."""
        return ResetCounts(
            env_resets=int(metrics["env_resets"]),
            human_resets=int(metrics["human_resets"]),
            safety_resets=int(metrics["safety_resets"]),
            episodes=[int(metrics["forward_episodes"]), int(metrics["backward_episodes"])],
            successes=[int(metrics["forward_successes"]), int(metrics["backward_successes"])],
        )

    def metrics(self) -> dict[str, float]:
        return {
            "forward_episodes": float(self.episodes[FORWARD]),
            "backward_episodes": float(self.episodes[BACKWARD]),
            "forward_successes": float(self.successes[FORWARD]),
            "backward_successes": float(self.successes[BACKWARD]),
            "env_resets": float(self.env_resets),
            "human_resets": float(self.human_resets),
            "safety_resets": float(self.safety_resets),
            "successes_per_reset": self.successes_per_reset,
        }


class SceneTasks(Protocol):
    """The forward and backward tasks of one scene, as predicates of its state."""

    def _resting_height(self, env: gym.Env) -> float:
        """The cube centre's height on the table (robosuite drops it from ~1 cm above at reset)."""
        suite = self._suite(env)
        return float(suite.model.mujoco_arena.table_offset[2] + suite.cube.size[2])

    def anchor(self, env: gym.Env) -> None:
        """Called after every real reset: remember what the backward task must restore."""

    def success(self, env: gym.Env, task: int, info: dict[str, Any]) -> bool:
        """Whether ``task`` is done in the scene's current state (``info``: the inner step's)."""

    def human_reset(self, env: gym.Env) -> Any:
        """Put the object back where the last real reset had it; return the new raw observation."""


class ResetFreeEnv(gym.Wrapper):
    """Forward/backward practice without resets (see the module docstring)."""

    def __init__(self, env: gym.Env, tasks: SceneTasks, config: ResetFreeConfig, step_limit: int):
        super().__init__(env)
        self.tasks, self.config, self.step_limit = tasks, config, step_limit
        self.counts = ResetCounts()
        self.task = FORWARD
        self.failures = 0
        """Consecutive failed practice episodes."""
        self.success_fns: dict[int, SuccessFn] = {}
        self._obs: Any = None  # the scene's current raw observation; None before the first reset
        self.steps = 0
        """Steps taken in the current practice episode."""
        self._succeeded = False
        self._inner_ended = False
        self.observation_space = _with_task_space(env.observation_space)
        inner_view = getattr(env.unwrapped, "reward_view_space", None)
        self.reward_view_space: gym.spaces.Dict | None = None
        """The inner env's reward view layout plus ``state/task`` and ``state/task_success``."""
        if inner_view is not None:
            flag = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
            self.reward_view_space = gym.spaces.Dict(
                {**inner_view.spaces, "state/task": flag, "state/task_success": flag}
            )

    def set_success_fn(self, task: int, fn: SuccessFn | None) -> None:
        """Decide ``task``'s success with ``fn(obs, info)`` instead of the scene's state predicate
        (None: back to the predicate)."""
        if fn is None:
            self.success_fns.pop(task, None)
        else:
            self.success_fns[task] = fn

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        if self._obs is None or seed is not None:
            return self._real_reset(seed, options)
        finished, succeeded = self.task, self._succeeded
        self.counts.episodes[finished] += 1
        if succeeded:
            self.counts.successes[finished] += 1
            self.failures = 0
        else:
            self.failures += 1
        if self.config.mode == "episodic" or self._inner_ended:
            return self._real_reset(None, options)
        if self.config.safety_after and self.failures >= self.config.safety_after:
            self.counts.safety_resets += 1
            return self._real_reset(None, options)
        if self.config.human_after and not succeeded and self.failures % self.config.human_after == 0:
            self._obs = self.tasks.human_reset(self.env)
            self.counts.human_resets += 1
            self.task = FORWARD
        elif succeeded:
            self.task = 1 - finished
        self._start_episode()
        return self._with_task(self._obs), {"task": self.task}

    def _real_reset(self, seed: int | None, options: dict[str, Any] | None) -> tuple[Any, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        self.counts.env_resets += 1
        self.tasks.anchor(self.env)
        self._obs, self.task, self.failures = obs, FORWARD, 0
        self._start_episode()
        return self._with_task(obs), {**info, "task": self.task}

    def _start_episode(self) -> None:
        self.steps, self._succeeded, self._inner_ended = 0, False, False

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._obs is None:
            raise RuntimeError("reset-free env: call reset() before step()")
        obs, _, inner_terminated, inner_truncated, info = self.env.step(action)
        fn = self.success_fns.get(self.task)
        success = bool(fn(obs, info)) if fn is not None else self.tasks.success(self.env, self.task, info)
        self._obs, self.steps, self._succeeded = obs, self.steps + 1, success
        self._inner_ended = bool(inner_terminated or inner_truncated) and not success
        info = {**info, "success": success, "task": self.task, "env_success": info.get("success", False)}
        if "reward_view" in info:
            info["reward_view"] = {
                **info["reward_view"],
                "state/task": np.array([self.task], np.float32),
                "state/task_success": np.array([success], np.float32),
            }
        truncated = not success and (self._inner_ended or self.steps >= self.step_limit)
        return self._with_task(obs), float(success), success, truncated, info

    def _with_task(self, obs: Any) -> Any:
        one_hot = np.zeros(len(TASKS), dtype=np.float32)
        one_hot[self.task] = 1.0
        if isinstance(obs, dict):
            return {**obs, "state": np.concatenate([obs["state"], one_hot.astype(obs["state"].dtype)])}
        return np.concatenate([obs, one_hot.astype(obs.dtype)])


def _with_task_space(space: gym.Space) -> gym.Space:
    """The inner observation space with the task one-hot appended to the state vector."""
    if isinstance(space, gym.spaces.Dict):
        return gym.spaces.Dict({**space.spaces, "state": _with_task_space(space.spaces["state"])})
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        raise ValueError(f"reset-free env: needs a flat state vector (or a dict with 'state'), got {space}")
    low = np.concatenate([space.low, np.zeros(len(TASKS), space.dtype)])
    high = np.concatenate([space.high, np.ones(len(TASKS), space.dtype)])
    return gym.spaces.Box(low, high, dtype=space.dtype)


class LiftTasks:
    """robosuite Lift: forward = lift the cube; backward = put it back down near its start and let go."""

    def __init__(self, config: ResetFreeConfig):
        self.place_radius, self.rest_tolerance = config.place_radius, config.rest_tolerance
        self.start_qpos: np.ndarray | None = None

    @staticmethod
    def _suite(env: gym.Env) -> Any:
        return env.unwrapped.suite

    def _cube_pos(self, env: gym.Env) -> np.ndarray:
        suite = self._suite(env)
        return np.array(suite.sim.data.body_xpos[suite.cube_body_id])

    def _resting_height(self, env: gym.Env) -> float:
        """The cube centre's height on the table (robosuite drops it from ~1 cm above at reset)."""
        suite = self._suite(env)
        return float(suite.model.mujoco_arena.table_offset[2] + suite.cube.size[2])

    def anchor(self, env: gym.Env) -> None:
        suite = self._suite(env)
        self.start_qpos = np.array(suite.sim.data.get_joint_qpos(suite.cube.joints[0]))

    def success(self, env: gym.Env, task: int, info: dict[str, Any]) -> bool:
        suite = self._suite(env)
        if task == FORWARD:
            return bool(suite._check_success())
        assert self.start_qpos is not None, "LiftTasks.anchor runs at every real reset"
        cube = self._cube_pos(env)
        resting = abs(cube[2] - self._resting_height(env)) <= self.rest_tolerance
        near = float(np.linalg.norm(cube[:2] - self.start_qpos[:2])) <= self.place_radius
        held = suite._check_grasp(gripper=suite.robots[0].gripper, object_geoms=suite.cube)
        return bool(resting and near and not held)

    def human_reset(self, env: gym.Env) -> Any:
        """The scripted human: the cube back at its start pose, at rest (the arm stays where it is)."""
        suite = self._suite(env)
        joint = suite.cube.joints[0]
        pose = self.start_qpos.copy()
        pose[2] = self._resting_height(env)
        suite.sim.data.set_joint_qpos(joint, pose)
        suite.sim.data.set_joint_qvel(joint, np.zeros(6))
        suite.sim.forward()
        return env.unwrapped._observation(suite._get_observations(force_update=True))


SCENES: dict[str, Callable[[ResetFreeConfig], SceneTasks]] = {"Lift": LiftTasks}
"""Scene tasks by the inner env's id."""


def make_reset_free(cfg: EnvConfig) -> ResetFreeEnv:
    """The ``reset_free`` family: the inner env of ``env.kwargs.reset_free.family`` built from the
    rest of ``cfg``, wrapped for forward/backward practice (module docstring)."""
    kwargs = dict(cfg.kwargs)
    config = ResetFreeConfig.from_kwargs(dict(kwargs.pop("reset_free", {})))
    if cfg.id not in SCENES:
        raise ValueError(
            f"env.id: no reset-free forward/backward tasks for {cfg.id!r}; known: {sorted(SCENES)}"
        )
    # Field by field: under Hydra ``cfg`` is a DictConfig, which ``dataclasses.replace`` refuses.
    inner_cfg = EnvConfig(
        **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(EnvConfig)}
        | dict(
            family=config.family,
            kwargs=kwargs,
            max_episode_steps=INNER_STEP_LIMIT,
            terminate_on_success=False,
        )
    )
    inner = family_builder(inner_cfg)(inner_cfg)
    return ResetFreeEnv(inner, SCENES[cfg.id](config), config, cfg.max_episode_steps or DEFAULT_STEP_LIMIT)


FAMILIES["reset_free"] = make_reset_free
