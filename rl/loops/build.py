"""``build_run(cfg) -> Run``: everything a run trains with, built once from its config.

A ``Run`` is a plain record (envs, dataset, buffers, sampler, agent, schedule, reward model and its
labeller); the loops read it and never build anything themselves. With ``reward=<model>`` the env
renders the model's cameras as a reward view (``reward_env_config``), the model gets the cameras'
calibration if it has a ``set_calibration`` method, and the online buffer waits for labels
(``rl/loops/labelling.py``). The schedule's offline length comes from the agent when the agent
dictates it (Uni-O4's stages, ``Agent.offline_steps``), so nobody copies that number by hand.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from omegaconf import OmegaConf

import envs
from envs import termination
from envs.chunking import single_step_spaces
from rl.agents import Agent, build_agent
from rl.agents.base import native_bf16
from rl.buffers import MixedSampler, ObsSpec, ReplayBuffer, fill_from_dataset
from rl.checkpoint import load_checkpoint, seed_everything
from rl.config import COMPILE_FROM_STEPS, TrainConfig
from rl.data import Dataset, ScoreNormalizer, check_dataset, load_dataset
from rl.data.chunks import chunk_dataset
from rl.loops.labelling import Labeller, RolloutLabeller
from rl.rewards import TASK_KEYS, CameraCalibration, PerTaskLabels, RewardModel, build_reward_model


@dataclass(frozen=True)
class Schedule:
    """Step counts of the two phases on the run's one step axis (offline updates, then env steps)."""

    offline: int
    online: int

    @property
    def total(self) -> int:
        return self.offline + self.online


@dataclass
class Run:
    cfg: TrainConfig
    device: torch.device
    env: envs.VecEnv
    eval_env: gym.Env | None
    """A second env to evaluate in; None when ``steps.eval_episodes=0`` (a real arm has no second copy)."""
    dataset: Dataset | None
    normalizer: ScoreNormalizer | None
    reward_scale: float
    reward_bias: float
    """What every buffer applies to the env's rewards (``env.reward_scale``, times the agent's
    ``return_range_scale`` normalisation when it asks for one; ``env.reward_bias``)."""
    offline_buffer: ReplayBuffer | None
    online_buffer: ReplayBuffer
    sampler: MixedSampler
    agent: Agent
    schedule: Schedule
    obs_dim: int | None
    """Numbers in one observation; None for ``Dict`` observations (cameras and proprio)."""
    action_dim: int
    reward_model: RewardModel | None = None
    """None: the env's own reward (``reward=env``)."""
    labeller: Labeller | RolloutLabeller | None = None
    """Labels the online rows (off-policy) or the rollouts (on-policy) with ``reward_model``."""
    dataset_score: float | None = None
    """The dataset's own episodes' mean normalised score (None without a dataset or reference scores):
    the level a pre-trained policy is measured against, logged once and drawn by ``rl.plot``."""
    dataset_sha256: str | None = None
    """``Dataset.sha256`` of the data as loaded (None without a dataset): which copy the run used."""

    @property
    def episode_limit(self) -> int | None:
        """The env's time limit in env steps: ``env.max_episode_steps``, else the training copies' own
        (their spec's or ``TimeLimit``'s); None when they have none (a reset-free or real env)."""
        return self.cfg.env.max_episode_steps or self.env.max_episode_steps

    @property
    def env_steps_per_vector_step(self) -> int:
        """One per copy, or a whole action chunk per copy under ``env.action_chunk``, counted whole as
        DPPO and ReinFlow count it (also when an episode's end cuts the chunk short)."""
        return self.cfg.num_envs * self.cfg.env.action_chunk

    def close(self) -> None:
        if self.labeller is not None:
            self.labeller.close()
        if self.reward_model is not None:
            self.reward_model.close()
        self.env.close()
        if self.eval_env is not None:
            self.eval_env.close()


def resolve_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r}: CUDA is not available on this machine (use device=cpu)")
    return device


