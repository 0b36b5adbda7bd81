"""Sweeps: the jobs a multirun launches, its index, and the plan shown before launching it.

- ``expand``: the jobs of a command, computed the way Hydra's sweeper and launchers compute them
  (sweep parameters of an experiment file first, then the command line; each job's config composed
  from its overrides; its folder from ``hydra.sweep.dir`` and ``hydra.sweep.subdir``).
- ``index.csv`` in a sweep's directory: one row per job ever launched there (folder, status,
  overrides). ``SweepIndex``, a Hydra callback, writes the planned rows before a multirun and reports
  its failed jobs after it; each job marks itself ``running``, then ``finished`` or ``failed: <why>``
  (``mark``). A job killed outright stays ``running``; its folder says how far it got.
- ``plan``: ``python -m rl.train -m <overrides> +plan=true`` prints the jobs (folder, state, overrides)
  and an estimated cost from this agent's update rate measured here, and launches nothing.

Jobs run in other processes or on other machines (joblib, Ray, SLURM): index updates are
read-modify-write under an exclusive ``flock`` on ``.index.lock``, then an atomic rename, so the sweep
directory must be on a filesystem every job sees (as its run folders must be).
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import create_config_search_path
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import setup_globals
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import envs
from rl.agents import build_agent
from rl.buffers import ObsSpec, ReplayBuffer
from rl.checkpoint import load_checkpoint
from rl.config import REPOSITORY, check_values, register_configs
from rl.loops.build import offline_length
from rl.loops.off_policy import collect_step
from rl.run_files import INDEX, INDEX_FIELDS, read_index

CONFIG_DIR = REPOSITORY / "conf"
SIMULATED_FAMILIES = ("gymnasium", "robotics", "robosuite")
"""Env families a plan may step to measure a rate (never a real arm)."""


# -- the jobs of a command ------------------------------------------------------------------------------


@dataclass
class Job:
    overrides: list[str]
    run_dir: Path
    cfg: DictConfig
    """The job's config without the ``hydra`` node, resolved as the job will see it."""


def config_loader() -> ConfigLoaderImpl:
    register_configs()
    setup_globals()  # Hydra's own resolvers (${hydra:...}, ${now:...}), as hydra.main registers them
    return ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONFIG_DIR)))


def expand(overrides: list[str], multirun: bool) -> tuple[DictConfig, list[Job]]:
    """The command's composed config and its jobs (one job without ``-m``)."""
    loader = config_loader()
    mode = RunMode.MULTIRUN if multirun else RunMode.RUN
    master = loader.load_configuration("config", overrides, run_mode=mode)
    if not multirun:
        return master, [_job(master, list(master.hydra.overrides.task), "hydra.run.dir", None)]
    return master, jobs_of(loader, master)


