"""A run's state between steps, and its one checkpoint: save, read once, compare configs, restore.

``last.pt`` holds everything an exact resume needs: the agent (networks, optimizers, temperature,
phase), the online buffer's rows, both buffers' sampling generators, the global RNGs, the loop's
counters, the episodes in progress (their buffer rows) and the vector env's simulator states, and
with a reward model the labeller's episode bookkeeping (rows still waiting for labels are in the
buffer, past its label cursor, and are labelled again after the resume). The
offline buffer's rows are not saved: they are rebuilt from the dataset and checked against a
fingerprint. On CPU, a run killed and resumed from step k logs the same numbers after k as one that
never stopped.

The entry point reads ``last.pt`` once (``read_run_checkpoint``), compares its config with the
command's before anything is built, and hands the same payload to ``restore``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from envs.vector import TensorObs
from rl.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from rl.config import TrainConfig
from rl.data import Dataset
from rl.loops.build import Run
from rl.loops.labelling import Labeller
from rl.run_files import ADDED_SETTINGS

LAST_CHECKPOINT = Path("checkpoints/last.pt")
RUN_FORMAT = 3
"""Version of ``last.pt``'s layout. 2: agents with explicit parts and a saved phase, buffers
without the pre-frame-sharing fields. 3: configs with ``reward``, online buffers with the label
columns (pending rows, reward views, model hashes). Older run checkpoints are refused by name."""
RUNTIME_KEYS = ("resume", "device", "threads", "progress", "compile")
"""Config keys that may change when a run resumes: where and how fast it runs, not what it learns."""


@dataclass
class LoopState:
    """The loop's counters and the episodes in progress; everything else lives in the ``Run``."""

    obs: TensorObs
    episode_rows: list[list[int]]
    """Buffer rows of each copy's episode in progress: their MC returns are written when it ends."""
    step: int = 0
    env_steps: int = 0
    episodes: int = 0
    saved_step: int = 0
    summary: dict[str, dict[str, float]] = field(default_factory=dict)
    recent_returns: list[float] = field(default_factory=list)
    """The last 10 training episodes' returns: the summary's figure when there is no evaluation."""

    @staticmethod
    def start(run: Run) -> LoopState:
        return LoopState(
            obs=run.env.reset(seed=run.cfg.seed), episode_rows=[[] for _ in range(run.cfg.num_envs)]
        )


def comparable_config(cfg: TrainConfig) -> dict[str, Any]:
    """The config minus what may change between a run and its resumption."""
    container = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in container.items() if k not in RUNTIME_KEYS}


def config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``'key: old -> new'`` for each differing leaf; a differing ``name`` (agent, env) comes first."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=lambda k: (k != "name", k)):
            out += config_differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return sorted(out, key=lambda line: not line.split(":")[0].endswith(".name"))
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def dataset_fingerprint(dataset: Dataset) -> tuple[int, float]:
    return (len(dataset), float(np.float64(dataset.rewards).sum()))


def read_run_checkpoint(run_dir: Path, cfg: TrainConfig) -> dict[str, Any] | None:
    """The resumable run in ``run_dir`` (its ``last.pt`` payload), None if there is none; raises if the
    directory holds another config's run, a run of an older format, or metrics without a checkpoint."""
    path = run_dir / LAST_CHECKPOINT
    if not path.is_file():
        if (run_dir / "metrics.csv").exists():
            raise ValueError(
                f"run directory {run_dir} holds metrics but no checkpoint; move it away to start again"
            )
        return None
    payload = load_checkpoint(path, kind="run")
    if payload.get("run_format") != RUN_FORMAT:
        raise ValueError(
            f"checkpoint {path}: run format {payload.get('run_format', 1)}, this o2o resumes format {RUN_FORMAT}; "
            "start the run again in a new directory"
        )
    differences = config_differences({**ADDED_SETTINGS, **payload["config"]}, comparable_config(cfg))
    if differences:
        raise ValueError(
            f"run directory {run_dir} holds a run with another config ({'; '.join(differences[:4])}); "
            "change an override or remove that directory"
        )
    return payload


def save(run: Run, state: LoopState, run_dir: Path) -> None:
    state.saved_step = state.step
    offline = None
    if run.offline_buffer is not None:
        offline = {
            "generator": run.offline_buffer.generator.get_state(),
            "fingerprint": dataset_fingerprint(run.dataset),
        }
    # An async labeller writes into the online buffer: snapshot both in one of its critical sections.
    with run.labeller.lock if isinstance(run.labeller, Labeller) else contextlib.nullcontext():
        online_buffer = run.online_buffer.state_dict()
        labeller = None if run.labeller is None else run.labeller.state_dict()
    save_checkpoint(
        run_dir / LAST_CHECKPOINT,
        {
            "kind": "run",
            "run_format": RUN_FORMAT,
            "config": comparable_config(run.cfg),
            "agent": run.agent.state_dict(),
            "online_buffer": online_buffer,
            "offline_buffer": offline,
            "rng": rng_state(),
            "labeller": labeller,
            "loop": {
                "step": state.step,
                "env_steps": state.env_steps,
                "episodes": state.episodes,
                "episode_rows": state.episode_rows,
                "env_state": run.env.get_state(),
                "summary": state.summary,
                "recent_returns": state.recent_returns,
            },
        },
    )


def restore(run: Run, payload: dict[str, Any]) -> LoopState:
    """Put ``run`` back where ``payload`` (from ``read_run_checkpoint``) left it; the loop's state."""
    run.agent.load_state_dict(payload["agent"])
    run.online_buffer.load_state_dict(payload["online_buffer"])
    if run.offline_buffer is not None:
        saved = payload["offline_buffer"]
        if saved["fingerprint"] != dataset_fingerprint(run.dataset):
            raise ValueError(f"the dataset {run.cfg.dataset.source} changed since the run's checkpoint")
        run.offline_buffer.generator.set_state(saved["generator"])
    loop = payload["loop"]
    obs = run.env.reset(seed=run.cfg.seed)  # gymnasium steps only a reset env, even after set_state
    if loop["env_state"] is not None:
        obs, episode_rows = run.env.set_state(loop["env_state"]), loop["episode_rows"]
    else:  # envs we cannot snapshot (a real arm, robosuite): the interrupted episodes restart
        obs = run.env.reset(seed=run.cfg.seed + loop["step"])
        episode_rows = [[] for _ in range(run.cfg.num_envs)]
    if run.labeller is not None:
        # Rows still pending in the checkpoint are past the buffer's label cursor: labelled again.
        run.labeller.load_state_dict(payload["labeller"], episodes_restart=loop["env_state"] is None)
    set_rng_state(payload["rng"])
    return LoopState(
        obs=obs,
        episode_rows=episode_rows,
        step=loop["step"],
        env_steps=loop["env_steps"],
        episodes=loop["episodes"],
        saved_step=loop["step"],
        summary=loop["summary"],
        recent_returns=loop["recent_returns"],
    )
