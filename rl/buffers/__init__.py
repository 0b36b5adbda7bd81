"""Replay and rollout storage on the training device.

- ``replay``: ``ReplayBuffer``, rows in preallocated columns (pixel frames in ``frames.FrameRing``),
  optionally waiting for a reward model's labels (``RowContext``: what they are labelled from);
- ``from_dataset``: ``fill_from_dataset``, a ``Dataset`` into a buffer;
- ``sampler``: ``MixedSampler``, offline/online mixing; ``rollout``: ``RolloutBuffer`` (GAE).
"""

from rl.buffers.batch import Batch
from rl.buffers.from_dataset import fill_from_dataset
from rl.buffers.replay import ObsSpec, ReplayBuffer, RowContext
from rl.buffers.rollout import RolloutBuffer
from rl.buffers.sampler import MixedSampler

__all__ = [
    "Batch",
    "MixedSampler",
    "ObsSpec",
    "ReplayBuffer",
    "RolloutBuffer",
    "RowContext",
    "fill_from_dataset",
]
