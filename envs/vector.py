"""``make_vec(cfg, n, device)``: n copies of one env behind one batched, torch-facing step.

Two ways to run the copies, one contract (``VecStep``):

- in process (``InProcessVecEnv``): the copies step one after another in this process. Right for
  cheap MuJoCo steps: on a 2-core machine one subprocess round trip costs more than a locomotion step.
- subprocess workers (``SubprocVecEnv``): the copies are split over worker processes that write
  observations, rewards and flags into shared memory; only a command byte and the (usually empty)
  tuple of finished episodes go through the pipes. Right for expensive steps (robosuite's controller,
  rendering) that two cores can run side by side.

Both autoreset on the same step (see ``envs.autoreset``): a transition that ends an episode carries
its true final observation in ``next_obs`` (needed to bootstrap on truncation), and ``obs`` already
holds the next episode's first observation. Copy i is seeded with ``seed + i``, so a seed fixes every
trajectory whichever mode runs it.
"""

from __future__ import annotations

import abc
import dataclasses
import itertools
import multiprocessing as mp
import os
from dataclasses import dataclass
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch

from envs.autoreset import Copies, EpisodeStats, Obs, StepBatch
from envs.config import EnvConfig
from envs.factory import Builder, family_builder, make_with
from envs.state import get_env_state, set_env_state
from envs.worker import array_specs, serve

TensorObs = torch.Tensor | dict[str, torch.Tensor]
"""A batch of observations on the policy's device: one tensor, or one per key (camera images stay
uint8, state vectors are float32)."""


@dataclass(frozen=True)
class VecStep:
    """One step of all n copies. Tensors lead with the copy axis and live on the vector env's device.

    Treat the tensors as read-only: ``obs`` and ``next_obs`` are the same object when no episode
    ended on this step.
    """

    obs: TensorObs
    """What to act on next. Where an episode ended, the first observation of the next episode."""
    next_obs: TensorObs
    """The true next observation of this transition (the final one where an episode ended): store
    ``(previous obs, action, reward, next_obs, terminated)`` and bootstrap unless ``terminated``."""
    reward: torch.Tensor
    """(n,) float32, the env's raw reward (``reward_scale``/``reward_bias`` are the buffer's job)."""
    terminated: torch.Tensor
    """(n,) bool: the episode reached a terminal state; do not bootstrap."""
    truncated: torch.Tensor
    """(n,) bool: the episode was cut (time limit); bootstrap from ``next_obs``."""
    episodes: tuple[EpisodeStats, ...]
    """Statistics of the episodes that ended on this step, on the host (usually empty)."""
    reward_view: dict[str, torch.Tensor] | None = None
    """What a reward model may see of each transition's true next state (``next_obs``'s, never the
    reset one): ``frames/<camera>`` (n, H, W, 3) uint8, ``frames/<camera>_depth`` (n, H, W) float32,
    ``state/<name>`` (n, k) float32; None when the env has no reward view (``env.reward_cameras``
    and ``env.reward_state`` unset, or an env without one)."""

    @property
    def done(self) -> torch.Tensor:
        """(n,) bool: the episode ended, either way."""
        return self.terminated | self.truncated


def _to_device(arrays: Obs, device: torch.device) -> TensorObs:
    """Host arrays that nothing writes to afterwards -> tensors on ``device`` (zero-copy on CPU,
    where even a no-op ``.to`` costs a microsecond per call)."""
    if isinstance(arrays, dict):
        return {key: _to_device(value, device) for key, value in arrays.items()}
    tensor = torch.from_numpy(arrays)
    return tensor if device.type == "cpu" else tensor.to(device)