def jobs_of(loader: ConfigLoaderImpl, master: DictConfig) -> list[Job]:
    """Each job of a multirun, in launch order (what ``BasicSweeper.sweep`` hands the launcher)."""
    params = OmegaConf.select(master, "hydra.sweeper.params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()] + list(master.hydra.overrides.task)
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(arguments)
    (batch,) = BasicSweeper.split_arguments(parsed, None)
    return [
        _job(loader.load_sweep_config(master, overrides), overrides, "hydra.sweep.dir", "hydra.sweep.subdir")
        for overrides in batch
    ]


def _job(cfg: DictConfig, overrides: list[str], dir_key: str, subdir_key: str | None) -> Job:
    hydra_config = HydraConfig.instance()
    previous = hydra_config.cfg
    hydra_config.set_config(cfg)  # ${hydra:...} in the job's values resolves against its own config
    try:
        run_dir = Path(str(OmegaConf.select(cfg, dir_key)))
        if subdir_key is not None:
            run_dir /= str(OmegaConf.select(cfg, subdir_key))
        task = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
        resolved = OmegaConf.create(OmegaConf.to_container(task, resolve=True))
    finally:
        hydra_config.cfg = previous
    return Job(overrides=list(overrides), run_dir=run_dir, cfg=resolved)


def run_state(run_dir: Path) -> str:
    """``finished`` (its final agent is saved), ``resumes`` (a checkpoint to continue from) or ``new``."""
    if (run_dir / "checkpoints" / "agent_final.pt").is_file():
        return "finished"
    return "resumes" if (run_dir / "checkpoints" / "last.pt").is_file() else "new"


# -- the index -------------------------------------------------------------------------------------------


@dataclass
class SweepJob:
    """Where a running job records itself: its sweep's directory, its folder there, its overrides."""

    sweep_dir: Path
    folder: str
    overrides: str


def current_job() -> SweepJob | None:
    """The multirun job this process is running, None outside a multirun (or outside Hydra)."""
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return SweepJob(
        sweep_dir=Path(hydra_cfg.sweep.dir),
        folder=Path(hydra_cfg.runtime.output_dir).name,
        overrides=" ".join(hydra_cfg.overrides.task),
    )


@contextmanager
def _locked_index(sweep_dir: Path) -> Iterator[dict[str, dict[str, str]]]:
    """The index's rows to change in place; written back (atomically) when the block ends."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / ".index.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = read_index(sweep_dir)
        yield rows
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=INDEX_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows[folder] for folder in sorted(rows))
        temporary = sweep_dir / f".{INDEX}.{os.getpid()}"
        temporary.write_text(text.getvalue())
        os.replace(temporary, sweep_dir / INDEX)


def mark(job: SweepJob, status: str) -> None:
    """Record ``status`` (one line) for ``job`` in its sweep's index."""
    with _locked_index(job.sweep_dir) as rows:
        rows[job.folder] = {
            "folder": job.folder,
            "status": " ".join(status.split()),
            "overrides": job.overrides,
        }


class SweepIndex(Callback):
    """Hydra callback (``hydra.callbacks`` in conf/config.yaml): the index before and after a multirun."""

    def __init__(self) -> None:
        self.sweep_dir: Path | None = None
        self.folders: list[str] = []

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        jobs = jobs_of(config_loader(), config)
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        self.folders = [job.run_dir.name for job in jobs]
        with _locked_index(self.sweep_dir) as rows:
            for job in jobs:
                state = run_state(job.run_dir)
                previous = rows.get(job.run_dir.name, {}).get("status")
                rows[job.run_dir.name] = {
                    "folder": job.run_dir.name,
                    "status": "finished" if state == "finished" else previous or "planned",
                    "overrides": " ".join(job.overrides),
                }

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        assert self.sweep_dir is not None
        rows = read_index(self.sweep_dir)
        statuses = [rows.get(folder, {}).get("status", "planned") for folder in self.folders]
        failed = [(f, s) for f, s in zip(self.folders, statuses, strict=True) if s.startswith("failed")]
        finished = sum(s == "finished" for s in statuses)
        print(
            f"o2o: sweep {self.sweep_dir}: {finished} of {len(self.folders)} jobs finished, "
            f"{len(failed)} failed (index: {self.sweep_dir / INDEX})",
            file=sys.stderr,
        )
        for folder, status in failed:
            print(f"o2o: {self.sweep_dir / folder}: {status}", file=sys.stderr)
        if failed:
            sys.exit(1)


# -- the plan --------------------------------------------------------------------------------------------


@dataclass
class Estimate:
    """What a job's cost is estimated from, measured here for one (agent, env, device) config."""

    offline_updates: int
    """The schedule's offline length: ``steps.offline``, or the agent's own when it dictates one."""
    updates_per_s: float
    env_steps_per_s: float
    device: str
    threads: int

    def seconds(self, cfg: DictConfig) -> float:
        """Updates at the measured update rate plus online env steps at the measured step rate
        (start-up and evaluation are not counted)."""
        updates = self.offline_updates + max(cfg.steps.online - cfg.steps.warmup, 0)
        return updates / self.updates_per_s + cfg.steps.online / self.env_steps_per_s


def measure(cfg: DictConfig, seconds: float = 1.0) -> Estimate:
    """Build the job's agent as ``build_run`` does (from its checkpoint too, which may leave a
    multi-stage agent fewer offline updates), step its env at random through the online phase's own
    collection step into a buffer, then time agent updates on batches from that buffer."""
    device = torch.device("cpu" if "cuda" in cfg.device and not torch.cuda.is_available() else cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    env = envs.make_vec(cfg.env, 1, device, "sync")
    try:
        obs_space = env.single_observation_space
        obs_dim, action_dim = int(np.prod(obs_space.shape)), int(env.single_action_space.shape[0])
        buffer = ReplayBuffer(1000, ObsSpec.from_space(obs_space), action_dim, device, gamma=cfg.agent.gamma)
        obs, episode_rows = env.reset(seed=0), [[]]
        started, steps = time.perf_counter(), 0
        while steps < 1000 and (steps < 50 or time.perf_counter() - started < seconds / 2):
            action = torch.rand(1, action_dim, device=device) * 2 - 1
            obs = collect_step(env, obs, action, buffer, episode_rows).obs
            steps += 1
        env_rate = steps / (time.perf_counter() - started)
    finally:
        env.close()
    agent = build_agent(cfg.agent, obs_dim, action_dim, device, (torch.zeros(obs_dim), torch.ones(obs_dim)))
    if cfg.checkpoint is not None:
        agent.load_pretrained(load_checkpoint(Path(cfg.checkpoint))["agent"])
    offline = offline_length(cfg, agent)
    agent.update(buffer.sample(agent.batch_size))  # the first call allocates (optimizer state)
    started, updates = time.perf_counter(), 0
    while updates < 3 or (updates < 200 and time.perf_counter() - started < seconds):
        agent.update(buffer.sample(agent.batch_size))
        updates += 1
    rate = updates / (time.perf_counter() - started)
    return Estimate(offline, rate, env_rate, str(device), torch.get_num_threads())


def plan(overrides: list[str], multirun: bool) -> int:
    """Print the jobs ``rl.train`` would launch for ``overrides`` and their estimated cost."""
    master, jobs = expand(overrides, multirun)
    launcher = OmegaConf.select(master, "hydra.runtime.choices")
    launcher = (launcher or {}).get("hydra/launcher", "basic")
    where = f"sweep dir {master.hydra.sweep.dir}" if multirun else "one run"
    print(f"o2o: plan: {len(jobs)} job(s), launcher {launcher}, {where}; nothing is launched")
    estimates: dict[str, Estimate | None] = {}
    total, unknown, states = 0.0, 0, {"new": 0, "resumes": 0, "finished": 0}
    width = max(len(str(job.run_dir)) for job in jobs)
    for number, job in enumerate(jobs):
        check_values(job.cfg)
        what = ("agent", "env", "device", "threads", "checkpoint", "steps")
        key = OmegaConf.to_yaml({k: job.cfg[k] for k in what})
        if key not in estimates:
            simulated = job.cfg.env.family in SIMULATED_FAMILIES
            estimates[key] = measure(job.cfg) if simulated else None
        estimate, state = estimates[key], run_state(job.run_dir)
        states[state] += 1
        cost = "-"
        if state != "finished" and estimate is None:
            cost, unknown = "n/a", unknown + 1
        elif state != "finished":
            seconds = estimate.seconds(job.cfg)
            total, cost = total + seconds, f"~{_duration(seconds)}"
        print(f"{number:>4}  {job.run_dir!s:<{width}}  {state:<8}  {cost:>7}  {' '.join(job.overrides)}")
    measured = {}
    for key, estimate in estimates.items():
        cfg = OmegaConf.create(key)
        if estimate is None:
            measured[f"{cfg.agent.name} on {cfg.env.name}"] = "not measured (not a simulator)"
        else:
            elsewhere = f", the jobs ask for {cfg.device}" if cfg.device != estimate.device else ""
            measured[f"{cfg.agent.name} on {cfg.env.name}"] = (
                f"{estimate.updates_per_s:.1f} updates/s, {estimate.env_steps_per_s:,.0f} env steps/s, "
                f"{estimate.offline_updates} offline updates (on {estimate.device}{elsewhere}, "
                f"{estimate.threads} thread{'s' if estimate.threads != 1 else ''})"
            )
    for what, figures in measured.items():
        print(f"measured here: {what}: {figures}")
    parallel = OmegaConf.select(master, "hydra.launcher.n_jobs")
    wall = f"; ~{_duration(total / parallel)} with {parallel} jobs at a time" if parallel else ""
    print(
        f"total: {states['new']} new, {states['resumes']} to resume, {states['finished']} finished (skipped); "
        f"~{_duration(total)} of job time{wall}"
        + (f"; {unknown} job(s) not estimated" if unknown else "")
        + " (updates and env steps only: start-up and evaluation not counted)"
    )
    return 0


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}min"
    return f"{seconds / 3600:.1f}h"