def build_run(cfg: TrainConfig) -> Run:
    """Build envs, dataset, buffers, sampler and agent for ``cfg``; a bad value is a ValueError naming it."""
    device = resolve_device(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    if cfg.steps.online % cfg.num_envs:
        raise ValueError(f"steps.online={cfg.steps.online} must be a multiple of num_envs={cfg.num_envs}")
    reward_model = build_reward_model(cfg.reward, device)
    env_cfg = (
        cfg.env if reward_model is None else reward_env_config(cfg.env, reward_model, cfg.reward.image_size)
    )
    env = envs.make_vec(env_cfg, cfg.num_envs, device, cfg.env_mode)
    if reward_model is not None:
        shown = set(env.reward_view_space.spaces) if env.reward_view_space is not None else set()
        if {f"state/{k}" for k in TASK_KEYS} <= shown:  # reset-free practice: the model is the forward task's
            reward_model = PerTaskLabels(reward_model)
        connect_reward_model(reward_model, env, cfg)
    eval_env = envs.make(cfg.env) if cfg.steps.eval_episodes > 0 else None
    obs_space, action_space = env.single_observation_space, env.single_action_space
    obs_dim = None if isinstance(obs_space, gym.spaces.Dict) else int(np.prod(obs_space.shape))
    action_dim = int(action_space.shape[0])

    dataset, dataset_sha256 = None, None
    if cfg.dataset.source is not None:
        # Recorded step by step: checked against one env step, then made chunk rows (envs/chunking.py).
        steps, history = cfg.env.action_chunk, cfg.env.obs_history
        step_spaces = single_step_spaces(obs_space, action_space, steps, history)
        loaded = load_dataset(cfg.dataset.source)
        dataset_sha256 = loaded.sha256()
        dataset = check_dataset(loaded, *step_spaces, cfg.dataset.clip_actions)
        episode_returns = dataset.episode_returns  # per env step: chunk rows would count steps repeatedly
        dataset = chunk_dataset(dataset, steps, history)
    info = dataset.info if dataset is not None else None
    normalizer = ScoreNormalizer.for_run(
        cfg.env.score_name, info and info.ref_min_score, info and info.ref_max_score
    )
    dataset_score = None
    if dataset is not None and normalizer is not None:
        dataset_score = float(np.mean(normalizer(episode_returns)))
    reward_scale = cfg.env.reward_scale * return_range_factor(cfg, dataset)
    buffer_args = dict(
        obs_spec=ObsSpec.from_space(obs_space),
        action_dim=action_dim,
        device=device,
        reward_scale=reward_scale,
        reward_bias=cfg.env.reward_bias,
        gamma=cfg.agent.gamma,
    )
    offline_buffer, obs_stats = None, None
    if dataset is not None:
        offline_buffer = ReplayBuffer(len(dataset), seed=cfg.seed + 1, **buffer_args)
        fill_from_dataset(offline_buffer, dataset)
        if not isinstance(dataset.observations, dict):
            obs_stats = tuple(torch.from_numpy(s) for s in dataset.observation_stats())
    agent = build_agent(
        cfg.agent,
        obs_dim,
        action_dim,
        device,
        obs_stats,
        termination=termination.for_env(cfg.env),
        obs_space=obs_space,
    )
    if cfg.checkpoint is not None:
        agent.load_pretrained(load_checkpoint(Path(cfg.checkpoint), kind="agent")["agent"])
    labelled = reward_model is not None and not agent.on_policy
    view_spec = None
    if labelled and env.reward_view_space is not None:
        view_spec = ObsSpec.from_space(env.reward_view_space).columns
    online_buffer = ReplayBuffer(
        cfg.buffer_capacity, seed=cfg.seed + 2, labelled=labelled, view_spec=view_spec, **buffer_args
    )
    sampler = MixedSampler(offline_buffer, online_buffer, cfg.offline_ratio)
    labeller: Labeller | RolloutLabeller | None = None
    if reward_model is not None:
        retry_s = cfg.reward.backoff_s
        if agent.on_policy:
            labeller = RolloutLabeller(reward_model, cfg.num_envs, cfg.reward.mode, retry_s)
        else:
            labeller = Labeller(
                reward_model, online_buffer, cfg.num_envs, cfg.reward.mode, cfg.reward.label_batch, retry_s
            )
    schedule = Schedule(offline=offline_length(cfg, agent), online=cfg.steps.online)
    if schedule.offline > 0 and offline_buffer is None:
        raise ValueError(f"steps.offline={schedule.offline} needs a dataset (dataset=<source:id>)")
    if cfg.precision == "bf16":
        if not native_bf16(device):
            print(f"o2o: warning: precision=bf16 on {device.type} without native bfloat16 (no AVX-512-BF16 or "
                  "AMX): expect updates slower than fp32", file=sys.stderr, flush=True)  # fmt: skip
        agent.update_in_bf16()
    if should_compile(cfg.compile, schedule):
        # Graphs and guards left by an earlier run in this process (a multi-seed quickstart, a joblib
        # worker's later jobs) count towards dynamo's recompile limit, 8 entries per code object; each
        # agent adds 2 to its update (offline and online), so from the fifth run on dynamo would fall
        # back to eager without a word. That run is over: drop its graphs (inductor's disk cache
        # keeps recompiling cheap).
        torch._dynamo.reset()
        agent.compile_update()
    return Run(
        cfg, device, env, eval_env, dataset, normalizer, reward_scale, cfg.env.reward_bias, offline_buffer,
        online_buffer, sampler, agent, schedule, obs_dim, action_dim, reward_model, labeller, dataset_score,
        dataset_sha256,
    )  # fmt: skip


def reward_env_config(env_cfg: Any, model: RewardModel, image_size: int) -> Any:
    """``env_cfg`` rendering ``model``'s cameras as a reward view (a camera ``<name>_depth`` asks for
    depth too) and handing it the named state. Only the training env gets it: evaluation scores the
    policy with the env's own success, and renders nothing it does not need."""
    cameras = [c.removesuffix("_depth") for c in model.cameras]
    overrides = {
        "reward_cameras": list(dict.fromkeys(cameras)),
        "reward_state": True,
        "reward_image_size": image_size,
        "reward_depth": any(c.endswith("_depth") for c in model.cameras),
    }
    return OmegaConf.merge(env_cfg, overrides)


def should_compile(flag: bool | None, schedule: Schedule) -> bool:
    """``compile=true/false`` as given; ``null``: compile schedules of ``COMPILE_FROM_STEPS`` or more."""
    return flag if flag is not None else schedule.total >= COMPILE_FROM_STEPS


def connect_reward_model(model: RewardModel, env: envs.VecEnv, cfg: TrainConfig) -> None:
    """Check that the env shows the model what it reads, and give it the cameras' calibration when it
    takes one (``set_calibration``: KAGI lifts keypoints to 3D with it)."""
    space = env.reward_view_space
    have = set() if space is None else set(space.spaces)
    missing = [f"frames/{c}" for c in model.cameras if f"frames/{c}" not in have]
    missing += [f"state/{k}" for k in model.state_keys if f"state/{k}" not in have]
    if missing:
        shown = sorted(have) or "no reward view"
        raise ValueError(
            f"reward.name={cfg.reward.name}: env {cfg.env.name} does not show the model {missing} (it shows {shown})"
        )
    if model.frame_shape is not None:  # refused here, not at the first label (mid-run, in a worker)
        for camera in model.cameras:
            shape = tuple(space[f"frames/{camera}"].shape)
            if shape != model.frame_shape:
                raise ValueError(
                    f"reward.name={cfg.reward.name}: env {cfg.env.name} renders reward camera {camera} at "
                    f"{shape}, the model takes {model.frame_shape}"
                )
    set_calibration = getattr(model, "set_calibration", None)
    if set_calibration is not None:
        calibrated = env.reward_calibration or {}
        cameras = dict.fromkeys(
            c.removesuffix("_depth") for c in model.cameras
        )  # a depth frame: its camera's
        uncalibrated = [camera for camera in cameras if camera not in calibrated]
        if uncalibrated:
            raise ValueError(
                f"reward.name={cfg.reward.name}: env {cfg.env.name} has no camera calibration for "
                f"{uncalibrated} (a bridge camera takes one from env.kwargs.calibration=<file.json>)"
            )
        set_calibration(
            {
                camera: CameraCalibration(
                    intrinsics=torch.as_tensor(c["intrinsics"], dtype=torch.float64),
                    extrinsics=torch.as_tensor(c["extrinsics"], dtype=torch.float64),
                    height=int(c["height"]),
                    width=int(c["width"]),
                )
                for camera, c in calibrated.items()
            }
        )


def return_range_factor(cfg: TrainConfig, dataset: Dataset | None) -> float:
    """``agent.return_range_scale / (max - min)`` of the dataset's episode returns when the agent asks
    for that normalisation (IQL's and CORL's locomotion rewards: 1000 over the return range), else 1.
    Episodes end at terminals and time limits, as in the dataset."""
    scale = cfg.agent.return_range_scale
    if scale is None:
        return 1.0
    if dataset is None:
        raise ValueError(
            f"agent.return_range_scale={scale} scales rewards by the dataset's return range: it needs a dataset"
        )
    returns = dataset.episode_returns
    spread = float(returns.max() - returns.min())
    if spread <= 0:
        raise ValueError(
            f"dataset {cfg.dataset.source}: every episode has the same return, so agent.return_range_scale cannot scale by the range"
        )
    return scale / spread


def offline_length(cfg: TrainConfig, agent: Agent) -> int:
    """``steps.offline``, or the agent's own offline length when it dictates one (then a different
    nonzero ``steps.offline`` is refused rather than silently ignored)."""
    dictated = agent.offline_steps
    if dictated is None:
        return cfg.steps.offline
    if cfg.steps.offline not in (0, dictated):
        raise ValueError(
            f"steps.offline={cfg.steps.offline}: agent {cfg.agent.name} sets its own offline length "
            f"({dictated} updates, from its stage sizes); drop steps.offline"
        )
    return dictated