class VecEnv(abc.ABC):
    """The interface both vector envs share. Actions are (n, action_dim) in [-1, 1], torch or numpy;
    values outside are clipped (exploration noise can overshoot the tanh range)."""

    num_envs: int
    device: torch.device
    single_observation_space: gym.Space
    single_action_space: gym.spaces.Box
    reward_view_space: gym.spaces.Dict | None
    """One copy's reward view layout (``VecStep.reward_view`` without the copy axis), or None."""
    reward_calibration: dict[str, dict[str, Any]] | None
    """The reward cameras' calibration as the env gives it (``RobosuiteEnv.reward_calibration``:
    intrinsics, extrinsics, height, width per camera), or None."""
    max_episode_steps: int | None
    """The copies' episode limit in steps (``autoreset.time_limit``), or None when they have none."""

    @abc.abstractmethod
    def reset(self, seed: int | None = None) -> TensorObs:
        """Start a new episode in every copy (copy i seeded with ``seed + i``); the first observations."""
        ...

    @abc.abstractmethod
    def step_async(self, actions: torch.Tensor | np.ndarray) -> None:
        """Start stepping every copy; ``step_wait`` returns the result. In subprocess mode the
        workers run while the caller does other work (e.g. a gradient update) in between."""
        ...

    @abc.abstractmethod
    def step_wait(self) -> VecStep: ...

    def step(self, actions: torch.Tensor | np.ndarray) -> VecStep:
        self.step_async(actions)
        return self.step_wait()

    def get_state(self) -> dict[str, Any] | None:
        """A snapshot to continue every running episode exactly, or None when not supported (then a
        resumed run starts new episodes)."""
        return None

    def set_state(self, state: dict[str, Any]) -> TensorObs:
        """Restore a ``get_state`` snapshot; returns the observations to act on next."""
        raise ValueError(f"vector env state: {type(self).__name__} cannot restore snapshots")

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> VecEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _host_actions(self, actions: torch.Tensor | np.ndarray) -> np.ndarray:
        if isinstance(actions, torch.Tensor):
            actions = actions.detach().to("cpu", torch.float32).numpy()
        actions = np.asarray(actions, dtype=np.float32)
        expected = (self.num_envs, *self.single_action_space.shape)
        if actions.shape != expected:
            raise ValueError(f"actions: expected shape {expected}, got {actions.shape}")
        return np.clip(actions, -1.0, 1.0)


class InProcessVecEnv(VecEnv):
    """All copies in this process. Supports exact snapshots (``get_state``) for MuJoCo envs."""

    def __init__(self, envs: list[gym.Env], device: torch.device):
        self._copies = Copies(envs)
        self.num_envs = len(envs)
        self.device = device
        self.single_observation_space = envs[0].observation_space
        self.single_action_space = envs[0].action_space
        self.reward_view_space = self._copies.view_space
        self.reward_calibration = self._copies.reward_calibration()
        self.max_episode_steps = self._copies.max_episode_steps
        self._obs: Obs | None = None  # the host observations to act on next
        self._batch: StepBatch | None = None

    @property
    def envs(self) -> list[gym.Env]:
        """The copies themselves (a loop that drives one scene, e.g. reset-free practice, reads them)."""
        return self._copies.envs

    def reset(self, seed: int | None = None) -> TensorObs:
        self._obs = self._copies.reset(seed)
        return _to_device(self._obs, self.device)

    def step_async(self, actions: torch.Tensor | np.ndarray) -> None:
        if self._obs is None:
            raise RuntimeError("vector env: call reset() before step()")
        self._batch = self._copies.step(self._host_actions(actions))

    def step_wait(self) -> VecStep:
        batch, self._batch = self._batch, None
        if batch is None:
            raise RuntimeError("vector env: step_wait() without step_async()")
        self._obs = batch.obs
        obs = _to_device(batch.obs, self.device)
        next_obs = obs if batch.next_obs is batch.obs else _to_device(batch.next_obs, self.device)
        return VecStep(
            obs=obs,
            next_obs=next_obs,
            reward=_to_device(batch.reward, self.device),
            terminated=_to_device(batch.terminated, self.device),
            truncated=_to_device(batch.truncated, self.device),
            episodes=batch.episodes,
            reward_view=None if batch.reward_view is None else _to_device(batch.reward_view, self.device),
        )

    def get_state(self) -> dict[str, Any] | None:
        if self._obs is None:
            return None
        env_states = [get_env_state(env) for env in self._copies.envs]
        if any(state is None for state in env_states):
            return None
        obs = {k: v.copy() for k, v in self._obs.items()} if isinstance(self._obs, dict) else self._obs.copy()
        running = [dataclasses.replace(episode) for episode in self._copies.running]
        return {"envs": env_states, "running": running, "obs": obs}

    def set_state(self, state: dict[str, Any]) -> TensorObs:
        if len(state["envs"]) != self.num_envs:
            raise ValueError(
                f"vector env state: holds {len(state['envs'])} copies, this env has {self.num_envs}"
            )
        for env, env_state in zip(self._copies.envs, state["envs"], strict=True):
            set_env_state(env, env_state)
        self._copies.running = [dataclasses.replace(episode) for episode in state["running"]]
        self._obs = state["obs"]
        return _to_device(self._obs, self.device)

    def close(self) -> None:
        self._copies.close()


