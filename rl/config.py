"""Structured configs: the dataclasses behind ``conf/``, registered in Hydra's ConfigStore.

Every YAML option in ``conf/agent``, ``conf/env`` and ``conf/dataset`` starts from one of the
schemas stored here (``defaults: [<name>_schema, _self_]``), so a misspelt key or a value of the wrong
type fails at start-up with Hydra's own message, before anything is written. Values of the right type
but outside their range (a negative step count, a ratio above 1) are refused by ``check_values``.

The resolvers the config tree uses are registered here too: ``o2o_run_folder`` (run folder names),
``o2o_dataset_name`` (a dataset named after its source) and ``o2o_path`` (a file shipped in the
repository, e.g. ``tests/data``, as an absolute path, so a preset works from any working directory).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from envs.config import EnvConfig
from rl.agents import AGENTS
from rl.rewards import REWARD_MODELS, RewardConfig


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
    """Who acts during warm-up: 'random' (uniform in [-1, 1]), 'policy' (the agent, sampling its
    actions, as WSRL does) or 'policy_mean' (the agent's deterministic action: warm-up episodes as
    long as its evaluations, where a sampled pre-trained Hopper policy falls within 100-400 steps)."""
    eval_every: int = 5000
    """Evaluate every this many steps of each phase (and always at each phase's end)."""
    eval_episodes: int = 5
    """Deterministic episodes per evaluation, in a separate env; 0 disables evaluation (a real arm)."""
    checkpoint_every: int = 5000
    snapshot_every: int = 0
    """Also keep the agent alone every this many steps (``checkpoints/agent_step<N>.pt``); 0: never."""
    log_every: int = 500


COMPILE_FROM_STEPS = 20_000
"""``compile=null`` compiles runs whose schedule (offline updates + online steps) is at least this long."""


@dataclass
class TrainConfig:
    agent: Any = MISSING
    env: EnvConfig = MISSING
    dataset: DatasetConfig = MISSING
    steps: StepsConfig = field(default_factory=StepsConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    """Who labels rewards: the env's own (``reward: env``, the default) or a reward model
    (``conf/reward/``, docs/rewards.md). Defined in ``rl.rewards``, whose models are built from it."""
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
    compile: bool | None = None
    """Run the agent's ``update`` through ``torch.compile`` (``Agent.compile_update``; on CUDA also
    captured as CUDA graphs). ``null`` (the default) decides by the run's length: on for schedules of
    at least ``COMPILE_FROM_STEPS`` steps, where the 10-17% faster update (experiments/bench/learner.py)
    repays the 15-35 s of compiling (2-6 s once inductor's on-disk cache holds the graphs), off for
    shorter ones (tests, smoke runs). The results match eager to float rounding, so like ``device`` and
    ``threads`` it may change when a run is resumed."""
    precision: str = "fp32"
    """``bf16``: the agent's ``update`` computes its matmuls in bfloat16 under autocast, with float32
    weights, optimizer state and network outputs (``Agent.update_in_bf16``; off-policy agents only).
    2.0x faster CQL updates on a CPU with AVX-512-BF16 (experiments/bench/learner.py), slower on one
    without (a one-line warning says so). It changes the numbers a run computes, so unlike ``compile``
    it is part of the run's identity; float32 stays the default until learning results show bf16 is
    safe (experiments/bench/README.md)."""
    checkpoint: str | None = None
    """An agent checkpoint (``<run>/checkpoints/agent_*.pt``) to start the agent from, e.g. a
    pre-trained CQL agent for WSRL or a policy to fine-tune on a real arm."""
    resume: str | None = None
    """A run directory to continue from its last checkpoint."""
    progress: bool = True
    """Show a progress bar (turn off in batch jobs)."""


REPOSITORY = Path(__file__).resolve().parents[1]
"""The checkout ``conf/`` and shipped data live in (o2o is installed editable, see scripts/setup.sh)."""


def _in_unit_interval(value: float) -> bool:
    return 0 <= value <= 1


def _non_negative(value: float) -> bool:
    return value >= 0


def _positive(value: float) -> bool:
    return value > 0


def _below_one(value: float) -> bool:
    return 0 <= value < 1


RANGE_RULES: list[tuple[str, Callable[[float], bool], str]] = [
    # (dotted key pattern, check, what the refusal says); the first pattern a key matches decides.
    ("offline_ratio", _in_unit_interval, "a share of each batch, must be in [0, 1]"),
    ("agent.gamma", _in_unit_interval, "a discount, must be in [0, 1]"),
    ("agent.tau", _in_unit_interval, "a Polyak rate, must be in [0, 1]"),
    ("agent.expectile", _in_unit_interval, "an expectile, must be in [0, 1]"),
    ("agent.gae_lambda", _in_unit_interval, "must be in [0, 1]"),
    ("agent.clip_ratio", _in_unit_interval, "must be in [0, 1]"),
    ("agent.online_clip", _in_unit_interval, "must be in [0, 1]"),
    ("steps.eval_every", _positive, "a cadence, must be > 0"),
    ("steps.checkpoint_every", _positive, "a cadence, must be > 0"),
    ("steps.log_every", _positive, "a cadence, must be > 0"),
    ("steps.*", _non_negative, "a count, must be >= 0"),
    ("threads", _non_negative, "must be >= 0 (0: torch's default)"),
    ("buffer_capacity", _positive, "a size, must be > 0"),
    ("rollout_steps", _positive, "a size, must be > 0"),
    ("num_envs", _positive, "a size, must be > 0"),
    ("env.image_size", _positive, "a size, must be > 0"),
    ("env.max_episode_steps", _positive, "a size, must be > 0"),
    ("agent.*_steps", _non_negative, "a count, must be >= 0"),
    ("agent.*hidden.*", _positive, "a layer width, must be > 0"),
    ("agent.*lr", _positive, "a learning rate, must be > 0"),
    ("agent.batch_size", _positive, "a size, must be > 0"),
    ("agent.num_*", _positive, "a size, must be > 0"),
    ("agent.*_samples", _positive, "a size, must be > 0"),
    ("agent.utd", _positive, "a size, must be > 0"),
    ("agent.subset_size", _positive, "a size, must be > 0"),
    ("agent.online_minibatch", _positive, "a size, must be > 0"),
    ("agent.online_epochs", _positive, "a count, must be > 0"),
    ("agent.dynamics_members", _positive, "a size, must be > 0"),
    ("agent.dynamics_elites", _positive, "a size, must be > 0"),
    ("reward.threshold", _in_unit_interval, "a probability threshold, must be in [0, 1]"),
    ("reward.shaping_scale", _below_one, "KAGI's c keeps shaping below a success, must be in [0, 1)"),
    ("reward.image_size", _positive, "a size, must be > 0"),
    ("reward.label_batch", _positive, "a size, must be > 0"),
    ("reward.timeout_s", _positive, "a duration, must be > 0"),
    ("reward.reach_radius", _positive, "a distance, must be > 0"),
    ("reward.retries", _non_negative, "a count, must be >= 0"),
    ("reward.backoff_s", _non_negative, "a duration, must be >= 0"),
    ("reward.sanity_index", _non_negative, "an index, must be >= 0"),
]
WARMUP_ACTIONS = ("random", "policy", "policy_mean")
CHOICES = {
    "steps.warmup_actions": WARMUP_ACTIONS,
    "env_mode": ("auto", "sync", "async"),
    "precision": ("fp32", "bf16"),
    "reward.name": tuple(REWARD_MODELS),
    "reward.mode": ("sync", "async"),
    "reward.base": tuple(name for name in REWARD_MODELS if not name.startswith("kagi")),
}


def check_values(cfg: DictConfig) -> None:
    """Refuse the first value outside its range: ``ValueError('<key>=<value>: <why>')``.

    Types are Hydra's business (the schemas); this checks what a type cannot say: step counts are
    not negative, ratios lie in [0, 1], sizes, cadences and learning rates are positive.
    """
    for key, value in _leaves(OmegaConf.to_container(cfg, resolve=True)):
        if key in CHOICES:
            if value not in CHOICES[key]:
                raise ValueError(f"{key}={value}: must be one of {', '.join(CHOICES[key])}")
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        for pattern, check, why in RANGE_RULES:
            if fnmatchcase(key, pattern):
                if not check(value):
                    raise ValueError(f"{key}={value}: {why}")
                break


def _leaves(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted key, value)`` of every leaf; list items are keyed by their index."""
    if isinstance(tree, dict):
        return [leaf for k, v in tree.items() for leaf in _leaves(v, f"{prefix}{k}.")]
    if isinstance(tree, list):
        return [leaf for i, v in enumerate(tree) for leaf in _leaves(v, f"{prefix}{i}.")]
    return [(prefix.rstrip("."), tree)]


def run_folder(agent: str, env: str, overrides: str) -> str:
    """``<agent>-<env>-<8 hex digits>``, the hex a hash of the command-line overrides (Hydra's
    ``override_dirname``, which sorts them and leaves out settings that do not change results): short,
    readable, and the same for the same command, which is how a re-run finds its checkpoint."""
    digest = hashlib.sha1(overrides.encode()).hexdigest()[:8]
    return re.sub(r"[^\w.-]", "_", f"{agent}-{env}") + f"-{digest}"


def dataset_name(source: str | None) -> str:
    """The name a dataset given only by its source goes by (plots, tables): a Minari id, or the file's stem."""
    if source is None:
        return "none"
    scheme, _, target = source.partition(":")
    return Path(target).stem if scheme == "d4rl" else target


def repository_path(relative: str) -> str:
    """A file shipped in the repository as an absolute path (``${o2o_path:tests/data/x.hdf5}``)."""
    return str(REPOSITORY / relative)


def register_configs() -> None:
    OmegaConf.register_new_resolver("o2o_run_folder", run_folder, replace=True)
    OmegaConf.register_new_resolver("o2o_dataset_name", dataset_name, replace=True)
    OmegaConf.register_new_resolver("o2o_path", repository_path, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    for name, (_, config_class) in AGENTS.items():
        cs.store(group="agent", name=f"{name}_schema", node=config_class)
    cs.store(group="env", name="env_schema", node=EnvConfig)
    cs.store(group="dataset", name="dataset_schema", node=DatasetConfig)
    cs.store(group="reward", name="reward_schema", node=RewardConfig)


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """conf/config.yaml composed with ``overrides`` as ``rl.train`` composes it, without running
    anything: for scripts and tests that build a run themselves (``rl.loops.build_run``)."""
    register_configs()
    with initialize_config_dir(config_dir=str(REPOSITORY / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))
