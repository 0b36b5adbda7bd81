"""Reward models (``base.py`` is the contract), their one config, and the factory that builds them by
name; ``python -m rl.rewards`` trains success classifiers and relabels datasets (docs/rewards.md).

``RewardConfig`` is defined here rather than in ``rl/config.py`` (which re-exports it and registers it
as Hydra's ``reward_schema``): the import table lets ``rl.config`` import ``rl.rewards`` but not the
reverse, and every model's ``build(cfg: RewardConfig, device)`` needs the type.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import torch

from rl.rewards.base import (
    CameraCalibration,
    LabelInput,
    Labels,
    RewardModel,
    RewardModelConfigError,
    RewardModelError,
)
from rl.rewards.per_task import TASK_KEYS, PerTaskLabels


@dataclass
class RewardConfig:
    """One config for every reward model (``conf/reward/<name>.yaml``); each model reads its fields."""

    name: str = "env"
    """env | classifier | vlm_http | vlm_local | kagi_oracle | kagi_vlm (``REWARD_MODELS``)."""
    mode: str = "sync"
    """sync: labels inline (exact resume); async: a background worker labels pending rows."""
    cameras: list[str] = field(default_factory=lambda: ["agentview"])
    """The reward camera(s) the model reads."""
    image_size: int = 84
    label_batch: int = 64
    """Rows per ``label`` call."""
    path: str | None = None
    """A classifier checkpoint file, or a local VLM model directory."""
    threshold: float | None = None
    """None: the classifier's saved threshold; 0.5 for a VLM's P(yes)."""
    sanity_key: str | None = None
    """Optional proprio sanity check: a success also needs ``state[sanity_key][:, sanity_index] >=
    sanity_min`` (HIL-SERL's z-height check, e.g. the cube's z)."""
    sanity_index: int = 2
    sanity_min: float | None = None
    prompt: str = "rl/rewards/prompts/lift_success_v1.txt"
    """A versioned prompt file (repository-relative or absolute)."""
    instruction: str = "lift the red cube off the table"
    url: str = "http://127.0.0.1:8000/v1"
    """An OpenAI-compatible server."""
    model: str = "local-vlm"
    """The model name sent to the server."""
    api_key_env: str = "O2O_VLM_API_KEY"
    timeout_s: float = 30.0
    retries: int = 3
    backoff_s: float = 0.5
    success_reward: float = 1.0
    base: str = "classifier"
    """KAGI: the sparse success model it shapes on top of (classifier | vlm_http | vlm_local | env)."""
    shaping_scale: float = 0.5
    """KAGI's c < 1: the dense reward c * progress stays strictly below a success."""
    reach_radius: float = 0.03
    """KAGI's rho (metres)."""
    tracked_key: str = "eef_pos"
    """KAGI: the named-state point that moves along the waypoints."""
    device: str | None = None
    """None: the run's device."""


REWARD_MODELS: dict[str, str | None] = {
    "env": None,
    "classifier": "rl.rewards.classifier:build",
    "vlm_http": "rl.rewards.vlm_http:build",
    "vlm_local": "rl.rewards.vlm_local:build",
    "kagi_oracle": "rl.rewards.kagi:build_oracle",
    "kagi_vlm": "rl.rewards.kagi:build_vlm",
}
"""reward.name -> ``module:function`` building it (None: the env's own reward). Imported only when
chosen, so a run with ``reward=env`` never loads a model's dependencies (transformers, HTTP)."""


def build_reward_model(cfg: RewardConfig, device: torch.device) -> RewardModel | None:
    """The model ``cfg`` names, on ``cfg.device`` or else ``device``; None for ``reward=env``.

    Raises ``RewardModelConfigError`` (one line) for an unknown name or a model that cannot be built.
    """
    if cfg.name not in REWARD_MODELS:
        raise RewardModelConfigError(f"reward.name={cfg.name!r}: not one of {', '.join(REWARD_MODELS)}")
    target = REWARD_MODELS[cfg.name]
    if target is None:
        return None
    module, _, function = target.partition(":")
    build = getattr(importlib.import_module(module), function)
    return build(cfg, torch.device(cfg.device) if cfg.device is not None else torch.device(device))


__all__ = [
    "REWARD_MODELS",
    "TASK_KEYS",
    "CameraCalibration",
    "LabelInput",
    "Labels",
    "PerTaskLabels",
    "RewardConfig",
    "RewardModel",
    "RewardModelConfigError",
    "RewardModelError",
    "build_reward_model",
]