# ---------------------------------------------------------------------------------------------
# Subprocess workers


class SubprocVecEnv(VecEnv):
    """Copies split over ``workers`` processes (started with ``spawn``: no inherited threads or GL
    contexts), exchanging arrays through shared memory."""

    def __init__(self, builder: Builder, cfg: EnvConfig, num_envs: int, workers: int, device: torch.device):
        self.num_envs = num_envs
        self.device = device
        workers = max(1, min(workers, num_envs))
        context = mp.get_context("spawn")
        bounds = np.linspace(0, num_envs, workers + 1).astype(int)
        self._conns: list[Connection] = []
        self._processes = []
        self._blocks: list[shared_memory.SharedMemory] = []
        self._reset_done = self._waiting = False
        for first, end in itertools.pairwise(bounds):
            parent, child = context.Pipe()
            process = context.Process(
                target=serve, args=(child, builder, cfg, int(first), int(end - first)), daemon=True
            )
            process.start()
            child.close()
            self._conns.append(parent)
            self._processes.append(process)
        try:
            ready = self._gather()[0]
            self.single_observation_space, self.single_action_space = ready[:2]
            self.reward_view_space, self.reward_calibration, self.max_episode_steps = ready[2:]
            specs = array_specs(
                self.single_observation_space,
                num_envs,
                self.single_action_space.shape[0],
                self.reward_view_space,
            )
            names = {}
            for field, (shape, dtype) in specs.items():
                size = max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize)
                self._blocks.append(shared_memory.SharedMemory(create=True, size=size))
                names[field] = self._blocks[-1].name
            self._arrays = {
                field: np.ndarray(shape, dtype=dtype, buffer=block.buf)
                for (field, (shape, dtype)), block in zip(specs.items(), self._blocks, strict=True)
            }
            for conn in self._conns:
                conn.send((specs, names))
        except BaseException:
            self.close()
            raise

    def _gather(self) -> list[Any]:
        """Receive one reply from every worker; re-raise a worker's error here."""
        replies = []
        for index, conn in enumerate(self._conns):
            try:
                replies.append(conn.recv())
            except EOFError:
                raise self._died(index) from None
        for status, payload in replies:
            if status == "error":
                config_error, worker_traceback = payload
                if config_error is not None:
                    raise ValueError(config_error)
                raise RuntimeError(f"vector env worker failed:\n{worker_traceback}")
        return [payload for _, payload in replies]

    def _send_all(self, command: str, payload: Any = None) -> None:
        for index, conn in enumerate(self._conns):
            try:
                conn.send((command, payload))
            except (BrokenPipeError, ConnectionResetError):
                raise self._died(index) from None

    def _died(self, index: int) -> RuntimeError:
        self._processes[index].join(timeout=1)
        return RuntimeError(f"vector env worker {index} died (exit code {self._processes[index].exitcode})")

    def _read_obs(self, prefix: str) -> TensorObs:
        """Copy observations out of shared memory (workers overwrite it on the next step)."""
        fields = {f[len(prefix) + 1 :]: a for f, a in self._arrays.items() if f.startswith(prefix + "/")}
        if list(fields) == [""]:
            return _to_device(fields[""].copy(), self.device)
        return {key: _to_device(a.copy(), self.device) for key, a in fields.items()}

    def reset(self, seed: int | None = None) -> TensorObs:
        self._send_all("reset", seed)
        self._gather()
        self._reset_done = True
        return self._read_obs("obs")

    def step_async(self, actions: torch.Tensor | np.ndarray) -> None:
        if not self._reset_done:
            raise RuntimeError("vector env: call reset() before step()")
        self._arrays["actions"][:] = self._host_actions(actions)
        self._send_all("step")
        self._waiting = True

    def step_wait(self) -> VecStep:
        if not self._waiting:
            raise RuntimeError("vector env: step_wait() without step_async()")
        self._waiting = False
        episodes = tuple(e for worker_episodes in self._gather() for e in worker_episodes)
        obs = self._read_obs("obs")
        next_obs = self._read_obs("next_obs") if episodes else obs
        return VecStep(
            obs=obs,
            next_obs=next_obs,
            reward=_to_device(self._arrays["reward"].copy(), self.device),
            terminated=_to_device(self._arrays["terminated"].copy(), self.device),
            truncated=_to_device(self._arrays["truncated"].copy(), self.device),
            episodes=episodes,
            reward_view=None if self.reward_view_space is None else self._read_obs("view"),
        )

    def close(self) -> None:
        for conn, process in zip(self._conns, self._processes, strict=True):
            if process.is_alive():
                try:
                    if self._waiting:
                        conn.recv()
                    conn.send(("close", None))
                    conn.recv()
                except (EOFError, BrokenPipeError, OSError):
                    pass  # it died meanwhile: nothing left to close there
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
            conn.close()
        self._conns, self._processes, self._waiting = [], [], False
        for block in self._blocks:
            block.close()
            block.unlink()
        self._blocks = []


