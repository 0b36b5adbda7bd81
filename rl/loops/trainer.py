"""The offline-then-online schedule. It owns steps, evaluation, checkpoints and logging, never a loss.

Phases, on one step axis:
1. offline: ``steps.offline`` agent updates on batches from the dataset's buffer;
2. online: ``steps.online`` env steps, taken ``num_envs`` at a time by a vector env with one
   batched ``agent.act`` per vector step; each transition enters the online buffer, and after
   ``steps.warmup`` env steps every env step is matched by one ``agent.update`` on a batch the
   ``MixedSampler`` draws (``offline_ratio`` of it from the dataset).
Evaluation runs every ``steps.eval_every`` steps of each phase and at each phase's end.

Exact resume: a checkpoint holds the agent (networks, optimizers, temperature), the online
buffer's rows, both buffers' sampling generators, the global RNGs, the step counters, the current
episodes (observations, their buffer rows) and the vector env's simulator states.
The offline buffer's rows are not saved: they are rebuilt from the dataset and checked against a
fingerprint. On CPU, a run killed and resumed from step k logs the same numbers after k as one
that never stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

import envs
from envs.vector import TensorObs
from rl.agents import Agent, build_agent
from rl.buffers import MixedSampler, ObsSpec, ReplayBuffer, RolloutBuffer
from rl.config import TrainConfig
from rl.data import Dataset, ScoreNormalizer, check_dataset, load_dataset
from rl.loops.checkpoint import load_checkpoint, rng_state, save_checkpoint, seed_everything, set_rng_state
from rl.loops.evaluate import evaluate
from rl.loops.logger import RunLogger

LAST_CHECKPOINT = Path("checkpoints/last.pt")


def resolve_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r}: CUDA is not available on this machine (use device=cpu)")
    return device


class Trainer:
    def __init__(self, cfg: TrainConfig, run_dir: Path) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        self.device = resolve_device(cfg.device)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)
        if cfg.steps.online % cfg.num_envs:
            raise ValueError(f"steps.online={cfg.steps.online} must be a multiple of num_envs={cfg.num_envs}")
        self.env = envs.make_vec(cfg.env, cfg.num_envs, self.device, cfg.env_mode)
        # A second env to evaluate in; a real arm has no second copy, so eval_episodes=0 skips it.
        self.eval_env = envs.make(cfg.env) if cfg.steps.eval_episodes > 0 else None
        obs_space, action_space = self.env.single_observation_space, self.env.single_action_space
        self.obs_dim, self.action_dim = int(np.prod(obs_space.shape)), int(action_space.shape[0])

        self.dataset = self._load_dataset(obs_space, action_space)
        info = self.dataset.info if self.dataset is not None else None
        self.normalizer = ScoreNormalizer.for_run(
            cfg.env.score_name, info and info.ref_min_score, info and info.ref_max_score
        )
        buffer_args = dict(
            obs_spec=ObsSpec.from_space(obs_space),
            action_dim=self.action_dim,
            device=self.device,
            reward_scale=cfg.env.reward_scale,
            reward_bias=cfg.env.reward_bias,
            gamma=cfg.agent.gamma,
        )
        self.offline_buffer: ReplayBuffer | None = None
        obs_stats = None
        if self.dataset is not None:
            self.offline_buffer = ReplayBuffer(len(self.dataset), seed=cfg.seed + 1, **buffer_args)
            self.offline_buffer.add_dataset(self.dataset)
            if not isinstance(self.dataset.observations, dict):
                obs_stats = tuple(torch.from_numpy(s) for s in self.dataset.observation_stats())
        self.online_buffer = ReplayBuffer(cfg.buffer_capacity, seed=cfg.seed + 2, **buffer_args)
        self.sampler = MixedSampler(self.offline_buffer, self.online_buffer, cfg.offline_ratio)
        if cfg.steps.offline > 0 and self.offline_buffer is None:
            raise ValueError(f"steps.offline={cfg.steps.offline} needs a dataset (dataset=<source:id>)")
        self.agent: Agent = build_agent(cfg.agent, self.obs_dim, self.action_dim, self.device, obs_stats)
        if cfg.checkpoint is not None:
            payload = load_checkpoint(Path(cfg.checkpoint))
            if payload.get("kind") != "agent":
                raise ValueError(
                    f"checkpoint={cfg.checkpoint}: not an agent checkpoint (use checkpoints/agent_*.pt)"
                )
            self.agent.load_pretrained(payload["agent"])
        if cfg.compile:
            self.agent.compile_update()

        self.step = 0
        self.saved_step = 0
        self.env_steps = 0
        self.episodes = 0
        self.obs = self.env.reset(seed=cfg.seed)
        # Buffer rows of each copy's episode in progress: their MC returns are written when it ends.
        self.episode_rows: list[list[torch.Tensor]] = [[] for _ in range(cfg.num_envs)]
        self.summary: dict[str, dict[str, float]] = {}
        self.recent_returns: list[float] = []  # the summary's figure when there is no evaluation

    def _load_dataset(self, obs_space, action_space) -> Dataset | None:
        if self.cfg.dataset.source is None:
            return None
        dataset = load_dataset(self.cfg.dataset.source)
        return check_dataset(dataset, obs_space, action_space, self.cfg.dataset.clip_actions)

    # -- the schedule -------------------------------------------------------------------------------

    @property
    def total_steps(self) -> int:
        return self.cfg.steps.offline + self.cfg.steps.online

    def run(self) -> dict[str, dict[str, float]]:
        logger = RunLogger(self.run_dir, self.total_steps, self.step, self.cfg.progress)
        try:
            if self.step < self.cfg.steps.offline:
                self.offline_phase(logger)
            if self.step < self.total_steps:
                self.online_phase(logger)
        finally:
            logger.close()
        return self.summary

    def offline_phase(self, logger: RunLogger) -> None:
        steps = self.cfg.steps
        while self.step < steps.offline:
            metrics = self.agent.update(self.offline_buffer.sample(self.agent.batch_size))
            self.step += 1
            phase_end = self.step == steps.offline
            self._after_step(logger, "offline", self.step, metrics, phase_end)
        if steps.offline > 0:
            self._save_agent("agent_offline.pt")

    def online_phase(self, logger: RunLogger) -> None:
        if self.agent.on_policy:
            self.online_on_policy_phase(logger)
            return
        steps, n = self.cfg.steps, self.cfg.num_envs
        self.agent.begin_online()
        while self.step < self.total_steps:
            online_step = self.step - steps.offline  # env steps taken so far in this phase
            action = self._online_action(online_step)
            result = collect_step(self.env, self.obs, action, self.online_buffer, self.episode_rows)
            metrics: dict[str, Any] = self._finish_episodes(result.episodes) if result.episodes else {}
            self.obs = result.obs
            self.env_steps += n
            if online_step + n > steps.warmup:
                for _ in range(n):  # one update per env step, whatever the number of copies
                    metrics |= self.agent.update(self.sampler.sample(self.agent.batch_size))
            self.step += n
            self._after_step(
                logger, "online", online_step + n, metrics, self.step == self.total_steps, stride=n
            )
        if self.eval_env is None and self.recent_returns:
            self.summary["online"] = {"step": self.step, "return": float(np.mean(self.recent_returns))}
        self._save_agent("agent_final.pt")

    def online_on_policy_phase(self, logger: RunLogger) -> None:
        """Rollouts of ``rollout_steps`` env steps, each followed by ``agent.update_rollout``.

        Checkpoints are written only between rollouts (a resumed run restarts the rollout in
        progress from the same state, so it stays exact); logging and evaluation keep their cadence.
        """
        steps, n = self.cfg.steps, self.cfg.num_envs
        self.agent.begin_online()
        rollout = RolloutBuffer(
            self.cfg.rollout_steps // n, n, self.obs_dim, self.action_dim, self.device,
            self.cfg.env.reward_scale, self.cfg.env.reward_bias,
        )  # fmt: skip
        while self.step < self.total_steps:
            metrics: dict[str, Any] = {}
            while not rollout.full and self.step < self.total_steps:
                action, log_prob, value = self.agent.policy_step(self.obs)
                result = self.env.step(action)
                bootstrap = torch.zeros(n, device=self.device)
                # A truncation ends an episode, so the host-side episode tuple settles most steps
                # without reading the device flag (a synchronisation on GPU).
                if result.episodes and result.truncated.any():
                    bootstrap = torch.where(
                        result.truncated, self.agent.state_value(result.next_obs), bootstrap
                    )
                rollout.add(
                    self.obs,
                    action,
                    log_prob,
                    result.reward,
                    value,
                    result.terminated,
                    result.truncated,
                    bootstrap,
                )
                if result.episodes:
                    metrics |= self._finish_episodes(result.episodes)
                self.obs = result.obs
                self.env_steps += n
                self.step += n
                phase_end = self.step == self.total_steps
                if rollout.full:
                    metrics |= self.agent.update_rollout(rollout, self.obs)
                    rollout.reset()
                online_step = self.step - steps.offline
                self._after_step(
                    logger, "online", online_step, metrics, phase_end, stride=n, may_save=rollout.t == 0
                )
                metrics = {}
        self._save_agent("agent_final.pt")

    def _online_action(self, online_step: int) -> torch.Tensor:
        if self.cfg.steps.warmup_actions not in ("random", "policy"):
            raise ValueError(
                f"steps.warmup_actions must be 'random' or 'policy', got {self.cfg.steps.warmup_actions!r}"
            )
        if online_step < self.cfg.steps.warmup and self.cfg.steps.warmup_actions == "random":
            return torch.rand(self.cfg.num_envs, self.action_dim, device=self.device) * 2.0 - 1.0
        return self.agent.act(self.obs)

    def _finish_episodes(self, episodes: tuple[envs.EpisodeStats, ...]) -> dict[str, float]:
        """Count the episodes that just ended; their mean statistics."""
        self.episodes += len(episodes)
        self.recent_returns = (self.recent_returns + [e.episode_return for e in episodes])[-10:]
        result = {
            "episode_return": float(np.mean([e.episode_return for e in episodes])),
            "episode_length": float(np.mean([e.length for e in episodes])),
        }
        if self.normalizer is not None:
            result["episode_score"] = float(np.mean([self.normalizer(e.score_return) for e in episodes]))
        return result

    def _after_step(
        self,
        logger: RunLogger,
        phase: str,
        phase_step: int,
        metrics: dict,
        phase_end: bool,
        stride: int = 1,
        may_save: bool = True,
    ) -> None:
        """Log, evaluate and checkpoint when ``phase_step`` crosses their intervals (or the phase ends)."""
        steps = self.cfg.steps

        def due(every: int) -> bool:
            return every > 0 and phase_step // every != (phase_step - stride) // every

        log_now = due(steps.log_every) or phase_end
        if log_now and metrics:
            metrics = dict(metrics)
            metrics["steps_per_second"] = logger.steps_per_second(self.step)
        if "episode_return" in metrics or log_now:
            logger.log(self.step, phase, self.env_steps, metrics)
        if self.eval_env is not None and (due(steps.eval_every) or phase_end):
            result = evaluate(
                self.agent,
                self.eval_env,
                steps.eval_episodes,
                seed=10_000 * (self.cfg.seed + 1),
                normalizer=self.normalizer,
            )
            logger.log(
                self.step,
                phase,
                self.env_steps,
                {f"eval_{k}" if k != "normalized_score" else k: v for k, v in result.items()},
            )
            if phase_end:
                self.summary[phase] = {"step": self.step, **result}
        if due(steps.snapshot_every):
            self._save_agent(f"agent_step{self.step}.pt")
        checkpoint_due = self.step // steps.checkpoint_every != self.saved_step // steps.checkpoint_every
        if may_save and (checkpoint_due or phase_end):
            self.save()
        logger.advance(self.step, phase)

    # -- checkpoints ----------------------------------------------------------------------------------

    def _save_agent(self, name: str) -> None:
        save_checkpoint(
            self.run_dir / "checkpoints" / name,
            {
                "kind": "agent",
                "agent_config": OmegaConf.to_container(self.cfg.agent),
                "agent": self.agent.state_dict(),
            },
        )

    def save(self) -> None:
        self.saved_step = self.step
        save_checkpoint(
            self.run_dir / LAST_CHECKPOINT,
            {
                "kind": "run",
                "config": _comparable_config(self.cfg),
                "agent": self.agent.state_dict(),
                "online_buffer": self.online_buffer.state_dict(),
                "offline_buffer": None
                if self.offline_buffer is None
                else {
                    "generator": self.offline_buffer.generator.get_state(),
                    "fingerprint": self._dataset_fingerprint(),
                },
                "rng": rng_state(),
                "loop": {
                    "step": self.step,
                    "env_steps": self.env_steps,
                    "episodes": self.episodes,
                    "episode_rows": self.episode_rows,
                    "env_state": self.env.get_state(),
                    "summary": self.summary,
                    "recent_returns": self.recent_returns,
                },
            },
        )

    def restore(self, path: Path) -> None:
        payload = load_checkpoint(path)
        if payload.get("kind") != "run":
            raise ValueError(f"checkpoint {path}: holds only an agent, not a run to resume")
        differences = _config_differences(payload["config"], _comparable_config(self.cfg))
        if differences:
            raise ValueError(f"checkpoint {path}: made with another config ({'; '.join(differences[:4])})")
        self.agent.load_state_dict(payload["agent"])
        self.online_buffer.load_state_dict(payload["online_buffer"])
        if self.offline_buffer is not None:
            saved = payload["offline_buffer"]
            if saved["fingerprint"] != self._dataset_fingerprint():
                raise ValueError(
                    f"checkpoint {path}: the dataset {self.cfg.dataset.source} changed since the checkpoint"
                )
            self.offline_buffer.generator.set_state(saved["generator"])
        loop = payload["loop"]
        self.step, self.env_steps, self.episodes = loop["step"], loop["env_steps"], loop["episodes"]
        self.saved_step = self.step
        self.summary, self.recent_returns = loop["summary"], loop["recent_returns"]
        if loop["env_state"] is not None:
            self.obs = self.env.set_state(loop["env_state"])
            self.episode_rows = loop["episode_rows"]
        else:  # envs we cannot snapshot (a real arm, robosuite): the interrupted episodes restart
            self.obs = self.env.reset(seed=self.cfg.seed + self.step)
            self.episode_rows = [[] for _ in range(self.cfg.num_envs)]
        set_rng_state(payload["rng"])

    def _dataset_fingerprint(self) -> tuple[int, float]:
        return (len(self.dataset), float(np.float64(self.dataset.rewards).sum()))


def collect_step(
    env: envs.VecEnv,
    obs: TensorObs,
    action: torch.Tensor,
    buffer: ReplayBuffer,
    episode_rows: list[list[torch.Tensor]],
) -> envs.VecStep:
    """One vector step of off-policy collection, learning left out: step every copy with ``action``
    (chosen in ``obs``), add the n transitions to ``buffer``, append each transition's row to its
    copy's ``episode_rows``, and write the MC returns of the episodes that ended (clearing their
    rows). Returns the step; act on its ``obs`` next."""
    result = env.step(action)
    rows = buffer.add(obs, action, result.reward, result.next_obs, result.terminated)
    for copy_rows, row in zip(episode_rows, rows.unsqueeze(1).unbind(), strict=True):
        copy_rows.append(row)  # a (1,) view, as split(1) gives, at half its cost
    for episode in result.episodes:
        buffer.write_mc_returns(torch.cat(episode_rows[episode.env_index]))
        episode_rows[episode.env_index] = []
    return result


RUNTIME_KEYS = ("resume", "device", "threads", "progress", "compile")


def _comparable_config(cfg: TrainConfig) -> dict[str, Any]:
    """The config minus what may change between a run and its resumption."""
    container = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in container.items() if k not in RUNTIME_KEYS}


def _config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``'key: old -> new'`` for each differing leaf; a differing ``name`` (agent, env) comes first."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=lambda k: (k != "name", k)):
            out += _config_differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return sorted(out, key=lambda line: not line.split(":")[0].endswith(".name"))
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def summary_line(
    run_dir: Path, cfg: TrainConfig, summary: dict[str, dict[str, float]], seconds: float
) -> str:
    parts = [
        f"o2o: {run_dir}",
        f"agent {cfg.agent.name}",
        f"env {cfg.env.name}",
        f"dataset {cfg.dataset.name}",
    ]
    for phase in ("offline", "online"):
        if phase in summary:
            result = summary[phase]
            score = result.get("normalized_score")
            shown = f"score {score:.1f}" if score is not None else f"return {result['return']:.1f}"
            if cfg.steps.eval_episodes == 0:
                shown += " (mean of the last 10 training episodes)"
            parts.append(f"after {phase}: {shown}")
    parts.append(f"{seconds:.0f}s")
    return " | ".join(parts)


__all__ = ["LAST_CHECKPOINT", "Trainer", "collect_step", "resolve_device", "summary_line"]
