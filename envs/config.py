"""The environment config: the contract between Hydra's ``env/`` group and ``envs.make``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class EnvConfig:
    name: str = "hopper"
    """Short name: run directories, plots and the D4RL reference-score table use it."""
    id: str = "Hopper-v5"
    """The simulator's id (a Gymnasium id for the gymnasium family)."""
    family: str = "gymnasium"
    """Which factory builds it: gymnasium (MuJoCo v5)."""
    max_episode_steps: int | None = None
    """Override the registered time limit; None keeps the registered one."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for the simulator's constructor."""
    score_name: str | None = "hopper"
    """Key into the D4RL reference-score table for normalised scores; None when the env has none."""
    reward_scale: float = 1.0
    """Rewards enter every buffer as ``reward * reward_scale + reward_bias`` (applied once, there)."""
    reward_bias: float = 0.0
