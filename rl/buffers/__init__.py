"""Replay and rollout storage on the training device."""

from rl.buffers.batch import Batch
from rl.buffers.replay import MixedSampler, ObsSpec, ReplayBuffer
from rl.buffers.rollout import RolloutBuffer

__all__ = ["Batch", "MixedSampler", "ObsSpec", "ReplayBuffer", "RolloutBuffer"]
