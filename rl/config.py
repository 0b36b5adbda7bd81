"""Structured configs: the dataclasses behind ``conf/``, registered in Hydra's ConfigStore.

Every YAML option in ``conf/agent``, ``conf/env`` and ``conf/dataset`` starts from one of the
schemas stored here (``defaults: [<name>_schema, _self_]``), so a misspelt key or a value of the wrong
type fails at start-up with Hydra's own message, before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from envs.config import EnvConfig
from rl.agents import AGENTS


@dataclass
class DatasetConfig:
    name: str = "none"
    """Short name for run directories and plots."""
    source: str | None = None
    """``minari:<dataset id>``, ``d4rl:<path.hdf5>``, or None for a purely online run."""
    clip_actions: bool = False
    """Clip actions outside [-1, 1] instead of refusing the dataset."""


@dataclass
class StepsConfig:
    offline: int = 0
    """Gradient steps on the dataset alone."""
    online: int = 0
    """Environment steps of the online phase (one agent update per step after warm-up)."""
    warmup: int = 0
    """Online env steps before the first update (WSRL: 5000 with the pre-trained policy acting)."""
    warmup_actions: str = "random"
    """Who acts during warm-up: 'random' (uniform in [-1, 1]) or 'policy' (the agent, stochastic)."""
    eval_every: int = 5000
    """Evaluate every this many steps of each phase (and always at each phase's end)."""
    eval_episodes: int = 5
    """Deterministic episodes per evaluation, in a separate env; 0 disables evaluation (a real arm)."""
    checkpoint_every: int = 5000
    snapshot_every: int = 0
    """Also keep the agent alone every this many steps (``checkpoints/agent_step<N>.pt``); 0: never."""
    log_every: int = 500


@dataclass
class TrainConfig:
    agent: Any = MISSING
    env: EnvConfig = MISSING
    dataset: DatasetConfig = MISSING
    steps: StepsConfig = field(default_factory=StepsConfig)
    offline_ratio: float = 0.0
    """Share of each online batch drawn from the offline data (0: online only; 0.5: RLPD/Cal-QL)."""
    buffer_capacity: int = 1_000_000
    """Rows of the online replay buffer."""
    rollout_steps: int = 2048
    """On-policy agents (``agent.on_policy``): env steps per rollout, over all copies (Uni-O4: 2048)."""
    num_envs: int = 1
    """Env copies stepped together online; the agent acts on all of them in one batched call."""
    env_mode: str = "auto"
    """How the copies run: 'sync' (in this process: right for cheap MuJoCo steps), 'async'
    (subprocess workers: right for robosuite), or 'auto' (by the env family)."""
    seed: int = 0
    device: str = "cpu"
    """The one place a device is chosen: 'cpu', 'cuda' or 'cuda:<i>'."""
    threads: int = 0
    """torch intra-op threads (0: torch's default). Set 1 when sweeping with several local jobs."""
    compile: bool = False
    """Run the agent's ``update`` through ``torch.compile`` (``Agent.compile_update``; on CUDA also
    captured as CUDA graphs). Compiling takes a minute or so at start-up; the results match eager to
    float rounding, so like ``device`` and ``threads`` it may change when a run is resumed."""
    checkpoint: str | None = None
    """An agent checkpoint (``<run>/checkpoints/agent_*.pt``) to start the agent from, e.g. a
    pre-trained CQL agent for WSRL or a policy to fine-tune on a real arm."""
    resume: str | None = None
    """A run directory to continue from its last checkpoint."""
    progress: bool = True
    """Show a progress bar (turn off in batch jobs)."""


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    for name, (_, config_class) in AGENTS.items():
        cs.store(group="agent", name=f"{name}_schema", node=config_class)
    cs.store(group="env", name="env_schema", node=EnvConfig)
    cs.store(group="dataset", name="dataset_schema", node=DatasetConfig)
