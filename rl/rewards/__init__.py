"""Reward models (``base.py`` is the contract); ``python -m rl.rewards`` trains classifiers and relabels."""

from rl.rewards.base import (
    CameraCalibration,
    LabelInput,
    Labels,
    RewardModel,
    RewardModelConfigError,
    RewardModelError,
)

__all__ = [
    "CameraCalibration",
    "LabelInput",
    "Labels",
    "RewardModel",
    "RewardModelConfigError",
    "RewardModelError",
]