def _step_is_expensive(cfg: EnvConfig) -> bool:
    """Whether one step costs well over a subprocess round trip (~0.1 ms on 2 cores). robosuite
    (~9 ms: its controller's Python) and Franka Kitchen (~3 ms) do; MuJoCo locomotion (~0.05-0.3 ms),
    mazes and Adroit (~0.1-0.5 ms) do not (figures: specs/stack.md)."""
    return cfg.family == "robosuite" or cfg.id.startswith("FrankaKitchen")


def _available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def make_vec(
    cfg: EnvConfig,
    n: int,
    device: str | torch.device = "cpu",
    mode: Literal["auto", "sync", "async"] = "auto",
    workers: int | None = None,
) -> VecEnv:
    """n copies of ``cfg``'s env; observations arrive as tensors on ``device``.

    mode: ``sync`` steps the copies in this process, ``async`` in subprocess workers (``workers``
    processes, default one per available CPU, each stepping its share of the copies in turn);
    ``auto`` picks async for expensive steps (robosuite, Franka Kitchen) when n > 1, else sync.
    """
    if n < 1:
        raise ValueError(f"make_vec: n must be >= 1, got {n}")
    if mode not in ("auto", "sync", "async"):
        raise ValueError(f"make_vec: mode must be auto, sync or async, got {mode!r}")
    builder = family_builder(cfg)
    device = torch.device(device)
    if mode == "auto":
        mode = "async" if n > 1 and _step_is_expensive(cfg) else "sync"
    if mode == "sync":
        return InProcessVecEnv([make_with(builder, cfg) for _ in range(n)], device)
    return SubprocVecEnv(builder, cfg, n, workers or _available_cpus(), device)
