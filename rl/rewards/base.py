"""The reward-model contract: what every reward model takes, what it returns, and how it fails.

A reward model labels transitions from what a camera (and the env's named state) saw in the state
each transition reached. The policy may see state only while the reward model sees frames (a
"reward camera"), as on a real cell. Models never see the env, the buffer or the loop: the loop
(``rl/loops``) hands them ``LabelInput`` batches and writes the ``Labels`` back into the buffer, now
(synchronous mode) or when a background worker gets to them (asynchronous mode).

Models, one file each: ``classifier.py`` (success classifier), ``vlm_http.py`` / ``vlm_local.py``
(yes/no from a vision-language model), ``kagi.py`` (keypoint waypoint shaping on top of a success
model). ``reward=env`` is no model at all: the env's own reward, today's path.
"""

from __future__ import annotations

import abc
import hashlib
from dataclasses import dataclass, field

import torch


class RewardModelError(RuntimeError):
    """A model could not label a batch now (server down, malformed answer after retries). The rows
    stay unlabelled and are tried again; a missing label is never written as 0."""


class RewardModelConfigError(ValueError):
    """A model cannot be built as configured (weights of another input size, missing prompt file,
    server unreachable at start): refused at build time with one line naming what is wrong."""


@dataclass(frozen=True)
class CameraCalibration:
    """A pinhole camera: ``intrinsics`` (3, 3) and ``extrinsics`` (4, 4, camera-to-world), float64.
    robosuite gives both exactly; a real camera reads them from a calibration file."""

    intrinsics: torch.Tensor
    extrinsics: torch.Tensor
    height: int
    width: int


@dataclass(frozen=True)
class LabelInput:
    """A batch of B rows to label: what the reward camera(s) and the env's named state showed in the
    state each transition reached (its ``next_obs``)."""

    frames: dict[str, torch.Tensor]
    """camera name -> (B, H, W, 3) uint8 RGB; a depth camera adds ``<name>_depth`` -> (B, H, W) float32
    metres. Empty for models that need no frames."""
    state: dict[str, torch.Tensor]
    """Named state quantities -> (B, k) float32 (e.g. ``eef_pos``, ``cube_pos``, ``gripper_qpos``):
    the oracle keypoint proposer's object poses and the classifier's proprio sanity check."""
    episode: torch.Tensor
    """(B,) int64: the episode each row belongs to (KAGI keys its once-per-episode waypoints by it)."""
    step: torch.Tensor
    """(B,) int64: the row's step within its episode (0 = the first transition)."""

    def __len__(self) -> int:
        return int(self.episode.shape[0])


@dataclass(frozen=True)
class Labels:
    """What a model says about each row of a ``LabelInput``."""

    reward: torch.Tensor
    """(B,) float32, raw (the buffer applies ``reward_scale``/``reward_bias`` once, as for env rewards)."""
    success: torch.Tensor
    """(B,) bool: the task is done in this state."""
    done: torch.Tensor
    """(B,) bool: a terminal state for bootstrapping (usually ``success`` when the model ends episodes)."""
    info: dict[str, torch.Tensor] = field(default_factory=dict)
    """(B,) per-row extras worth logging (e.g. ``p_success``, ``progress``)."""


class RewardModel(abc.ABC):
    """Labels batches of rows. Subclasses set ``cameras`` (the frames they need; empty for none) and
    ``state_keys`` (the named state they need) and implement ``label`` and ``identity``. A model that
    needs camera geometry (KAGI) also defines ``set_calibration(dict[str, CameraCalibration])``, which
    the loop calls once with the env's calibration before the first label (``rl.loops.build``)."""

    cameras: tuple[str, ...] = ()
    state_keys: tuple[str, ...] = ()
    frame_shape: tuple[int, int, int] | None = None
    """The (H, W, 3) of every camera's frames the model takes; ``None`` for any size (a VLM)."""

    @abc.abstractmethod
    def label(self, batch: LabelInput) -> Labels:
        """Label every row of ``batch`` or raise ``RewardModelError`` (then none is labelled)."""

    @abc.abstractmethod
    def identity(self) -> bytes:
        """Everything that decides the labels: weights, prompt text, threshold, settings."""

    @property
    def model_hash(self) -> str:
        """16 hex digits of ``identity()``, recorded with every row this model labelled."""
        return hashlib.sha256(self.identity()).hexdigest()[:16]

    def close(self) -> None:  # noqa: B027 - most models hold nothing to release
        """Release what the model holds (HTTP sessions, worker threads)."""
